"""Shared plumbing for the benchmarks: the run's provenance, timing, subprocesses, HTTP load, training speed.

Every script records what it measured in one JSON results file, so that each figure in
README.md and docs/ traces to the command, date, commit and machine that produced it. Run
a script from the repository root: ``python -m bench.bench_prepare [--quick] [--out F]``.

Importing this module starts the run's record (``vqa.provenance.begin``: UTC date, git
commit with ``-dirty`` for uncommitted changes to tracked files, load average), so a script
cannot record a commit read after it started; ``write_results`` adds the machine and its
load average at the end. Importing it is light: no TensorFlow, no Keras.

- ``repeat`` / ``timed``: wall seconds of calls; ``run_command``: a subprocess, its seconds and peak RSS;
  ``tree_env(source)``: an environment whose ``vqa`` comes from a given ``src/`` (before/after runs).
- ``Server``, ``post``, ``load``: `vqa serve` on a free port and a threaded HTTP load generator.
- ``train_speed``: samples/s of a short `vqa train`, or of the same run with its batches in memory.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from vqa import provenance
from vqa.atomic import write_json_atomically

START = provenance.begin()  # the run starts when a script imports its harness
REPOSITORY = Path(__file__).resolve().parents[1]
SOURCE = REPOSITORY / "src"
QUESTION = "What color is the ground?"


@dataclass(frozen=True)
class Timing:
    """Wall seconds of repeated runs of one thing; the median is the figure to quote."""

    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        """The median of the runs, in seconds."""
        return statistics.median(self.runs)

    def as_dict(self, digits: int = 3) -> dict:
        """``{"median_s", "runs_s"}`` rounded for a results file."""
        return {"median_s": round(self.median, digits), "runs_s": [round(run, digits) for run in self.runs]}


def repeat(function: Callable[[], object], *, repeats: int = 3, warmup: int = 0) -> Timing:
    """Call ``function()`` ``warmup`` times untimed, then ``repeats`` times timed."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        function()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        runs.append(time.perf_counter() - start)
    return Timing(tuple(runs))


