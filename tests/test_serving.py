"""Tests for serving/app.py and `vqa serve`: the Flask API over a briefly trained model (random VGG16 weights).

The `app` and `client` fixtures live in conftest.py, as in the Flask tutorial.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO_ROOT, free_port, multipart, wait_for_health

import serving.app
from vqa.attention_figure import DEFAULT_ALPHA, upsample_attention
from vqa.cli import main
from vqa.errors import VQAError
from vqa.predict import answer_sentence

from serving.launch import SERVING_APP
from serving.app import create_app  # importable from the repository root, as gunicorn runs it (pytest pythonpath)

QUESTION = "What color is the circle?"


@pytest.fixture(scope="module")
def jpeg(synth_data) -> bytes:
    return synth_data.image.read_bytes()


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def form(image: bytes | None = None, question: str | None = QUESTION, top: str | None = None,
         field: str = "question") -> dict:
    data = {}
    if image is not None:
        data["image"] = (io.BytesIO(image), "image.jpg")
    if question is not None:
        data[field] = question
    if top is not None:
        data["top"] = top
    return data


# --------------------------------------------------------------------------- happy path
@pytest.mark.parametrize("field", ["question", "ques"])  # ques: the tutorial's app.py field name
def test_predict_returns_top_answers_and_message(client, predictor, jpeg, field):
    response = client.post("/predict", data=form(jpeg, "  What color is the circle? ", top="4", field=field))
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"question", "answers", "message"} and body["question"] == QUESTION
    expected = predictor.ask(jpeg, QUESTION, top=4)
    assert [a["answer"] for a in body["answers"]] == [a for a, _ in expected]
    np.testing.assert_allclose([a["probability"] for a in body["answers"]], [p for _, p in expected], rtol=1e-5)
    assert body["message"] == answer_sentence(QUESTION, *expected[0])


def test_top_defaults_to_setting_and_is_capped_at_k(client, app, predictor, jpeg):
    assert len(client.post("/predict", data=form(jpeg)).get_json()["answers"]) == app.config["VQA_TOP_K"] == 5
    capped = client.post("/predict", data=form(jpeg, top="50")).get_json()["answers"]
    assert len(capped) == min(50, len(predictor.answerer.answers))


def test_question_wins_over_ques_when_both_are_sent(client, jpeg):
    data = {**form(jpeg, QUESTION), "ques": "Is there a square?"}
    assert client.post("/predict", data=data).get_json()["question"] == QUESTION


def test_healthz_reports_the_model(client, predictor):
    body = client.get("/healthz").get_json()
    assert body["status"] == "ok" and body["model_loaded"] is True
    assert body["model"] == "mlp" and body["num_answers"] == len(predictor.answerer.answers)
    assert body["checkpoint"] == predictor.checkpoint == "last"
    assert {"vqa", "keras", "flask", "python"} <= set(body["versions"])


def test_index_page_is_self_contained(client):
    response = client.get("/")
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert 'name="image"' in page and 'name="question"' in page and "<style>" in page and "<script>" in page
    assert "http://" not in page and "https://" not in page  # no CDN: works offline


def test_debug_is_off(app):
    assert app.debug is False


def test_importing_the_app_loads_no_heavy_library():
    """gunicorn imports serving.app in its master; TensorFlow/spaCy load only in create_app."""
    code = ("import sys; import serving.app, serving.launch; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'spacy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- attention (a SAN)
@pytest.mark.parametrize("value", ["1", "true", "YES", " yes "])
def test_attention_on_adds_each_layers_map_over_the_grid(san_client, san_predictor, jpeg, value):
    response = san_client.post("/predict", data={**form(jpeg, top="3"), "attention": value})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    size = san_predictor.answerer.grid_size
    assert body["grid_size"] == size == 2
    assert len(body["attention"]) == 2 and all(len(layer) == size * size for layer in body["attention"])
    assert all(isinstance(weight, float) and weight >= 0 for layer in body["attention"] for weight in layer)
    np.testing.assert_allclose([sum(layer) for layer in body["attention"]], 1, atol=1e-5)
    answers, attention = san_predictor.ask_with_attention(jpeg, QUESTION, top=3)
    np.testing.assert_allclose(body["attention"], attention.reshape(2, -1), atol=1e-6)  # row-major
    assert [a["answer"] for a in body["answers"]] == [answer for answer, _ in answers]


@pytest.mark.parametrize("value", [None, "", "0", "false", "No"])
def test_attention_off_or_absent_answers_as_before(san_client, jpeg, value):
    data = form(jpeg, top="3") if value is None else {**form(jpeg, top="3"), "attention": value}
    body = san_client.post("/predict", data=data).get_json()
    assert set(body) == {"question", "answers", "message"}


@pytest.mark.parametrize("value", ["2", "on", "maybe", "1.0"])
def test_bad_attention_values_are_400(san_client, jpeg, value):
    response = san_client.post("/predict", data={**form(jpeg), "attention": value})
    assert response.status_code == 400 and "'attention' must be one of" in response.get_json()["error"]


def test_attention_from_a_model_without_it_is_400_naming_vqa_train_san(client, jpeg):
    response = client.post("/predict", data={**form(jpeg), "attention": "1"})
    assert response.status_code == 400
    assert "no attention" in response.get_json()["error"] and "vqa train san" in response.get_json()["error"]
    assert client.post("/predict", data={**form(jpeg), "attention": "0"}).status_code == 200


def test_healthz_reports_the_image_layout_and_attention(client, san_client):
    mlp, san = client.get("/healthz").get_json(), san_client.get("/healthz").get_json()
    assert (mlp["attention"], mlp["image_layout"], mlp["image_size"], mlp["grid_size"]) == (False, "vector", 224, None)
    assert (san["attention"], san["image_layout"], san["image_size"], san["grid_size"]) == (True, "grid", 64, 2)
    assert san["model"] == "san"


def test_index_page_draws_attention_only_for_a_model_with_attention(client, san_client):
    san, mlp = san_client.get("/").get_data(as_text=True), client.get("/").get_data(as_text=True)
    for page in (san, mlp):
        assert "function drawAttention" in page and "http://" not in page and "https://" not in page
    assert '<canvas id="overlay"' in san and 'name="attention" value="1"' in san and 'class="square"' in san
    assert "data.attention[data.attention.length - 1]" in san  # the last layer's map
    assert f"var ALPHA = {DEFAULT_ALPHA};" in san  # the opacity of `vqa ask --attention`
    assert '<canvas id="overlay"' not in mlp and 'name="attention"' not in mlp and 'class="square"' not in mlp


# --------------------------------------------------------------------------- errors
BAD_REQUESTS = {
    "no-image": (lambda jpeg: form(None), 400, "image"),
    "no-question": (lambda jpeg: form(jpeg, None), 400, "question"),
    "empty-image": (lambda jpeg: form(b""), 400, "empty"),
    "not-an-image": (lambda jpeg: form(b"GIF89 but not really"), 400, "image"),
    "truncated": (lambda jpeg: form(jpeg[: len(jpeg) // 2]), 400, "image"),
    "bomb-over-limit": (lambda jpeg: form(png_header(7000, 7000)), 400, "pixel"),
    "bomb-over-2x-limit": (lambda jpeg: form(png_header(12000, 12000)), 400, "image"),
    "empty-question": (lambda jpeg: form(jpeg, ""), 400, "question"),
    "empty-ques": (lambda jpeg: form(jpeg, "", field="ques"), 400, "question"),
    "other-field-name": (lambda jpeg: form(jpeg, QUESTION, field="q"), 400, "ques"),
    "blank-question": (lambda jpeg: form(jpeg, "   "), 400, "question"),
    "long-question": (lambda jpeg: form(jpeg, "why " * 76), 400, "300"),
    "top-zero": (lambda jpeg: form(jpeg, top="0"), 400, "top"),
    "top-51": (lambda jpeg: form(jpeg, top="51"), 400, "top"),
    "top-text": (lambda jpeg: form(jpeg, top="five"), 400, "top"),
    "top-float": (lambda jpeg: form(jpeg, top="2.5"), 400, "top"),
    "over-upload-limit": (lambda jpeg: form(b"\xff" * (1024 * 1024 + 1)), 413, "MB limit"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_predict_requests_get_json_errors(client, jpeg, name):
    make, status, word = BAD_REQUESTS[name]
    response = client.post("/predict", data=make(jpeg))
    assert response.status_code == status
    assert response.is_json and word in response.get_json()["error"]


@pytest.mark.parametrize("method, path, status", [
    ("get", "/predict", 405), ("put", "/predict", 405), ("post", "/healthz", 405), ("delete", "/", 405),
    ("get", "/nowhere", 404), ("post", "/predict/extra", 404),
])
def test_wrong_method_or_path_gets_json_errors(client, method, path, status):
    response = getattr(client, method)(path)
    assert response.status_code == status
    assert response.is_json and response.get_json()["error"]


def test_unexpected_failure_is_json_500_and_the_app_keeps_serving(client, predictor, jpeg, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(predictor, "ask", broken)
    response = client.post("/predict", data=form(jpeg))
    assert response.status_code == 500 and "boom" not in response.get_json()["error"]
    monkeypatch.undo()
    assert client.post("/predict", data=form(jpeg)).status_code == 200


# --------------------------------------------------------------------------- settings
def test_settings_precedence_mapping_over_environment_over_defaults(predictor, monkeypatch):
    monkeypatch.setenv("VQA_TOP_K", "7")
    monkeypatch.setenv("VQA_MAX_UPLOAD_MB", "2")
    app = create_app({"VQA_PREDICTOR": predictor, "VQA_TOP_K": 3})
    assert app.config["VQA_TOP_K"] == 3
    assert app.config["MAX_CONTENT_LENGTH"] == 2 * 1024 * 1024
    assert app.config["VQA_CNN_WEIGHTS"] == "imagenet"


class RecordingPredictor:
    """Stands in for vqa.predict.Predictor: records how the app built it."""

    built_with: dict = {}

    def __init__(self, model_dir, **kwargs):
        RecordingPredictor.built_with = {"model_dir": model_dir, **kwargs}
        self.checkpoint = kwargs["checkpoint"]

    def warm_up(self):
        pass

    def set_observer(self, observer):
        pass

    def info(self):
        return {"model": "mlp", "checkpoint": self.checkpoint}


@pytest.mark.parametrize("environment, config, checkpoint", [
    ({}, {}, "last"),
    ({"VQA_CHECKPOINT": "best"}, {}, "best"),
    ({"VQA_CHECKPOINT": "best"}, {"VQA_CHECKPOINT": "last"}, "last"),
])
def test_checkpoint_setting_reaches_the_predictor(environment, config, checkpoint, monkeypatch):
    monkeypatch.setattr(serving.app, "Predictor", RecordingPredictor)
    monkeypatch.delenv("VQA_CHECKPOINT", raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    app = create_app({"VQA_MODEL_DIR": "models/mlp", **config})
    assert RecordingPredictor.built_with["checkpoint"] == checkpoint
    assert app.extensions[serving.app.LIVE_KEY].predictor.checkpoint == checkpoint


@pytest.mark.parametrize("config, message", [
    ({"VQA_MODEL_DIR": None}, "VQA_MODEL_DIR"),
    ({"VQA_TOP_K": "0"}, "VQA_TOP_K"),
    ({"VQA_TOP_K": "many"}, "VQA_TOP_K"),
    ({"VQA_MAX_UPLOAD_MB": "-1"}, "VQA_MAX_UPLOAD_MB"),
    ({"VQA_CHECKPOINT": "first"}, "checkpoint must be one of last, best"),
    ({"VQA_MODEL_DIR": "no/such/dir"}, "not a finished model directory"),
])
def test_bad_settings_fail_at_start_up(config, message, mlp_model_dir, monkeypatch):
    monkeypatch.delenv("VQA_MODEL_DIR", raising=False)
    with pytest.raises(VQAError, match=message):
        create_app({"VQA_MODEL_DIR": str(mlp_model_dir), **config})


# --------------------------------------------------------------------------- vqa serve, before gunicorn
@pytest.fixture()
def exec_calls(monkeypatch) -> list:
    """Record `vqa serve`'s exec of gunicorn instead of replacing the test process."""
    calls = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    return calls


