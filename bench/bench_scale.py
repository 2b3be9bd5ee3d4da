"""Full-size rehearsal: every stage of the real workflow at VQA v2 size, wall time and peak RSS each.

Run by hand from the repository root (needs ~10 GB of disk under --workdir and about
30 minutes on 2 CPU cores):

    python -m bench.bench_scale                       # generate once, then run every stage
    python -m bench.bench_scale --stages train-mlp evaluate

It generates, once, VQA-v2-sized official JSON (443,757 train + 214,354 val questions,
10 answers each; the generator of bench_prepare.py) and a Karpathy-sized coco.zip
(``dataset.json`` + a MATLAB v5 ``vgg_feats.mat``, 4096 x 123,287 float32, ~2 GB, sparse
ReLU-like values), then runs the real commands, each in its own process:

    vqa features --karpathy   vqa prepare   vqa train mlp --epochs 1
    vqa train lstm --epochs 1 --steps-per-epoch N (a timed fraction; projected to a full epoch)
    vqa evaluate --model (the MLP, whole val split, predictions included)

Peak RSS is each process's own maximum resident set size (``bench.harness.run_command``).
Results are printed as a table and written to bench/results_scale.json (the harness's
record; a rerun of some stages keeps the other stages' figures).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench import bench_prepare, harness  # bench_prepare: the VQA-v2-sized JSON generator

FEATURE_DIM = 4096
STAGES = ("features", "prepare", "train-mlp", "train-lstm", "evaluate")


def write_karpathy(folder: Path, image_ids: np.ndarray, *, seed: int = 0) -> None:
    """dataset.json (imgid i -> cocoid) and a v5 vgg_feats.mat (4096 x M float32), as in coco.zip."""
    import scipy.io

    if (folder / "vgg_feats.mat").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    images = [{"imgid": i, "cocoid": int(cocoid), "filename": f"COCO_{int(cocoid):012d}.jpg", "split": "train"}
              for i, cocoid in enumerate(image_ids)]
    (folder / "dataset.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    rng = np.random.default_rng(seed)
    feats = np.empty((FEATURE_DIM, len(image_ids)), dtype=np.float32)
    for start in range(0, len(image_ids), 8192):  # ReLU of a Gaussian: sparse, non-negative, like fc7
        block = rng.standard_normal((FEATURE_DIM, min(8192, len(image_ids) - start)), dtype=np.float32)
        feats[:, start:start + block.shape[1]] = np.maximum(block * 2.0 - 1.0, 0.0)
    partial = folder / "vgg_feats.mat.part"  # renamed when complete, so a rerun never reuses half a file
    scipy.io.savemat(partial, {"feats": feats}, do_compression=False)
    partial.rename(folder / "vgg_feats.mat")
    print(f"generated {folder / 'vgg_feats.mat'} ({feats.nbytes / 1e9:.2f} GB)", file=sys.stderr)


def generated_image_ids(data: Path) -> np.ndarray:
    """Every image id the generated questions use (train + val), sorted."""
    ids = set()
    for split in bench_prepare.SIZES:
        questions = json.loads((data / f"v2_OpenEnded_mscoco_{split}_questions.json").read_text())["questions"]
        ids.update(q["image_id"] for q in questions)
    return np.array(sorted(ids), dtype=np.int64)


def run_stage(name: str, command: list[str], log_path: Path) -> dict:
    """Run one command in its own process; wall seconds and that process's peak RSS in GB."""
    print(f"[{name}] {' '.join(command)}", file=sys.stderr)
    # Each stage keeps its own commit: a rerun of some stages leaves the others' figures as they were.
    return {"command": " ".join(command), **harness.run_command(command, log=log_path),
            "git_commit": harness.git_commit()}


def epoch_timing(model_dir: Path) -> dict:
    """The training and validation seconds of the first epoch, from the model's history.json."""
    history = json.loads((model_dir / "history.json").read_text())
    return {key: round(history[key][0], 1) for key in ("train_seconds", "val_seconds") if history.get(key)}


def previous_figures(path: Path) -> dict:
    """The stages an earlier run recorded in ``path`` (harness record, or the older flat layout)."""
    if not path.is_file():
        return {}
    record = json.loads(path.read_text())
    return {name: value for name, value in record.get("figures", record).items() if name in STAGES}


def commands(work: Path, lstm_steps: int) -> dict[str, list[str]]:
    """The real command of every stage."""
    vqa = [sys.executable, "-m", "vqa"]
    features, prepared = str(work / "features.h5"), str(work / "preprocessed")
    train = ["--data", prepared, "--features", features, "--epochs", "1", "--overwrite", "--verbose", "2",
             "--seed", "0"]
    return {
        "features": vqa + ["features", "--karpathy", str(work / "data" / "coco"), "--out", features],
        "prepare": vqa + ["prepare", "--data-dir", str(work / "data"), "--version", "v2", "--out", prepared],
        "train-mlp": vqa + ["train", "mlp", *train, "--out", str(work / "models/mlp"), "--logdir", str(work / "Graph/mlp")],
        "train-lstm": vqa + ["train", "lstm", *train, "--steps-per-epoch", str(lstm_steps),
                             "--out", str(work / "models/lstm"), "--logdir", str(work / "Graph/lstm")],
        "evaluate": vqa + ["evaluate", "--model", str(work / "models/mlp"), "--data", prepared, "--features", features,
                           "--split", "val", "--results", str(work / "results/mlp/val2014.json"),
                           "--report", str(work / "results/mlp/report.json")],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("bench/out/scale"))
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--lstm-steps", type=int, default=200,
                        help="LSTM batches timed (of ~1,700 per epoch at batch 256; default: 200)")
    parser.add_argument("--out", type=Path, default=Path("bench/results_scale.json"))
    args = parser.parse_args()
    work = args.workdir
    (work / "logs").mkdir(parents=True, exist_ok=True)
    bench_prepare.generate(work / "data", 1.0)
    write_karpathy(work / "data" / "coco", generated_image_ids(work / "data"))
    results = previous_figures(args.out)
    results["load_average_at_start"] = harness.load_average()
    for name in args.stages:
        record = run_stage(name, commands(work, args.lstm_steps)[name], work / "logs" / f"{name}.log")
        if name.startswith("train-"):
            record.update(epoch_timing(work / "models" / name.removeprefix("train-")))
        if name == "train-lstm":
            record["steps_timed"] = args.lstm_steps
        results[name] = record
        print(f"[{name}] {record['seconds']:.1f} s, peak RSS {record['peak_rss_gb']:.2f} GB", file=sys.stderr)
        harness.write_results(args.out, results)
    print(f"{'stage':<12}{'wall s':>10}{'peak RSS GB':>14}")
    for name in STAGES:
        if name in results:
            print(f"{name:<12}{results[name]['seconds']:>10.1f}{results[name]['peak_rss_gb']:>14.2f}")


if __name__ == "__main__":
    main()
