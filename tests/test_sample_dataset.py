"""vqa.sample_dataset: one call from nothing to a prepared dataset with its features."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from vqa import artifacts
from vqa.feature_file import FeaturesFile
from vqa.features import extract_image_features
from vqa.sample_dataset import build_sample_dataset


@pytest.mark.slow  # three VGG16 builds and passes
def test_one_vgg16_pass_writes_the_same_files_as_two(tmp_path):
    dataset = build_sample_dataset(tmp_path / "both", num_images=6, seed=2, features=("vector", "grid"),
                                   num_answers=20, batch_size=4)
    assert (dataset.prepared / artifacts.PREPARED_H5).is_file()
    images = dataset.raw / artifacts.IMAGES_DIR
    extract_image_features(images, tmp_path / "fc7.h5", cnn_weights="random", batch_size=4)
    extract_image_features(images, tmp_path / "grid.h5", cnn_weights="random", batch_size=4,
                           layout=artifacts.LAYOUT_GRID, image_size=224)
    for kind, alone in (("vector", tmp_path / "fc7.h5"), ("grid", tmp_path / "grid.h5")):
        with h5py.File(dataset.features[kind]) as one_pass, h5py.File(alone) as separate:
            assert dict(one_pass.attrs) == dict(separate.attrs)
            np.testing.assert_array_equal(one_pass["image_ids"][()], separate["image_ids"][()])
            np.testing.assert_allclose(one_pass["features"][()].astype(np.float32),
                                       separate["features"][()].astype(np.float32), rtol=1e-3, atol=1e-3)
    assert dataset.features_for("san") == dataset.features["grid"]
    assert dataset.features_for("mlp") == dataset.features["vector"]


def test_random_features_cover_every_image_and_skip_vgg16(tmp_path):
    dataset = build_sample_dataset(tmp_path, num_images=5, seed=1, features=("random",), num_answers=10)
    noise = FeaturesFile.open(dataset.features_for("lstm"), layout=artifacts.LAYOUT_VECTOR)
    assert (noise.source, noise.cnn_weights, noise.layer, noise.image_size) == ("noise", "", "fc2", 224)
    features, ids = noise.load()
    assert features.shape == (len(ids), artifacts.IMAGE_FEATURE_DIM) and features.min() >= 0
    assert sorted(ids) == sorted(i for split in dataset.image_ids.values() for i in split)


def test_unknown_feature_kinds_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown feature kinds"):
        build_sample_dataset(tmp_path, num_images=2, features=("fc6",))