def test_vqa_serve_runs_the_documented_gunicorn_line_with_the_settings(mlp_model_dir, exec_calls, monkeypatch):
    monkeypatch.chdir(mlp_model_dir.parent)
    main(["serve", "--model", mlp_model_dir.name, "--host", "0.0.0.0", "--port", "5123", "--workers", "3",
          "--threads", "4", "--cnn-weights", "random", "--checkpoint", "best"])
    (path, argv, env), = exec_calls
    assert path == sys.executable and argv[:3] == [sys.executable, "-m", "gunicorn"]
    assert argv[3:] == ["-w", "3", "--threads", "4", "-b", "0.0.0.0:5123", "--timeout", "120", SERVING_APP]
    assert SERVING_APP == "serving.app:create_app()"
    assert env["VQA_MODEL_DIR"] == str(mlp_model_dir.resolve())  # absolute: gunicorn may chdir
    assert (env["VQA_CNN_WEIGHTS"], env["VQA_CHECKPOINT"]) == ("random", "best")


@pytest.mark.parametrize("flags, message", [
    (["--model", "{tmp}/nothing"], "not a finished model directory"),
    (["--model", "{no_best}", "--checkpoint", "best"], "no best.keras"),
    (["--checkpoint", "first"], "invalid choice"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--port", "70000"], "--port must be in 1..65535"),
    (["--cnn-weights", "{tmp}/vgg16.h5"], "VGG16 weights file not found"),
    (["--cnn-weights", "{tmp}/text.h5"], "not an HDF5 file"),
], ids=["no-model", "no-best", "bad-checkpoint", "workers", "threads", "port", "cnn-weights", "cnn-weights-not-h5"])
def test_vqa_serve_checks_before_starting_gunicorn(flags, message, mlp_model_dir, exec_calls, tmp_path, capsys):
    no_best = tmp_path / "no_best"
    (tmp_path / "text.h5").write_text("not weights")
    if "{no_best}" in flags:
        shutil.copytree(mlp_model_dir, no_best, ignore=shutil.ignore_patterns("best.keras", "backup"))
    args = {"--model": str(mlp_model_dir), "--cnn-weights": "random"}
    args.update(dict(zip(flags[::2], [f.format(tmp=tmp_path, no_best=no_best) for f in flags[1::2]])))
    try:
        status = main(["serve", *[x for pair in args.items() for x in pair]])
    except SystemExit as error:  # argparse's own usage error
        status = error.code
    assert status != 0 and exec_calls == []
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and (len(err) == 1 or "invalid choice" in message)


@pytest.mark.slow
def test_wheel_ships_the_app_and_its_templates(tmp_path):
    """A plain `pip install .` must carry serving/ (app + templates) beside vqa/, importable from anywhere."""
    pytest.importorskip("setuptools")
    source = tmp_path / "source"  # build from a copy: an in-tree build would leave build/ in the checkout
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / name, source / name)
    for name in ("src", "serving"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), "-q"], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel, = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"serving/__init__.py", "serving/app.py", "serving/launch.py", "serving/templates/index.html",
            "vqa/predict.py", "vqa/serve_config.py"} <= names
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    code = ("import serving.app, serving.launch, vqa; from pathlib import Path; "
            "print(Path(serving.app.__file__).parent.parent == Path(vqa.__file__).parent.parent, "
            "(Path(serving.app.__file__).parent / 'templates' / 'index.html').is_file())")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}  # the unpacked wheel, not this checkout
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "True"]


