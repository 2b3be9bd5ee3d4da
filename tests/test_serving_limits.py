"""Bounded waits, request ids and the JSON log of serving/app.py, over the session's Predictor.

The Predictor is the session's (random VGG16 weights, no batching, no cache); each test gives
it its own Admission for the test's duration and an app of its own that it reports to.
"""

from __future__ import annotations

import io
import json
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

import serving.app
from serving.app import create_app
from vqa.batching import Admission
from vqa.cli import main
from vqa.errors import VQAError

QUESTION = "What color is the circle?"


@pytest.fixture(scope="module")
def jpeg(synth_data) -> bytes:
    return synth_data.image.read_bytes()


def form(image: bytes) -> dict:
    return {"image": (io.BytesIO(image), "image.jpg"), "question": QUESTION}


def limited_app(predictor, monkeypatch, *, max_queue: int = 0, timeout_s: float = 0.0, **config):
    """An app over the session Predictor with these bounds (restored after the test)."""
    monkeypatch.setattr(predictor, "admission", Admission(max_queue, timeout_s))
    return create_app({"TESTING": True, "VQA_PREDICTOR": predictor, **config})


def samples(app, name: str) -> dict:
    """{labels as a sorted tuple: value} of one metric's samples named ``name``."""
    text = app.test_client().get("/metrics").get_data(as_text=True)
    return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name}


# --------------------------------------------------------------------------- bounded waits
def test_a_request_beyond_max_queue_is_503_at_once_with_retry_after(predictor, jpeg, monkeypatch):
    app = limited_app(predictor, monkeypatch, max_queue=1, timeout_s=2.0)
    with predictor.admission.admit():  # one request inside already
        started = time.perf_counter()
        response = app.test_client().post("/predict", data=form(jpeg))
        assert time.perf_counter() - started < 1.0
    assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    assert "max_queue" in response.get_json()["error"] and response.headers["X-Request-ID"]
    assert samples(app, "vqa_shed_requests_total") == {(): 1.0}
    assert app.test_client().post("/predict", data=form(jpeg)).status_code == 200  # room again


def test_a_request_that_waits_past_the_timeout_is_503_and_counted(predictor, jpeg, monkeypatch):
    """One request holds VGG16 (a gated call) past its deadline; the next gives up waiting after 0.3 s,
    and the first, out of time, is refused its model call; then the server answers again."""
    app = limited_app(predictor, monkeypatch, timeout_s=0.3)
    batcher, gate, entered = predictor.images.batcher, threading.Event(), threading.Event()
    run_batch = batcher.run_batch

    def gated(items):
        entered.set()
        assert gate.wait(30)
        return run_batch(items)

    monkeypatch.setattr(batcher, "run_batch", gated)
    first = {}
    holder = threading.Thread(target=lambda: first.update(response=app.test_client().post("/predict",
                                                                                          data=form(jpeg))))
    holder.start()
    assert entered.wait(30)
    started = time.perf_counter()
    response = app.test_client().post("/predict", data=form(jpeg))
    waited = time.perf_counter() - started
    gate.set()
    holder.join(timeout=30)
    assert not holder.is_alive()
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert "timed out waiting for its image batch" in response.get_json()["error"] and 0.25 < waited < 5
    assert first["response"].status_code == 503
    assert "timed out waiting for its answer batch" in first["response"].get_json()["error"]
    assert samples(app, "vqa_request_timeouts_total") == {(("stage", "image"),): 1.0, (("stage", "answer"),): 1.0}
    queue_counts = samples(app, "vqa_queue_duration_seconds_count")
    assert queue_counts[(("stage", "image"),)] == 2 and queue_counts[(("stage", "answer"),)] == 1
    monkeypatch.setattr(predictor, "admission", Admission())  # 0.3 s is less than one VGG16 call on a busy CPU
    assert app.test_client().post("/predict", data=form(jpeg)).status_code == 200  # nothing is left stuck


