"""The stacked attention network against the tutorial's LSTM on questions that need attention.

On ``vqa synth --relations`` sets (cluttered scenes of 4-6 shapes; binding and position
questions), with the same seed and epochs for both, each model on its own default recipe
(``vqa train lstm`` / ``vqa train san``: batch, dropout, schedule) unless flags set them:

* LSTM: the tutorial's recurrent model on VGG16 fc7 vectors (``vqa features``);
* SAN: the stacked attention network on the VGG16 ``block5_pool`` grid (``vqa features --grid``);
* question only: the best train answer for each question string (the ceiling of a model
  that ignores the image).

Each is scored on val with the official metric, overall and per question kind (binding /
position), after every epoch (``history.json``'s ``val_modal_accuracy`` and the SAN's
``attention_entropy_<l>``) and at the end (``vqa evaluate --model``). Then the SAN's training
throughput through what ``vqa train`` feeds (``data.in_graph_batches``: ``QuestionBatches``'
batches gathered inside TensorFlow), and through the ``QuestionBatches`` PyDataset itself, is
timed against ``model.fit`` on in-memory arrays of the same shapes (median of --repeats,
interleaved; ``--throughput-only`` runs this part alone). VGG16 has random weights: nothing can be downloaded here.

    python -m bench.bench_attention                      # defaults: 1500 images, 12 epochs
    python -m bench.bench_attention --images 600 --epochs 4 --out /tmp/quick.json
    # each model's defaults, widths / 4, on 1,500 and 4,500 scenes (the 1,500 are a third of the 4,500's
    # train and val images, so one VGG16 pass serves both); one results file per scene count:
    python -m bench.bench_attention --images 1500 4500 --epochs 10 --width 0.25 --repeats 0 \
        --out 'bench/results_attention_defaults_{images}.json'
    # meanwhile, in a second process, VGG16 over the 3,000 images the 4,500 add:
    python -m bench.bench_attention --images 1500 4500 --width 0.25 --features-part 4500
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from bench import harness  # noqa: E402
from bench.bench_train import time_fit  # noqa: E402

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, nargs="+", default=[1500],
                   help="synthetic images; several counts: nested subsets of the largest set (default: 1500)")
    p.add_argument("--epochs", type=int, default=12, help="epochs for both models (default: 12)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="batch size for both models (default: each model's own, LSTM 256, SAN 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=224, help="grid features' image size (default: 224 -> 7 x 7)")
    p.add_argument("--width", type=float, default=1.0,
                   help="every default width times this, for both models alike (LSTM 512 / hidden 1024, "
                   "SAN d 1024 / k 512; default: 1)")
    p.add_argument("--lstm-units", type=int, default=None, help="the LSTM's width (default: 512 x --width)")
    p.add_argument("--san-units", type=int, default=None, help="the SAN's d (default: 1024 x --width)")
    p.add_argument("--attention-units", type=int, default=None, help="the SAN's k (default: 512 x --width)")
    p.add_argument("--recipe", default="", help="TrainConfig fields for both models, as JSON "
                   "(e.g. '{\"dropout\": 0.0, \"lr_schedule\": \"none\"}')")
    p.add_argument("--san-flags", default="", help="more TrainConfig fields for the SAN, as JSON")
    p.add_argument("--models", nargs="+", choices=["lstm", "san"], default=["lstm", "san"])
    p.add_argument("--repeats", type=int, default=3, help="throughput: median of this many runs")
    p.add_argument("--steps", type=int, default=20, help="throughput: timed batches per run")
    p.add_argument("--throughput-only", action="store_true",
                   help="only time the SAN's input pipeline (on the data in --workdir), updating --out")
    p.add_argument("--train", type=int, nargs="+", default=None, metavar="COUNT",
                   help="train on these of the --images counts only (default: all); a count added to a "
                   "--workdir later is prepared then, its features taken from a larger count's files")
    p.add_argument("--features-part", type=int, default=None, metavar="COUNT",
                   help="only extract the features of COUNT's images that the next smaller count lacks, "
                   "in a second process while the main run trains the smaller count (2 processes on 2 cores)")
    p.add_argument("--workdir", type=Path, default=HERE / "out" / "attention")
    p.add_argument("--out", default=str(HERE / "results_attention.json"),
                   help="results file; with several --images, a pattern with {images}")
    return p.parse_args(argv)


def make_data(workdir: Path, args) -> dict[int, dict[str, Path]]:
    """vqa synth --relations (the largest count), nested subsets and vqa prepare; the paths per scene count.

    The features are made later, per count (:func:`make_features`), so that the smallest count
    trains before VGG16 has run over the largest set.
    """
    largest = max(args.images)
    raw = workdir / "data"
    paths = {count: {"raw": raw if count == largest else workdir / f"data_{count}",
                     "prepared": workdir / ("preprocessed" if count == largest else f"preprocessed_{count}"),
                     "fc7": workdir / f"features_fc7_{count}.h5",
                     "grid": workdir / f"features_grid{args.image_size}_{count}.h5"} for count in args.images}
    stamp = workdir / "inputs.json"
    key = {"largest": largest, "seed": args.seed, "image_size": args.image_size}
    record = json.loads(stamp.read_text()) if stamp.is_file() else {}
    if "images" in record:  # an earlier version's stamp: every count it lists was prepared
        counts = record.pop("images")
        record = {**record, "largest": max(counts), "prepared": sorted(counts)}
    if {k: record.get(k) for k in key} != key:
        from vqa.synthetic import generate_dataset

        generate_dataset(raw, num_images=largest, seed=args.seed, relations=True)
        record = {**key, "prepared": []}
    from vqa.prepare import prepare_dataset

    for count in sorted(set(args.images) - set(record["prepared"])):  # a count added later: only its subset
        if count != largest:
            write_subset(raw, paths[count]["raw"], subset_ids(split_image_ids(raw), count, largest))
        prepare_dataset(data_dir=paths[count]["raw"], out_dir=paths[count]["prepared"], num_answers=1000,
                        progress=False)
        record["prepared"] = sorted({*record["prepared"], count})
        stamp.write_text(json.dumps(record))
    return paths


def split_image_ids(raw: Path) -> dict[str, list[int]]:
    """Each annotated split's image ids, sorted, from the generated questions."""
    splits = {}
    for split in ("train2014", "val2014"):
        questions = json.loads((raw / f"v2_OpenEnded_mscoco_{split}_questions.json").read_text())["questions"]
        splits[split] = sorted({q["image_id"] for q in questions})
    return splits