# --------------------------------------------------------------------------- a real server
def post_predict(base: str, image: bytes, question: str, top: int = 3, field: str = "question") -> tuple[int, dict]:
    body, content_type = multipart({field: question, "top": str(top)}, {"image": ("image.jpg", image)})
    request = urllib.request.Request(f"{base}/predict", data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_for_workers(log: Path, workers: int, timeout: float = 300) -> None:
    """Each gunicorn worker loads its own model; wait until every one said it is ready."""
    deadline = time.monotonic() + timeout
    while log.read_text().count("VQA model is loaded") < workers:
        assert time.monotonic() < deadline, f"not every worker became ready: {log.read_text()[-2000:]}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def server(san_model_dir, tmp_path_factory):
    """`vqa serve` (gunicorn on serving.app:create_app(), two workers of 8 threads, default batching and cache).

    The SAN on 64-pixel images: each worker builds VGG16's convolutions alone, not its 100M-weight fc6-fc7.
    """
    port = free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "vqa", "serve", "--model", str(san_model_dir), "--port", str(port),
               "--workers", "2", "--threads", "8", "--timeout", "300", "--cnn-weights", "random"]
    log = tmp_path_factory.mktemp("server") / "gunicorn.log"
    with log.open("w") as log_file:  # a file, not a pipe: a full pipe would block the server
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        health = wait_for_health(base, process, log)
        wait_for_workers(log, 2)
        yield base, health
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.mark.slow
def test_real_server_answers_multipart_requests(server, synth_data, jpeg, tmp_path):
    base, health = server
    assert health["model_loaded"] is True and health["model"] == "san" and health["checkpoint"] == "last"
    status, body = post_predict(base, jpeg, QUESTION)
    assert status == 200 and len(body["answers"]) == 3 and body["message"].startswith("We're ")
    assert post_predict(base, jpeg, QUESTION, field="ques") == (status, body)  # a tutorial client's request
    assert post_predict(base, b"not an image", QUESTION)[0] == 400
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{base}/nowhere", timeout=30)
    assert missing.value.code == 404 and "error" in json.loads(missing.value.read())
    if shutil.which("curl"):
        out = subprocess.run(["curl", "-sS", "-F", f"image=@{synth_data.image}", "-F", f"question={QUESTION}",
                              "-F", "top=3", f"{base}/predict"], capture_output=True, text=True, timeout=120)
        assert json.loads(out.stdout)["answers"] == body["answers"]


