"""`vqa demo`: the whole tutorial, end to end, on built-in synthetic data.

synth -> features (VGG16, random weights) -> prepare -> train MLP and LSTM (with
TensorBoard logs) -> evaluate both with the official metric -> ask two questions
-> how to serve the trained model. It needs no dataset and no network, and ends
with a table that puts each model beside the best question-only answers, so the
image's contribution is visible. It reads ``vqa_data.h5`` only through `vqa.data`.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from vqa import artifacts

MODELS = ("mlp", "lstm")


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo run; the defaults finish in a few minutes on a 2-core CPU."""

    num_images: int = 300
    # One shape per image: with random VGG16 weights (nothing can be downloaded here),
    # ~240 training images teach colour and shape but not which colour is which shape's.
    max_objects: int = 1
    seed: int = 0
    num_answers: int = 1000
    mlp_epochs: int = 12
    lstm_epochs: int = 10
    # The tutorial's topology throughout; only the LSTM width is reduced (512 -> 128)
    # so that three stacked layers train in about a minute on a CPU.
    lstm_units: int = 128
    batch_size: int = 32


@dataclass
class ModelResult:
    """One trained model's figures for the summary table."""

    name: str
    report: dict
    train_seconds: float
    samples_per_second: float


@dataclass
class DemoSummary:
    """What the demo measured."""

    workdir: Path
    results: list[ModelResult] = field(default_factory=list)
    question_only: dict = field(default_factory=dict)
    answers: list[str] = field(default_factory=list)


def _stage(step: int, total: int, text: str) -> None:
    print(f"\n[{step}/{total}] {text}", flush=True)