@pytest.mark.parametrize("config, message", [
    ({"VQA_MAX_QUEUE": "-1"}, "VQA_MAX_QUEUE must be an integer >= 0, got '-1'"),
    ({"VQA_MAX_QUEUE": "2.5"}, "VQA_MAX_QUEUE must be an integer >= 0, got '2.5'"),
    ({"VQA_REQUEST_TIMEOUT_MS": "soon"}, "VQA_REQUEST_TIMEOUT_MS must be a number >= 0, got 'soon'"),
    ({"VQA_REQUEST_TIMEOUT_MS": "inf"}, "VQA_REQUEST_TIMEOUT_MS must be a number >= 0, got 'inf'"),
    ({"VQA_LOG_FORMAT": "xml"}, "VQA_LOG_FORMAT must be one of text, json, got 'xml'"),
])
def test_bad_limits_and_log_format_fail_at_start_up(config, message, predictor):
    with pytest.raises(VQAError) as error:
        create_app({"VQA_PREDICTOR": predictor, **config})
    assert str(error.value) == message


class RecordingPredictor:
    """Stands in for vqa.predict.Predictor: records what the app built it with."""

    built_with: dict = {}

    def __init__(self, model_dir, **kwargs):
        RecordingPredictor.built_with = kwargs

    def warm_up(self):
        pass

    def set_observer(self, observer):
        pass

    def info(self):
        return {"model": "mlp", "version": 7}


def test_the_limits_reach_the_predictor_with_their_defaults(monkeypatch):
    monkeypatch.setattr(serving.app, "Predictor", RecordingPredictor)
    for name in ("VQA_MAX_QUEUE", "VQA_REQUEST_TIMEOUT_MS"):
        monkeypatch.delenv(name, raising=False)
    def limits() -> tuple:
        return RecordingPredictor.built_with["max_queue"], RecordingPredictor.built_with["request_timeout_ms"]

    create_app({"VQA_MODEL_DIR": "models/mlp"})
    assert limits() == (16, 10000)
    create_app({"VQA_MODEL_DIR": "models/mlp", "VQA_MAX_QUEUE": "0", "VQA_REQUEST_TIMEOUT_MS": "250"})
    assert limits() == (0, 250)


