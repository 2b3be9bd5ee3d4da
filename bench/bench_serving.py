"""Serving at scale: dynamic batching, the feature cache and a soak, against `vqa serve` (issue 21).

Run by hand from the repository root (about 15 minutes on the 2 shared CPU cores here):

    python -m bench.bench_serving                 # writes bench/results_serving.json
    python -m bench.bench_serving --tutorial ...  # the earlier comparison with the tutorial's scripts

It builds a model directory at the tutorial's real sizes (MLP, 1024 hidden units, K = 1000
answers, a 15,000-word spaCy vocabulary; untrained random weights: speed does not depend on
the weights) in bench/out/serving_model_mlp/, starts two `vqa serve` servers side by side on
127.0.0.1, each with the default 1 worker x 8 threads and random VGG16 weights (the ImageNet
file cannot be downloaded here; the cost is the same):

- "off": ``--max-batch-size 1 --feature-cache-mb 0``: each request alone, as before batching;
- "on":  the defaults (``--max-batch-size``, ``--batch-timeout-ms``, ``--feature-cache-mb`` of
  vqa.serve_config.ServeSettings),

and measures, in this one run:

1. in-process (no HTTP): VGG16 images/s at batch 1, 4, 8, 16 (the choice of the default
   batch size), the decode time of one upload (the choice of the timeout), and the ceiling: the
   same Predictor's ``ask_many`` rate (decode, VGG16, tokenise, model) at the default batch size;
2. POST /predict at 1, 8 and 32 concurrent clients on both servers, rounds alternating between
   them so that load from other work hits both alike: requests/s, p50, p99. Every request
   carries a new 640x480 JPEG, so the cache never helps here;
3. first question vs a follow-up question about the same (new) image on the "on" server, p50;
4. a soak of ``--soak`` requests (valid and invalid mixed, 8 clients) against the "on" server:
   each worker's RSS after a warm-up and at the end, and the count of 5xx answers.

Results (bench.harness's record: command, date, git commit, machine; the figures with the load
average at start and end and the issue's targets) go to bench/results_serving.json and stdout.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench import harness

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "bench" / "out"
RESULTS = REPO_ROOT / "bench" / "results_serving.json"
QUESTION = "What color is the ground?"
FOLLOW_UP = "How many dogs are there?"
VOCABULARY_SIZE = 15_000
NUM_ANSWERS = 1000
CLIENT_LEVELS = (1, 8, 32)
# The performance targets, checked in the results file
TARGETS = {"throughput_8_clients_on_over_off": 1.25, "on_8_clients_over_ceiling": 0.85,
           "p99_8_clients_on_over_off_at_most": 1.0, "p50_1_client_on_over_off_at_most": 1.1,
           "follow_up_over_first_p50_at_most": 0.25, "soak_5xx": 0, "soak_rss_growth_below": 0.10}


# --------------------------------------------------------------------------- fixtures
def build_model_dir(model_dir: Path, kind: str = "mlp", image_size: int = 448) -> Path:
    """A model directory with the tutorial's MLP (or the SAN) at real sizes (random weights), written by
    vqa.modeldir as `vqa train` writes it; reused when it is already there with the same facts."""
    import dataclasses

    import keras

    from vqa import artifacts, modeldir, text
    from vqa.config import TrainConfig
    from vqa.train import build_model

    config = TrainConfig.for_model(kind)
    shape = [artifacts.IMAGE_FEATURE_DIM] if kind == "mlp" else [image_size // 32, image_size // 32, 512]
    layout = artifacts.LAYOUT_VECTOR if kind == "mlp" else artifacts.LAYOUT_GRID
    size = artifacts.FC7_IMAGE_SIZE if kind == "mlp" else image_size
    try:
        old = modeldir.read_config(model_dir)
        if (old["model"], old["image_layout"], old["image_feature_shape"]) == (kind, layout, shape):
            modeldir.check_model_dir(model_dir)
            return model_dir
    except (OSError, ValueError, KeyError, LookupError, Exception):  # noqa: BLE001 - rebuilt below
        pass
    nlp = text.load_spacy()
    words = [text.PAD_TOKEN, text.OOV_TOKEN]
    words += [nlp.vocab.strings[key] for key in list(nlp.vocab.vectors.keys())[: VOCABULARY_SIZE - 2]]
    embeddings = np.zeros((len(words), artifacts.WORD_VECTOR_DIM), dtype=np.float32)
    embeddings[2:] = [nlp.vocab.get_vector(word) for word in words[2:]]
    model, _ = build_model(config, embeddings=embeddings, num_answers=NUM_ANSWERS, image_shape=tuple(shape))
    record = modeldir.make_config(
        model=kind, status="finished", train=dataclasses.asdict(config),
        max_question_length=artifacts.MAX_QUESTION_LENGTH, spacy_model=text.spacy_model_label(nlp),
        num_answers=NUM_ANSWERS, vocabulary_size=len(words), image_layout=layout, image_size=size,
        image_feature_shape=shape, cnn_weights="random", keras_version=keras.__version__)
    modeldir.save_model_dir(model_dir, model, config=record, words=words,
                            answers=[f"answer {i}" for i in range(NUM_ANSWERS)])
    return model_dir


def test_jpeg(seed: int = 0) -> bytes:
    """A 640x480 JPEG (COCO's typical size) of smooth noise; each seed gives a different picture."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((640, 480), Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class Images:
    """A thread-safe supply of never-seen JPEGs (the cache cannot help) made ahead of time."""

    def __init__(self, count: int, first_seed: int = 1000):
        self._images = [test_jpeg(first_seed + i) for i in range(count)]
        self._lock = threading.Lock()

    def next(self) -> bytes:
        with self._lock:
            if not self._images:
                raise RuntimeError("out of fresh images; raise Images(count)")
            return self._images.pop()


def summary(seconds: list[float], wall: float | None = None) -> dict:
    """n, p50, p95 and p99 in milliseconds (nearest rank), and requests/s over ``wall``."""
    ordered = sorted(seconds)

    def rank(q: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    result = {"n": len(ordered), "p50_ms": 1000 * statistics.median(ordered), "p95_ms": rank(0.95),
              "p99_ms": rank(0.99)}
    if wall is not None:
        result["requests_per_s"] = len(ordered) / wall
    return result


# --------------------------------------------------------------------------- HTTP
def multipart(fields: dict[str, str], image: bytes | None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                   for name, value in fields.items()).encode()
    if image is not None:
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="image.jpg"\r\n'
                 f"Content-Type: image/jpeg\r\n\r\n").encode() + image + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def send(url: str, image: bytes | None, fields: dict[str, str]) -> tuple[int, float, str]:
    """POST one request: (status, seconds, Server-Timing header)."""
    body, content_type = multipart(fields, image)
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            response.read()
            return response.status, time.perf_counter() - start, response.headers.get("Server-Timing", "")
    except urllib.error.HTTPError as error:
        error.read()
        return error.code, time.perf_counter() - start, ""


def post(url: str, image: bytes, question: str = QUESTION) -> float:
    status, seconds, _ = send(url, image, {"question": question})
    if status != 200:
        raise RuntimeError(f"HTTP {status}")
    return seconds


# --------------------------------------------------------------------------- servers
class Server:
    """`vqa serve` on a free port of 127.0.0.1 with extra flags; its gunicorn master's pid is ours."""

    def __init__(self, name: str, model_dir: Path, flags: list[str]):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.name, self.base = name, f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/predict"
        self.log = OUT_DIR / f"serving_{name}.log"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # each server gets a fresh one from `vqa serve`
        self.command = [sys.executable, "-m", "vqa", "serve", "--model", str(model_dir), "--port", str(port),
                        "--cnn-weights", "random", "--timeout", "600", *flags]
        with self.log.open("w") as log:
            self.process = subprocess.Popen(self.command, cwd=REPO_ROOT, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, workers: int = 1, timeout: float = 900) -> None:
        """Until every worker logged that it is ready (each loads its own model)."""
        deadline = time.monotonic() + timeout
        while self.log.read_text().count("VQA model is loaded") < workers:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: server not ready: {self.log.read_text()[-2000:]}")
            time.sleep(1)

    def worker_rss_mb(self) -> dict[int, float]:
        """Resident memory of each gunicorn worker (the master's children), MB."""
        rss = {}
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            except OSError:
                continue
            if int(fields.get("PPid", "0").strip()) == self.process.pid:
                rss[int(status.parent.name)] = int(fields["VmRSS"].split()[0]) / 1024
        return rss

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


# --------------------------------------------------------------------------- measurements
def time_in_process(model_dir: Path, batch_size: int, repeats: int) -> dict:
    """VGG16 images/s by batch size, the decode time of one upload, and the ask_many ceiling at ``batch_size``."""
    from vqa.predict import Predictor

    predictor = Predictor(model_dir, cnn_weights="random")
    predictor.warm_up()
    encoder, image = predictor.images, test_jpeg(7)
    decode = [_timed(lambda: encoder.decode(image)) for _ in range(20)]
    rates = {}
    for size in (1, 4, 8, 16):
        pixels = np.stack([encoder.decode(image)] * size)
        encoder.run_cnn(pixels)  # first call at this size
        rates[str(size)] = size / statistics.median(_timed(lambda: encoder.run_cnn(pixels)) for _ in range(repeats))
    images = [test_jpeg(500 + i) for i in range(batch_size)]
    questions = [QUESTION] * batch_size
    predictor.ask_many(images, questions, batch_size=batch_size)
    ceiling = batch_size / statistics.median(
        _timed(lambda: predictor.ask_many(images, questions, batch_size=batch_size)) for _ in range(repeats))
    return {"vgg16_images_per_s_by_batch_size": rates,
            "vgg16_speed_up_batch_8_over_1": rates["8"] / rates["1"],
            "decode_one_upload_ms_p50": 1000 * statistics.median(decode),
            "ceiling_ask_many_per_s": ceiling, "ceiling_batch_size": batch_size}


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def time_concurrency(servers: dict[str, Server], images: Images, *, rounds: int, requests: dict[int, int]) -> dict:
    """For each client level, rounds alternating between the servers (ABBA), pooled per server."""
    pooled = {name: {clients: {"seconds": [], "wall": 0.0} for clients in requests} for name in servers}
    for round_index in range(rounds):
        order = list(servers) if round_index % 2 == 0 else list(reversed(servers))
        for clients, count in requests.items():
            for name in order:
                url = servers[name].url
                with ThreadPoolExecutor(max_workers=clients) as pool:  # every thread path warm
                    list(pool.map(lambda _: post(url, images.next()), range(clients)))
                per_client = max(1, count // clients)
                start = time.perf_counter()
                with ThreadPoolExecutor(max_workers=clients) as pool:
                    seconds = [s for batch in pool.map(
                        lambda _: [post(url, images.next()) for _ in range(per_client)], range(clients))
                        for s in batch]
                pooled[name][clients]["wall"] += time.perf_counter() - start
                pooled[name][clients]["seconds"] += seconds
                print(f"  {name:3s} {clients:2d} clients, round {round_index + 1}: "
                      f"{len(seconds) / (time.perf_counter() - start):.2f} req/s", flush=True)
    return {name: {str(clients): summary(v["seconds"], wall=v["wall"]) for clients, v in levels.items()}
            for name, levels in pooled.items()}


def time_follow_up(server: Server, images: Images, pairs: int) -> dict:
    """One client: a new image with a first question, then a second question about it (a cache hit)."""
    first, follow_up, timings = [], [], []
    for _ in range(pairs):
        image = images.next()
        first.append(post(server.url, image, QUESTION))
        status, seconds, timing = send(server.url, image, {"question": FOLLOW_UP})
        assert status == 200, status
        follow_up.append(seconds)
        timings.append(timing)
    hits = sum('cache;desc="hit"' in t for t in timings)
    return {"first": summary(first), "follow_up": summary(follow_up), "follow_up_cache_hits": hits,
            "follow_up_over_first_p50": statistics.median(follow_up) / statistics.median(first)}


INVALID = [
    lambda image: (b"not an image at all", {"question": QUESTION}),
    lambda image: (image[: len(image) // 3], {"question": QUESTION}),
    lambda image: (image, {"question": "   "}),
    lambda image: (image, {"question": QUESTION, "top": "0"}),
    lambda image: (None, {"question": QUESTION}),
    lambda image: (image, {"ques": "x" * 400}),
]


def soak(server: Server, *, requests: int, warm_up: int, clients: int, images: Images) -> dict:
    """Valid and invalid requests mixed (3 in 20 invalid, 1 in 20 a new image, the rest about 40 known
    images in turn), from ``clients`` threads: statuses, 5xx, worker RSS after the warm-up and at the end."""
    known = [test_jpeg(9000 + i) for i in range(40)]
    questions = [QUESTION, FOLLOW_UP, "Is there a cat?", "What is on the table?"]
    counter, lock = [0], threading.Lock()

    def one(_) -> int:
        with lock:
            i = counter[0]
            counter[0] += 1
        kind = i % 20
        if kind < 3:
            image, fields = INVALID[(i // 20) % len(INVALID)](known[i % len(known)])
        elif kind == 3:
            image, fields = images.next(), {"question": questions[i % 4]}
        else:
            image, fields = known[i % len(known)], {"question": questions[i % 4], "top": str(1 + i % 5)}
        return send(server.url, image, fields)[0]

    def run(count: int) -> list[int]:
        with ThreadPoolExecutor(max_workers=clients) as pool:
            return list(pool.map(one, range(count)))

    run(warm_up)
    rss_start = server.worker_rss_mb()
    start = time.perf_counter()
    statuses = run(requests)
    wall = time.perf_counter() - start
    rss_end = server.worker_rss_mb()
    counts = {str(code): statuses.count(code) for code in sorted(set(statuses))}
    growth = {str(pid): rss_end[pid] / rss_start[pid] - 1 for pid in rss_start if pid in rss_end}
    return {"requests": requests, "warm_up_requests": warm_up, "clients": clients, "seconds": wall,
            "statuses": counts, "count_5xx": sum(n for code, n in counts.items() if code.startswith("5")),
            "worker_rss_mb_after_warm_up": {str(k): round(v, 1) for k, v in rss_start.items()},
            "worker_rss_mb_at_end": {str(k): round(v, 1) for k, v in rss_end.items()},
            "worker_rss_growth": growth, "max_rss_growth": max(growth.values()) if growth else None,
            "workers_restarted": sorted(rss_end) != sorted(rss_start)}


def scrape_batch_sizes(server: Server) -> dict:
    """The batch-size histograms of /metrics (every worker), as {stage: {"count", "mean"}}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{server.base}/metrics", timeout=60) as response:
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    out = {}
    for sample in families["vqa_batch_size"].samples:
        stage = out.setdefault(sample.labels["stage"], {})
        if sample.name.endswith("_count"):
            stage["count"] = sample.value
        elif sample.name.endswith("_sum"):
            stage["sum"] = sample.value
    return {stage: {"batches": v.get("count", 0), "mean_size": v.get("sum", 0) / max(1, v.get("count", 0))}
            for stage, v in out.items()}


def compare(results: dict) -> dict:
    """The issue's targets, each with its measured value and whether it was met."""
    off, on = results["server"]["off"], results["server"]["on"]
    values = {
        "throughput_8_clients_on_over_off": on["8"]["requests_per_s"] / off["8"]["requests_per_s"],
        "on_8_clients_over_ceiling": on["8"]["requests_per_s"] / results["in_process"]["ceiling_ask_many_per_s"],
        "p99_8_clients_on_over_off_at_most": on["8"]["p99_ms"] / off["8"]["p99_ms"],
        "p50_1_client_on_over_off_at_most": on["1"]["p50_ms"] / off["1"]["p50_ms"],
        "follow_up_over_first_p50_at_most": results["follow_up"]["follow_up_over_first_p50"],
        "soak_5xx": results["soak"]["count_5xx"],
        "soak_rss_growth_below": results["soak"]["max_rss_growth"],
    }
    met = {}
    for name, value in values.items():
        target = TARGETS[name]
        if name.endswith("_at_most") or name == "soak_5xx":
            met[name] = value <= target
        elif name.endswith("_below"):
            met[name] = value < target
        else:
            met[name] = value >= target
    return {name: {"value": values[name], "target": TARGETS[name], "met": met[name]} for name in values}


def main_scale(argv: list[str]) -> None:
    """The batching / cache / soak benchmark of issue 21 (see the module docstring)."""
    from vqa.serve_config import ServeSettings

    defaults = ServeSettings()

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per client level (default: 2)")
    parser.add_argument("--requests", type=int, nargs=3, default=[6, 16, 32], metavar=("R1", "R8", "R32"),
                        help="requests per round at 1, 8 and 32 clients (default: 6 16 32)")
    parser.add_argument("--pairs", type=int, default=10, help="first/follow-up pairs (default: 10)")
    parser.add_argument("--soak", type=int, default=2000, help="soak requests after the warm-up (default: 2000)")
    parser.add_argument("--repeats", type=int, default=2, help="in-process repeats per figure (default: 2)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON (default: bench/results_serving.json)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", category=UserWarning)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results = {"load_average_at_start": harness.load_average(),
               "note": "a VM shared with other engineers' jobs: absolute times vary; ratios are measured side by side",
               "defaults": {"max_batch_size": defaults.max_batch_size, "batch_timeout_ms": defaults.batch_timeout_ms,
                            "feature_cache_mb": defaults.feature_cache_mb, "workers": defaults.workers,
                            "threads": defaults.threads},
               "model": "mlp at the tutorial's sizes (K = 1000, 15,000 words), random weights; VGG16 random"}
    model_dir = build_model_dir(OUT_DIR / "serving_model_mlp")
    levels = dict(zip(CLIENT_LEVELS, args.requests))
    fresh = Images(args.rounds * sum(c + r for c, r in levels.items()) * 2 + 2 * args.pairs + args.soak // 10 + 200)
    servers = {"off": Server("off", model_dir, ["--max-batch-size", "1", "--feature-cache-mb", "0"]),
               "on": Server("on", model_dir, [])}
    try:
        for server in servers.values():
            server.wait_ready()
        print("in-process figures", flush=True)
        results["in_process"] = time_in_process(model_dir, defaults.max_batch_size, args.repeats)
        print("concurrency", flush=True)
        results["server"] = time_concurrency(servers, fresh, rounds=args.rounds, requests=levels)
        results["server_batches_on"] = scrape_batch_sizes(servers["on"])
        servers["off"].stop()
        print("first vs follow-up", flush=True)
        results["follow_up"] = time_follow_up(servers["on"], fresh, args.pairs)
        print("soak", flush=True)
        results["soak"] = soak(servers["on"], requests=args.soak, warm_up=200, clients=8, images=fresh)
    finally:
        for server in servers.values():
            server.stop()
    results["targets"] = compare(results)
    results["load_average_at_end"] = harness.load_average()
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(harness.write_results(args.out, results), indent=2))


def main() -> None:
    if "--tutorial" in sys.argv[1:]:
        main_tutorial([a for a in sys.argv[1:] if a != "--tutorial"])
    else:
        main_scale(sys.argv[1:])


# --------------------------------------------------------------------------- the earlier comparison (--tutorial)
TUTORIAL_DOC = '''
Time the REST API against bare in-process prediction and against the tutorial's two scripts.

Run by hand from the repository root:  python -m bench.bench_serving --tutorial [--requests 40] [--workers 2]
                                       python -m bench.bench_serving --tutorial --model san --skip-tutorial

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
'''


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
    tutorial_post(url, image, attention=attention)
    bare, server, server_wall = [], [], 0.0
    for _ in range(rounds):
        for _ in range(per_round):
            start = time.perf_counter()
            ask(image, QUESTION)
            bare.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(per_round):
            server.append(tutorial_post(url, image, attention=attention))
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


def tutorial_multipart(question: str, image: bytes, *, attention: bool = False) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    fields = {"question": question, **({"attention": "1"} if attention else {})}
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                   for name, value in fields.items())
    body = (body +
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="image.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def tutorial_post(url: str, image: bytes, *, attention: bool = False) -> float:
    body, content_type = tutorial_multipart(QUESTION, image, attention=attention)
    start = time.perf_counter()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=300) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        response.read()
    return time.perf_counter() - start


def tutorial_load_test(url: str, image: bytes, *, clients: int, requests: int, attention: bool = False) -> dict:
    """``requests`` POSTs split over ``clients`` threads; latency percentiles and throughput."""
    seconds, lock = [], threading.Lock()

    def client(count: int) -> None:
        for _ in range(count):
            elapsed = tutorial_post(url, image, attention=attention)
            with lock:
                seconds.append(elapsed)

    for _ in range(clients):  # warm every worker/thread path
        tutorial_post(url, image, attention=attention)
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


def main_tutorial(argv: list[str]) -> None:
    """The earlier comparison: bare Predictor.ask vs the server vs the tutorial's test.py and app.py."""
    parser = argparse.ArgumentParser(description=TUTORIAL_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="alternating bare/server rounds (default: 6)")
    parser.add_argument("--per-round", type=int, default=8, help="questions per round and side (default: 8)")
    parser.add_argument("--requests", type=int, default=40, help="requests of the 4-client load test (default: 40)")
    parser.add_argument("--tutorial-repeats", type=int, default=3, help="tutorial-style repeats (default: 3)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default: 2, as documented)")
    parser.add_argument("--model", choices=["mlp", "san"], default="mlp", help="model to serve (default: mlp)")
    parser.add_argument("--image-size", type=int, default=448, help="san: grid image size (default: 448, 14 x 14)")
    parser.add_argument("--skip-tutorial", action="store_true", help="skip the tutorial-style baselines")
    args = parser.parse_args(argv)
    attention = args.model == "san"  # a SAN is timed with its attention maps on both sides
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", category=UserWarning)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    model_dir = build_model_dir(OUT_DIR / f"serving_model_{args.model}", args.model, args.image_size)
    image = test_jpeg()
    results = {"workers": args.workers, "model": args.model, "attention": attention,
               "image_size": args.image_size if attention else 224, "load_average_at_start": harness.load_average()}
    log_path = OUT_DIR / "serving_gunicorn.log"
    process, base = start_server(model_dir, args.workers, log_path)
    try:
        predictor = load_predictor(model_dir)
        wait_for_all_workers(log_path, args.workers)
        results["bare"], results["server_1_client"] = time_bare_and_server(
            predictor, f"{base}/predict", image, rounds=args.rounds, per_round=args.per_round, attention=attention)
        results["server_4_clients"] = tutorial_load_test(f"{base}/predict", image, clients=4, requests=args.requests,
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
    results["load_average_at_end"] = harness.load_average()
    out = OUT_DIR / ("serving.json" if args.model == "mlp" else f"serving_{args.model}.json")
    print(json.dumps(harness.write_results(out, results), indent=2))


if __name__ == "__main__":
    main()
