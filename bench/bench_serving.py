"""Time the REST API against bare in-process prediction and against the tutorial's two scripts.

Run by hand from the repository root:  python bench/bench_serving.py [--requests 40] [--workers 2]
                                       python bench/bench_serving.py --model san --skip-tutorial

It builds a model directory at the tutorial's real sizes (MLP, 1024 hidden units,
K = 1000 answers, a 15,000-word spaCy vocabulary; untrained random weights: speed
does not depend on the weights) in bench/out/serving_model/, then measures, all in
this one run on this machine:

1. bare: ``Predictor.ask`` in-process on one 640x480 JPEG (VGG16 + the VQA model);
2. server: ``gunicorn -w WORKERS 'serving.app:create_app()'`` on 127.0.0.1, POST /predict
   with 1 and with 4 concurrent clients (stdlib threads): p50/p95 latency, requests/s.
   1 and 2 alternate in rounds, so that load from other work on the machine hits both alike;
3. tutorial test.py: what the tutorial's command-line script did per question: build
   VGG16, load the full spaCy en_core_web_md, load the VQA model, predict (in one warm
   process, so this is a lower bound: the real script also paid Python and TensorFlow
   start-up);
4. tutorial app.py: what the tutorial's Flask app did per request. It built VGG16 and
   the VQA model once, at import, but loaded a full spaCy pipeline (``en_core_web_sm``;
   here ``en_core_web_md``, the only one installed) and the label encoder on every
   request, and called ``model.predict``.

With ``--model san`` the model directory holds the stacked attention network at the
paper's sizes (d = 1024, k = 512, two attention layers, a 14 x 14 grid of 448-pixel
images: ``--image-size``); bare is ``Predictor.ask_with_attention`` and every request
asks for the attention maps (``attention=1``), so both sides pay for them.

VGG16 uses random weights (``--cnn-weights random``) because the ImageNet file cannot
be downloaded here; its cost is the same. Figures are medians; results go to stdout and
bench/out/serving.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import warnings
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "bench" / "out"
QUESTION = "What color is the ground?"
VOCABULARY_SIZE = 15_000
NUM_ANSWERS = 1000


# --------------------------------------------------------------------------- fixtures
def build_model_dir(model_dir: Path, kind: str = "mlp", image_size: int = 448) -> Path:
    """A model directory with the tutorial's MLP (or the SAN) at real sizes (random weights), as
    `vqa train` lays it out."""
    from vqa import artifacts, text
    from vqa.train import TrainConfig, build_model

    config = TrainConfig.tutorial(kind)
    shape = [artifacts.IMAGE_FEATURE_DIM] if kind == "mlp" else [image_size // 32, image_size // 32, 512]
    layout = artifacts.LAYOUT_VECTOR if kind == "mlp" else artifacts.LAYOUT_GRID
    facts = {"image_layout": layout, "image_size": 224 if kind == "mlp" else image_size, "image_feature_shape": shape}
    config_path = model_dir / artifacts.CONFIG_JSON
    if (model_dir / artifacts.MODEL_FILE).is_file() and config_path.is_file():
        old = json.loads(config_path.read_text())
        if old.get("model") == kind and all(old.get(k) == v for k, v in facts.items()):
            return model_dir
    nlp = text.load_spacy()
    vectors = nlp.vocab.vectors
    words = [text.PAD_TOKEN, text.OOV_TOKEN]
    words += [nlp.vocab.strings[key] for key in list(vectors.keys())[: VOCABULARY_SIZE - 2]]
    embeddings = np.zeros((len(words), artifacts.WORD_VECTOR_DIM), dtype=np.float32)
    embeddings[2:] = [nlp.vocab.get_vector(word) for word in words[2:]]
    model, _ = build_model(config, embeddings=embeddings, num_answers=NUM_ANSWERS, image_shape=tuple(shape))
    model_dir.mkdir(parents=True, exist_ok=True)
    record = {"model": kind, "status": "finished", "max_question_length": artifacts.MAX_QUESTION_LENGTH,
              "spacy_model": text.spacy_model_label(nlp), "num_answers": NUM_ANSWERS,
              "vocabulary_size": len(words), "image_feature_dim": shape[-1], **facts,
              "note": "bench_serving.py: tutorial (or paper) sizes, untrained random weights"}
    (model_dir / artifacts.VOCABULARY_JSON).write_text(json.dumps(words))
    (model_dir / artifacts.ANSWERS_JSON).write_text(json.dumps([f"answer {i}" for i in range(NUM_ANSWERS)]))
    (model_dir / artifacts.CONFIG_JSON).write_text(json.dumps(record, indent=2))
    model.save(model_dir / artifacts.MODEL_FILE)
    return model_dir


def test_jpeg() -> bytes:
    """A 640x480 JPEG (COCO's typical size) of smooth noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((640, 480), Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def summary(seconds: list[float], wall: float | None = None) -> dict:
    ordered = sorted(seconds)
    result = {"n": len(ordered), "p50_ms": 1000 * statistics.median(ordered),
              "p95_ms": 1000 * ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]}
    if wall is not None:
        result["requests_per_s"] = len(ordered) / wall
    return result