@pytest.mark.slow
def test_real_server_handles_50_concurrent_requests(server, synth_data):
    base, _ = server
    images = [p.read_bytes() for p in sorted((synth_data.root / "images" / "val2014").glob("*.jpg"))[:2]]
    questions = ["How many squares are there?", "What color is the triangle?"]
    cases = [(image, question) for image in images for question in questions]
    expected = {i: post_predict(base, *case) for i, case in enumerate(cases)}
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda i: (i % len(cases), post_predict(base, *cases[i % len(cases)])), range(50)))
    for case, (status, body) in results:
        assert status == 200, body
        assert [a["answer"] for a in body["answers"]] == [a["answer"] for a in expected[case][1]["answers"]]
        np.testing.assert_allclose([a["probability"] for a in body["answers"]],
                                   [a["probability"] for a in expected[case][1]["answers"]], rtol=1e-5)


@pytest.mark.slow
def test_real_server_metrics_add_up_across_workers(server, jpeg):
    """Two gunicorn workers answer; /metrics (any worker) counts every request of both (multiprocess mode)."""
    from prometheus_client.parser import text_string_to_metric_families

    base, _ = server

    def scrape() -> dict:
        with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            return {f.name: f for f in text_string_to_metric_families(response.read().decode())}

    def predicted_ok(families) -> float:
        return sum(s.value for s in families["vqa_requests"].samples
                   if s.name == "vqa_requests_total" and s.labels["route"] == "/predict" and s.labels["status"] == "200")

    def cache(families) -> tuple[float, float]:
        return tuple(sum(s.value for s in families[name].samples if s.name == f"{name}_total")
                     for name in ("vqa_feature_cache_hits", "vqa_feature_cache_misses"))

    first = scrape()
    before, (hits_before, misses_before) = predicted_ok(first), cache(first)
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda i: post_predict(base, jpeg, QUESTION)[0], range(24)))
    assert statuses == [200] * 24
    families = scrape()
    assert predicted_ok(families) - before == 24  # whichever worker answered, and whichever is scraped
    info = [s for s in families["vqa_model_info"].samples]
    assert info and info[0].labels["model"] == "san" and info[0].labels["checkpoint"] == "last"
    assert {"vqa_request_duration_seconds", "vqa_batch_size", "vqa_queue_depth", "vqa_feature_cache_hits",
            "vqa_feature_cache_misses"} <= set(families)
    hits, misses = cache(families)
    assert hits - hits_before + misses - misses_before == 24 and hits > hits_before  # one image, asked 24 times


