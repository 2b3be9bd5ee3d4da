"""A ready-to-train sample dataset: `vqa synth` -> `vqa features` -> `vqa prepare` in one call.

The one home of that chain for `vqa demo`, the tests' fixtures and the benchmarks
(`vqa.synthetic` only renders the scenes and writes them in the official formats). In the
data flow it comes after the stages it runs (`vqa.synthetic`, `vqa.features`,
`vqa.prepare`) and imports them; none of them imports it.

Image features come in three kinds, each its own file under the dataset's folder:

- ``"vector"``: VGG16 fc7 (random weights, nothing to download), ``features.h5``;
- ``"grid"``: VGG16 ``block5_pool`` at ``grid_image_size``, ``features_grid{size}.h5``;
- ``"random"``: ReLU of Gaussian noise in fc7's shape, ``features_random.h5`` (source
  ``"noise"``, no ``cnn_weights``), for runs where only the language matters (no VGG16
  at all, so it costs nothing).

When fc7 and a 224-pixel grid are both wanted, one VGG16 pass computes both: the grid is
the ``block5_pool`` output of the very network whose ``fc2`` is fc7, so the files equal
those of two separate `vqa features` runs, at half the CPU time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vqa import artifacts
from vqa.config import FEATURES_BATCH_SIZE, IMAGE_LAYOUTS, SYNTH_DISAGREEMENTS

VECTOR, GRID, RANDOM = artifacts.LAYOUT_VECTOR, artifacts.LAYOUT_GRID, "random"
FEATURE_KINDS = (VECTOR, GRID, RANDOM)


@dataclass(frozen=True)
class SampleDataset:
    """Where one sample dataset lives: the official files, the prepared files, the features files."""

    raw: Path  # `vqa synth` output (official JSON + images/)
    prepared: Path  # `vqa prepare` output
    features: dict[str, Path]  # feature kind ("vector", "grid", "random") -> its HDF5 file
    image_ids: dict[str, list[int]]  # split -> image ids, as `vqa synth` wrote them

    def features_for(self, model_kind: str) -> Path:
        """The features file model ``model_kind`` reads: the grid for a grid model, fc7 (or noise) otherwise."""
        if IMAGE_LAYOUTS[model_kind] == GRID:
            return self.features[GRID]
        return self.features.get(VECTOR) or self.features[RANDOM]


def build_sample_dataset(folder: Path, *, num_images: int, seed: int = 0, features: Sequence[str] = (VECTOR,),
                         grid_image_size: int = 224, num_answers: int = 1000, relations: bool = False,
                         max_objects: int | None = None, min_objects: int | None = None,
                         disagreement: str = SYNTH_DISAGREEMENTS[0],
                         batch_size: int = FEATURES_BATCH_SIZE, progress: bool = False) -> SampleDataset:
    """Generate ``num_images`` scenes with questions, extract their features and prepare them, under ``folder``.

    Args:
        folder: output folder; gets ``data/`` (official JSON, images), ``preprocessed/`` and the features files.
        num_images: scenes to render (80% train, 20% val; see `vqa.synthetic.generate_dataset`).
        seed: random seed of the scenes and questions.
        features: the feature kinds to write (see the module docstring).
        grid_image_size: image side for the ``"grid"`` kind (a multiple of 32).
        num_answers: K, the answer classes `vqa prepare` keeps.
        relations, max_objects, min_objects, disagreement: the scenes and human answers, as `vqa synth` takes them.
        batch_size: images per VGG16 call.
        progress: show progress bars (the demo does; tests and benchmarks do not).

    Returns:
        A SampleDataset with every path.
    """
    from vqa.prepare import prepare_dataset
    from vqa.synthetic import generate_dataset

    unknown = set(features) - set(FEATURE_KINDS)
    if unknown:
        raise ValueError(f"unknown feature kinds {sorted(unknown)}; choose from {FEATURE_KINDS}")
    folder = Path(folder)
    raw = folder / "data"
    summary = generate_dataset(raw, num_images=num_images, seed=seed, relations=relations,
                               max_objects=max_objects, min_objects=min_objects, disagreement=disagreement)
    paths = {kind: folder / _features_name(kind, grid_image_size) for kind in features}
    write_features(raw / artifacts.IMAGES_DIR, paths, grid_image_size=grid_image_size, batch_size=batch_size,
                   image_ids=sorted(i for ids in summary.image_ids.values() for i in ids), seed=seed)
    prepare_dataset(data_dir=raw, out_dir=folder / "preprocessed", num_answers=num_answers, progress=progress)
    return SampleDataset(raw, folder / "preprocessed", paths, dict(summary.image_ids))


def _features_name(kind: str, grid_image_size: int) -> str:
    """The file name of one feature kind."""
    return {VECTOR: "features.h5", GRID: f"features_grid{grid_image_size}.h5", RANDOM: "features_random.h5"}[kind]


def write_features(images: Path, paths: dict[str, Path], *, grid_image_size: int, batch_size: int,
                   image_ids: Sequence[int], seed: int = 0) -> None:
    """Write each requested features file (``paths``: kind -> file), VGG16 once per image where it can."""
    from vqa.features import extract_image_features

    if RANDOM in paths:
        write_random_features(paths[RANDOM], image_ids, seed=seed)
    if VECTOR in paths and GRID in paths and grid_image_size == artifacts.FC7_IMAGE_SIZE:
        extract_vector_and_grid(images, paths[VECTOR], paths[GRID], batch_size=batch_size)
        return
    if VECTOR in paths:
        extract_image_features(images, paths[VECTOR], cnn_weights="random", batch_size=batch_size)
    if GRID in paths:
        extract_image_features(images, paths[GRID], cnn_weights="random", batch_size=batch_size,
                               layout=artifacts.LAYOUT_GRID, image_size=grid_image_size)


def write_random_features(path: Path, image_ids: Sequence[int], *, seed: int = 0) -> None:
    """fc7-shaped features of ReLU'd Gaussian noise: sparse, non-negative, and blind to the image."""
    from vqa.feature_file import FeaturesFile

    rng = np.random.default_rng(seed)
    features = np.maximum(rng.normal(size=(len(image_ids), artifacts.IMAGE_FEATURE_DIM)), 0).astype(np.float32)
    FeaturesFile.write(path, features, image_ids, source="noise", cnn_weights="")


