"""The image-features HDF5 file: its schema, its only writer and its only reader.

Two layouts (`vqa.artifacts`'s ``LAYOUT_VECTOR`` and ``LAYOUT_GRID``):

- ``"vector"``, the tutorial's: VGG16 fc7 (layer ``fc2``, 224 x 224 input),
  ``features`` float32 (N, D), D = 4096 from VGG16;
- ``"grid"``, for attention models: VGG16 ``block5_pool`` of an ``image_size`` x
  ``image_size`` image, ``features`` float16 (N, S, S, 512), S = image_size / 32.

Both hold ``image_ids`` int64 (N,) and the attributes ``format`` (this module's
``FORMAT_VERSION``), ``source`` ("karpathy", "images" or "random"), ``layer``,
``layout``, ``image_size`` and ``cnn_weights`` (what `vqa.features.load_cnn` needs
to compute matching features for a new image). Files written before ``format``
existed are format 1: their attributes are optional, and a file without
``layout`` is a vector file at 224.

``cnn_kind`` and ``cnn_sha256`` record WHICH weights made the features, a
:class:`CNNIdentity`: one of ``vqa.artifacts.CNN_KINDS`` and the SHA-256 of the weights
file ("" where there is none). Added later within format 1, they are optional: a file
without them reads as kind "unknown". :func:`check_cnn_pairing` is the one rule that
says which weights may compute features for a model trained on others'.

`FeaturesFile.write` and `FeaturesFile.create` write (atomically: nothing at the
path unless the whole file is written); `FeaturesFile.open` reads. Every problem
is one `InputError` line naming the file.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import h5py
import numpy as np

from vqa import artifacts
from vqa.atomic import atomic_path
from vqa.errors import InputError

FORMAT_VERSION = 1
VECTOR_LAYER = "fc2"  # the ``layer`` attribute of each layout: VGG16's layer the features come from
GRID_LAYER = "block5_pool"
MAX_GRID_IMAGE_SIZE = 1024

_FEATURES = "features"
_IMAGE_IDS = "image_ids"
_FORMAT = "format"
_SOURCE = "source"
_CNN_WEIGHTS = "cnn_weights"
_LAYER = "layer"
_LAYOUT = "layout"
_IMAGE_SIZE = "image_size"
_CNN_KIND = "cnn_kind"  # optional: files from before the identity read as kind "unknown"
_CNN_SHA256 = "cnn_sha256"
_ATTRS = (_SOURCE, _CNN_WEIGHTS, _LAYER, _LAYOUT, _IMAGE_SIZE)
_LAYOUTS = (artifacts.LAYOUT_VECTOR, artifacts.LAYOUT_GRID)
_VECTOR_CHUNK_ROWS = 64
# Grid chunks of at most ~1 MiB (HDF5's default chunk cache): 5 images at 448, 8 at 224.
_GRID_CHUNK_BYTES = 1 << 20
_MAX_GRID_CHUNK_ROWS = 8
# Chunked grid files up to this size are read into memory; larger ones (COCO at 448 is
# ~25 GB) are read row by row as batches need them.
_IN_MEMORY_LIMIT = 2 << 30
_RERUN = "re-run 'vqa features'"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CNN_NAMES = {artifacts.CNN_KARPATHY: "Karpathy's Caffe VGG16 fc7 (vgg_feats.mat)",
              artifacts.CNN_KERAS_IMAGENET: "Keras' ImageNet VGG16",
              artifacts.CNN_LOCAL: "a local VGG16 weights file",
              artifacts.CNN_RANDOM: "random VGG16 weights",
              artifacts.CNN_UNKNOWN: "unrecorded VGG16 weights"}
# The --cnn-weights that computes features of each kind for a new image.
_CNN_FLAGS = {artifacts.CNN_KERAS_IMAGENET: f"--cnn-weights {artifacts.IMAGENET_WEIGHTS}",
              artifacts.CNN_LOCAL: "--cnn-weights with the .h5 file it was trained with",
              artifacts.CNN_RANDOM: f"--cnn-weights {artifacts.RANDOM_WEIGHTS}"}


# --------------------------------------------------------------------------- the CNN's identity
@dataclass(frozen=True)
class CNNIdentity:
    """Which VGG16 weights computed some features: a kind and, where there is a weights file, its SHA-256.

    Attributes:
        kind: one of ``vqa.artifacts.CNN_KINDS``: Karpathy's Caffe VGG16 (``vgg_feats.mat``), Keras'
            ImageNet VGG16, a local .h5 file, random weights, or unknown (not recorded).
        sha256: 64 lowercase hex digits of the weights file, or None (random and Karpathy's have no
            file here; Keras' file when it was not in Keras' cache; unknown).
    """

    kind: str = artifacts.CNN_UNKNOWN
    sha256: str | None = None

    @classmethod
    def from_record(cls, record: Mapping | None, *, source: Path | str) -> "CNNIdentity":
        """The identity a ``record()`` dict describes (None: unknown); InputError naming ``source`` if malformed."""
        if record is None:
            return cls()
        kind = record.get("kind") if isinstance(record, Mapping) else None
        sha256 = record.get("sha256") if isinstance(record, Mapping) else None
        if kind not in artifacts.CNN_KINDS or not (sha256 is None or _SHA256.fullmatch(str(sha256))):
            raise InputError(f"{source}: CNN identity {record!r} is not one of {', '.join(artifacts.CNN_KINDS)} "
                             "with an optional SHA-256 (64 hex digits); the file is damaged or from a newer vqa")
        return cls(kind, sha256)

    def record(self) -> dict:
        """``{"kind", "sha256"}``, as config.json stores it."""
        return {"kind": self.kind, "sha256": self.sha256}

    @property
    def name(self) -> str:
        """The weights in words ("Keras' ImageNet VGG16")."""
        return _CNN_NAMES[self.kind]

    def __str__(self) -> str:
        return self.name + (f" (SHA-256 {self.sha256[:12]}...)" if self.sha256 else "")


def check_cnn_pairing(trained: CNNIdentity, asked: CNNIdentity, *, model: Path | str, asked_by: str) -> None:
    """Refuse features of ``asked`` weights for a model trained on those of ``trained`` weights if they clearly differ.

    Allowed: an unknown identity on either side (older files and directories); ``asked`` random
    weights (tests and demos; `vqa.features` warns about them); Karpathy's Caffe VGG16 beside
    anything but random weights (the tutorial trains on it and asks with Keras' ImageNet VGG16, and a
    local file may be Caffe's weights converted); the same kind, with equal SHA-256s where both
    are known. Refused: the rest, e.g. a model trained on random-weight features asked with real
    weights, Keras' ImageNet VGG16 against another local file, two local files that differ.

    Args:
        trained: the identity the model's training features recorded (config.json).
        asked: the identity of the weights (or features file) offered now.
        model, asked_by: the model directory and what offers ``asked`` ("--cnn-weights imagenet",
            "features file f.h5"), for the message.
    Raises:
        InputError: one line naming both identities.
    """
    if artifacts.CNN_UNKNOWN in (trained.kind, asked.kind) or asked.kind == artifacts.CNN_RANDOM:
        return
    if artifacts.CNN_KARPATHY in (trained.kind, asked.kind) and trained.kind != artifacts.CNN_RANDOM:
        return
    if trained.kind == asked.kind and (None in (trained.sha256, asked.sha256) or trained.sha256 == asked.sha256):
        return
    flag = f" ({_CNN_FLAGS[trained.kind]})" if trained.kind in _CNN_FLAGS else ""
    raise InputError(f"{model}: trained on features of {trained}, but {asked_by} gives features of {asked}; "
                     f"its answers would be meaningless: it needs features of {trained.name}{flag}")


# --------------------------------------------------------------------------- layouts
def grid_size(image_size: int) -> int:
    """The side S of the ``block5_pool`` grid of a square image (448 -> 14, 224 -> 7).

    Args:
        image_size: side in pixels of the square image VGG16 sees.

    Returns:
        image_size // 32.

    Raises:
        InputError: ``image_size`` is not a multiple of 32 from 32 to 1024.
    """
    stride = artifacts.GRID_STRIDE
    valid = isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool)
    if not valid or not stride <= image_size <= MAX_GRID_IMAGE_SIZE or image_size % stride:
        raise InputError(f"--image-size must be a multiple of {stride} from {stride} to {MAX_GRID_IMAGE_SIZE}, "
                         f"got {image_size!r}; 448 gives the paper's 14 x 14 grid, 224 a 7 x 7 one")
    return int(image_size) // stride


def check_layout_and_size(layout: str, image_size: int) -> None:
    """Raise InputError for an unknown layout, a bad grid size, or fc7 vectors at a size other than 224."""
    if layout == artifacts.LAYOUT_GRID:
        grid_size(image_size)
    elif layout != artifacts.LAYOUT_VECTOR:
        raise InputError(f"unknown features layout {layout!r}; use {artifacts.LAYOUT_VECTOR!r} (fc7) "
                         f"or {artifacts.LAYOUT_GRID!r} (block5_pool)")
    elif image_size != artifacts.FC7_IMAGE_SIZE:
        raise InputError(f"fc7 vectors need {artifacts.FC7_IMAGE_SIZE} x {artifacts.FC7_IMAGE_SIZE} images, "
                         f"not {image_size!r}; --image-size applies to --grid features only")


def _row_format(layout: str, image_size: int) -> tuple[tuple[int, ...], np.dtype, str]:
    """(shape of one image's features, their dtype, the VGG16 layer) that ``vqa features`` writes in ``layout``."""
    check_layout_and_size(layout, image_size)
    if layout == artifacts.LAYOUT_GRID:
        side = grid_size(image_size)
        return (side, side, artifacts.GRID_CHANNELS), np.dtype(np.float16), GRID_LAYER
    return (artifacts.IMAGE_FEATURE_DIM,), np.dtype(np.float32), VECTOR_LAYER


def _chunk_rows(layout: str, row_shape: tuple[int, ...], dtype: np.dtype, num_rows: int | None) -> int:
    """Rows per HDF5 chunk: ~1 MiB for grids (few images per read), 64 vectors otherwise."""
    if layout == artifacts.LAYOUT_GRID:
        row_bytes = int(np.prod(row_shape)) * dtype.itemsize
        rows = max(1, min(_MAX_GRID_CHUNK_ROWS, _GRID_CHUNK_BYTES // row_bytes))
    else:
        rows = _VECTOR_CHUNK_ROWS
    return rows if num_rows is None else max(1, min(rows, num_rows))


# --------------------------------------------------------------------------- writing
class FeaturesWriter:
    """Appends rows to a features file being written; from `FeaturesFile.create`."""

    def __init__(self, path: Path, features: h5py.Dataset, image_ids: h5py.Dataset, *, resizable: bool):
        self.path = Path(path)
        self._features, self._image_ids, self._resizable = features, image_ids, resizable
        self.num_rows = 0

    @property
    def dtype(self) -> np.dtype:
        return self._features.dtype

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self._features.shape[1:])

    @property
    def layer(self) -> str:
        return str(self._features.file.attrs[_LAYER])

    def append(self, rows: np.ndarray, ids) -> None:
        """Add ``rows`` (n, *row_shape), cast to the file's dtype, with their image ids int (n,)."""
        rows = np.asarray(rows)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if rows.shape[1:] != self.row_shape:
            raise InputError(f"{self.path}: rows of shape {rows.shape[1:]} per image but the file holds "
                             f"{self.row_shape}; for a CNN's, build it with load_cnn(layout=..., image_size=...) "
                             "to match")
        if len(rows) != len(ids):
            raise InputError(f"{self.path}: {len(rows)} rows for {len(ids)} image ids")
        rows = rows.astype(self.dtype, copy=False)
        start, stop = self.num_rows, self.num_rows + len(ids)
        if self._resizable:
            self._features.resize(stop, axis=0)
            self._image_ids.resize(stop, axis=0)
        elif stop > self._features.shape[0]:
            raise InputError(f"{self.path}: {stop} rows for a features file created for {self._features.shape[0]}")
        self._features[start:stop] = rows
        self._image_ids[start:stop] = ids
        self.num_rows = stop


class FeaturesFile:
    """An image-features HDF5 file, opened for reading (attributes and shape; rows on demand).

    Attributes:
        path: the file.
        layout: "vector" or "grid".
        image_size: side of the square image VGG16 saw (224 for vectors).
        cnn_weights, source, layer: the file's attributes ("" when an old file lacks them).
        cnn_identity: which weights made the features (kind "unknown" when an old file lacks it).
        shape: the ``features`` dataset's shape, (N, D) or (N, S, S, 512).
        dtype: its dtype (float32 vectors, float16 grids).
        format_version: the file's format (1 for files written before it was recorded).
    """

    def __init__(self, path: Path, *, layout: str, image_size: int, cnn_weights: str, source: str, layer: str,
                 shape: tuple[int, ...], dtype: np.dtype, format_version: int,
                 cnn_identity: CNNIdentity = CNNIdentity()):
        self.path, self.layout, self.image_size = Path(path), layout, image_size
        self.cnn_weights, self.source, self.layer, self.cnn_identity = cnn_weights, source, layer, cnn_identity
        self.shape, self.dtype, self.format_version = shape, np.dtype(dtype), format_version

    # ----------------------------------------------------------------- writing
    @staticmethod
    def write(path: Path, features: np.ndarray, image_ids, *, layout: str = artifacts.LAYOUT_VECTOR,
              image_size: int = artifacts.FC7_IMAGE_SIZE, source: str = "images", cnn_weights: str = "random",
              cnn_identity: CNNIdentity = CNNIdentity()) -> None:
        """Write a whole features file at once, atomically.

        Args:
            path: the HDF5 file to (over)write.
            features: (N, D) vectors (stored float32; D is 4096 from VGG16, any D is kept) or
                (N, S, S, 512) grids (stored float16; S must be image_size / 32).
            image_ids: int (N,), distinct.
            layout, image_size, source, cnn_weights, cnn_identity: the file's attributes (see the module docstring).
        """
        features = np.asarray(features)
        row_shape, dtype, _ = _row_format(layout, image_size)
        if layout == artifacts.LAYOUT_VECTOR:
            row_shape = features.shape[1:] if features.ndim == 2 else row_shape
        if features.shape[1:] != row_shape:
            raise InputError(f"{path}: {layout} features must be (N, {', '.join(map(str, row_shape))}), "
                             f"got {features.shape}")
        ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
        if len(np.unique(ids)) != len(ids):
            raise InputError(f"{path}: image ids repeat; keep one row per image")
        with FeaturesFile.create(path, layout=layout, image_size=image_size, source=source, cnn_weights=cnn_weights,
                                 cnn_identity=cnn_identity, num_rows=len(ids), row_shape=row_shape) as writer:
            writer.append(features, ids)

    @staticmethod
    @contextmanager
    def create(path: Path, *, layout: str = artifacts.LAYOUT_VECTOR, image_size: int = artifacts.FC7_IMAGE_SIZE,
               source: str, cnn_weights: str, cnn_identity: CNNIdentity = CNNIdentity(), num_rows: int | None = None,
               row_shape: tuple[int, ...] | None = None) -> Iterator[FeaturesWriter]:
        """Yield a `FeaturesWriter` for a new file that appears at ``path`` only if the block succeeds.

        Args:
            path: the HDF5 file to (over)write.
            layout, image_size, source, cnn_weights, cnn_identity: the file's attributes.
            num_rows: the number of rows when known (fixed-size datasets), else None (resizable,
                grown by each ``append``, so memory does not grow with the number of images).
            row_shape: one vector's shape when not VGG16's (4096,) (vector layout only; for tests).

        Raises:
            InputError: a bad layout or size, or fewer rows appended than ``num_rows``.
        """
        shape, dtype, layer = _row_format(layout, image_size)
        if row_shape is not None and layout == artifacts.LAYOUT_VECTOR:
            shape = tuple(row_shape)
        chunk = _chunk_rows(layout, shape, dtype, num_rows)
        rows = 0 if num_rows is None else num_rows
        with atomic_path(Path(path)) as temporary, h5py.File(temporary, "w") as h5:
            features = h5.create_dataset(_FEATURES, shape=(rows, *shape), dtype=dtype, maxshape=(num_rows, *shape),
                                         chunks=(chunk, *shape))
            image_ids = h5.create_dataset(_IMAGE_IDS, shape=(rows,), dtype="int64", maxshape=(num_rows,))
            h5.attrs.update({_FORMAT: FORMAT_VERSION, _SOURCE: source, _CNN_WEIGHTS: cnn_weights, _LAYER: layer,
                             _LAYOUT: layout, _IMAGE_SIZE: int(image_size), _CNN_KIND: cnn_identity.kind,
                             _CNN_SHA256: cnn_identity.sha256 or ""})
            writer = FeaturesWriter(path, features, image_ids, resizable=num_rows is None)
            yield writer
            if num_rows is not None and writer.num_rows != num_rows:
                raise InputError(f"{path}: {writer.num_rows} rows written of the {num_rows} announced")

    # ----------------------------------------------------------------- reading
    @classmethod
    def open(cls, path: Path, *, layout: str | None = None) -> "FeaturesFile":
        """Read a features file's attributes and shape (no feature is read) and check them.

        Args:
            path: HDF5 file written by ``vqa features`` (or any earlier version of it).
            layout: "vector" or "grid" when the caller needs one: the other is a one-line
                InputError naming the command that makes the right file. None accepts either.

        Raises:
            InputError: no such file, not HDF5, a missing dataset or attribute, a wrong shape
                or dtype for the layout, or a newer format than this version reads.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: not found; run 'vqa features --images DIR --out {path}' "
                             f"(or --karpathy DIR) first")
        try:
            with h5py.File(path, "r") as h5:
                for name in (_FEATURES, _IMAGE_IDS):
                    if not isinstance(h5.get(name), h5py.Dataset):
                        raise InputError(f"{path}: no {name!r} dataset; not an image-features file, {_RERUN}")
                dataset, ids = h5[_FEATURES], h5[_IMAGE_IDS]
                shape, dtype = tuple(int(n) for n in dataset.shape), dataset.dtype
                ids_shape, ids_dtype = ids.shape, ids.dtype
                attrs = {name: h5.attrs[name] for name in (_FORMAT, *_ATTRS, _CNN_KIND, _CNN_SHA256)
                         if name in h5.attrs}
        except OSError as error:
            raise InputError(f"{path}: not an HDF5 image-features file ({error}); {_RERUN}") from None
        opened = cls(path, shape=shape, dtype=dtype, **_read_attrs(path, attrs, shape))
        opened._check(ids_shape, ids_dtype, layout)
        return opened

    @property
    def grid_size(self) -> int | None:
        """S for a grid file, None for vectors."""
        return self.shape[1] if self.layout == artifacts.LAYOUT_GRID else None

    @cached_property
    def image_ids(self) -> np.ndarray:
        """int64 (N,): the image id of each row."""
        with h5py.File(self.path, "r") as h5:
            return np.asarray(h5[_IMAGE_IDS][()], dtype=np.int64)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows, without copying the file when possible, and their image ids.

        A contiguous, uncompressed float32 (or, for grids, float16) ``features`` dataset is
        memory-mapped (the OS pages in only the rows batches touch). Otherwise vectors are read
        into memory as float32, and grids stay float16: read into memory up to 2 GiB, beyond
        that gathered from the file row by row (:class:`ChunkedFeatures`).

        Returns:
            (features float32 (N, D), or float16 (N, S, S, 512) for grids: cast batches to float32;
            image_ids int64 (N,)).
        """
        grid = self.layout == artifacts.LAYOUT_GRID
        with h5py.File(self.path, "r") as h5:
            dataset = h5[_FEATURES]
            offset = dataset.id.get_offset()
            # float16 is mapped only for grids: vector consumers get float32, as they always have.
            mappable = (offset is not None and dataset.chunks is None and dataset.compression is None
                        and (self.dtype == np.float32 or (grid and self.dtype == np.float16)))
            if mappable:
                features = np.memmap(self.path, dtype=self.dtype, mode="r", offset=offset, shape=self.shape)
            elif not grid:
                features = np.asarray(dataset[()], dtype=np.float32)
            elif dataset.nbytes <= _IN_MEMORY_LIMIT:
                features = dataset[()]
            else:
                features = ChunkedFeatures(self.path, self.shape, self.dtype)
        return features, self.image_ids

    def _check(self, ids_shape: tuple, ids_dtype: np.dtype, layout: str | None) -> None:
        """One-line InputErrors for a shape or dtype the layout does not allow, or the wrong layout."""
        path, shape = self.path, self.shape
        if layout not in (None, *_LAYOUTS):
            raise InputError(f"unknown features layout {layout!r}; use {artifacts.LAYOUT_VECTOR!r} or "
                             f"{artifacts.LAYOUT_GRID!r}")
        grid_shaped = len(shape) == 4 and shape[1] == shape[2] and shape[3] == artifacts.GRID_CHANNELS
        if (len(shape) != 2) if self.layout == artifacts.LAYOUT_VECTOR else not grid_shaped:
            raise InputError(f"{path}: {self.layout} features of shape {shape}, expected (N, D) for vectors or "
                             f"(N, S, S, {artifacts.GRID_CHANNELS}) for grids; {_RERUN}")
        if self.layout == artifacts.LAYOUT_GRID and shape[1] * artifacts.GRID_STRIDE != self.image_size:
            raise InputError(f"{path}: a {shape[1]}x{shape[2]} grid cannot come from {self.image_size}-pixel "
                             f"images (S = image_size / {artifacts.GRID_STRIDE}); {_RERUN}")
        if not np.issubdtype(self.dtype, np.floating):
            raise InputError(f"{path}: features of dtype {self.dtype}, expected floats; {_RERUN}")
        if len(ids_shape) != 1 or not np.issubdtype(ids_dtype, np.integer):
            raise InputError(f"{path}: image_ids of shape {ids_shape} and dtype {ids_dtype}, expected "
                             f"int64 (N,); {_RERUN}")
        if ids_shape[0] != shape[0]:
            raise InputError(f"{path}: {shape[0]} feature rows but {ids_shape[0]} image ids; {_RERUN}")
        if layout == artifacts.LAYOUT_GRID and self.layout == artifacts.LAYOUT_VECTOR:
            raise InputError(f"{path}: holds VGG16 fc7 vectors but this model needs grid features; "
                             "run 'vqa features --images DIR --grid --image-size 224 --out FILE.h5'")
        if layout == artifacts.LAYOUT_VECTOR and self.layout == artifacts.LAYOUT_GRID:
            raise InputError(f"{path}: holds VGG16 block5_pool grid features ({shape[1]}x{shape[2]}x{shape[3]}) "
                             "but this model needs fc7 vectors; run 'vqa features --images DIR --out FILE.h5' or "
                             "'vqa features --karpathy DIR --out FILE.h5'")


def _read_attrs(path: Path, attrs: dict, shape: tuple[int, ...]) -> dict:
    """The constructor's attribute arguments from the file's attrs, defaults for format-1 files without them."""
    version = int(attrs.get(_FORMAT, 1))
    if version > FORMAT_VERSION:
        raise InputError(f"{path}: features file format {version}, newer than the {FORMAT_VERSION} this vqa "
                         "reads; upgrade vqa")
    if _FORMAT in attrs:  # written by this module: every attribute is there
        missing = [name for name in _ATTRS if name not in attrs]
        if missing:
            raise InputError(f"{path}: no {missing[0]!r} attribute; the file is damaged, {_RERUN}")
    layout = str(attrs.get(_LAYOUT, artifacts.LAYOUT_VECTOR))
    if layout not in _LAYOUTS:
        raise InputError(f"{path}: unknown features layout {layout!r}; {_RERUN}")
    # fc7 is computed on 224 x 224 images; a grid without the attr tells its size by its side.
    implied = (artifacts.FC7_IMAGE_SIZE if layout == artifacts.LAYOUT_VECTOR or len(shape) < 2
               else shape[1] * artifacts.GRID_STRIDE)
    identity = None if _CNN_KIND not in attrs else {"kind": str(attrs[_CNN_KIND]),
                                                    "sha256": str(attrs.get(_CNN_SHA256, "")) or None}
    return {"layout": layout, "image_size": int(attrs.get(_IMAGE_SIZE, implied)), "format_version": version,
            "cnn_identity": CNNIdentity.from_record(identity, source=path),
            **{name: str(attrs.get(name, "")) for name in (_CNN_WEIGHTS, _SOURCE, _LAYER)}}


def load_features(path: Path, *, layout: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``FeaturesFile.open(path, layout=layout).load()``: (features, image_ids int64 (N,))."""
    return FeaturesFile.open(path, layout=layout).load()


class ChunkedFeatures:
    """A chunked features dataset too big for memory, read from the file as rows are asked for.

    It stands in for the array where callers only index rows: ``shape``, ``dtype``,
    ``ndim``, ``len()``, and ``features[rows]`` (int array, slice or int) -> ndarray of
    the file's dtype, in the order asked (repeats allowed). The file is opened on first
    use in each process; the object pickles as its path (for data-loading workers).
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype):
        self.path, self.shape, self.dtype = Path(path), tuple(shape), np.dtype(dtype)
        self._file, self._lock = None, threading.Lock()

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        dataset = self._dataset()
        if isinstance(index, (slice, int, np.integer)):
            return dataset[index]
        rows = np.asarray(index)
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)
        flat = np.where(rows < 0, rows + len(self), rows).reshape(-1)
        if flat.size == 0:
            return np.empty(rows.shape + self.shape[1:], self.dtype)
        # Each run of consecutive rows is one slice: h5py's own list indexing is ~50x slower
        # (measured: 64 random rows of 14 x 14 x 512 in 570 ms that way, 10 ms by slices).
        unique, inverse = np.unique(flat, return_inverse=True)
        runs = np.split(unique, np.flatnonzero(np.diff(unique) != 1) + 1)
        block = np.concatenate([dataset[run[0]:run[-1] + 1] for run in runs])
        return block[inverse].reshape(rows.shape + self.shape[1:])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(self._dataset()[()], dtype=dtype)

    def _dataset(self):
        with self._lock:
            if self._file is None:
                self._file = h5py.File(self.path, "r")
            return self._file[_FEATURES]

    def __getstate__(self) -> dict:
        return {"path": self.path, "shape": self.shape, "dtype": self.dtype}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["shape"], state["dtype"])