# --------------------------------------------------------------------------- measurements
def load_predictor(model_dir: Path):
    """A warmed-up Predictor with random VGG16 weights, as the server builds it."""
    from vqa.predict import Predictor

    predictor = Predictor(model_dir, cnn_weights="random")
    predictor.warm_up()
    return predictor


def time_bare_and_server(predictor, url: str, image: bytes, *, rounds: int, per_round: int,
                         attention: bool = False) -> tuple[dict, dict]:
    """Alternate rounds of in-process ``Predictor.ask`` and one-client POSTs, so load drift hits both alike.

    With ``attention`` both sides also return the attention maps.
    """
    ask = predictor.ask_with_attention if attention else predictor.ask
    ask(image, QUESTION)
    post(url, image, attention=attention)
    bare, server, server_wall = [], [], 0.0
    for _ in range(rounds):
        for _ in range(per_round):
            start = time.perf_counter()
            ask(image, QUESTION)
            bare.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(per_round):
            server.append(post(url, image, attention=attention))
        server_wall += time.perf_counter() - start
    return summary(bare), summary(server, wall=server_wall)


def time_tutorial_app(model_dir: Path, image: bytes, repeats: int) -> dict:
    """The tutorial's app.py per request: VGG16 and the model kept, spaCy and the label list reloaded."""
    import keras
    import spacy

    from vqa import artifacts, text
    from vqa.features import load_cnn, load_image, preprocess_images

    cnn = load_cnn("random")
    model = keras.saving.load_model(model_dir / artifacts.MODEL_FILE, safe_mode=True)
    words = json.loads((model_dir / artifacts.VOCABULARY_JSON).read_text())
    seconds = []
    for _ in range(repeats + 1):  # the first request also traces predict(): not counted
        start = time.perf_counter()
        features = cnn.predict(preprocess_images(load_image(image)[None]), verbose=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nlp = spacy.load(text.resolve_spacy_model())  # per request, as app.py's en_core_web_sm.load()
        ids = text.encode([[t.text for t in nlp(QUESTION)]], text.word_index_of(words), max_question_length=30)[0]
        probabilities = model.predict({"question": ids, "image_features": features}, verbose=0)["answer"]
        answers = json.loads((model_dir / artifacts.ANSWERS_JSON).read_text())  # app.py's joblib.load per request
        _ = [answers[i] for i in np.argsort(-probabilities[0])[:5]]
        seconds.append(time.perf_counter() - start)
        del nlp
    del cnn, model
    keras.backend.clear_session()
    return summary(seconds[1:])


def time_tutorial(model_dir: Path, image: bytes, repeats: int) -> dict:
    """The tutorial's test.py per question: build VGG16, load full spaCy and the model, then predict."""
    import keras
    import spacy

    from vqa import artifacts, text
    from vqa.features import load_cnn, load_image, preprocess_images

    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        cnn = load_cnn("random")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nlp = spacy.load(text.resolve_spacy_model())  # every pipe, as the tutorial's spacy.load('en')
        model = keras.saving.load_model(model_dir / artifacts.MODEL_FILE, safe_mode=True)
        words = json.loads((model_dir / artifacts.VOCABULARY_JSON).read_text())
        features = cnn.predict(preprocess_images(load_image(image)[None]), verbose=0)
        ids = text.encode([[t.text for t in nlp(QUESTION)]], text.word_index_of(words), max_question_length=30)[0]
        model.predict({"question": ids, "image_features": features}, verbose=0)
        seconds.append(time.perf_counter() - start)
        del cnn, model, nlp
        keras.backend.clear_session()
    return summary(seconds)


def multipart(question: str, image: bytes, *, attention: bool = False) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    fields = {"question": question, **({"attention": "1"} if attention else {})}
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                   for name, value in fields.items())
    body = (body +
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="image.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def post(url: str, image: bytes, *, attention: bool = False) -> float:
    body, content_type = multipart(QUESTION, image, attention=attention)
    start = time.perf_counter()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=300) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        response.read()
    return time.perf_counter() - start