# --------------------------------------------------------------------------- batching, cache, readiness, metrics
@pytest.fixture(scope="module")
def batched_app(san_model_dir):
    """The app building its own Predictor from the settings: batches of up to 4, a 1 MB feature cache.

    The SAN on 64-pixel images: the app builds VGG16's convolutions alone, not its 100M-weight fc6-fc7.
    """
    return create_app({"TESTING": True, "VQA_MODEL_DIR": str(san_model_dir), "VQA_CNN_WEIGHTS": "random",
                       "VQA_MAX_BATCH_SIZE": "4", "VQA_BATCH_TIMEOUT_MS": "200", "VQA_FEATURE_CACHE_MB": "1"})


def test_settings_reach_the_predictors_parts(batched_app):
    predictor = batched_app.extensions[serving.app.LIVE_KEY].predictor
    assert predictor.images.batcher.max_batch_size == predictor.answerer.batcher.max_batch_size == 4
    assert predictor.images.batcher.timeout_s == pytest.approx(0.2)
    assert predictor.images.cache.max_bytes == 1024 * 1024


def test_server_timing_says_cache_miss_then_hit(batched_app, synth_data):
    client = batched_app.test_client()
    image = sorted((synth_data.root / "images").rglob("*.jpg"))[6].read_bytes()  # none of the others below
    first = client.post("/predict", data=form(image, top="3"))
    second = client.post("/predict", data=form(image, "How many squares are there?", top="3"))
    assert first.status_code == second.status_code == 200
    assert first.headers["Server-Timing"].startswith('cache;desc="miss", decode;dur=')
    assert "vgg16;dur=" in first.headers["Server-Timing"] and 'desc="batch 1"' in first.headers["Server-Timing"]
    assert second.headers["Server-Timing"].startswith('cache;desc="hit", question;dur=')
    assert "vgg16" not in second.headers["Server-Timing"] and "total;dur=" in second.headers["Server-Timing"]