def timed(function: Callable, *args, **kwargs) -> tuple[object, float]:
    """Call ``function(*args, **kwargs)`` once; returns ``(its result, wall seconds)``."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def tree_env(source: Path = SOURCE, **extra: str) -> dict[str, str]:
    """This environment with ``source`` (a ``src/`` folder) and its parent first on PYTHONPATH.

    A child ``python -m vqa`` then runs that tree's code, not an installed copy.
    """
    paths = [str(Path(source).resolve()), str(Path(source).resolve().parent)]
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.pathsep.join(paths), **extra}


def run_command(command: Sequence[str], *, env: dict | None = None, log: Path | None = None) -> dict:
    """Run one command to its end; its wall seconds and its own peak RSS (GB).

    Output goes to ``log`` (stdout and stderr together) or is discarded. A failing command
    raises SystemExit naming it, since a benchmark of a failed run means nothing.
    """
    with open(log, "w") if log is not None else open(os.devnull, "w") as sink:
        start = time.perf_counter()
        process = subprocess.Popen(list(command), stdout=sink, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage
        seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code:
        where = f"; see {log}" if log is not None else ""
        raise SystemExit(f"{shlex.join(command)}: failed with exit status {code}{where}")
    return {"seconds": round(seconds, 2), "peak_rss_gb": round(usage.ru_maxrss * 1024 / 1e9, 2)}


def write_results(path: Path, figures: dict, *, command: Sequence[str] | None = None) -> dict:
    """Write the results record (provenance from the run's start, the load now, ``figures``) atomically."""
    text = shlex.join(command) if command is not None else " ".join([_invocation(), *map(shlex.quote, sys.argv[1:])])
    record = provenance.results_record(figures, command=text, start=START)
    write_json_atomically(Path(path), record, indent=2)
    return record


def _invocation() -> str:
    """How the running script was started: ``python -m bench.bench_x``, or ``python PATH``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return f"python -m {spec.name}"
    return f"python {sys.argv[0]}"


# --------------------------------------------------------------------------- training speed
def trained_questions(data: Path) -> int:
    """Questions one pass of ``vqa train`` reads: the train split's with a modal answer among the top K."""
    from vqa import artifacts
    from vqa.prepared import load_prepared

    return int((load_prepared(data, splits=(artifacts.TRAIN_SPLIT,)).splits[artifacts.TRAIN_SPLIT].labels >= 0).sum())


def train_speed(kind: str, *, data: Path, features: Path, out: Path, steps: int | None = None,
                source: Path = SOURCE, flags: Sequence[str] = (), cached: bool = False) -> float:
    """Samples/s of ``vqa train KIND`` (from ``source``): 2 epochs, the second timed.

    An epoch is ``steps`` batches, or with None one whole pass over the train split, so that
    models at different batch sizes read the same questions (bucketed widths included). The
    second epoch's ``train_seconds`` in history.json: tracing and the first fill of the input
    pipeline fall in the first. ``cached``: the same run with its batches replayed from memory
    (``bench.cached_train``), the input pipeline's ceiling.
    """
    runner = ["bench.cached_train"] if cached else ["vqa"]
    command = [sys.executable, "-m", *runner, "train", kind, "--data", str(data), "--features", str(features),
               "--out", str(out), "--logdir", str(out.parent / f"{out.name}_logs"), "--epochs", "2",
               *(["--steps-per-epoch", str(steps)] if steps is not None else []),
               "--seed", "0", "--verbose", "0", "--overwrite", *flags]
    run_command(command, env=tree_env(source), log=out.parent / f"{out.name}.log")
    history = json.loads((out / "history.json").read_text())
    batch_size = json.loads((out / "config.json").read_text())["train"]["batch_size"]
    return timed_questions(trained_questions(data), batch_size, steps) / history["train_seconds"][-1]


def timed_questions(questions: int, batch_size: int, steps: int | None) -> int:
    """Questions in the second of 2 epochs of ``steps`` batches (None: a pass) over ``questions``.

    Keras caps an epoch at one pass and does not restart a pass inside an epoch: after a first
    epoch of ``steps`` batches the second reads at most the pass's remaining batches.
    """
    batches = -(-questions // batch_size)
    first = batches if steps is None else min(steps, batches)
    rest = batches - first
    if rest == 0:
        return questions
    return questions - first * batch_size if rest <= first else first * batch_size


# --------------------------------------------------------------------------- a model at real sizes
VOCABULARY_SIZE = 15_000
NUM_ANSWERS = 1000


def build_model_dir(model_dir: Path, kind: str = "mlp", image_size: int = 448) -> Path:
    """A model directory with the tutorial's MLP (or LSTM, or the SAN) at real sizes (random weights), written by
    vqa.modeldir as `vqa train` writes it; reused when it is already there with the same facts."""
    import dataclasses

    import keras
    import numpy as np

    from vqa import artifacts, modeldir, text
    from vqa.config import IMAGE_LAYOUTS, TrainConfig
    from vqa.train import build_model

    config = TrainConfig.for_model(kind)
    layout = IMAGE_LAYOUTS[kind]
    grid = layout == artifacts.LAYOUT_GRID
    shape = [image_size // 32, image_size // 32, 512] if grid else [artifacts.IMAGE_FEATURE_DIM]
    size = image_size if grid else artifacts.FC7_IMAGE_SIZE
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


# --------------------------------------------------------------------------- HTTP
def jpeg(seed: int = 0, size: tuple[int, int] = (640, 480)) -> bytes:
    """A JPEG of smooth noise (COCO's typical size by default); each seed a different picture."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def send(url: str, image: bytes | None, fields: dict[str, str]) -> tuple[int, float, dict]:
    """POST one multipart request: (status, seconds, response headers)."""
    boundary = uuid.uuid4().hex
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                   for name, value in fields.items()).encode()
    if image is not None:
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="image.jpg"\r\n'
                 "Content-Type: image/jpeg\r\n\r\n").encode() + image + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            response.read()
            return response.status, time.perf_counter() - start, dict(response.headers)
    except urllib.error.HTTPError as error:
        error.read()
        return error.code, time.perf_counter() - start, dict(error.headers)


def post(url: str, image: bytes, question: str = QUESTION) -> float:
    """Seconds of one question that must be answered (HTTP 200)."""
    status, seconds, _ = send(url, image, {"question": question})
    if status != 200:
        raise RuntimeError(f"{url}: HTTP {status}")
    return seconds


def latency(seconds: list[float], wall: float | None = None) -> dict:
    """n, p50 and p95 in milliseconds (nearest rank), and requests/s over ``wall``."""
    ordered = sorted(seconds)
    result = {"n": len(ordered), "p50_ms": round(1000 * statistics.median(ordered), 1),
              "p95_ms": round(1000 * ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 1)}
    if wall is not None:
        result["requests_per_s"] = round(len(ordered) / wall, 3)
    return result


def load(url: str, images: Sequence[bytes], *, clients: int) -> dict:
    """``clients`` threads posting ``images`` (each one once) to ``url``: latency and requests/s."""
    def client(share: Sequence[bytes]) -> list[float]:
        return [post(url, image) for image in share]

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        seconds = [s for share in pool.map(client, [images[i::clients] for i in range(clients)]) for s in share]
    return latency(seconds, wall=time.perf_counter() - start)


class Server:
    """`vqa serve` (from ``source``) on a free port of 127.0.0.1; stop() ends its process group."""

    def __init__(self, model_dir: Path, log: Path, *, flags: Sequence[str] = (), source: Path = SOURCE):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.base, self.log = f"http://127.0.0.1:{port}", Path(log)
        self.url = f"{self.base}/predict"
        env = tree_env(source, PYTHONWARNINGS="ignore")
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # each server gets a fresh one from `vqa serve`
        command = [sys.executable, "-m", "vqa", "serve", "--model", str(model_dir), "--port", str(port),
                   "--cnn-weights", "random", "--timeout", "600", *flags]
        with self.log.open("w") as sink:
            self.process = subprocess.Popen(command, cwd=Path(source).resolve().parent, env=env, stdout=sink,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, image: bytes, timeout: float = 600) -> None:
        """Until a question is answered (the worker has loaded its model)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.url}: server not ready: {self.log.read_text()[-2000:]}")
            try:
                post(self.url, image)
                return
            except (OSError, RuntimeError):
                time.sleep(0.5)

    def worker_rss_mb(self) -> float:
        """Resident memory of the gunicorn workers (the master's children) together, MB."""
        total = 0.0
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            except OSError:
                continue
            if int(fields.get("PPid", "0").strip()) == self.process.pid:
                total += int(fields["VmRSS"].split()[0]) / 1024
        return round(total, 1)

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL after 60 s."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
