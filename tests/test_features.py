"""Tests for vqa.features: Karpathy .mat conversion, VGG16 extraction (fc7 and grid), image loading."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from vqa import artifacts, features
from vqa.cli import main
from vqa.errors import InputError, ResourceError
from vqa.feature_file import CNNIdentity, FeaturesFile

COCOIDS = [391895, 522418, 184613, 318219, 554625]


def write_karpathy(folder: Path, feats: np.ndarray, cocoids: list[int], *, v73: bool = False,
                   variable: str = "feats") -> Path:
    """Write a coco.zip-like folder: dataset.json and vgg_feats.mat (classic, or v7.3 = HDF5)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = [{"imgid": i, "cocoid": c, "filename": f"COCO_val2014_{c:012d}.jpg", "split": "val",
               "sentences": []} for i, c in enumerate(cocoids)]
    # Karpathy's list is not required to be in imgid order.
    (folder / "dataset.json").write_text(json.dumps({"images": images[::-1], "dataset": "coco"}))
    if v73:
        # MATLAB v7.3: HDF5 after a 512-byte header, matrices stored transposed.
        with h5py.File(folder / "vgg_feats.mat", "w", userblock_size=512) as mat:
            mat.create_dataset(variable, data=feats.T)
        with open(folder / "vgg_feats.mat", "r+b") as raw:
            raw.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64")
    else:
        scipy.io.savemat(folder / "vgg_feats.mat", {variable: feats})
    return folder


def random_feats(num_images: int, rows: int = 4096) -> np.ndarray:
    return np.random.default_rng(0).random((rows, num_images), dtype=np.float32)


def assert_nothing_written(folder: Path) -> None:
    """No output and no temp file left behind."""
    assert sorted(p.name for p in folder.iterdir()) == []


# --------------------------------------------------------------------------- Karpathy
@pytest.mark.parametrize("v73", [False, True], ids=["classic", "v7.3"])
def test_convert_karpathy_maps_column_i_to_cocoid(tmp_path, monkeypatch, v73):
    monkeypatch.setattr(features, "_KARPATHY_CHUNK", 2)  # several chunks, one partial
    feats = random_feats(len(COCOIDS))
    folder = write_karpathy(tmp_path / "coco", feats, COCOIDS, v73=v73)
    out = tmp_path / "out" / "features.h5"

    assert features.convert_karpathy(folder, out) == len(COCOIDS)

    with h5py.File(out, "r") as h5:
        assert h5["features"].dtype == np.float32 and h5["features"].shape == (5, 4096)
        assert h5["image_ids"].dtype == np.int64
        np.testing.assert_array_equal(h5["image_ids"][:], COCOIDS)
        np.testing.assert_array_equal(h5["features"][:], feats.T)
        assert h5.attrs["source"] == "karpathy" and h5.attrs["cnn_weights"] == "imagenet"
        assert h5.attrs["layout"] == "vector" and h5.attrs["image_size"] == 224 and h5.attrs["layer"] == "fc2"
    assert FeaturesFile.open(out).cnn_identity == CNNIdentity("karpathy-caffe-vgg16")  # Caffe's VGG16: no file here
    assert sorted(p.name for p in out.parent.iterdir()) == ["features.h5"]


def _no_feats(folder):
    write_karpathy(folder, random_feats(5), COCOIDS, variable="fc7")


def _no_feats_v73(folder):
    write_karpathy(folder, random_feats(5), COCOIDS, variable="fc7", v73=True)


def _wrong_rows(folder):
    write_karpathy(folder, random_feats(5, rows=4095), COCOIDS)


def _wrong_rows_v73(folder):
    write_karpathy(folder, random_feats(5, rows=1000), COCOIDS, v73=True)


def _too_few_columns(folder):
    write_karpathy(folder, random_feats(4), COCOIDS)


def _duplicate_cocoid(folder):
    write_karpathy(folder, random_feats(5), COCOIDS[:4] + [COCOIDS[0]])


def _missing_mat(folder):
    write_karpathy(folder, random_feats(5), COCOIDS)
    (folder / "vgg_feats.mat").unlink()


def _missing_json(folder):
    write_karpathy(folder, random_feats(5), COCOIDS)
    (folder / "dataset.json").unlink()


