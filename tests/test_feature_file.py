"""vqa.feature_file: the features file's writer and reader, round trips, old files and bad input."""

import pickle

import h5py
import numpy as np
import pytest
from helpers import grid_features, replace_dataset, set_attribute, write_features, write_grid

from vqa import feature_file
from vqa.errors import InputError
from vqa.feature_file import ChunkedFeatures, FeaturesFile, load_features


def write_raw(path, features, image_ids, *, chunks=None, **attrs):
    """A features file as older versions (or a damaged one) hold it, written by hand."""
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=features, chunks=chunks,
                         maxshape=(None, *np.shape(features)[1:]) if chunks else None)
        f["image_ids"] = image_ids
        f.attrs.update(attrs)


# --------------------------------------------------------------------------- round trips
def test_vector_file_round_trips_arrays_and_attributes(tmp_path):
    rows = np.random.default_rng(0).random((5, 4096), np.float32)
    FeaturesFile.write(tmp_path / "f.h5", rows, [9, 3, 7, 1, 5], source="karpathy", cnn_weights="imagenet")
    opened = FeaturesFile.open(tmp_path / "f.h5", layout="vector")
    assert (opened.layout, opened.image_size, opened.source, opened.cnn_weights, opened.layer, opened.format_version) == (
        "vector", 224, "karpathy", "imagenet", "fc2", 1)
    assert opened.shape == (5, 4096) and opened.dtype == np.float32 and opened.grid_size is None
    features, image_ids = opened.load()
    np.testing.assert_array_equal(features, rows)
    assert image_ids.dtype == np.int64 and image_ids.tolist() == [9, 3, 7, 1, 5]
    assert [p.name for p in tmp_path.iterdir()] == ["f.h5"]


def test_grid_file_round_trips_in_float16(tmp_path):
    grids = grid_features(num_images=4, side=3)
    FeaturesFile.write(tmp_path / "g.h5", grids, np.arange(4) + 10, layout="grid", image_size=96,
                       source="images", cnn_weights="random")
    opened = FeaturesFile.open(tmp_path / "g.h5", layout="grid")
    assert (opened.layout, opened.image_size, opened.layer, opened.grid_size) == ("grid", 96, "block5_pool", 3)
    features, image_ids = opened.load()
    assert features.dtype == np.float16 and features.shape == (4, 3, 3, 512)
    np.testing.assert_array_equal(features, grids)
    assert image_ids.tolist() == [10, 11, 12, 13]


def test_create_appends_batches_to_a_growing_file(tmp_path):
    rows = np.random.default_rng(1).random((7, 2, 2, 512)).astype(np.float32)
    path = tmp_path / "g.h5"
    with FeaturesFile.create(path, layout="grid", image_size=64, source="images", cnn_weights="random") as writer:
        for start in range(0, 7, 3):
            writer.append(rows[start:start + 3], np.arange(start, min(start + 3, 7)))
        assert not path.exists() and writer.num_rows == 7
    features, image_ids = load_features(path)
    np.testing.assert_array_equal(features, rows.astype(np.float16))
    assert image_ids.tolist() == list(range(7))
    with h5py.File(path) as h5:
        assert h5["features"].maxshape[0] is None and 1 <= h5["features"].chunks[0] <= 8