def subset_ids(splits: dict[str, list[int]], count: int, largest: int) -> set[int]:
    """The first count/largest of each split's (randomly drawn, sorted) image ids."""
    return {image_id for ids in splits.values() for image_id in ids[:round(len(ids) * count / largest)]}


def write_subset(raw: Path, out: Path, keep: set[int]) -> None:
    """Copy the official JSON files of ``raw`` to ``out`` with only the questions on ``keep``'s images."""
    out.mkdir(parents=True, exist_ok=True)
    for source in raw.glob("v2_*.json"):
        record = json.loads(source.read_text())
        for field in ("questions", "annotations"):
            if field in record:
                record[field] = [item for item in record[field] if item["image_id"] in keep]
        (out / source.name).write_text(json.dumps(record))


def image_ids_of(raw: Path) -> set[int]:
    """The image ids that a dataset folder's questions are about."""
    return {q["image_id"] for source in raw.glob("v2_OpenEnded_*_questions.json")
            for q in json.loads(source.read_text())["questions"]}


def make_features(paths: dict[int, dict[str, Path]], count: int, args) -> None:
    """fc7 and grid files holding every image of ``count``: the next smaller count's rows plus the new ones.

    A larger count's files, when they exist, already hold every image of ``count``: they serve as they are.
    """
    made = [c for c in sorted(args.images) if c >= count and paths[c]["fc7"].is_file() and paths[c]["grid"].is_file()]
    if made:
        paths[count].update(fc7=paths[made[0]]["fc7"], grid=paths[made[0]]["grid"])
        return
    from vqa.features import find_images

    smaller = [c for c in sorted(args.images) if c < count]
    done = image_ids_of(paths[smaller[-1]]["raw"]) if smaller else set()
    wanted = image_ids_of(paths[count]["raw"]) - done
    images = [(i, path) for i, path in find_images(paths[max(args.images)]["raw"] / "images") if i in wanted]
    new = {kind: paths[count][kind].with_suffix(".new.h5") for kind in ("fc7", "grid")}
    running = new["grid"].with_suffix(".running")
    while running.is_file() and not args.features_part:  # a --features-part process is extracting these rows: wait for it
        time.sleep(30)
    if not (new["fc7"].is_file() and new["grid"].is_file()):
        extract_both(images, new["fc7"], new["grid"], image_size=args.image_size)
    if smaller and not paths[smaller[-1]]["fc7"].is_file():
        return  # --features-part: the smaller count's files come later, from the main run
    for kind in ("fc7", "grid"):
        parts = ([paths[smaller[-1]][kind]] if smaller else []) + [new[kind]]
        concatenate_features(parts, paths[count][kind])
        new[kind].unlink()