@pytest.mark.parametrize("flags, message", [
    (["--max-queue", "-2"], "--max-queue must be an integer >= 0, got '-2'"),
    (["--request-timeout-ms", "fast"], "--request-timeout-ms must be a number >= 0, got 'fast'"),
])
def test_vqa_serve_checks_the_limits_in_one_line(flags, message, mlp_model_dir, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr("os.execve", lambda *args: calls.append(args))
    assert main(["serve", "--model", str(mlp_model_dir), "--cnn-weights", "random", *flags]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert calls == [] and len(err) == 1 and message in err[0]


# --------------------------------------------------------------------------- request ids and the JSON log
def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_log_writes_one_line_per_request_with_the_sent_id(predictor, jpeg, monkeypatch, capsys):
    app = limited_app(predictor, monkeypatch, VQA_LOG_FORMAT="json")
    capsys.readouterr()
    client = app.test_client()
    good = client.post("/predict", data=form(jpeg), headers={"X-Request-ID": "client-42"})
    bad = client.post("/predict", data=form(b"not an image"), headers={"X-Request-ID": "client-43"})
    client.get("/nowhere/7")
    assert good.headers["X-Request-ID"] == "client-42" and bad.headers["X-Request-ID"] == "client-43"
    lines = json_lines(capsys.readouterr().err)
    assert [(line["request_id"], line["route"], line["status"]) for line in lines] == [
        ("client-42", "/predict", 200), ("client-43", "/predict", 400), (lines[2]["request_id"], "unmatched", 404)]
    first = lines[0]
    assert first["method"] == "POST" and first["latency_ms"] > 0 and first["level"] == "info"
    assert first["model_version"] == "1"  # a plain model directory is served as version 1
    assert (first["image_batch"], first["answer_batch"], first["cache_hit"]) == (1, 1, None)  # cache off
    assert first["time"].endswith("+00:00") and len(lines[2]["request_id"]) == 32


@pytest.mark.parametrize("sent", ["x" * 129, "has space", "tab\there", "é-accent", ""])
def test_an_unusable_request_id_is_replaced_by_a_new_one(client, sent):
    response = client.get("/healthz", headers={"X-Request-ID": sent})
    echoed = response.headers["X-Request-ID"]
    assert echoed != sent and len(echoed) == 32 and int(echoed, 16) >= 0


def test_text_log_stays_as_it_was_but_the_id_is_echoed(client, capsys):
    capsys.readouterr()
    response = client.get("/readyz", headers={"X-Request-ID": "x" * 128})
    assert response.headers["X-Request-ID"] == "x" * 128
    assert json_lines(capsys.readouterr().err) == []


def test_a_500_is_logged_as_json_with_its_request_id(predictor, jpeg, monkeypatch, capsys):
    app = limited_app(predictor, monkeypatch, VQA_LOG_FORMAT="json")

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(predictor, "ask", broken)
    capsys.readouterr()
    response = app.test_client().post("/predict", data=form(jpeg), headers={"X-Request-ID": "bug-1"})
    assert response.status_code == 500 and response.headers["X-Request-ID"] == "bug-1"
    error, access = json_lines(capsys.readouterr().err)
    assert error["level"] == "error" and error["request_id"] == "bug-1" and error["route"] == "/predict"
    assert "RuntimeError: boom" in error["error"] and "unexpected error" in error["message"]
    assert (access["request_id"], access["status"]) == ("bug-1", 500)


def test_the_log_names_the_model_version_that_answered(monkeypatch, capsys):
    monkeypatch.setattr(serving.app, "Predictor", RecordingPredictor)
    app = create_app({"VQA_MODEL_DIR": "models/mlp", "VQA_LOG_FORMAT": "json"})
    capsys.readouterr()
    response = app.test_client().get("/readyz")
    line, = json_lines(capsys.readouterr().err)
    assert line["model_version"] == response.headers["X-Model-Version"] == "1" and line["route"] == "/readyz"


# --------------------------------------------------------------------------- a real server under a burst
@pytest.mark.slow
def test_a_burst_on_a_real_server_gets_only_200_and_503_and_a_json_line_each(mlp_model_dir, jpeg, tmp_path):
    """`vqa serve` (one worker, 8 threads, --max-queue 2, JSON log) under 12 requests at once."""
    import os
    import signal
    import subprocess
    import sys
    import urllib.error
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    from helpers import REPO_ROOT, free_port, multipart, wait_for_health

    port, log = free_port(), tmp_path / "server.log"
    command = [sys.executable, "-m", "vqa", "serve", "--model", str(mlp_model_dir), "--port", str(port),
               "--threads", "8", "--max-queue", "2", "--request-timeout-ms", "60000", "--log-format", "json",
               "--cnn-weights", "random"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    with log.open("w") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def ask(i: int) -> tuple[int, str | None, str | None]:
        body, content_type = multipart({"question": QUESTION}, {"image": ("image.jpg", jpeg)})
        request = urllib.request.Request(f"{base}/predict", data=body, headers={
            "Content-Type": content_type, "X-Request-ID": f"burst-{i}"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, response.headers["X-Request-ID"], None
        except urllib.error.HTTPError as error:
            return error.code, error.headers["X-Request-ID"], error.headers["Retry-After"]

    try:
        wait_for_health(base, process, log)
        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = list(pool.map(ask, range(12)))
        with urllib.request.urlopen(f"{base}/readyz", timeout=30) as response:
            assert response.status == 200  # ready right after
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    statuses = [status for status, _, _ in answers]
    assert set(statuses) == {200, 503}, statuses
    assert [echoed for _, echoed, _ in answers] == [f"burst-{i}" for i in range(12)]
    assert all(retry == "60" for status, _, retry in answers if status == 503)
    logged = {line["request_id"]: line["status"] for line in json_lines(log.read_text())
              if line.get("route") == "/predict"}
    assert logged == {f"burst-{i}": status for i, status in enumerate(statuses)}
