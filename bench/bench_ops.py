"""A model in operation: packing and opening it, verifying a download, a live version swap, a burst.

    python -m bench.bench_ops [--out bench/results_ops.json]
    python -m bench.bench_ops --quick --out /tmp/ops.json   # a SAN on 64-pixel images, short phases, a burst of 16

Measured in one run on 127.0.0.1, each model at the tutorial's sizes with random weights:

- ``vqa pack`` of the 3 x 512 LSTM and opening the packed file into an empty cache (median of repeats);
- verifying a download: ``vqa.package.download`` of the packed file from a local HTTP server
  (read, hash, write), and SHA-256 of the file alone, in MB/s;
- a version swap: `vqa serve --model REPO` (the MLP as ``REPO/1``) under 4 clients' continuous load;
  ``REPO/2`` is moved into place and the clients keep going until 2 has answered for a while. Failed
  requests, the p99 before the swap and while it happens, and the seconds until version 2 answers;
- a burst: 64 requests released at once at one worker, with ``--max-queue 4`` and with the defaults:
  the statuses, the p99 of the answered ones against ``--request-timeout-ms``, and whether the
  server answers right after.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import harness
from vqa import package
from vqa.modeldir import load_model_dir
from vqa.serve_config import ServeSettings

RESULTS = harness.REPOSITORY / "bench" / "results_ops.json"
CLIENTS = 4
BURST = 64
QUICK_BURST = 16  # --quick: still over --max-queue 4, so the 503 path runs
BURST_FLAGS = {"max_queue_4": ["--max-queue", "4"], "defaults": []}


def p99(seconds: list[float]) -> float:
    """The 99th percentile (nearest rank) in milliseconds."""
    ordered = sorted(seconds)
    return round(1000 * ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))], 1)


def time_pack_open(model_dir: Path, tmp: Path, repeats: int) -> tuple[Path, dict]:
    """Seconds of `vqa pack` (a subprocess, as a user runs it), of opening the file into a new cache (verify,
    extract), and of opening it and loading the Keras model (safe mode)."""
    packed = tmp / "lstm.vqa.tar"
    command = [sys.executable, "-m", "vqa", "pack", "--model", str(model_dir), "--out", str(packed)]
    pack = harness.repeat(lambda: harness.run_command(command, env=harness.tree_env()), repeats=repeats)
    caches = iter(tmp / f"cache{i}" for i in range(repeats))
    opened = harness.repeat(lambda: package.open_packed(packed, cache=next(caches)), repeats=repeats)
    caches = iter(tmp / f"load{i}" for i in range(repeats))
    loaded = harness.repeat(lambda: load_model_dir(package.open_packed(packed, cache=next(caches))), repeats=repeats)
    return packed, {"packed_mb": round(packed.stat().st_size / 1e6, 1), "pack": pack.as_dict(),
                    "open": opened.as_dict(), "open_and_load_keras": loaded.as_dict()}


def time_download(packed: Path, tmp: Path, repeats: int) -> dict:
    """MB/s of downloading and hashing ``packed`` from a local HTTP server, and of hashing it alone."""
    handler = functools.partial(_QuietHandler, directory=str(packed.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{packed.name}"
    try:
        fetched = harness.repeat(lambda: package.download(url, tmp / "download.tar"), repeats=repeats, warmup=1)
    finally:
        server.shutdown()
    hashed = harness.repeat(lambda: package.sha256_file(packed), repeats=repeats)
    megabytes = packed.stat().st_size / 1e6
    return {"download_verify_mb_per_s": round(megabytes / fetched.median, 1),
            "sha256_mb_per_s": round(megabytes / hashed.median, 1), "download": fetched.as_dict()}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def time_swap(repo: Path, version_2: Path, tmp: Path, *, steady_s: float, after_s: float) -> dict:
    """4 clients post without pause; REPO/2 appears after ``steady_s``; they stop ``after_s`` after 2 answers."""
    server = harness.Server(repo, tmp / "swap.log", flags=["--feature-cache-mb", "0"])  # every request runs VGG16
    images = [harness.jpeg(2000 + i) for i in range(16)]
    records, stop = [], threading.Event()  # (start time, seconds, status, version)

    def client(index: int) -> None:
        count = 0
        while not stop.is_set():
            start = time.monotonic()
            status, seconds, headers = harness.send(server.url, images[(index + CLIENTS * count) % len(images)],
                                                    {"question": harness.QUESTION})
            records.append((start, seconds, status, headers.get("X-Model-Version")))
            count += 1

    try:
        server.wait_ready(images[0])
        with ThreadPoolExecutor(CLIENTS) as pool:
            futures = [pool.submit(client, i) for i in range(CLIENTS)]
            time.sleep(steady_s)
            staging = repo / ".2.partial"
            shutil.copytree(version_2, staging)
            staging.rename(repo / "2")  # a version appears complete, as docs/serving.md advises
            appeared = time.monotonic()
            while not any(r[3] == "2" for r in list(records)) and time.monotonic() - appeared < 120:
                time.sleep(0.05)
            time.sleep(after_s)
            stop.set()
            for future in futures:
                future.result()
    finally:
        server.stop()
    first_2 = min((r[0] + r[1] for r in records if r[3] == "2"), default=None)
    steady = [r[1] for r in records if r[0] + r[1] < appeared]
    during = [r[1] for r in records if r[0] + r[1] >= appeared and (first_2 is None or r[0] <= first_2 + after_s)]
    steady_p99, during_p99 = p99(steady), p99(during)
    return {"clients": CLIENTS, "requests": len(records), "failed": sum(r[2] != 200 for r in records),
            "steady": {"n": len(steady), "p50_ms": round(1000 * statistics.median(steady), 1), "p99_ms": steady_p99},
            "during_swap": {"n": len(during), "p50_ms": round(1000 * statistics.median(during), 1),
                            "p99_ms": during_p99},
            "p99_during_over_steady": round(during_p99 / steady_p99, 3),
            "new_version_answers_after_s": None if first_2 is None else round(first_2 - appeared, 2)}


def time_burst(model_dir: Path, tmp: Path, flags: list[str], burst: int = BURST) -> dict:
    """``burst`` requests released together at one worker: statuses, the 200s' p99, whether it answers right after."""
    server = harness.Server(model_dir, tmp / "burst.log", flags=flags)
    images = [harness.jpeg(3000 + i) for i in range(burst + 1)]
    barrier = threading.Barrier(burst)

    def one(image: bytes) -> tuple[int, float, dict]:
        barrier.wait()
        return harness.send(server.url, image, {"question": harness.QUESTION})

    try:
        server.wait_ready(images[-1])
        with ThreadPoolExecutor(burst) as pool:
            answers = list(pool.map(one, images[:burst]))
        after = harness.send(server.url, images[0], {"question": harness.QUESTION})
    finally:
        server.stop()
    answered = [a[1] for a in answers if a[0] == 200]
    defaults = ServeSettings()
    return {"requests": burst, "flags": " ".join(flags) or "the defaults",
            "threads": defaults.threads, "request_timeout_ms": defaults.request_timeout_ms,
            "statuses": {str(code): sum(a[0] == code for a in answers) for code in sorted({a[0] for a in answers})},
            "retry_after_on_503": all("Retry-After" in a[2] for a in answers if a[0] == 503),
            "answered_p99_ms": p99(answered) if answered else None, "status_right_after": after[0]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="repeats of pack, open and download (default: 3)")
    parser.add_argument("--steady-seconds", type=float, default=30, help="load before the swap (default: 30)")
    parser.add_argument("--after-seconds", type=float, default=15, help="load after 2 answers (default: 15)")
    parser.add_argument("--quick", action="store_true",
                        help="a SAN on 64-pixel images (packed and served), short phases, a burst of 16")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.steady_seconds, args.after_seconds = 1, 2, 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        packed_model = harness.build_model_dir(tmp / "lstm", *(("san", 64) if args.quick else ("lstm",)))
        packed, figures = time_pack_open(packed_model, tmp, args.repeats)
        figures = {"pack_open": figures, "verify": time_download(packed, tmp, args.repeats)}
        served = (shutil.copytree(packed_model, tmp / "repo" / "1") if args.quick  # the same SAN, built once
                  else harness.build_model_dir(tmp / "repo" / "1", "mlp"))
        version_2 = shutil.copytree(served, tmp / "version_2")
        figures["swap"] = time_swap(tmp / "repo", version_2, tmp, steady_s=args.steady_seconds,
                                    after_s=args.after_seconds)
        burst = QUICK_BURST if args.quick else BURST
        figures["burst"] = {name: time_burst(served, tmp, flags, burst) for name, flags in BURST_FLAGS.items()}
    figures["model"] = ("san, 64-pixel images (quick)" if args.quick
                        else "lstm packed; mlp served, at the tutorial's sizes")
    harness.write_results(args.out, figures)
    print({k: figures[k] for k in ("swap", "burst")}, f"wrote {args.out}", sep="\n")


if __name__ == "__main__":
    main()