def load_test(url: str, image: bytes, *, clients: int, requests: int, attention: bool = False) -> dict:
    """``requests`` POSTs split over ``clients`` threads; latency percentiles and throughput."""
    seconds, lock = [], threading.Lock()

    def client(count: int) -> None:
        for _ in range(count):
            elapsed = post(url, image, attention=attention)
            with lock:
                seconds.append(elapsed)

    for _ in range(clients):  # warm every worker/thread path
        post(url, image, attention=attention)
    threads = [threading.Thread(target=client, args=(requests // clients,)) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summary(seconds, wall=time.perf_counter() - start)


def start_server(model_dir: Path, workers: int, log_path: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "VQA_MODEL_DIR": str(model_dir), "VQA_CNN_WEIGHTS": "random", "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{port}", "--timeout", "600",
               "serving.app:create_app()"]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {log_path.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=5).read()
            return process, base
        except OSError:
            time.sleep(1)
    raise RuntimeError("server did not become healthy")


def wait_for_all_workers(log_path: Path, workers: int, timeout: float = 600) -> None:
    """Each worker loads its own Predictor; wait until every one has logged that it is ready."""
    deadline = time.monotonic() + timeout
    while log_path.read_text().count("VQA model is loaded") < workers:
        if time.monotonic() > deadline:
            raise RuntimeError("not every gunicorn worker became ready")
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="alternating bare/server rounds (default: 6)")
    parser.add_argument("--per-round", type=int, default=8, help="questions per round and side (default: 8)")
    parser.add_argument("--requests", type=int, default=40, help="requests of the 4-client load test (default: 40)")
    parser.add_argument("--tutorial-repeats", type=int, default=3, help="tutorial-style repeats (default: 3)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default: 2, as documented)")
    parser.add_argument("--model", choices=["mlp", "san"], default="mlp", help="model to serve (default: mlp)")
    parser.add_argument("--image-size", type=int, default=448, help="san: grid image size (default: 448, 14 x 14)")
    parser.add_argument("--skip-tutorial", action="store_true", help="skip the tutorial-style baselines")
    args = parser.parse_args()
    attention = args.model == "san"  # a SAN is timed with its attention maps on both sides
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", category=UserWarning)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    model_dir = build_model_dir(OUT_DIR / f"serving_model_{args.model}", args.model, args.image_size)
    image = test_jpeg()
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}",
               "workers": args.workers, "model": args.model, "attention": attention,
               "image_size": args.image_size if attention else 224, "load_average_at_start": os.getloadavg()}
    log_path = OUT_DIR / "serving_gunicorn.log"
    process, base = start_server(model_dir, args.workers, log_path)
    try:
        predictor = load_predictor(model_dir)
        wait_for_all_workers(log_path, args.workers)
        results["bare"], results["server_1_client"] = time_bare_and_server(
            predictor, f"{base}/predict", image, rounds=args.rounds, per_round=args.per_round, attention=attention)
        results["server_4_clients"] = load_test(f"{base}/predict", image, clients=4, requests=args.requests,
                                                attention=attention)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    del predictor
    server_p50 = results["server_1_client"]["p50_ms"]
    results["server_p50_over_bare_p50"] = server_p50 / results["bare"]["p50_ms"]
    if not args.skip_tutorial:
        results["tutorial_test_py_per_question"] = time_tutorial(model_dir, image, args.tutorial_repeats)
        results["tutorial_app_py_per_request"] = time_tutorial_app(model_dir, image, args.tutorial_repeats)
        results["tutorial_test_py_p50_over_server_p50"] = results["tutorial_test_py_per_question"]["p50_ms"] / server_p50
        results["tutorial_app_py_p50_over_server_p50"] = results["tutorial_app_py_per_request"]["p50_ms"] / server_p50
    results["load_average_at_end"] = os.getloadavg()
    (OUT_DIR / ("serving.json" if args.model == "mlp" else f"serving_{args.model}.json")).write_text(
        json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