def _not_a_mat(folder):
    write_karpathy(folder, random_feats(5), COCOIDS)
    (folder / "vgg_feats.mat").write_bytes(b"<html>404 not found</html>" * 10)


@pytest.mark.parametrize("make, file_name, words", [
    (_missing_mat, "vgg_feats.mat", "not found"),
    (_missing_json, "dataset.json", "not found"),
    (_no_feats, "vgg_feats.mat", "no 'feats'"),
    (_no_feats_v73, "vgg_feats.mat", "no 'feats'"),
    (_wrong_rows, "vgg_feats.mat", "4095 x 5"),
    (_wrong_rows_v73, "vgg_feats.mat", "1000 x 5"),
    (_too_few_columns, "vgg_feats.mat", "4 columns but"),
    (_duplicate_cocoid, "dataset.json", f"cocoid {COCOIDS[0]} occurs more than once"),
    (_not_a_mat, "vgg_feats.mat", "not a readable MATLAB file"),
])
def test_convert_karpathy_errors_name_the_file_and_write_nothing(tmp_path, make, file_name, words):
    folder = tmp_path / "coco"
    folder.mkdir()
    make(folder)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(InputError) as error:
        features.convert_karpathy(folder, out_dir / "features.h5")
    message = str(error.value)
    assert file_name in message and words in message and "\n" not in message
    assert_nothing_written(out_dir)


def test_cli_features_karpathy(tmp_path, capsys):
    folder = write_karpathy(tmp_path / "coco", random_feats(5), COCOIDS)
    out = tmp_path / "f.h5"
    assert main(["features", "--karpathy", str(folder), "--out", str(out)]) == 0
    with h5py.File(out, "r") as h5:
        assert list(h5["image_ids"][:]) == COCOIDS
    capsys.readouterr()  # drop the progress bar

    (folder / "dataset.json").unlink()
    assert main(["features", "--karpathy", str(folder), "--out", str(tmp_path / "g.h5")]) == 1
    stderr = capsys.readouterr().err.strip()
    assert stderr.startswith("vqa features: error:") and "dataset.json" in stderr and "\n" not in stderr
    assert not (tmp_path / "g.h5").exists()


