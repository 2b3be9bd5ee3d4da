"""Tests for vqa.export / `vqa export`: SavedModels that TensorFlow Serving could load, checked in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vqa import artifacts
from vqa.cli import main
from vqa.export import ANSWER_MODEL_DIR, CNN_MODEL_DIR, EXPORT_JSON, MODEL_VERSION

# Runs in a new interpreter, as a SavedModel server would: TensorFlow only, no Keras model code, no vqa.
LOAD_AND_CALL = """
import sys, numpy as np, tensorflow as tf
out, inputs, result = sys.argv[1], np.load(sys.argv[2]), {}
answer = tf.saved_model.load(out + "/answer/1").signatures["serve"]
for name, value in answer(question=tf.constant(inputs["question"]),
                          image_features=tf.constant(inputs["image_features"])).items():
    result["answer_model/" + name] = value.numpy()
if "images" in inputs:
    cnn = tf.saved_model.load(out + "/cnn/1").signatures["serve"]
    result["cnn/image_features"] = cnn(images=tf.constant(inputs["images"]))["image_features"].numpy()
np.savez(sys.argv[3], **result)
"""


def call_in_fresh_process(out: Path, inputs: dict, tmp_path: Path) -> dict:
    np.savez(tmp_path / "inputs.npz", **inputs)
    run = subprocess.run([sys.executable, "-c", LOAD_AND_CALL, str(out), str(tmp_path / "inputs.npz"),
                          str(tmp_path / "outputs.npz")], capture_output=True, text=True, timeout=600,
                         env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-3000:]
    return dict(np.load(tmp_path / "outputs.npz"))


def model_inputs(predictor, rows: int) -> dict:
    rng = np.random.default_rng(0)
    questions = predictor.questions
    return {"question": rng.integers(0, len(questions.words), (rows, questions.max_question_length)).astype(np.int32),
            "image_features": rng.random((rows, *predictor.images.image_shape), dtype=np.float32)}


@pytest.mark.slow  # exports a TF SavedModel and reloads it: ~25 s
def test_export_answer_model_matches_keras(mlp_model_dir, predictor, tmp_path):
    out = tmp_path / "export"
    assert main(["export", "--model", str(mlp_model_dir), "--out", str(out)]) == 0
    assert (out / ANSWER_MODEL_DIR / MODEL_VERSION / "saved_model.pb").is_file()
    assert not (out / CNN_MODEL_DIR).exists()
    for name in (artifacts.VOCABULARY_JSON, artifacts.ANSWERS_JSON):
        assert json.loads((out / name).read_text()) == json.loads((mlp_model_dir / name).read_text())
    description = json.loads((out / EXPORT_JSON).read_text())
    assert description["models"]["answer"]["signature"] == "serve" and description["checkpoint"] == "last"
    assert set(description["models"]["answer"]["inputs"]) == {"question", "image_features"}
    inputs = model_inputs(predictor, 5)
    outputs = call_in_fresh_process(out, inputs, tmp_path)
    expected = predictor.answerer.outputs(inputs["question"], inputs["image_features"])["answer"]
    assert set(outputs) == {"answer_model/answer"}
    np.testing.assert_allclose(outputs["answer_model/answer"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_export_san_with_cnn_matches_keras_answers_attention_and_features(san_model_dir, san_predictor, tmp_path):
    out = tmp_path / "export"
    assert main(["export", "--model", str(san_model_dir), "--out", str(out), "--with-cnn",
                 "--cnn-weights", "random", "--checkpoint", "best"]) == 0
    inputs = model_inputs(san_predictor, 3)
    size = san_predictor.images.image_size
    inputs["images"] = np.random.default_rng(1).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    outputs = call_in_fresh_process(out, inputs, tmp_path)
    import keras

    best = keras.saving.load_model(san_model_dir / artifacts.BEST_MODEL_FILE)
    expected = best({"question": inputs["question"], "image_features": inputs["image_features"]}, training=False)
    np.testing.assert_allclose(outputs["answer_model/answer"], np.asarray(expected["answer"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs["answer_model/attention"], np.asarray(expected["attention"]), rtol=1e-5,
                               atol=1e-6)
    features = san_predictor.images.run_cnn(inputs["images"])
    np.testing.assert_allclose(outputs["cnn/image_features"], features, rtol=1e-5, atol=1e-5)
    description = json.loads((out / EXPORT_JSON).read_text())
    assert description["checkpoint"] == "best" and description["models"]["cnn"]["cnn_weights"] == "random"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("case, message", [
    ("non-empty-out", "already exists and is not empty"),
    ("not-a-model", "not a finished model directory"),
    ("no-best", "no best.keras"),
    ("missing-cnn-weights", "VGG16 weights file not found"),
])
def test_export_errors_are_one_line_and_write_nothing(case, message, mlp_model_dir, tmp_path, capsys):
    import shutil

    model, out = mlp_model_dir, tmp_path / "export"
    flags = []
    if case == "non-empty-out":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "not-a-model":
        model = tmp_path / "empty"
        model.mkdir()
    elif case == "no-best":
        model = tmp_path / "no_best"
        shutil.copytree(mlp_model_dir, model, ignore=shutil.ignore_patterns(artifacts.BEST_MODEL_FILE, "backup"))
        flags = ["--checkpoint", "best"]
    else:  # fails after the answer model was written to the staging folder
        flags = ["--with-cnn", "--cnn-weights", str(tmp_path / "vgg16.h5")]
    assert main(["export", "--model", str(model), "--out", str(out), *flags]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vqa export: error:") and message in err[0]
    if case == "non-empty-out":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    else:
        assert not out.exists()
    assert leftovers(tmp_path) == []  # no staging folder left behind
