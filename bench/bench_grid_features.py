"""Throughput of `vqa features --grid` (VGG16 block5_pool) at 224 and 448, beside fc7, on this machine.

Run by hand from the repository root:
    python -m bench.bench_grid_features [--images 64] [--repeats 3] [--batch-size 32]
Renders ``--images`` synthetic scenes as COCO-sized 640 x 480 JPEGs into
bench/out/grid_images/ (so decoding costs about what a COCO image costs), then,
for each configuration (fc7 at 224, grid at 224, grid at 448; random weights,
which cost the same as ImageNet's), runs ``extract_image_features`` over them
``--repeats`` times in a fresh process that builds the CNN once and warms it up
on one batch first. Reports the median images/s, the peak resident memory of
that process, the bytes per image of the written file, and the projected time
and disk for COCO 2014 (123,287 train + val images). The load average is
recorded before and after each configuration, since the CPU may be shared.
Results go to bench/results_grid_features.json (bench.harness's record).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

from bench import harness

OUT = harness.REPOSITORY / "bench" / "out"
RESULTS = harness.REPOSITORY / "bench" / "results_grid_features.json"
COCO_2014_IMAGES = 82_783 + 40_504
CONFIGS = {"fc7 224": ("vector", 224), "grid 224": ("grid", 224), "grid 448": ("grid", 448)}


def make_images(folder: Path, count: int) -> Path:
    """``count`` synthetic scenes, upscaled to 640 x 480 JPEGs named like COCO's (reused when present)."""
    import numpy as np

    from vqa.synthetic import render_scene, sample_scene

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for image_id in range(1, count + 1):
        path = folder / f"COCO_val2014_{image_id:012d}.jpg"
        if not path.is_file():
            render_scene(sample_scene(rng)).resize((640, 480)).save(path, quality=90)
    return folder


def run_config(name: str, images: Path, repeats: int, batch_size: int) -> dict:
    """Time one configuration in this process (the CNN built once, warmed up on one batch)."""
    import numpy as np

    from vqa import features

    layout, image_size = CONFIGS[name]
    warnings.simplefilter("ignore", features.RandomWeightsWarning)  # random weights cost what ImageNet's do
    cnn = features.load_cnn("random", layout=layout, image_size=image_size)
    warm = np.zeros((batch_size, image_size, image_size, 3), np.float32)
    cnn.predict_on_batch(features.preprocess_images(warm))
    out = OUT / f"grid_bench_{layout}_{image_size}.h5"
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        count = features.extract_image_features(images, out, cnn=cnn, layout=layout, image_size=image_size,
                                                cnn_weights="random", batch_size=batch_size)
        seconds.append(time.perf_counter() - start)
    file_bytes = out.stat().st_size
    out.unlink()
    return {"layout": layout, "image_size": image_size, "images": count, "seconds": seconds,
            "peak_rss_gb": harness.peak_rss_gb(),
            "file_bytes_per_image": file_bytes / count}


def summarise(result: dict) -> dict:
    """Add the median throughput and the COCO 2014 projection."""
    from vqa import artifacts
    from vqa.feature_file import grid_size

    median = statistics.median(result["seconds"])
    images_per_second = result["images"] / median
    if result["layout"] == artifacts.LAYOUT_GRID:
        side = grid_size(result["image_size"])
        row_bytes = side * side * artifacts.GRID_CHANNELS * 2  # float16
    else:
        row_bytes = artifacts.IMAGE_FEATURE_DIM * 4  # float32
    return {**result, "median_seconds": median, "images_per_second": images_per_second,
            "coco2014_hours": COCO_2014_IMAGES / images_per_second / 3600,
            "coco2014_feature_gb": COCO_2014_IMAGES * row_bytes / 1e9}


def run_child(name: str, args) -> dict:
    """One configuration in a fresh process (this module with ``--one``), so each has its own peak RSS."""
    command = [sys.executable, "-m", "bench.bench_grid_features", "--one", name, "--images", str(args.images),
               "--repeats", str(args.repeats), "--batch-size", str(args.batch_size)]
    child = subprocess.run(command, check=True, capture_output=True, text=True, cwd=harness.REPOSITORY,
                           env=harness.tree_env(TF_CPP_MIN_LOG_LEVEL="3"))
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--one", choices=list(CONFIGS), help=argparse.SUPPRESS)  # child process: one config
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    images = OUT / f"grid_images_{args.images}"
    if args.one:
        print(json.dumps(run_config(args.one, images, args.repeats, args.batch_size)))
        return
    make_images(images, args.images)
    results = {}
    for name in args.configs:
        load_before = harness.load_average()
        result = summarise(run_child(name, args))
        results[name] = {**result, "load_average_before": load_before, "load_average_after": harness.load_average()}
        runs = ", ".join(f"{s:.1f}" for s in result["seconds"])
        print(f"{name}: {result['images_per_second']:.2f} images/s (runs {runs} s), "
              f"COCO 2014 {result['coco2014_hours']:.1f} h, {result['coco2014_feature_gb']:.1f} GB, "
              f"peak RSS {result['peak_rss_gb']:.2f} GB, load {load_before[0]:.1f} -> {harness.load_average()[0]:.1f}",
              flush=True)
    figures = {"images": args.images, "repeats": args.repeats, "batch_size": args.batch_size,
               "image_file": "640 x 480 JPEG (synthetic scene), resized by load_image", "cnn_weights": "random",
               "coco2014_images": COCO_2014_IMAGES, "results": results}
    harness.write_results(args.out, figures)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