def make_inputs(workdir: Path, config: DemoConfig) -> tuple[Path, Path, Path]:
    """Synthesise the dataset, extract random-weight VGG16 features and prepare it.

    Returns:
        (raw data folder, prepared folder, features HDF5).
    """
    from vqa.features import extract_image_features
    from vqa.prepare import prepare_dataset
    from vqa.synthetic import generate_dataset

    raw, prepared, features = workdir / "data", workdir / "preprocessed", workdir / "features.h5"
    _stage(1, 6, f"vqa synth: {config.num_images} images of coloured shapes (up to {config.max_objects} each), "
              "official VQA v2 JSON")
    generate_dataset(raw, num_images=config.num_images, seed=config.seed, max_objects=config.max_objects)
    _stage(2, 6, "vqa features: VGG16 fc7 (random weights: no download needed; fine for shapes and colours)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the random-weights warning: expected in the demo
        extract_image_features(raw / artifacts.IMAGES_DIR, features, cnn_weights="random")
    _stage(3, 6, "vqa prepare: spaCy tokens + en_core_web_md vectors -> text files + HDF5")
    prepare_dataset(data_dir=raw, out_dir=prepared, num_answers=config.num_answers)
    return raw, prepared, features


def train_and_evaluate(kind: str, *, workdir: Path, prepared: Path, features: Path,
                       config: DemoConfig) -> ModelResult:
    """Train one of the tutorial's models, then score it on val with the official metric."""
    from vqa.evaluate import evaluate_model
    from vqa.train import TrainConfig, train_model

    sizes = {"lstm_units": config.lstm_units} if kind == "lstm" else {}
    epochs = config.mlp_epochs if kind == "mlp" else config.lstm_epochs
    train_config = TrainConfig.tutorial(kind, epochs=epochs, batch_size=config.batch_size, seed=config.seed,
                                        update_freq=10, **sizes)
    model_dir = workdir / "models" / kind
    start = time.perf_counter()
    train_model(train_config, data_dir=prepared, features_path=features, out_dir=model_dir,
                logdir=workdir / "Graph" / kind, overwrite=True)
    seconds = time.perf_counter() - start
    samples = _num_training_questions(prepared) * epochs
    results = workdir / "results" / kind
    report = evaluate_model(model_dir, data_dir=prepared, features_path=features, split="val",
                            results_path=results / "results.json", report_path=results / "report.json")
    return ModelResult(kind, report, seconds, samples / seconds)


def _num_training_questions(prepared: Path) -> int:
    """Train questions whose modal answer is in the top K (the ones the trainers use)."""
    from vqa.data import load_prepared

    labels = load_prepared(prepared, splits=(artifacts.TRAIN_SPLIT,)).splits[artifacts.TRAIN_SPLIT].labels
    return int((labels >= 0).sum())


def question_only_report(prepared: Path) -> dict:
    """Official accuracy on val of the most common train answer for each question text."""
    from vqa.data import load_prepared_split
    from vqa.evaluate import question_only_answers
    from vqa.metric import score_predictions, summarize_accuracy

    train = load_prepared_split(prepared, artifacts.TRAIN_SPLIT)
    val = load_prepared_split(prepared, "val")
    accuracies = score_predictions(val.human_answers, question_only_answers(train, val.questions))
    return summarize_accuracy(val.question_ids.tolist(), accuracies, question_types=val.question_types,
                              answer_types=val.answer_types)


def sample_questions(raw: Path, *, count: int = 2) -> list[tuple[Path, str]]:
    """The first val questions about ``count`` different images: (image path, question)."""
    questions = json.loads((raw / artifacts.V2_QUESTIONS_JSON.format(split=artifacts.VAL_SPLIT)).read_text())
    picked, seen = [], set()
    for record in questions["questions"]:
        if record["image_id"] not in seen:  # two different images
            seen.add(record["image_id"])
            picked.append(record)
        if len(picked) == count:
            break
    folder = raw / artifacts.IMAGES_DIR / artifacts.VAL_SPLIT
    return [(folder / artifacts.COCO_IMAGE_FILE.format(split=artifacts.VAL_SPLIT, image_id=record["image_id"]),
             record["question"]) for record in picked]


def ask_samples(model_dir: Path, samples: list[tuple[Path, str]]) -> list[str]:
    """Answer each (image, question) with the model, as `vqa ask` does; the tutorial-style sentences."""
    from vqa.predict import Predictor, answer_sentence

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random VGG16 weights, as in training
        predictor = Predictor(model_dir, cnn_weights="random")
    lines = []
    for image, question in samples:
        answer, probability = predictor.ask(image, question, top=1)[0]
        lines.append(f"{image.name}: {question}\n    {answer_sentence(question, answer, probability)}")
    return lines


def format_table(summary: DemoSummary) -> str:
    """The final summary: accuracy overall and per answer type, train time and speed."""
    types = list(artifacts.ANSWER_TYPES)
    header = f"{'model':<24}{'overall':>8}" + "".join(f"{t:>9}" for t in types) + f"{'train s':>9}{'samples/s':>11}"
    rows = [header, "-" * len(header)]
    for result in summary.results:
        per_type = result.report["perAnswerType"]
        rows.append(f"{result.name.upper() + ' (image + question)':<24}{result.report['overall']:>8.2f}"
                    + "".join(f"{per_type.get(t, float('nan')):>9.2f}" for t in types)
                    + f"{result.train_seconds:>9.1f}{result.samples_per_second:>11.0f}")
    baseline = summary.question_only
    rows.append(f"{'question only (best)':<24}{baseline['overall']:>8.2f}"
                + "".join(f"{baseline['perAnswerType'].get(t, float('nan')):>9.2f}" for t in types))
    return "\n".join(rows)


def serving_instructions(model_dir: Path, image: Path, question: str) -> str:
    """How to serve the demo's model (from the repository root) and query it with curl."""
    return (f"Serve it:  VQA_MODEL_DIR={model_dir} VQA_CNN_WEIGHTS=random "
            "gunicorn -w 1 -b 127.0.0.1:5000 'serving.app:create_app()'\n"
            f"Ask it:    curl -F image=@{image} -F 'question={question}' http://127.0.0.1:5000/predict\n"
            f"Watch it:  tensorboard --logdir {model_dir.parent.parent / 'Graph'}")


def run_demo(workdir: Path = Path("demo"), *, config: DemoConfig = DemoConfig()) -> DemoSummary:
    """Run the tutorial end to end in ``workdir`` and print a summary table.

    Returns:
        A DemoSummary with every model's official report and the question-only baseline.
    """
    workdir = Path(workdir).resolve()
    raw, prepared, features = make_inputs(workdir, config)
    summary = DemoSummary(workdir)
    for step, kind in enumerate(MODELS, start=4):
        _stage(step, 6, f"vqa train {kind} + vqa evaluate --split val (TensorBoard logs: {workdir / 'Graph' / kind})")
        summary.results.append(train_and_evaluate(kind, workdir=workdir, prepared=prepared, features=features,
                                                  config=config))
    summary.question_only = question_only_report(prepared)
    _stage(6, 6, "vqa ask: two questions about two val images")
    best = max(summary.results, key=lambda result: result.report["overall"])
    samples = sample_questions(raw)
    summary.answers = ask_samples(workdir / "models" / best.name, samples)
    print("\n".join(summary.answers))
    num_val = len(summary.question_only["perQuestion"])
    print(f"\nOfficial VQA accuracy on the synthetic val split ({num_val} questions):\n")
    print(format_table(summary))
    print("\n" + serving_instructions(workdir / "models" / best.name, *samples[0]))
    return summary