def extract_vector_and_grid(images: Path, vector_path: Path, grid_path: Path, *, batch_size: int = FEATURES_BATCH_SIZE) -> None:
    """fc7 and the 224-pixel ``block5_pool`` grid of every image from one random-weight VGG16 pass.

    The first `extract_image_features` call runs the two-output network and keeps each
    batch's grid; the second reads the same images in the same order and batches (the
    folder's sorted listing) and writes the kept grids instead of running VGG16 again.
    """
    import keras

    from vqa.features import GRID_LAYER, extract_image_features, load_cnn

    vgg = load_cnn("random")  # up to fc2; block5_pool is inside it
    both = keras.Model(vgg.input, [vgg.get_layer(GRID_LAYER).output, vgg.output])
    grids: list[np.ndarray] = []

    class _VectorKeepingGrid:
        def predict_on_batch(self, pixels):
            grid, vector = both.predict_on_batch(pixels)
            grids.append(np.asarray(grid))
            return vector

    class _KeptGrid:
        def predict_on_batch(self, pixels):
            grid = grids.pop(0)
            if len(grid) != len(pixels):
                raise RuntimeError("the second pass over the images saw other batches than the first")
            return grid

    extract_image_features(images, vector_path, cnn_weights="random", batch_size=batch_size,
                           cnn=_VectorKeepingGrid())
    extract_image_features(images, grid_path, cnn_weights="random", batch_size=batch_size, cnn=_KeptGrid(),
                           layout=artifacts.LAYOUT_GRID, image_size=artifacts.FC7_IMAGE_SIZE)