# --------------------------------------------------------------------------- images
def png_bytes(color, size=(40, 30), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(color, size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_load_image_resizes_to_rgb_224_from_path_or_bytes(tmp_path):
    data = png_bytes((200, 10, 30))
    (tmp_path / "a.png").write_bytes(data)
    from_path = features.load_image(tmp_path / "a.png")
    assert from_path.shape == (224, 224, 3) and from_path.dtype == np.float32
    np.testing.assert_array_equal(from_path, features.load_image(data))
    np.testing.assert_array_equal(from_path[100, 100], [200, 10, 30])
    grey = features.load_image(png_bytes(77, mode="L"))
    np.testing.assert_array_equal(grey[5, 5], [77, 77, 77])


def test_load_image_resizes_to_the_size_asked(tmp_path):
    data = png_bytes((200, 10, 30), size=(40, 30))
    image = features.load_image(data, size=64)
    assert image.shape == (64, 64, 3) and image.dtype == np.float32
    np.testing.assert_array_equal(image[32, 32], [200, 10, 30])


@pytest.mark.parametrize("data", [b"not an image at all", jpeg_bytes((1, 2, 3))[:300], b""],
                         ids=["garbage", "truncated", "empty"])
def test_load_image_rejects_bad_bytes(data):
    with pytest.raises(InputError, match="cannot read the image"):
        features.load_image(data)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_load_image_rejects_decompression_bombs(monkeypatch):
    monkeypatch.setattr(features, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InputError, match="pixel limit"):
        features.load_image(png_bytes((1, 2, 3), size=(40, 30)))  # 1200 pixels: over, below PIL's 2x
    with pytest.raises(InputError):
        features.load_image(png_bytes((1, 2, 3), size=(100, 100)))  # over PIL's own 2x error limit
    assert features.load_image(png_bytes((1, 2, 3), size=(30, 30))).shape == (224, 224, 3)


def test_preprocess_images_is_vgg16_caffe_style_and_copies():
    images = np.zeros((2, 224, 224, 3), dtype=np.float32)
    images[..., 0] = 255.0  # pure red, RGB
    before = images.copy()
    out = features.preprocess_images(images)
    np.testing.assert_array_equal(images, before)
    assert out.dtype == np.float32 and out.shape == images.shape
    np.testing.assert_allclose(out[0, 0, 0], [-103.939, -116.779, 255.0 - 123.68], rtol=1e-5)
    np.testing.assert_allclose(features.preprocess_images(images.astype(np.uint8)), out)


def test_find_images_parses_ids_and_skips_nameless(tmp_path, caplog):
    (tmp_path / "train2014").mkdir()
    (tmp_path / "train2014" / "COCO_train2014_000000391895.jpg").write_bytes(b"x")
    (tmp_path / "000000000042.PNG").write_bytes(b"x")
    (tmp_path / "holiday.jpg").write_bytes(b"x")
    (tmp_path / "COCO_val2014_000000000007.txt").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="vqa.features"):
        found = features.find_images(tmp_path)
    assert [image_id for image_id, _ in found] == [42, 391895]
    assert "holiday.jpg" in caplog.text and "1 image" in caplog.text


def test_find_images_rejects_duplicate_ids(tmp_path):
    (tmp_path / "COCO_train2014_000000000005.jpg").write_bytes(b"x")
    (tmp_path / "COCO_val2014_000000000005.jpg").write_bytes(b"x")
    with pytest.raises(InputError, match="image id 5 occurs more than once"):
        features.find_images(tmp_path)


# --------------------------------------------------------------------------- the CNN (slow: builds VGG16)
@pytest.fixture(scope="module")
def random_cnn():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        return features.load_cnn("random")


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    (folder / "val2014").mkdir(parents=True)
    (folder / "val2014" / "COCO_val2014_000000000003.jpg").write_bytes(jpeg_bytes((250, 20, 20)))
    (folder / "val2014" / "COCO_val2014_000000000001.jpg").write_bytes(jpeg_bytes((20, 20, 250)))
    (folder / "COCO_train2014_000000000002.png").write_bytes(png_bytes((20, 200, 20, 128), mode="RGBA"))
    (folder / "COCO_train2014_000000000009.jpg").write_bytes(jpeg_bytes((9, 9, 9))[:200])  # truncated
    return folder


@pytest.mark.slow
def test_extract_image_features_with_random_vgg16(tmp_path, image_folder, random_cnn, caplog):
    out = tmp_path / "features.h5"
    with caplog.at_level(logging.WARNING, logger="vqa.features"):
        written = features.extract_image_features(image_folder, out, cnn_weights="random", batch_size=2,
                                                  cnn=random_cnn)
    assert written == 3
    assert "skipped 1 unreadable" in caplog.text and "000000000009" in caplog.text
    with h5py.File(out, "r") as h5:
        assert h5["features"].shape == (3, 4096) and h5["features"].dtype == np.float32
        assert list(h5["image_ids"][:]) == [1, 2, 3]
        assert h5.attrs["source"] == "images" and h5.attrs["cnn_weights"] == "random"
        assert h5.attrs["layout"] == "vector" and h5.attrs["image_size"] == 224 and h5.attrs["layer"] == "fc2"
        rows = h5["features"][:]
    # Row for id 3 is fc2 of that image alone: batching and prefetching kept rows and ids together.
    alone = random_cnn.predict_on_batch(features.preprocess_images(
        features.load_image(image_folder / "val2014" / "COCO_val2014_000000000003.jpg")[None]))
    np.testing.assert_allclose(rows[2], np.asarray(alone)[0], rtol=1e-4, atol=1e-5)
    assert (rows >= 0).all() and not np.allclose(rows[0], rows[1])


@pytest.mark.slow
def test_cli_features_images_random_is_reproducible(tmp_path, image_folder, random_cnn):
    out = tmp_path / "cli.h5"
    with pytest.warns(UserWarning, match="RANDOM"):
        code = main(["features", "--images", str(image_folder), "--out", str(out), "--cnn-weights", "random"])
    assert code == 0
    expected = tmp_path / "fixture.h5"
    features.extract_image_features(image_folder, expected, cnn_weights="random", cnn=random_cnn)
    with h5py.File(out, "r") as a, h5py.File(expected, "r") as b:
        np.testing.assert_allclose(a["features"][:], b["features"][:], rtol=1e-4, atol=1e-6)


def test_extract_duplicate_ids_is_an_error_before_building_the_cnn(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "COCO_train2014_000000000005.jpg").write_bytes(jpeg_bytes((1, 2, 3)))
    (folder / "COCO_val2014_000000000005.jpg").write_bytes(jpeg_bytes((1, 2, 3)))
    monkeypatch.setattr(features, "load_cnn", lambda *a, **k: pytest.fail("built the CNN"))
    with pytest.raises(InputError, match="duplicate"):
        features.extract_image_features(folder, tmp_path / "out" / "f.h5", cnn_weights="random")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_extract_all_unreadable_is_an_error_and_writes_nothing(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "COCO_val2014_000000000001.jpg").write_bytes(b"broken")

    class NeverCalled:
        def predict_on_batch(self, x):
            raise AssertionError("no image should reach the CNN")

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(InputError, match="none of the 1 images could be read"):
        features.extract_image_features(folder, out_dir / "f.h5", cnn_weights="random", cnn=NeverCalled())
    assert_nothing_written(out_dir)


def test_imagenet_offline_says_how_to_pass_a_local_file(monkeypatch):
    import keras

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3]")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(ResourceError) as error:
        features.load_cnn("imagenet")
    message = str(error.value)
    assert "ImageNet VGG16 weights could not be downloaded" in message
    assert "--cnn-weights /path/vgg16_weights_tf_dim_ordering_tf_kernels.h5" in message
    assert "~/.keras/models/" in message and "\n" not in message