def concatenate_features(parts: list[Path], out: Path) -> None:
    """One features file with the rows (and attributes) of ``parts``, in order."""
    from vqa.feature_file import FeaturesFile

    first = FeaturesFile.open(parts[0])
    with FeaturesFile.create(out, layout=first.layout, image_size=first.image_size, source=first.source,
                             cnn_weights=first.cnn_weights) as writer:
        for part in parts:
            rows, image_ids = FeaturesFile.open(part, layout=first.layout).load()
            writer.append(np.asarray(rows), image_ids)


def extract_both(images: list[tuple[int, Path]], fc7_path: Path, grid_path: Path, *, image_size: int) -> None:
    """One pass of the random-weight VGG16 over ``images`` writing an fc7 file and a block5_pool grid file.

    The same kernels as ``vqa features`` (with and without ``--grid``) with ``--cnn-weights random``;
    one pass halves the CPU time of the two commands.
    """
    import keras

    from vqa import artifacts, features as F
    from vqa.feature_file import GRID_LAYER, FeaturesFile

    if image_size != artifacts.FC7_IMAGE_SIZE:
        raise SystemExit("one-pass extraction needs --image-size 224 (fc7's input)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random VGG16 weights, expected here
        fc2 = F.load_cnn("random")  # VGG16 up to fc2; block5_pool is one of its layers
    cnn = keras.Model(fc2.input, [fc2.get_layer(GRID_LAYER).output, fc2.output], name="vgg16_grid_fc2")
    failures: list[str] = []
    start = time.perf_counter()
    attrs = dict(source="images", cnn_weights="random", image_size=image_size)
    with FeaturesFile.create(fc7_path, layout=artifacts.LAYOUT_VECTOR, **attrs) as fc7, \
            FeaturesFile.create(grid_path, layout=artifacts.LAYOUT_GRID, **attrs) as grid:
        for ids, pixels, _ in F._prefetch_batches(images, 32, failures, size=image_size):
            grid_rows, fc7_rows = cnn.predict_on_batch(F.preprocess_images(pixels))
            grid.append(grid_rows, ids)
            fc7.append(fc7_rows, ids)
    if failures:
        raise SystemExit(f"unreadable images: {failures[:3]}")
    print(f"VGG16 over {len(images)} images: {time.perf_counter() - start:.0f} s", flush=True)


def kinds_of(prepared: Path, report: dict) -> dict[str, float]:
    """Official accuracy per question kind from the report's per-question-type block."""
    from vqa.prepared import load_prepared_split

    val = load_prepared_split(prepared, "val")
    per_question = report["perQuestion"]
    scores: dict[str, list[float]] = {}
    for question_id, question_type in zip(val.question_ids.tolist(), val.question_types):
        value = per_question.get(str(question_id), per_question.get(question_id))
        if value is not None:
            scores.setdefault(question_type.split(":")[0], []).append(float(value))
    return {kind: round(float(np.mean(values)), 2) for kind, values in sorted(scores.items())}


def model_sizes(kind: str, args) -> dict:
    """TrainConfig fields for ``kind``: --recipe, then the widths (each default times --width, or as given)."""
    if kind == "lstm":
        sizes = {"lstm_units": args.lstm_units or round(512 * args.width), "hidden_units": round(1024 * args.width)}
    else:
        sizes = {"lstm_units": args.san_units or round(1024 * args.width),
                 "attention_units": args.attention_units or round(512 * args.width),
                 **json.loads(args.san_flags or "{}")}
    return {**json.loads(args.recipe or "{}"), **sizes}


def recipe_of(config) -> dict:
    """The fields of a TrainConfig that make a model's recipe (what the results file records)."""
    names = ("batch_size", "epochs", "optimizer", "learning_rate", "lr_schedule", "dropout", "lstm_dropout",
             "lstm_units", "lstm_layers", "hidden_units", "hidden_layers", "attention_units", "attention_layers",
             "norm_question", "norm_image", "standardize_image", "standardize_question", "bucket")
    return {name: getattr(config, name) for name in names}


def train_one(kind: str, paths: dict[str, Path], workdir: Path, args) -> dict:
    """Train ``kind`` for --epochs on its defaults (and the flags' fields), evaluate it on val."""
    from vqa.evaluate import evaluate_model
    from vqa.train import TrainConfig, train_model

    sizes = model_sizes(kind, args)
    config = TrainConfig.for_model(kind, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                  verbose=2, **sizes)
    features = paths["grid" if kind == "san" else "fc7"]
    model_dir = workdir / "models" / kind
    start = time.perf_counter()
    history = train_model(config, data_dir=paths["prepared"], features_path=features, out_dir=model_dir,
                          logdir=workdir / "Graph" / kind, overwrite=True)
    seconds = time.perf_counter() - start
    report = evaluate_model(model_dir, data_dir=paths["prepared"], features_path=features, split="val",
                            results_path=workdir / "results" / kind / "results.json")
    keep = ("val_modal_accuracy", "accuracy", "loss", "val_loss", "learning_rate", "lr", "attention_entropy_1",
            "attention_entropy_2")
    return {"config": sizes, "recipe": recipe_of(config), "train_seconds": round(seconds, 1),
            "overall": report["overall"], "per_kind": kinds_of(paths["prepared"], report),
            "perAnswerType": report["perAnswerType"],
            "history": {k: [round(float(v), 4) for v in history[k]] for k in keep if k in history}}


def question_only(paths: dict[str, Path]) -> dict:
    from vqa.demo import question_only_report

    report = question_only_report(paths["prepared"])
    return {"overall": report["overall"], "per_kind": kinds_of(paths["prepared"], report)}


def san_throughput(paths: dict[str, Path], args) -> dict:
    """SAN samples/s: QuestionBatches over the memory-mapped grid file vs in-memory arrays."""
    import keras

    from vqa import artifacts
    from vqa.data import QuestionBatches, feature_rows, image_statistics, in_graph_batches
    from vqa.feature_file import load_features
    from vqa.prepared import load_prepared
    from vqa.train import TrainConfig, build_model

    config = TrainConfig.for_model("san", batch_size=args.batch_size, seed=args.seed, **model_sizes("san", args))
    prepared = load_prepared(paths["prepared"], splits=(artifacts.TRAIN_SPLIT,))
    split = prepared.splits[artifacts.TRAIN_SPLIT]
    split = split.select(split.labels >= 0)
    features, image_ids = load_features(paths["grid"], layout=artifacts.LAYOUT_GRID)
    rows = feature_rows(split.image_ids, image_ids)
    _, trainer = build_model(config, embeddings=prepared.embeddings, num_answers=len(prepared.answers),
                             image_shape=features.shape[1:], image_statistics=image_statistics(features, rows))
    dataset = QuestionBatches(split, features, rows, batch_size=config.batch_size, bucket=config.bucket, seed=0)
    # What `vqa train` feeds on one device: the same batches gathered inside TensorFlow when the features fit.
    in_graph = in_graph_batches(QuestionBatches(split, features, rows, batch_size=config.batch_size,
                                                bucket=config.bucket, seed=0))
    warmup = 3
    steps = min(args.steps, len(dataset) - warmup)
    timed = dataset.batches[warmup:warmup + steps]
    width = int(round(np.mean([split.lengths[b].max() for b in timed])))
    n = (warmup + steps) * config.batch_size
    rng = np.random.default_rng(0)
    take = rng.integers(0, len(split.token_ids), n)
    ceiling_x = {"question": split.token_ids[take, :width].copy(),
                 "image_features": rng.random((n, *features.shape[1:]), dtype=np.float32)}
    runs = {"pipeline": [], "pydataset": [], "ceiling": []}
    for _ in range(args.repeats):  # interleaved: each repeat times the three feeds one after another
        if in_graph is not None:
            runs["pipeline"].append(time_fit(trainer, in_graph, steps=steps, warmup=warmup,
                                             batch_size=config.batch_size))
        runs["pydataset" if in_graph is not None else "pipeline"].append(
            time_fit(trainer, dataset, steps=steps, warmup=warmup, batch_size=config.batch_size))
        runs["ceiling"].append(time_fit(trainer, ceiling_x, y=split.labels[take], steps=steps, warmup=warmup,
                                        batch_size=config.batch_size))
    result = {name + "_samples_per_s": round(statistics.median(values), 1) for name, values in runs.items() if values}
    result["pipeline_vs_ceiling"] = round(result["pipeline_samples_per_s"] / result["ceiling_samples_per_s"], 3)
    if runs["pydataset"]:
        result["pydataset_vs_ceiling"] = round(result["pydataset_samples_per_s"] / result["ceiling_samples_per_s"], 3)
    result.update(timed_steps=steps, ceiling_width=width, runs={k: [round(v, 1) for v in vs] for k, vs in runs.items()})
    keras.backend.clear_session()
    return result


def question_counts(prepared: Path) -> dict[str, int]:
    """Train and val questions in a prepared folder."""
    from vqa.prepared import load_prepared_split

    return {split: len(load_prepared_split(prepared, split).question_ids) for split in ("train", "val")}


def out_path(args, count: int) -> Path:
    """--out for this scene count ({images} filled in)."""
    if len(args.images) > 1 and "{images}" not in args.out:
        raise SystemExit("several --images need an --out pattern with {images}")
    return Path(args.out.format(images=count))


def run_count(count: int, paths: dict[str, Path], args) -> None:
    """Question only, then each model, on one scene count; the results file is rewritten after each step."""
    out = out_path(args, count)
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "scenes": count,
               "questions": question_counts(paths["prepared"]), "question_only": question_only(paths)}
    print(count, "scenes, question only:", results["question_only"], flush=True)
    for kind in args.models:
        results[kind] = train_one(kind, paths, args.workdir / f"scenes_{count}", args)
        print(count, kind, {k: results[kind][k] for k in ("overall", "per_kind", "train_seconds")}, flush=True)
        results["load_average_end"] = harness.load_average()
        harness.write_results(out, results)
    if "san" in args.models and args.repeats > 0:
        results["san_throughput"] = san_throughput(paths, args)
        print("SAN throughput:", results["san_throughput"], flush=True)
        harness.write_results(out, results)
    print(f"wrote {out}", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    paths = make_data(args.workdir, args)
    if args.features_part:
        running = paths[args.features_part]["grid"].with_suffix(".new.running")
        running.touch()
        try:
            make_features(paths, args.features_part, args)
        finally:
            running.unlink()
        return 0
    if args.throughput_only:
        for count in sorted(args.images):
            make_features(paths, count, args)
        out = out_path(args, max(args.images))
        record = json.loads(out.read_text()) if out.is_file() else {}
        results = record.get("figures", record)  # a harness record, or an older flat file
        results["san_throughput"] = {**san_throughput(paths[max(args.images)], args), "machine": harness.machine()}
        print("SAN throughput:", results["san_throughput"], flush=True)
        harness.write_results(out, results)
        return 0
    for count in sorted(args.train or args.images):
        make_features(paths, count, args)
        run_count(count, paths[count], args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
