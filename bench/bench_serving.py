"""Serving speed of `vqa serve`: latency at 1 client, throughput at 8 with batching on and off, the cache.

    python -m bench.bench_serving [--rounds 2] [--out bench/results_serving.json]
    python -m bench.bench_serving --quick --out /tmp/serving.json   # a SAN on a 2 x 2 grid, few requests

A model directory at the tutorial's sizes (MLP, 1024 hidden units, K = 1000 answers, a
15,000-word spaCy vocabulary, random weights: speed does not depend on them) is served by two
`vqa serve` processes side by side on 127.0.0.1, each 1 worker x 24 threads (the default), random VGG16 weights:

- "off": ``--max-batch-size 1 --feature-cache-mb 0``, each request alone;
- "on": the defaults (dynamic batching and the feature cache).

Measured in one run: POST /predict at 1 and 8 concurrent clients on both, rounds alternating
between them so that other load hits both alike (every request a new 640 x 480 JPEG, so the
cache cannot help); the in-process ceiling (``Predictor.ask_many`` at batch 8, no HTTP); a
first question and a follow-up about the same image on "on" (a cache hit); the workers' memory.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench import harness
from vqa.serve_config import ServeSettings

RESULTS = harness.REPOSITORY / "bench" / "results_serving.json"
FOLLOW_UP = "How many dogs are there?"
CEILING_BATCH_SIZE = ServeSettings().max_batch_size  # vqa serve's default batch
SERVERS = {"off": ["--max-batch-size", "1", "--feature-cache-mb", "0"], "on": []}


def time_ceiling(model_dir: Path, images: list[bytes], repeats: int) -> dict:
    """Questions/s of ``Predictor.ask_many`` on ``images`` at the default batch size: no HTTP, no queue."""
    from vqa.predict import Predictor

    predictor = Predictor(model_dir, cnn_weights="random")
    questions = [harness.QUESTION] * len(images)
    predictor.ask_many(images, questions, batch_size=CEILING_BATCH_SIZE)  # warm-up
    seconds = statistics.median(harness.timed(predictor.ask_many, images, questions,
                                              batch_size=CEILING_BATCH_SIZE)[1] for _ in range(repeats))
    return {"ceiling_ask_many_per_s": round(len(images) / seconds, 3), "ceiling_batch_size": CEILING_BATCH_SIZE}


def time_clients(servers: dict, fresh: list[bytes], *, rounds: int, requests: dict[int, int]) -> dict:
    """Per client level, rounds alternating between the servers (ABBA), pooled per server."""
    pooled = {name: {clients: [] for clients in requests} for name in servers}
    for round_index in range(rounds):
        order = list(servers) if round_index % 2 == 0 else list(reversed(servers))
        for clients, count in requests.items():
            for name in order:
                pooled[name][clients].append(harness.load(servers[name].url, [fresh.pop() for _ in range(count)],
                                                          clients=clients))
    return {name: {str(clients): merge(runs) for clients, runs in levels.items()} for name, levels in pooled.items()}


def merge(runs: list[dict]) -> dict:
    """Rounds of one level together: their requests, the median p50 and p95, requests over summed seconds."""
    return {"n": sum(run["n"] for run in runs), "p50_ms": statistics.median(run["p50_ms"] for run in runs),
            "p95_ms": statistics.median(run["p95_ms"] for run in runs),
            "requests_per_s": round(sum(run["n"] for run in runs)
                                    / sum(run["n"] / run["requests_per_s"] for run in runs), 3)}


def time_follow_up(server: harness.Server, fresh: list[bytes], pairs: int) -> dict:
    """One client: a new image with a first question, then a second question about it (a cache hit)."""
    first, follow_up, hits = [], [], 0
    for _ in range(pairs):
        image = fresh.pop()
        first.append(harness.post(server.url, image))
        status, seconds, headers = harness.send(server.url, image, {"question": FOLLOW_UP})
        if status != 200:
            raise SystemExit(f"{server.url}: HTTP {status} for a follow-up question")
        follow_up.append(seconds)
        hits += 'cache;desc="hit"' in headers.get("Server-Timing", "")
    return {"first": harness.latency(first), "follow_up": harness.latency(follow_up), "follow_up_cache_hits": hits,
            "follow_up_over_first_p50": round(statistics.median(follow_up) / statistics.median(first), 3)}


def ratios(figures: dict) -> dict:
    """The headline ratios: batching's throughput gain, its cost at 1 client, the share of the ceiling."""
    off, on = figures["server"]["off"], figures["server"]["on"]
    return {"throughput_8_clients_on_over_off": round(on["8"]["requests_per_s"] / off["8"]["requests_per_s"], 3),
            "p50_1_client_on_over_off": round(on["1"]["p50_ms"] / off["1"]["p50_ms"], 3),
            "on_8_clients_over_ceiling": round(on["8"]["requests_per_s"]
                                               / figures["in_process"]["ceiling_ask_many_per_s"], 3)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per client level (default: 2)")
    parser.add_argument("--requests", type=int, nargs=2, default=[6, 16], metavar=("R1", "R8"),
                        help="requests per round at 1 and 8 clients (default: 6 16)")
    parser.add_argument("--pairs", type=int, default=10, help="first/follow-up pairs (default: 10)")
    parser.add_argument("--repeats", type=int, default=2, help="in-process ceiling repeats (default: 2)")
    parser.add_argument("--quick", action="store_true", help="a SAN on 64-pixel images, 1 round, few requests")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.requests, args.pairs, args.repeats = 1, [2, 8], 2, 1
    levels = dict(zip((1, 8), args.requests))
    fresh = [harness.jpeg(1000 + i) for i in range(2 * args.rounds * sum(levels.values()) + args.pairs + 2)]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = harness.build_model_dir(Path(tmp) / "model", *(("san", 64) if args.quick else ("mlp",)))
        servers = {name: harness.Server(model_dir, Path(tmp) / f"{name}.log", flags=flags)
                   for name, flags in SERVERS.items()}
        try:
            figures = {"model": "san, 64-pixel images (2 x 2 grid)" if args.quick else "mlp at the tutorial's sizes",
                       "in_process": time_ceiling(model_dir, fresh[-CEILING_BATCH_SIZE:], args.repeats)}
            for server in servers.values():
                server.wait_ready(fresh.pop())
            figures["server"] = time_clients(servers, fresh, rounds=args.rounds, requests=levels)
            figures["follow_up"] = time_follow_up(servers["on"], fresh, args.pairs)
            figures["worker_rss_mb"] = {name: server.worker_rss_mb() for name, server in servers.items()}
        finally:
            for server in servers.values():
                server.stop()
    figures["ratios"] = ratios(figures)
    harness.write_results(args.out, figures)
    print(figures["ratios"], f"wrote {args.out}", sep="\n")


if __name__ == "__main__":
    main()