def test_cnn_weights_path_must_exist_and_be_vgg16(tmp_path):
    with pytest.raises(ResourceError, match="weights file not found"):
        features.load_cnn(str(tmp_path / "missing.h5"))
    bogus = tmp_path / "bogus.h5"
    with h5py.File(bogus, "w") as h5:
        h5.create_dataset("nothing", data=[1])
    with pytest.raises(ResourceError, match="not VGG16 weights"):
        features.load_cnn(str(bogus))


def test_importing_features_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, vqa.features, vqa.synthetic; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# --------------------------------------------------------------------------- grid features
GRID_TEST_SIZE = 64  # a 2 x 2 grid: VGG16 at 64 px runs in a blink


@pytest.mark.parametrize("layout, image_size, words", [
    ("vector", 448, "fc7 vectors need 224 x 224 images"),
    ("grid", 100, "multiple of 32"),
    ("pyramid", 224, "unknown features layout 'pyramid'"),
])
def test_bad_layouts_fail_before_anything_is_built(tmp_path, monkeypatch, image_folder, layout, image_size, words):
    import keras

    monkeypatch.setattr(keras.applications, "VGG16", lambda *a, **k: pytest.fail("built VGG16"))
    with pytest.raises(InputError, match=words):
        features.load_cnn("random", layout=layout, image_size=image_size)
    with pytest.raises(InputError, match=words):
        features.extract_image_features(image_folder, tmp_path / "out" / "f.h5", cnn_weights="random",
                                        layout=layout, image_size=image_size)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, words", [
    (["--image-size", "224"], "--image-size applies to --grid only"),
    (["--grid", "--image-size", "100"], "--image-size must be a multiple of 32"),
    (["--grid", "--image-size", "2048"], "--image-size must be a multiple of 32"),
])
def test_cli_features_image_size_errors(tmp_path, image_folder, monkeypatch, capsys, flags, words):
    monkeypatch.setattr(features, "load_cnn", lambda *a, **k: pytest.fail("built the CNN"))
    out = tmp_path / "out" / "f.h5"
    assert main(["features", "--images", str(image_folder), "--out", str(out), *flags]) == 1
    stderr = capsys.readouterr().err.strip()
    assert stderr.startswith("vqa features: error:") and words in stderr and "\n" not in stderr
    assert not out.parent.exists()


def test_cli_features_grid_needs_images(tmp_path, capsys):
    folder = write_karpathy(tmp_path / "coco", random_feats(5), COCOIDS)
    assert main(["features", "--karpathy", str(folder), "--grid", "--out", str(tmp_path / "f.h5")]) == 1
    assert "--grid needs --images" in capsys.readouterr().err
    assert not (tmp_path / "f.h5").exists()


