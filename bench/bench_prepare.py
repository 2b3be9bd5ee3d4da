"""Time `vqa prepare` on VQA-v2-sized synthetic JSON (443,757 train + 214,354 val questions).

    python -m bench.bench_prepare [--repeats 3] [--scale 1.0] [--out bench/results_prepare.json]
    python -m bench.bench_prepare --quick --out /tmp/prepare.json   # 0.2% of the sizes, 1 run

The JSON is generated once into bench/out/prepare_data/ (about 0.5 GB at full scale) and
reused. Each repeat runs `vqa prepare` in a fresh process from this tree's src/; peak memory
is that process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

from bench import harness

SIZES = {"train2014": (443_757, 82_783), "val2014": (214_354, 40_504)}
SUBJECTS = ["man", "woman", "dog", "cat", "bus", "train", "pizza", "table", "shirt", "sky", "ground", "car",
            "building", "sign", "plate", "horse", "umbrella", "bed", "truck", "giraffe", "elephant", "kite"]
TEMPLATES = [("what color is the {s}?", "what color is the", "other"),
             ("how many {s}s are in the picture?", "how many", "number"),
             ("is the {s} {a}?", "is the", "yes/no"), ("what is the {s} doing?", "what is the", "other"),
             ("are there any {s}s near the {t}?", "are there", "yes/no"),
             ("what is on the {t} next to the {s}?", "what is on the", "other"),
             ("why is the {s} {a} in this image of a {t}?", "why", "other")]
ADJECTIVES = ["red", "big", "old", "wet", "open", "empty", "happy", "wooden", "white", "small"]


def answer_pool(rng: random.Random) -> list[str]:
    """About 20k distinct answer strings; a Zipf-like draw over them gives VQA's long tail."""
    words = ADJECTIVES + SUBJECTS + [str(i) for i in range(20)] + ["yes", "no"]
    return words + [f"{rng.choice(words)} {rng.choice(SUBJECTS)} {i}" for i in range(20_000)]


def make_split(split: str, num_questions: int, num_images: int, first_id: int, rng: random.Random):
    pool = answer_pool(rng)
    cumulative = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(pool))))
    questions, annotations = [], []
    for k in range(num_questions):
        image_id = first_id + k % num_images
        template, qtype, atype = rng.choice(TEMPLATES)
        text = template.format(s=rng.choice(SUBJECTS), t=rng.choice(SUBJECTS), a=rng.choice(ADJECTIVES))
        qid = image_id * 1000 + k // num_images
        truth = rng.choices(pool, cum_weights=cumulative)[0]
        answers = [truth if rng.random() < 0.7 else rng.choices(pool, cum_weights=cumulative)[0] for _ in range(10)]
        questions.append({"image_id": image_id, "question": text.capitalize(), "question_id": qid})
        annotations.append({"question_id": qid, "image_id": image_id, "question_type": qtype,
                            "answer_type": atype, "multiple_choice_answer": truth,
                            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                                        for i, a in enumerate(answers)]})
    return questions, annotations


def generate(folder: Path, scale: float) -> None:
    marker = folder / f"complete-{scale}"
    if marker.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for offset, (split, (num_questions, num_images)) in enumerate(SIZES.items()):
        questions, annotations = make_split(split, int(num_questions * scale), int(num_images * scale),
                                            1 + offset * 1_000_000, rng)
        (folder / f"v2_OpenEnded_mscoco_{split}_questions.json").write_text(
            json.dumps({"data_subtype": split, "questions": questions}))
        (folder / f"v2_mscoco_{split}_annotations.json").write_text(
            json.dumps({"data_subtype": split, "annotations": annotations}))
        print(f"generated {split}: {len(questions):,} questions", file=sys.stderr)
    marker.touch()


def run_once(data: Path, out: Path) -> dict:
    """Wall seconds and peak RSS (GB) of one `vqa prepare` process run from this tree."""
    return harness.run_command([sys.executable, "-m", "vqa", "prepare", "--data-dir", str(data), "--out", str(out)],
                               env=harness.tree_env())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the VQA v2 sizes")
    parser.add_argument("--quick", action="store_true", help="--scale 0.002 --repeats 1 in a temporary folder")
    parser.add_argument("--workdir", type=Path, default=harness.REPOSITORY / "bench" / "out")
    parser.add_argument("--out", type=Path, default=harness.REPOSITORY / "bench" / "results_prepare.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.scale, args.repeats = 0.002, 1
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) if args.quick else args.workdir
        data = workdir / "prepare_data"
        generate(data, args.scale)
        runs = [run_once(data, workdir / "prepare_out") for _ in range(args.repeats)]
    times = [run["seconds"] for run in runs]
    figures = {"scale": args.scale, "questions": {split: int(n * args.scale) for split, (n, _) in SIZES.items()},
               "median_s": statistics.median(times), "runs_s": times,
               "peak_rss_gb": max(run["peak_rss_gb"] for run in runs)}
    harness.write_results(args.out, figures)
    print(f"vqa prepare, {args.scale:g} x VQA v2: median {figures['median_s']:.1f} s, "
          f"peak RSS {figures['peak_rss_gb']:.2f} GB; wrote {args.out}")


if __name__ == "__main__":
    main()