# --------------------------------------------------------------------------- interrupted writers
def test_an_interrupted_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.h5"
    write_features(path, np.ones((2, 8)), [1, 2])
    with pytest.raises(RuntimeError, match="disk full"):
        with FeaturesFile.create(path, source="images", cnn_weights="random") as writer:
            writer.append(np.zeros((3, 4096)), [1, 2, 3])
            raise RuntimeError("disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["f.h5"]
    assert load_features(path)[0].shape == (2, 8)
    with pytest.raises(InputError, match="2 rows written of the 3 announced"):
        with FeaturesFile.create(tmp_path / "short.h5", source="images", cnn_weights="random", num_rows=3) as writer:
            writer.append(np.zeros((2, 4096)), [1, 2])
    assert [p.name for p in tmp_path.iterdir()] == ["f.h5"]


@pytest.mark.parametrize("rows, ids, layout, message", [
    (np.zeros((2, 3, 3, 512)), [1, 2], "grid", r"grid features must be \(N, 2, 2, 512\)"),
    (np.zeros((2, 8, 2)), [1, 2], "vector", r"vector features must be \(N, 4096\)"),
    (np.zeros((2, 8)), [1, 1], "vector", "image ids repeat"),
])
def test_write_refuses_rows_that_do_not_fit_the_layout(tmp_path, rows, ids, layout, message):
    with pytest.raises(InputError, match=message):
        FeaturesFile.write(tmp_path / "f.h5", rows, ids, layout=layout, image_size=64 if layout == "grid" else 224)
    assert list(tmp_path.iterdir()) == []


def test_append_refuses_rows_of_another_shape(tmp_path):
    with pytest.raises(InputError, match=r"f.h5: rows of shape \(100,\) per image but the file holds \(4096,\)"):
        with FeaturesFile.create(tmp_path / "f.h5", source="images", cnn_weights="random") as writer:
            writer.append(np.zeros((2, 100)), [1, 2])
    with pytest.raises(InputError, match="2 rows for 3 image ids"):
        with FeaturesFile.create(tmp_path / "f.h5", source="images", cnn_weights="random", num_rows=2) as writer:
            writer.append(np.zeros((2, 4096)), [1, 2, 3])
    with pytest.raises(InputError, match="3 rows for a features file created for 2"):
        with FeaturesFile.create(tmp_path / "f.h5", source="images", cnn_weights="random", num_rows=2) as writer:
            writer.append(np.zeros((3, 4096)), [1, 2, 3])
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- reading: layouts in memory
@pytest.mark.parametrize("chunks", [None, (4, 8)])
def test_load_memory_maps_contiguous_vectors_and_reads_chunked_ones(tmp_path, chunks):
    features = np.arange(20 * 16, dtype=np.float32).reshape(20, 16)
    write_raw(tmp_path / "f.h5", features, np.arange(20) + 7, chunks=chunks)  # an older writer's layout
    loaded, ids = load_features(tmp_path / "f.h5")
    assert isinstance(loaded, np.memmap) == (chunks is None)
    np.testing.assert_array_equal(loaded[[3, 0, 19]], features[[3, 0, 19]])
    np.testing.assert_array_equal(ids, np.arange(20) + 7)


def test_load_memory_maps_contiguous_float16_grids(tmp_path):
    grids = grid_features()
    write_raw(tmp_path / "g.h5", grids.astype(np.float16), np.arange(6) + 100, layout="grid", image_size=64)
    loaded, ids = load_features(tmp_path / "g.h5", layout="grid")
    assert isinstance(loaded, np.memmap) and loaded.dtype == np.float16 and loaded.shape == (6, 2, 2, 512)
    np.testing.assert_array_equal(loaded[[4, 1, 4]], grids[[4, 1, 4]])
    np.testing.assert_array_equal(ids, np.arange(6) + 100)


@pytest.mark.parametrize("in_memory", [True, False], ids=["small: in memory", "large: row by row"])
def test_load_keeps_chunked_grids_float16(tmp_path, monkeypatch, in_memory):
    monkeypatch.setattr(feature_file, "_IN_MEMORY_LIMIT", 1 << 30 if in_memory else 0)
    grids = grid_features(num_images=10)
    write_grid(tmp_path / "g.h5", grids, np.arange(10))
    loaded, _ = load_features(tmp_path / "g.h5")
    assert isinstance(loaded, ChunkedFeatures) != in_memory
    assert loaded.dtype == np.float16 and loaded.shape == (10, 2, 2, 512) and len(loaded) == 10
    rows = np.array([7, 2, 7, 0, 9, 2])  # unsorted, repeated, across chunks: as a batch asks
    np.testing.assert_array_equal(loaded[rows], grids[rows])
    np.testing.assert_array_equal(loaded[rows.reshape(2, 3)], grids[rows.reshape(2, 3)])
    np.testing.assert_array_equal(loaded[np.array([], np.int64)], grids[:0])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(loaded))[[9, -1]], grids[[9, 9]])