def test_extract_rejects_a_cnn_of_another_shape_and_writes_nothing(tmp_path, image_folder):
    class Fc7Shaped:
        def predict_on_batch(self, x):
            return np.zeros((len(x), 4096), np.float32)

    out_dir = tmp_path / "out"
    with pytest.raises(InputError, match=r"shape \(4096,\) per image but the file holds \(2, 2, 512\)"):
        features.extract_image_features(image_folder, out_dir / "f.h5", cnn=Fc7Shaped(), layout="grid",
                                        image_size=GRID_TEST_SIZE)
    assert_nothing_written(out_dir)


@pytest.fixture(scope="module")
def random_grid_cnn():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        return features.load_cnn("random", layout="grid", image_size=GRID_TEST_SIZE)


def conv_weights(model) -> dict[str, list[np.ndarray]]:
    return {layer.name: layer.get_weights() for layer in model.layers if "conv" in layer.name}


def assert_same_convolutions(grid_cnn, fc7_cnn) -> None:
    grid, fc7 = conv_weights(grid_cnn), conv_weights(fc7_cnn)
    assert len(grid) == 13 and set(grid) <= set(fc7)
    for name, (kernel, bias) in grid.items():
        np.testing.assert_array_equal(kernel, fc7[name][0], err_msg=name)
        np.testing.assert_array_equal(bias, fc7[name][1], err_msg=name)


@pytest.mark.slow
def test_random_grid_cnn_has_the_fc7_cnns_convolutions(random_grid_cnn, random_cnn):
    assert random_grid_cnn.output_shape == (None, 2, 2, 512)
    assert random_grid_cnn.layers[-1].name == "block5_pool"
    assert_same_convolutions(random_grid_cnn, random_cnn)


# --------------------------------------------------------------------------- a real weights file
@pytest.fixture(scope="module")
def vgg16_weights_file(tmp_path_factory):
    """(path, model): a full VGG16 with Keras' random initial weights and the HDF5 file Keras saved it to.

    The file is in Keras 2's HDF5 layout, as vgg16_weights_tf_dim_ordering_tf_kernels.h5 is, and has its name.
    """
    import keras

    keras.utils.set_random_seed(1)
    vgg = keras.applications.VGG16(weights=None, include_top=True)
    path = tmp_path_factory.mktemp("vgg16") / features.IMAGENET_WEIGHTS_FILE
    vgg.save(path)  # the .h5 suffix: Keras' legacy HDF5 format, what `--cnn-weights FILE.h5` reads
    return path, vgg


def readable_images(folder: Path, size: int = artifacts.FC7_IMAGE_SIZE) -> np.ndarray:
    """The readable images of ``image_folder`` in image-id order (1, 2, 3), preprocessed for VGG16."""
    names = ["val2014/COCO_val2014_000000000001.jpg", "COCO_train2014_000000000002.png",
             "val2014/COCO_val2014_000000000003.jpg"]
    return features.preprocess_images(np.stack([features.load_image(folder / name, size=size) for name in names]))


