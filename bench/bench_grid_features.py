"""Throughput of `vqa features --grid` (VGG16 block5_pool) at 224 and 448, beside fc7, on this machine.

    python -m bench.bench_grid_features [--images 64] [--repeats 3] [--batch-size 32]
    python -m bench.bench_grid_features --quick --out /tmp/grid.json   # 4 images, the grid at 224, 1 run

Renders synthetic scenes as COCO-sized 640 x 480 JPEGs (decoding then costs what a COCO
image costs); each configuration runs in a fresh process that builds the CNN once (random
weights cost what ImageNet's do), warms it up on one batch, then extracts every image
``--repeats`` times. Reports the median images/s, that process's peak memory, the bytes per
image of the written file, and the projected time and disk for COCO 2014 (123,287 images).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from bench import harness
from vqa import provenance

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
    out = images.parent / f"grid_bench_{layout}_{image_size}.h5"
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        count = features.extract_image_features(images, out, cnn=cnn, layout=layout, image_size=image_size,
                                                cnn_weights="random", batch_size=batch_size)
        seconds.append(time.perf_counter() - start)
    file_bytes = out.stat().st_size
    out.unlink()
    return {"layout": layout, "image_size": image_size, "images": count, "seconds": seconds,
            "peak_rss_gb": provenance.peak_rss_gb(),
            "file_bytes_per_image": file_bytes / count}


def summarise(result: dict) -> dict:
    """Add the median throughput and the COCO 2014 projection (the file's bytes per image, scaled)."""
    median = statistics.median(result["seconds"])
    images_per_second = result["images"] / median
    return {**result, "median_seconds": median, "images_per_second": images_per_second,
            "coco2014_hours": COCO_2014_IMAGES / images_per_second / 3600,
            "coco2014_feature_gb": COCO_2014_IMAGES * result["file_bytes_per_image"] / 1e9}


def run_child(name: str, args) -> dict:
    """One configuration in a fresh process (this module with ``--one``), so each has its own peak RSS."""
    command = [sys.executable, "-m", "bench.bench_grid_features", "--one", name, "--images", str(args.images),
               "--workdir", str(args.workdir), "--repeats", str(args.repeats), "--batch-size", str(args.batch_size)]
    child = subprocess.run(command, check=True, capture_output=True, text=True, cwd=harness.REPOSITORY,
                           env=harness.tree_env())
    return json.loads(child.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--quick", action="store_true", help="4 images, the grid at 224, 1 run")
    parser.add_argument("--one", choices=list(CONFIGS), help=argparse.SUPPRESS)  # child process: one config
    parser.add_argument("--workdir", type=Path, default=OUT, help="images and features files (default: bench/out)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeats, args.batch_size, args.configs = 4, 1, 4, ["grid 224"]
    images = args.workdir / f"grid_images_{args.images}"
    if args.one:
        print(json.dumps(run_config(args.one, images, args.repeats, args.batch_size)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:  # nothing left behind in bench/out
            args.workdir = Path(tmp)
            images = args.workdir / f"grid_images_{args.images}"
        make_images(images, args.images)
        results = {name: summarise(run_child(name, args)) for name in args.configs}
    for name, result in results.items():
        print(f"{name}: {result['images_per_second']:.2f} images/s, COCO 2014 {result['coco2014_hours']:.1f} h, "
              f"{result['coco2014_feature_gb']:.1f} GB, peak RSS {result['peak_rss_gb']:.2f} GB", flush=True)
    figures = {"images": args.images, "repeats": args.repeats, "batch_size": args.batch_size,
               "image_file": "640 x 480 JPEG (synthetic scene), resized by load_image", "cnn_weights": "random",
               "coco2014_images": COCO_2014_IMAGES, "results": results}
    harness.write_results(args.out, figures)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