@pytest.mark.slow  # threads of HTTP requests through VGG16 batches: >10 s
def test_concurrent_requests_are_batched_and_equal_one_at_a_time(batched_app, san_predictor, synth_data):
    """Different images and questions at once, one of them not an image: 200s equal to sequential answers, one 400."""
    images = [p.read_bytes() for p in sorted((synth_data.root / "images").rglob("*.jpg"))[:6]]
    questions = ["How many squares are there?", "What color is the triangle?", "Is there a circle?"]
    cases = [(image, questions[i % 3]) for i, image in enumerate(images)] + [(b"GIF89 but not really", QUESTION)]
    barrier = threading.Barrier(len(cases))

    def send(case):
        client = batched_app.test_client()
        barrier.wait()
        response = client.post("/predict", data=form(case[0], case[1], top="3"))
        return response.status_code, response.get_json(), response.headers.get("Server-Timing", "")

    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        results = list(pool.map(send, cases))
    assert results[-1][0] == 400 and "image" in results[-1][1]["error"]
    batch_sizes = [int(n) for _, _, timing in results[:-1] for n in re.findall(r'desc="batch (\d+)"', timing)]
    assert max(batch_sizes) > 1  # requests met in a VGG16 or model call
    for (image, question), (status, body, _) in zip(cases, results):
        if image.startswith(b"GIF"):
            continue
        assert status == 200, body
        expected = san_predictor.ask(image, question, top=3)
        assert [a["answer"] for a in body["answers"]] == [a for a, _ in expected]
        np.testing.assert_allclose([a["probability"] for a in body["answers"]], [p for _, p in expected], rtol=1e-5)


def test_metrics_parse_and_count_requests_batches_and_cache(batched_app, jpeg):
    from prometheus_client.parser import text_string_to_metric_families

    client = batched_app.test_client()
    for question in ("What color is the circle?", "Is there a square?"):
        assert client.post("/predict", data=form(jpeg, question)).status_code == 200
    assert client.post("/predict", data=form(b"not an image")).status_code == 400
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    families = {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}
    requests = {(s.labels["route"], s.labels["status"]): s.value for s in families["vqa_requests"].samples
                if s.name == "vqa_requests_total"}
    assert requests[("/predict", "200")] >= 2 and requests[("/predict", "400")] >= 1
    assert ("/nowhere", "404") not in requests  # routes by pattern, not raw paths
    cache = {name: sum(s.value for s in families[name].samples if s.name == f"{name}_total") for name in
             ("vqa_feature_cache_hits", "vqa_feature_cache_misses")}
    assert cache["vqa_feature_cache_hits"] >= 1 and cache["vqa_feature_cache_misses"] >= 1
    batch_counts = {s.labels["stage"]: s.value for s in families["vqa_batch_size"].samples
                    if s.name == "vqa_batch_size_count"}
    assert batch_counts["image"] >= 1 and batch_counts["answer"] >= 2
    latency = [s for s in families["vqa_request_duration_seconds"].samples if s.name.endswith("_count")]
    assert any(s.labels["route"] == "/predict" and s.value >= 3 for s in latency)
    assert {s.labels["stage"] for s in families["vqa_queue_depth"].samples} >= {"image", "answer"}
    info, = families["vqa_model_info"].samples
    assert info.value == 1 and info.labels["model"] == "san" and info.labels["max_batch_size"] == "4"


