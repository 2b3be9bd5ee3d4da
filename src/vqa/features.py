"""Image features: Karpathy's ``vgg_feats.mat`` or a folder of images -> one features file.

Two layouts (schema and the file's writer and reader in `vqa.feature_file`):

- ``"vector"``, the tutorial's: VGG16 fc7 activations (layer ``fc2`` of Keras'
  VGG16, 224 x 224 input), float32 (N, 4096), from either source;
- ``"grid"``, for attention models (``--grid``): VGG16 ``block5_pool``
  (``include_top=False``) of an ``image_size`` x ``image_size`` image,
  float16 (N, S, S, 512), S = image_size / 32, from images only.

This module owns the VGG16 image pipeline and writes only through
`vqa.feature_file.FeaturesFile`; the file's ``cnn_weights`` attribute is the value
to pass to :func:`load_cnn` to compute features that match it (what the Predictor
does for a new image), and its identity (:func:`cnn_identity`: a kind and the weights
file's SHA-256) says which weights those were, for :func:`check_cnn_weights`. ``--cnn-weights random`` warns once per process,
from here, with :class:`RandomWeightsWarning`; code that means to use random weights
(tests, the demo, benchmarks) silences it with the one switch
``warnings.simplefilter("ignore", RandomWeightsWarning)`` (pytest: the ``filterwarnings``
entry ``ignore::vqa.features.RandomWeightsWarning``; Python: ``-W`` or ``PYTHONWARNINGS``).
The image-loading pieces (:func:`load_cnn`, :func:`load_image`, :func:`preprocess_images`)
are public because the Predictor reuses them.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from vqa import artifacts
from vqa.config import FEATURES_BATCH_SIZE
from vqa.errors import InputError, ResourceError
from vqa.feature_file import (GRID_LAYER, VECTOR_LAYER, CNNIdentity, FeaturesFile, check_cnn_pairing,
                              check_layout_and_size)
from vqa.official import check_unique_ids

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# A COCO image is ~0.3 megapixels; 40 megapixels decodes to ~120 MB of RGB, and
# anything larger is refused as a likely decompression bomb.
MAX_IMAGE_PIXELS = 40_000_000
# Keras' own ImageNet VGG16 (with the top, so fc1/fc2 exist); same name, URL and
# hash as keras.applications.VGG16, so a file Keras already cached is reused.
IMAGENET_WEIGHTS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
IMAGENET_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + IMAGENET_WEIGHTS_FILE
)
IMAGENET_WEIGHTS_MD5 = "64373286793e3c8b2b4e3219cbf3544b"
IMAGENET_WEIGHTS_SIZE = 553_467_096  # bytes: only a local file of this size can be a copy of Keras' file
RANDOM_WEIGHTS_SEED = 0
# The trailing integer of a file stem is its image id: COCO_val2014_000000391895 and
# 000000391895 (COCO 2017 names) both give 391895.
_TRAILING_ID = re.compile(r"(\d+)$")
_KARPATHY_CHUNK = 4096


class RandomWeightsWarning(UserWarning):
    """VGG16 runs with seeded random weights: the features are meaningless outside tests and demos."""


# --------------------------------------------------------------------------- Karpathy
def convert_karpathy(karpathy_dir: Path, out_path: Path) -> int:
    """Convert Karpathy's ``vgg_feats.mat`` + ``dataset.json`` into the features HDF5.

    Column i of ``feats`` (4096 x M) is the image with ``imgid`` i; it becomes row i,
    with its ``cocoid`` as the image id. The matrix is copied in chunks of columns,
    so peak memory stays near one copy of the .mat's matrix (none for a v7.3 file).

    Args:
        karpathy_dir: folder holding ``vgg_feats.mat`` and ``dataset.json`` (coco.zip).
        out_path: HDF5 file to write (atomically).

    Returns:
        The number of rows written (M).
    """
    karpathy_dir = Path(karpathy_dir)
    mat_path = karpathy_dir / artifacts.KARPATHY_FEATS_MAT
    json_path = karpathy_dir / artifacts.KARPATHY_DATASET_JSON
    for path in (mat_path, json_path):
        if not path.is_file():
            raise InputError(f"{path}: file not found; unzip Karpathy's coco.zip into {karpathy_dir}")
    cocoids = read_karpathy_image_ids(json_path)
    with _open_karpathy_feats(mat_path) as (columns, num_columns):
        if num_columns != len(cocoids):
            raise InputError(f"{mat_path}: 'feats' has {num_columns} columns but {json_path} lists "
                             f"{len(cocoids)} images; use the two files from the same coco.zip")
        with FeaturesFile.create(Path(out_path), source="karpathy", cnn_weights=artifacts.IMAGENET_WEIGHTS,
                                 cnn_identity=CNNIdentity(artifacts.CNN_KARPATHY), num_rows=num_columns) as writer:
            for start in tqdm(range(0, num_columns, _KARPATHY_CHUNK), desc="vgg_feats.mat", unit="chunk"):
                stop = min(start + _KARPATHY_CHUNK, num_columns)
                writer.append(columns(start, stop), cocoids[start:stop])
    return num_columns


def read_karpathy_image_ids(json_path: Path) -> np.ndarray:
    """Read the COCO id of each ``imgid`` from Karpathy's ``dataset.json``.

    Args:
        json_path: Karpathy's ``dataset.json`` (``images[i]`` has ``imgid`` and ``cocoid``).

    Returns:
        int64 (M,): element i is the ``cocoid`` of the image with ``imgid`` i.
    """
    try:
        images = json.loads(Path(json_path).read_text(encoding="utf-8"))["images"]
        pairs = sorted((int(image["imgid"]), int(image["cocoid"])) for image in images)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"{json_path}: not Karpathy's dataset.json (need images[] with imgid and cocoid): "
                         f"{error!r}") from None
    if not pairs:
        raise InputError(f"{json_path}: lists no images; use Karpathy's dataset.json from coco.zip")
    if [imgid for imgid, _ in pairs] != list(range(len(pairs))):
        raise InputError(f"{json_path}: imgid values are not 0..{len(pairs) - 1}; use Karpathy's original file")
    cocoids = np.array([cocoid for _, cocoid in pairs], dtype=np.int64)
    check_unique_ids(cocoids, source=json_path, what="cocoid", fix="each image must appear once")
    return cocoids


@contextmanager
def _open_karpathy_feats(mat_path: Path):
    """Yield ``(columns, M)``: ``columns(start, stop)`` returns float32 (stop - start, 4096) rows.

    A v7.3 .mat is HDF5 and stores the 4096 x M matrix transposed (M x 4096), so
    it is read row by row from disk; a classic .mat is loaded once with scipy.
    """
    if h5py.is_hdf5(mat_path):
        with h5py.File(mat_path, "r") as mat:
            if "feats" not in mat:
                raise InputError(f"{mat_path}: no 'feats' variable; expected Karpathy's vgg_feats.mat")
            feats = mat["feats"]
            _check_feats_shape(mat_path, feats.shape[::-1])
            yield (lambda start, stop: np.asarray(feats[start:stop], dtype=np.float32)), feats.shape[0]
        return
    feats = _load_classic_feats(mat_path)
    yield (lambda start, stop: np.ascontiguousarray(feats[:, start:stop].T, dtype=np.float32)), feats.shape[1]


def _load_classic_feats(mat_path: Path) -> np.ndarray:
    """Load ``feats`` (4096 x M) from a MATLAB v5 file, checking its shape before loading."""
    import scipy.io

    try:
        shapes = {name: shape for name, shape, _ in scipy.io.whosmat(mat_path)}
        if "feats" not in shapes:
            raise InputError(f"{mat_path}: no 'feats' variable; expected Karpathy's vgg_feats.mat")
        _check_feats_shape(mat_path, shapes["feats"])
        return scipy.io.loadmat(mat_path, variable_names=["feats"])["feats"]
    except (ValueError, OSError, TypeError, NotImplementedError) as error:
        raise InputError(f"{mat_path}: not a readable MATLAB file ({error}); "
                         "re-download Karpathy's coco.zip") from None


def _check_feats_shape(mat_path: Path, shape: tuple) -> None:
    """Raise InputError unless ``shape`` (as MATLAB sees it) is 4096 x M."""
    if len(shape) != 2 or shape[0] != artifacts.IMAGE_FEATURE_DIM:
        raise InputError(f"{mat_path}: 'feats' is {' x '.join(map(str, shape))}, expected "
                         f"{artifacts.IMAGE_FEATURE_DIM} x number of images (VGG16 fc7)")


# --------------------------------------------------------------------------- the CNN
def load_cnn(cnn_weights: str = artifacts.IMAGENET_WEIGHTS, *, layout: str = artifacts.LAYOUT_VECTOR,
             image_size: int = artifacts.FC7_IMAGE_SIZE):
    """Build VGG16 up to ``fc2`` (fc7, the tutorial's image encoder) or up to ``block5_pool`` (the grid).

    Both layouts take their weights from the same full VGG16 (with the top), so a
    grid file and an fc7 file made with the same ``cnn_weights`` come from the
    same convolutions.

    Args:
        cnn_weights: ``"imagenet"`` (Keras' download, cached in ~/.keras/models/),
            a path to a local full VGG16 ``.h5`` weights file, or ``"random"``
            (seeded random weights: reproducible but meaningless, for tests and demos).
        layout: ``"vector"`` (fc2) or ``"grid"`` (block5_pool, ``include_top=False``).
        image_size: side of the square input; 224 for ``"vector"``, a multiple of 32
            from 32 to 1024 for ``"grid"`` (see `vqa.feature_file.grid_size`).

    Returns:
        A keras.Model mapping float32 (batch, size, size, 3) images, already through
        :func:`preprocess_images`, to float32 (batch, 4096) fc2 activations ("vector")
        or float32 (batch, S, S, 512) block5_pool activations ("grid", S = size / 32).
    """
    import keras

    check_layout_and_size(layout, image_size)
    if layout == artifacts.LAYOUT_GRID:
        return _load_grid_cnn(keras, cnn_weights, image_size)
    vgg = _load_full_vgg16(keras, cnn_weights)
    return keras.Model(vgg.input, vgg.get_layer(VECTOR_LAYER).output, name="vgg16_fc2")


def _load_full_vgg16(keras, cnn_weights: str):
    """VGG16 with the top (224 x 224 input) and the weights ``cnn_weights`` names."""
    if cnn_weights == "random":
        vgg = keras.applications.VGG16(weights=None, include_top=True)
        _set_random_weights(vgg, seed=RANDOM_WEIGHTS_SEED)
        return vgg
    return _load_vgg16_from_file(keras, _weights_file(keras, cnn_weights))


def _load_grid_cnn(keras, cnn_weights: str, image_size: int):
    """VGG16 without the top on ``image_size`` x ``image_size`` images, cut at block5_pool."""
    source = None if cnn_weights == "random" else _weights_file(keras, cnn_weights)  # a bad file fails first
    convolutions = keras.applications.VGG16(weights=None, include_top=False,
                                            input_shape=(image_size, image_size, 3))
    if source is None:
        # VGG16's 13 conv layers come first and draw first from the seeded generator, so
        # they get the very kernels of the full random VGG16 without building its 120M-weight top.
        _set_random_weights(convolutions, seed=RANDOM_WEIGHTS_SEED)
    else:
        # Keras' _notop file would do, but one weights file for both layouts is simpler to
        # ship offline: take the conv layers from the full model, by name.
        _copy_weights(_load_vgg16_from_file(keras, source), convolutions)
    return keras.Model(convolutions.input, convolutions.get_layer(GRID_LAYER).output, name="vgg16_block5_pool")


def _copy_weights(source, target) -> None:
    """Give every layer of ``target`` that has weights those of ``source``'s layer of the same name."""
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())


def _weights_file(keras, cnn_weights: str) -> Path:
    """The full VGG16 weights file for ``"imagenet"`` (downloaded or cached) or a local path."""
    if cnn_weights == artifacts.IMAGENET_WEIGHTS:
        return Path(_download_imagenet_weights(keras))
    return local_weights_file(cnn_weights)


def local_weights_file(cnn_weights: str) -> Path:
    """``--cnn-weights PATH`` checked without Keras: an existing HDF5 file named .h5/.hdf5; ResourceError if not."""
    path = Path(cnn_weights).expanduser()
    if not path.is_file():
        raise ResourceError(f"{path}: VGG16 weights file not found; pass --cnn-weights imagenet, "
                            f"random, or the path of {IMAGENET_WEIGHTS_FILE}")
    _check_weights_format(path)
    return path


def _check_weights_format(path: Path) -> None:
    """ResourceError unless ``path`` is an HDF5 file Keras reads by its name; checked before VGG16's
    138M weights are built, and clearer than Keras' own messages."""
    if not path.name.endswith((".h5", ".hdf5")):
        raise ResourceError(f"{path}: VGG16 weights must be an HDF5 file ending in .h5 or .hdf5, "
                            f"as {IMAGENET_WEIGHTS_FILE} does")
    if not h5py.is_hdf5(path):
        raise ResourceError(f"{path}: not an HDF5 file; pass the VGG16 weights file {IMAGENET_WEIGHTS_FILE}")


def _download_imagenet_weights(keras) -> str:
    """Fetch (or find cached) Keras' ImageNet VGG16 weights; ResourceError when offline."""
    try:
        return keras.utils.get_file(IMAGENET_WEIGHTS_FILE, IMAGENET_WEIGHTS_URL, cache_subdir="models",
                                    file_hash=IMAGENET_WEIGHTS_MD5)
    # keras.utils.get_file wraps every network failure in a plain Exception.
    except Exception as error:  # noqa: BLE001
        raise ResourceError(
            f"the ImageNet VGG16 weights could not be downloaded ({error}); download "
            f"{IMAGENET_WEIGHTS_URL} elsewhere and pass --cnn-weights /path/{IMAGENET_WEIGHTS_FILE} "
            "(or copy it into ~/.keras/models/, where Keras caches it)") from None


def _load_vgg16_from_file(keras, path: Path):
    """Build VGG16 with the top and load full-model weights from ``path``."""
    try:
        return keras.applications.VGG16(weights=str(path), include_top=True)
    except (OSError, ValueError, KeyError) as error:
        reason = " ".join(str(error).split())  # Keras' messages may span lines; the CLI prints one
        raise ResourceError(f"{path}: not VGG16 weights with the top ({reason}); pass "
                            f"{IMAGENET_WEIGHTS_FILE}, not the _notop file") from None


# --------------------------------------------------------------------------- the weights' identity
def cnn_identity(cnn_weights: str) -> CNNIdentity:
    """The identity of the VGG16 weights ``--cnn-weights`` names, as a features file records it.

    ``"random"``: kind random, no hash. ``"imagenet"``: Keras' ImageNet VGG16, with the SHA-256 of
    Keras' cached file when it is there (None otherwise). A path: the file's SHA-256, and kind
    ``keras-imagenet-vgg16`` when the file is a copy of Keras' (its size and MD5), ``local`` otherwise.
    A file is read once per process while its size and modification time stay (SHA-256 at >1 GB/s).

    Raises:
        ResourceError: a path that is not an HDF5 .h5/.hdf5 file.
    """
    if cnn_weights == artifacts.RANDOM_WEIGHTS:
        return CNNIdentity(artifacts.CNN_RANDOM)
    if cnn_weights == artifacts.IMAGENET_WEIGHTS:
        cached = _cached_imagenet_file()
        return CNNIdentity(artifacts.CNN_KERAS_IMAGENET, None if cached is None else _hash_file(cached)[0])
    sha256, md5 = _hash_file(local_weights_file(cnn_weights))
    return CNNIdentity(artifacts.CNN_KERAS_IMAGENET if md5 == IMAGENET_WEIGHTS_MD5 else artifacts.CNN_LOCAL, sha256)


def check_cnn_weights(trained: CNNIdentity, cnn_weights: str, *, model: Path | str) -> None:
    """InputError (one line) when ``--cnn-weights`` clearly differs from the weights a model was trained on.

    The rule is `vqa.feature_file.check_cnn_pairing`'s. ``"imagenet"`` is not hashed here: Keras checks
    its cached file's MD5 whenever it loads it, so it is always the same file.

    Args:
        trained: the model's identity (config.json's ``cnn_identity``).
        cnn_weights: ``"imagenet"``, a local VGG16 .h5 path or ``"random"``.
        model: the model directory, for the message.
    """
    asked = (CNNIdentity(artifacts.CNN_KERAS_IMAGENET) if cnn_weights == artifacts.IMAGENET_WEIGHTS
             else cnn_identity(cnn_weights))
    check_cnn_pairing(trained, asked, model=model, asked_by=f"--cnn-weights {cnn_weights}")


def _cached_imagenet_file() -> Path | None:
    """Keras' cached ImageNet VGG16 file (KERAS_HOME, else ~/.keras, else /tmp/.keras, as Keras picks), or None."""
    homes = [os.environ["KERAS_HOME"]] if "KERAS_HOME" in os.environ else ["~/.keras", "/tmp/.keras"]
    found = [path for home in homes if (path := Path(home).expanduser() / "models" / IMAGENET_WEIGHTS_FILE).is_file()]
    return found[0] if found else None


def _hash_file(path: Path) -> tuple[str, str | None]:
    """(SHA-256, MD5 or None) of a weights file: MD5 only at the size of Keras' ImageNet file, to recognise it."""
    stat = path.stat()
    return _hash_file_once(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _hash_file_once(path: str, size: int, modified_ns: int) -> tuple[str, str | None]:
    """:func:`_hash_file` for a file as it was at (size, modified_ns); cached so a process reads it once."""
    sha256 = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False) if size == IMAGENET_WEIGHTS_SIZE else None
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha256.update(chunk)
            if md5 is not None:
                md5.update(chunk)
    return sha256.hexdigest(), None if md5 is None else md5.hexdigest()


def _set_random_weights(model, *, seed: int) -> None:
    """Give ``model`` reproducible Glorot-uniform kernels and zero biases (Keras' defaults)."""
    # Reported at this line (stacklevel 1), so Python's default filter shows it once per process,
    # however many CNNs a program builds.
    warnings.warn("VGG16 uses RANDOM weights (--cnn-weights random): the image features are "
                  "meaningless except for tests and demos", RandomWeightsWarning, stacklevel=1)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if not layer.weights:
            continue
        kernel, bias = layer.get_weights()
        receptive = int(np.prod(kernel.shape[:-2])) if kernel.ndim > 2 else 1
        fan_in, fan_out = receptive * kernel.shape[-2], receptive * kernel.shape[-1]
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        kernel = (rng.random(kernel.shape, dtype=np.float32) * 2.0 - 1.0) * np.float32(limit)
        layer.set_weights([kernel, np.zeros_like(bias)])


# --------------------------------------------------------------------------- images
def load_image(source: Path | bytes, *, size: int = artifacts.FC7_IMAGE_SIZE) -> np.ndarray:
    """Decode an image file or bytes to RGB, resized to size x size (NOT yet preprocessed).

    EXIF rotation is applied; grey, palette and RGBA images become RGB. The whole
    image is resized (bilinear, no crop), so the aspect ratio is not kept.

    Args:
        source: an image path, or the encoded bytes (e.g. an upload).
        size: side of the output square: 224 for fc7, the grid's ``image_size`` otherwise.

    Returns:
        float32 (size, size, 3), RGB values in [0, 255]; pass a batch of these to
        :func:`preprocess_images` before the CNN.

    Raises:
        InputError: unreadable, truncated or over-large (decompression bomb) images.
    """
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    name = "image bytes" if isinstance(source, bytes) else str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise InputError(f"{name}: {image.width}x{image.height} image is over the "
                                 f"{MAX_IMAGE_PIXELS}-pixel limit; resize it first")
            image = ImageOps.exif_transpose(image).convert("RGB")
            image = image.resize((size, size), Image.Resampling.BILINEAR)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise InputError(f"{name}: cannot read the image ({error}); send a valid JPEG or PNG") from None
    return np.asarray(image, dtype=np.float32)


def preprocess_images(images: np.ndarray) -> np.ndarray:
    """Apply VGG16's ImageNet preprocessing (RGB -> BGR, subtract the channel means).

    Args:
        images: uint8 or float32 (n, size, size, 3) RGB in [0, 255]; not modified.

    Returns:
        float32 (n, size, size, 3), the input :func:`load_cnn`'s model expects.
    """
    from keras.applications.vgg16 import preprocess_input

    # preprocess_input edits a float32 array in place; work on a copy.
    return preprocess_input(np.array(images, dtype=np.float32, copy=True))


# --------------------------------------------------------------------------- image folders
def find_images(images_dir: Path) -> list[tuple[int, Path]]:
    """List the images under ``images_dir`` with their ids, sorted by id.

    The id is the trailing integer of the file stem (``COCO_val2014_000000391895.jpg``
    -> 391895); files without one are skipped with a warning.

    Args:
        images_dir: folder searched recursively for .jpg/.jpeg/.png files.

    Returns:
        ``(image_id, path)`` pairs, ids unique.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise InputError(f"{images_dir}: folder not found; pass --images with a folder of COCO images")
    paths = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    found, no_id = [], []
    for path in paths:
        match = _TRAILING_ID.search(path.stem)
        if match:
            found.append((int(match.group(1)), path))
        else:
            no_id.append(path)
    if no_id:
        logger.warning("skipped %d image(s) with no image id in the file name (e.g. %s)", len(no_id), no_id[0])
    if not found:
        raise InputError(f"{images_dir}: no .jpg/.jpeg/.png images with COCO ids in their names")
    check_unique_ids([i for i, _ in found], source=images_dir, what="image id",
                     fix="keep one file per image")
    return sorted(found)


def build_features_file(out_path: Path, *, images: Path | None = None, karpathy: Path | None = None, grid: bool = False,
                   image_size: int | None = None, cnn_weights: str = artifacts.IMAGENET_WEIGHTS,
                   batch_size: int = FEATURES_BATCH_SIZE) -> int:
    """`vqa features`: fc7 vectors from Karpathy's .mat or from images, or (``grid``) block5_pool grids of images.

    Args:
        out_path: the features file to write (atomically).
        images, karpathy: exactly one source: a folder of images, or Karpathy's coco.zip folder (fc7 only).
        grid: block5_pool grids float16 (N, S, S, 512) instead of fc7 vectors float32 (N, 4096).
        image_size: with ``grid``, the side images are resized to (default: the paper's 448); fc7 is always 224.
        cnn_weights, batch_size: as :func:`extract_image_features` takes them.
    Returns:
        The number of rows written.
    """
    if (images is None) == (karpathy is None):
        raise InputError("give one source: --images DIR or --karpathy DIR")
    if grid and karpathy is not None:
        raise InputError("--grid needs --images: Karpathy's vgg_feats.mat holds fc7 vectors only")
    if image_size is not None and not grid:
        raise InputError(f"--image-size applies to --grid only; fc7 vectors always use "
                         f"{artifacts.FC7_IMAGE_SIZE} x {artifacts.FC7_IMAGE_SIZE} images")
    if karpathy is not None:
        return convert_karpathy(karpathy, out_path)
    layout, size = ((artifacts.LAYOUT_GRID, image_size or artifacts.DEFAULT_GRID_IMAGE_SIZE) if grid
                    else (artifacts.LAYOUT_VECTOR, artifacts.FC7_IMAGE_SIZE))
    return extract_image_features(images, out_path, cnn_weights=cnn_weights, batch_size=batch_size,
                                  layout=layout, image_size=size)


def extract_image_features(images_dir: Path, out_path: Path, *, cnn_weights: str = artifacts.IMAGENET_WEIGHTS,
                           batch_size: int = FEATURES_BATCH_SIZE, cnn=None, layout: str = artifacts.LAYOUT_VECTOR,
                           image_size: int = artifacts.FC7_IMAGE_SIZE) -> int:
    """Run VGG16 over every image in a folder and write the features HDF5, batch by batch.

    Images are decoded by a thread pool one batch ahead of the model, and each
    batch's rows are appended to the (chunked, resizable) datasets, so memory does
    not grow with the number of images. Unreadable images are skipped and reported
    (count and first example), not fatal.

    Args:
        images_dir: folder of images, searched recursively; ids from file names (see :func:`find_images`).
        out_path: HDF5 file to write (atomically).
        cnn_weights: ``"imagenet"``, a VGG16 .h5 path or ``"random"`` (see :func:`load_cnn`).
        batch_size: images per model call.
        cnn: an already built :func:`load_cnn` model for these weights, layout and size, to skip building one.
        layout: ``"vector"``: fc2, float32 (N, 4096); ``"grid"``: block5_pool, float16 (N, S, S, 512).
        image_size: 224 for ``"vector"``; for ``"grid"`` a multiple of 32 from 32 to 1024 (S = image_size / 32).

    Returns:
        The number of rows written (images successfully read).
    """
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    check_layout_and_size(layout, image_size)
    images = find_images(images_dir)
    cnn = cnn if cnn is not None else load_cnn(cnn_weights, layout=layout, image_size=image_size)
    failures: list[str] = []
    weights_attr = cnn_weights if cnn_weights in artifacts.NAMED_CNN_WEIGHTS else str(Path(cnn_weights).resolve())
    identity = cnn_identity(cnn_weights)  # after load_cnn: Keras' ImageNet file is in its cache by now
    with FeaturesFile.create(Path(out_path), source="images", cnn_weights=weights_attr, cnn_identity=identity,
                             layout=layout, image_size=image_size) as writer:
        with tqdm(total=len(images), desc=f"VGG16 {writer.layer}", unit="img") as progress:
            for ids, pixels, attempted in _prefetch_batches(images, batch_size, failures, size=image_size):
                if len(ids):
                    writer.append(_finite(cnn.predict_on_batch(preprocess_images(pixels)), writer.dtype), ids)
                progress.update(attempted)
        if not writer.num_rows:
            raise InputError(f"{images_dir}: none of the {len(images)} images could be read (e.g. {failures[0]})")
    if failures:
        logger.warning("skipped %d unreadable image(s) (e.g. %s)", len(failures), failures[0])
    return len(images) - len(failures)


def _finite(rows: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``rows`` in the file's dtype (float16 for grids); ResourceError if any is NaN or out of its range."""
    with np.errstate(over="ignore"):
        rows = np.asarray(rows, dtype=dtype)
    if not np.isfinite(rows).all():
        raise ResourceError(f"VGG16 gave activations beyond {dtype}'s range or NaN; check the --cnn-weights file")
    return rows


def _prefetch_batches(images: list[tuple[int, Path]], batch_size: int, failures: list[str], *,
                      size: int = artifacts.FC7_IMAGE_SIZE) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Yield ``(ids int64 (n,), pixels float32 (n, size, size, 3), batch length)``, decoding the next batch meanwhile.

    Images that fail to load are left out of their batch and described in ``failures``.
    """
    batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        pending = [pool.submit(_try_load_image, path, size) for _, path in batches[0]]
        for index, batch in enumerate(batches):
            results = [future.result() for future in pending]
            if index + 1 < len(batches):
                pending = [pool.submit(_try_load_image, path, size) for _, path in batches[index + 1]]
            failures.extend(result for result in results if isinstance(result, str))
            good = [(image_id, result) for (image_id, _), result in zip(batch, results)
                    if not isinstance(result, str)]
            ids = np.array([image_id for image_id, _ in good], dtype=np.int64)
            pixels = np.stack([p for _, p in good]) if good else np.zeros((0, size, size, 3), "float32")
            yield ids, pixels, len(batch)


def _try_load_image(path: Path, size: int) -> np.ndarray | str:
    """:func:`load_image`, returning the error message instead of raising."""
    try:
        return load_image(path, size=size)
    except InputError as error:
        return str(error)