@pytest.mark.slow
def test_cli_features_reads_a_real_vgg16_weights_file(tmp_path, image_folder, vgg16_weights_file):
    import keras

    path, vgg = vgg16_weights_file
    out = tmp_path / "fc7.h5"
    assert main(["features", "--images", str(image_folder), "--out", str(out), "--cnn-weights", str(path),
                 "--batch-size", "2"]) == 0
    with h5py.File(out, "r") as h5:
        rows, ids, weights_attr = h5["features"][:], list(h5["image_ids"][:]), h5.attrs["cnn_weights"]
    expected = np.asarray(keras.Model(vgg.input, vgg.get_layer("fc2").output).predict_on_batch(
        readable_images(image_folder)))
    assert ids == [1, 2, 3] and weights_attr == str(path.resolve())
    assert np.abs(expected).max() > 0 and not np.allclose(expected[0], expected[2])  # the check can fail
    np.testing.assert_allclose(rows, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


@pytest.mark.slow
def test_grid_cnn_from_a_real_weights_file_runs_the_files_convolutions(image_folder, vgg16_weights_file):
    import keras

    path, vgg = vgg16_weights_file
    grid_cnn = features.load_cnn(str(path), layout="grid", image_size=GRID_TEST_SIZE)
    # The in-memory model's own conv layers, applied to a 64-pixel input: convolutions take any size.
    x = inputs = keras.Input((GRID_TEST_SIZE, GRID_TEST_SIZE, 3))
    for layer in vgg.layers[1:vgg.layers.index(vgg.get_layer("block5_pool")) + 1]:
        x = layer(x)
    images = readable_images(image_folder, size=GRID_TEST_SIZE)
    expected = np.asarray(keras.Model(inputs, x).predict_on_batch(images))
    assert grid_cnn.output_shape == (None, 2, 2, 512) and np.abs(expected).max() > 0
    np.testing.assert_allclose(np.asarray(grid_cnn.predict_on_batch(images)), expected, rtol=1e-4,
                               atol=1e-5 * np.abs(expected).max())


def wrong_shapes_h5(path: Path) -> Path:
    """An HDF5 weights file with as many weighted layers as VGG16 (16), all of the wrong shapes."""
    import keras

    model = keras.Sequential([keras.Input((2,)), *[keras.layers.Dense(2) for _ in range(16)]])
    model.save(path)
    return path


@pytest.mark.parametrize("name, words", [
    ("vgg16.h5", "not an HDF5 file"),
    ("tiny.h5", "not VGG16 weights with the top (Shape mismatch in layer #0 (named block1_conv1)"),
    ("vgg16.bin", "must be an HDF5 file ending in .h5"),
], ids=["not-hdf5", "wrong-shapes", "suffix"])
def test_cli_features_rejects_a_file_that_is_not_vgg16_weights_in_one_line(tmp_path, image_folder, capsys,
                                                                           monkeypatch, name, words):
    import keras

    path = tmp_path / name
    if name == "tiny.h5":
        wrong_shapes_h5(path)
    else:  # rejected before VGG16's 138M weights are built
        path.write_text("not an HDF5 file\n")
        monkeypatch.setattr(keras.applications, "VGG16", lambda *a, **k: pytest.fail("built VGG16"))
    out = tmp_path / "out" / "f.h5"
    for flags in ([], ["--grid", "--image-size", "32"]):
        assert main(["features", "--images", str(image_folder), "--out", str(out), "--cnn-weights", str(path),
                     *flags]) == 1
        stderr = capsys.readouterr().err.strip()
        assert stderr.startswith(f"vqa features: error: {path}: ") and words in stderr and "\n" not in stderr
        assert not out.parent.exists()


@pytest.mark.slow
def test_cli_features_grid_writes_float16_block5_pool(tmp_path, image_folder, random_grid_cnn, caplog):
    out = tmp_path / "grid.h5"
    with pytest.warns(UserWarning, match="RANDOM"), caplog.at_level(logging.WARNING, logger="vqa.features"):
        code = main(["features", "--images", str(image_folder), "--grid", "--image-size", str(GRID_TEST_SIZE),
                     "--out", str(out), "--cnn-weights", "random", "--batch-size", "2"])
    assert code == 0
    assert "skipped 1 unreadable" in caplog.text and "000000000009" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.h5", "images"]
    with h5py.File(out, "r") as h5:
        dataset = h5["features"]
        assert dataset.shape == (3, 2, 2, 512) and dataset.dtype == np.float16
        assert dataset.maxshape[0] is None and dataset.chunks[1:] == (2, 2, 512) and 1 <= dataset.chunks[0] <= 8
        assert h5["image_ids"].dtype == np.int64 and list(h5["image_ids"][:]) == [1, 2, 3]
        assert dict(h5.attrs) == {"format": 1, "source": "images", "cnn_weights": "random", "layout": "grid",
                                  "image_size": GRID_TEST_SIZE, "layer": "block5_pool", "cnn_kind": "random",
                                  "cnn_sha256": ""}
        rows = dataset[:]
    # The row of id 3 is the grid CNN applied to that image alone, up to float16 rounding.
    image = features.load_image(image_folder / "val2014" / "COCO_val2014_000000000003.jpg", size=GRID_TEST_SIZE)
    alone = np.asarray(random_grid_cnn.predict_on_batch(features.preprocess_images(image[None])))[0]
    np.testing.assert_allclose(rows[2].astype(np.float32), alone, rtol=2e-3, atol=1e-3 * np.abs(alone).max())
    assert np.abs(alone).max() > 0 and not np.allclose(rows[0], rows[1])