class GatedPredictor:
    """The session's Predictor, whose warm-up waits for a gate (or fails): the app's loading states."""

    def __init__(self, inner, gate: threading.Event, error: Exception | None = None):
        self.inner, self.gate, self.error = inner, gate, error

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def set_observer(self, observer):
        pass  # the session Predictor keeps reporting to its own app

    def warm_up(self):
        self.gate.wait(60)
        if self.error is not None:
            raise self.error


def wait_until(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_readyz_is_503_while_loading_then_200(predictor, jpeg):
    gate = threading.Event()
    app = create_app({"TESTING": True, "VQA_PREDICTOR": GatedPredictor(predictor, gate), "VQA_BACKGROUND_LOAD": "1"})
    client = app.test_client()
    loading = client.get("/readyz")
    assert loading.status_code == 503 and loading.get_json() == {"status": "loading", "reason": "the model is loading"}
    assert client.get("/healthz").status_code == 200 and client.get("/healthz").get_json()["model_loaded"] is False
    busy = client.post("/predict", data=form(jpeg))
    assert busy.status_code == 503 and "not ready" in busy.get_json()["error"] and busy.headers["Retry-After"]
    gate.set()
    wait_until(lambda: client.get("/readyz").status_code == 200)
    assert client.get("/readyz").get_json() == {"status": "ready", "model_version": "1"}
    assert client.get("/healthz").get_json()["model_loaded"] is True
    assert client.post("/predict", data=form(jpeg)).status_code == 200


def test_readyz_is_503_with_the_reason_after_a_failed_load(predictor):
    gate = threading.Event()
    gate.set()
    broken = GatedPredictor(predictor, gate, error=RuntimeError("out of memory"))
    app = create_app({"TESTING": True, "VQA_PREDICTOR": broken, "VQA_BACKGROUND_LOAD": "1"})
    client = app.test_client()
    wait_until(lambda: client.get("/readyz").get_json()["status"] == "failed")
    response = client.get("/readyz")
    assert response.status_code == 503 and "out of memory" in response.get_json()["reason"]
    assert client.get("/healthz").status_code == 200  # alive, so an orchestrator reads the reason, not a crash


def test_readyz_is_200_once_create_app_returns(client):
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize("setting, value", [
    ("VQA_MAX_BATCH_SIZE", "0"), ("VQA_MAX_BATCH_SIZE", "many"), ("VQA_BATCH_TIMEOUT_MS", "-1"),
    ("VQA_FEATURE_CACHE_MB", "lots"), ("VQA_FEATURE_CACHE_MB", "-2"),
])
def test_bad_batching_settings_fail_at_start_up(setting, value, predictor, monkeypatch):
    monkeypatch.setenv(setting, value)
    with pytest.raises(VQAError, match=f"^{setting} must be"):
        create_app({"VQA_PREDICTOR": predictor})


@pytest.mark.parametrize("flags, environment, message", [
    (["--max-batch-size", "0"], {}, "--max-batch-size must be an integer >= 1"),
    (["--batch-timeout-ms", "-3"], {}, "--batch-timeout-ms must be a number >= 0"),
    (["--feature-cache-mb", "big"], {}, "--feature-cache-mb must be a number >= 0"),
    ([], {"VQA_MAX_BATCH_SIZE": "1.5"}, "VQA_MAX_BATCH_SIZE must be an integer >= 1"),
], ids=["batch", "timeout", "cache", "environment"])
def test_vqa_serve_checks_the_batching_knobs(flags, environment, message, mlp_model_dir, exec_calls, monkeypatch,
                                            capsys):
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    assert main(["serve", "--model", str(mlp_model_dir), "--cnn-weights", "random", *flags]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert exec_calls == [] and len(err) == 1 and message in err[0]


def test_vqa_serve_passes_the_knobs_and_a_metrics_folder(mlp_model_dir, exec_calls, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    main(["serve", "--model", str(mlp_model_dir), "--cnn-weights", "random", "--max-batch-size", "16",
          "--batch-timeout-ms", "5", "--feature-cache-mb", "0"])
    (_, argv, env), = exec_calls
    assert (env["VQA_MAX_BATCH_SIZE"], env["VQA_BATCH_TIMEOUT_MS"], env["VQA_FEATURE_CACHE_MB"]) == ("16", "5", "0")
    threads = int(argv[argv.index("--threads") + 1])  # threaded workers by default, so requests can meet,
    assert threads > int(env["VQA_MAX_QUEUE"]) > 0  # with threads to spare that answer a full worker's 503
    folder = Path(env["PROMETHEUS_MULTIPROC_DIR"])
    assert folder.is_dir() and not any(folder.iterdir())
    folder.rmdir()


# --------------------------------------------------------------------------- a real browser
CHROMIUM = Path("/usr/bin/chromium")  # Debian's chromium (apt-get install chromium): playwright downloads nothing


def browser_or_skip():
    """playwright's sync API, or a skip (counted, its reason listed by -ra) naming what is missing.

    Under VQA_REQUIRE_BROWSER=1, which .ci/run sets after installing chromium, a missing piece fails
    the test instead: there a skip would hide a broken install.
    """
    missing = None
    if not CHROMIUM.exists():
        missing = f"no browser at {CHROMIUM} (apt-get install chromium)"
    try:
        from playwright import sync_api
    except ImportError:
        missing = missing or "playwright is not installed (pip install -e '.[test]')"
    if missing and os.environ.get("VQA_REQUIRE_BROWSER") == "1":
        pytest.fail(f"VQA_REQUIRE_BROWSER=1 but {missing}")
    if missing:
        pytest.skip(missing)
    return sync_api


@pytest.fixture()
def san_server(san_app):
    """``san_app`` on a werkzeug server in a thread, on a free port of 127.0.0.1."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", free_port(), san_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


OVERLAY_PIXELS = """() => {
  const canvas = document.getElementById("overlay");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const alpha = [];
  for (let i = 3; i < data.length; i += 4) { alpha.push(data[i]); }
  const box = document.getElementById("preview").getBoundingClientRect();
  return {alpha: alpha, size: [canvas.width, canvas.height], image: [box.width, box.height]};
}"""
ANSWER_BARS = """() => Array.from(document.querySelectorAll("#bars .row")).map(row => ({
  answer: row.querySelector(".answer").textContent,
  width: row.querySelector(".bar").style.width,
  percent: row.querySelector(".pct").textContent}))"""


def ask_in_browser(sync_api, url: str, image: Path, question: str) -> tuple[dict, list[dict], dict]:
    """Upload ``image`` and ``question`` on the page at ``url`` in headless chromium; wait for the answer bars.

    Returns (the /predict JSON the page received, the bars it drew, the overlay canvas's alpha channel).
    """
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(url)
            page.set_input_files("#image", str(image))
            page.fill("#question", question)
            with page.expect_response(lambda response: response.url.endswith("/predict")) as reply:
                page.click("#submit")
            body = reply.value.json()
            page.wait_for_selector("#bars .row", timeout=10_000)
            page.wait_for_function("getComputedStyle(document.getElementById('overlay')).display === 'block'",
                                   timeout=10_000)
            return body, page.evaluate(ANSWER_BARS), page.evaluate(OVERLAY_PIXELS)
        finally:
            browser.close()


@pytest.mark.slow
def test_browser_shows_answer_bars_and_the_last_layers_attention(san_server, synth_data):
    sync_api = browser_or_skip()
    body, bars, pixels = ask_in_browser(sync_api, san_server, synth_data.image, QUESTION)
    # one bar per answer of the reply, in its order, as wide as its probability
    assert [bar["answer"] for bar in bars] == [a["answer"] for a in body["answers"]] and len(bars) >= 1
    percent = 100 * np.array([a["probability"] for a in body["answers"]])
    np.testing.assert_allclose([float(bar["width"].rstrip("%")) for bar in bars], percent, atol=0.051)
    np.testing.assert_allclose([float(bar["percent"].rstrip("%")) for bar in bars], percent, atol=0.0051)
    assert pixels["image"] == pixels["size"] == [256, 256]  # the image drawn square, as the CNN saw it
    alpha = np.array(pixels["alpha"], np.float64).reshape(256, 256)
    assert (alpha > 0).mean() > 0.5  # the overlay was painted
    size = body["grid_size"]
    last = upsample_attention(np.array(body["attention"][-1]).reshape(size, size), 256, 256)
    # the page's opacity: ALPHA times the peak-normalised map, upsampled as in `vqa ask --attention`
    np.testing.assert_allclose(alpha, 255 * DEFAULT_ALPHA * last / last.max(), atol=1.5)