def test_open_reads_attributes_only_and_old_files_get_defaults(tmp_path, monkeypatch):
    write_grid(tmp_path / "g.h5", grid_features(side=7), np.arange(6))
    write_raw(tmp_path / "old_grid.h5", grid_features(side=7).astype(np.float16), np.arange(6), layout="grid")
    write_raw(tmp_path / "v.h5", np.ones((4, 16), np.float32), np.arange(4), source="test", cnn_weights="random")
    write_raw(tmp_path / "bare.h5", np.ones((4, 16), np.float32), np.arange(4))  # old random features: no attrs
    monkeypatch.setattr(h5py.Dataset, "__getitem__", lambda *a: pytest.fail("read features"))
    grid = FeaturesFile.open(tmp_path / "g.h5")
    assert (grid.layout, grid.image_size, grid.cnn_weights, grid.source, grid.layer, grid.shape) == (
        "grid", 224, "random", "images", "block5_pool", (6, 7, 7, 512))
    assert FeaturesFile.open(tmp_path / "old_grid.h5").image_size == 224  # no image_size: the side tells it
    vector = FeaturesFile.open(tmp_path / "v.h5")
    assert (vector.layout, vector.image_size, vector.cnn_weights, vector.source, vector.layer, vector.shape,
            vector.format_version) == ("vector", 224, "random", "test", "", (4, 16), 1)
    bare = FeaturesFile.open(tmp_path / "bare.h5")
    assert (bare.layout, bare.image_size, bare.cnn_weights, bare.source) == ("vector", 224, "", "")


# --------------------------------------------------------------------------- reading: bad input
@pytest.mark.parametrize("have, need, words", [
    ("vector", "grid", "holds VGG16 fc7 vectors but this model needs grid features; "
                       "run 'vqa features --images DIR --grid --image-size 224 --out FILE.h5'"),
    ("grid", "vector", "holds VGG16 block5_pool grid features (2x2x512) but this model needs fc7 vectors; "
                       "run 'vqa features --images DIR --out FILE.h5' or 'vqa features --karpathy DIR --out FILE.h5'"),
])
def test_layout_mismatch_names_the_command(tmp_path, have, need, words):
    path = tmp_path / "f.h5"
    if have == "grid":
        write_grid(path, grid_features(), np.arange(6))
    else:
        write_raw(path, np.ones((6, 16), np.float32), np.arange(6))  # an old file: no layout attr
    assert load_features(path, layout=have)[0].shape[0] == 6
    with pytest.raises(InputError) as error:
        load_features(path, layout=need)
    assert str(error.value) == f"{path}: {words}"


def _without(name):
    def edit(h5):
        del h5[name]
    return edit




@pytest.mark.parametrize("edit, message", [
    (_without("features"), "no 'features' dataset; not an image-features file"),
    (_without("image_ids"), "no 'image_ids' dataset"),
    (set_attribute("layout"), "no 'layout' attribute; the file is damaged"),
    (set_attribute("cnn_weights"), "no 'cnn_weights' attribute"),
    (set_attribute("format", 2), "features file format 2, newer than the 1 this vqa reads; upgrade vqa"),
    (set_attribute("layout", "pyramid"), "unknown features layout 'pyramid'"),
    (set_attribute("image_size", 96), r"a 2x2 grid cannot come from 96-pixel images"),
    (replace_dataset("features", np.zeros((3, 2, 2, 64), np.float16)), r"grid features of shape \(3, 2, 2, 64\), expected"),
    (replace_dataset("features", np.zeros((3, 2, 2, 512), np.int32)), "features of dtype int32, expected floats"),
    (replace_dataset("image_ids", np.array(["a", "b", "c"], dtype=h5py.string_dtype())), "image_ids of shape"),
    (replace_dataset("image_ids", np.arange(4)), "3 feature rows but 4 image ids"),
])
def test_open_names_the_file_and_the_problem_in_one_line(tmp_path, edit, message):
    path = tmp_path / "g.h5"
    write_grid(path, grid_features(num_images=3), np.arange(3))
    with h5py.File(path, "a") as h5:
        edit(h5)
    with pytest.raises(InputError, match=message) as error:
        FeaturesFile.open(path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


def test_open_refuses_missing_and_non_hdf5_files(tmp_path):
    with pytest.raises(InputError, match="not found; run 'vqa features"):
        FeaturesFile.open(tmp_path / "missing.h5")
    (tmp_path / "f.h5").write_text("not hdf5")
    with pytest.raises(InputError, match="not an HDF5 image-features file"):
        FeaturesFile.open(tmp_path / "f.h5")


# --------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("image_size, side", [(32, 1), (64, 2), (224, 7), (448, 14), (1024, 32)])
def test_grid_size_is_image_size_over_32(image_size, side):
    assert feature_file.grid_size(image_size) == side


@pytest.mark.parametrize("image_size", [0, 16, 100, 225, 1056, -64, 64.0, True, "448"])
def test_grid_size_rejects_other_sizes_in_one_line(image_size):
    with pytest.raises(InputError) as error:
        feature_file.grid_size(image_size)
    assert "--image-size must be a multiple of 32 from 32 to 1024" in str(error.value)
    assert "\n" not in str(error.value)
