"""`vqa demo`: the whole tutorial, end to end, on built-in synthetic data.

synth -> features (VGG16, random weights: fc7 vectors and the block5_pool grid) ->
prepare -> train the MLP, the LSTM and the stacked attention network (with
TensorBoard logs) -> evaluate each with the official metric -> the relational part
(cluttered scenes, questions about which object and where: the LSTM on fc7 against
the SAN, and a picture of where the SAN looks) -> ask two questions -> how to serve
the trained model. It needs no dataset and no network, and ends with tables that
put each model beside the best question-only answers, so the image's contribution
is visible. It reads ``vqa_data.h5`` only through `vqa.data`.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from vqa import artifacts
from vqa.evaluate import question_only_report  # the question-only baseline's table (light: no TensorFlow)

MODELS = ("mlp", "lstm", "san")
# The relational part trains the SAN only, on grid features only (the LSTM on fc7 beside it is
# bench/bench_attention.py's, which needs more scenes than a demo can render in minutes).
RELATIONAL_MODELS = ("san",)
STAGES = 8


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
    # The SAN reads a 7 x 7 grid (224-pixel images) and is narrowed like the LSTM (paper: d = 1024);
    # on small sets attention forms only without dropout and at a fixed rate (docs/attention.md).
    san_epochs: int = 10
    san_units: int = 128
    attention_units: int = 64
    grid_image_size: int = 224
    # The relational part: cluttered scenes of 4-6 shapes (vqa synth --relations).
    relations: bool = True
    # Too few scenes for attention to form (bench/bench_attention.py uses 1,500): this part shows
    # the pipeline and the table; docs/attention.md has the comparison.
    relation_images: int = 300
    relation_epochs: int = 15


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
    relational: list[ModelResult] = field(default_factory=list)
    relational_question_only: dict = field(default_factory=dict)
    attention_figure: Path | None = None


def _stage(step: int, total: int, text: str) -> None:
    print(f"\n[{step}/{total}] {text}", flush=True)


@dataclass(frozen=True)
class DemoInputs:
    """One synthetic dataset, prepared, with both kinds of VGG16 features."""

    raw: Path  # `vqa synth` output
    prepared: Path  # `vqa prepare` output
    vector: Path  # `vqa features` (fc7)
    grid: Path  # `vqa features --grid`

    def features(self, kind: str) -> Path:
        """The features file model ``kind`` reads."""
        return self.grid if kind == "san" else self.vector


def make_inputs(folder: Path, config: DemoConfig, *, relations: bool = False, step: int = 1) -> DemoInputs:
    """Synthesise a dataset, extract random-weight VGG16 features (fc7 and grid) and prepare it."""
    from vqa.features import extract_image_features
    from vqa.prepare import prepare_dataset
    from vqa.synthetic import generate_dataset

    inputs = DemoInputs(folder / "data", folder / "preprocessed", folder / "features.h5",
                        folder / f"features_grid{config.grid_image_size}.h5")
    if relations:
        images = config.relation_images
        generate_dataset(inputs.raw, num_images=images, seed=config.seed, relations=True)
    else:
        images = config.num_images
        _stage(step, STAGES, f"vqa synth: {images} images of coloured shapes (up to {config.max_objects} each), "
                             "official VQA v2 JSON")
        generate_dataset(inputs.raw, num_images=images, seed=config.seed, max_objects=config.max_objects)
        _stage(step + 1, STAGES, "vqa features: VGG16 fc7, and the 7 x 7 block5_pool grid for the SAN (--grid; "
                                 "random weights: no download needed; fine for shapes and colours)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the random-weights warning: expected in the demo
        if not relations:
            extract_image_features(inputs.raw / artifacts.IMAGES_DIR, inputs.vector, cnn_weights="random")
        extract_image_features(inputs.raw / artifacts.IMAGES_DIR, inputs.grid, cnn_weights="random",
                               layout=artifacts.LAYOUT_GRID, image_size=config.grid_image_size)
    if not relations:
        _stage(step + 2, STAGES, "vqa prepare: spaCy tokens + en_core_web_md vectors -> text files + HDF5")
    prepare_dataset(data_dir=inputs.raw, out_dir=inputs.prepared, num_answers=config.num_answers,
                    progress=not relations)
    return inputs


def train_and_evaluate(kind: str, *, workdir: Path, inputs: DemoInputs, config: DemoConfig,
                       epochs: int | None = None) -> ModelResult:
    """Train one model on ``inputs`` under ``workdir``, then score it on val with the official metric."""
    from vqa.evaluate import evaluate_model
    from vqa.train import TrainConfig, train_model

    sizes = {"mlp": {}, "lstm": {"lstm_units": config.lstm_units},
             "san": {"lstm_units": config.san_units, "attention_units": config.attention_units,
                     "dropout": 0.0, "lr_schedule": "none"}}[kind]
    if epochs is None:
        epochs = {"mlp": config.mlp_epochs, "lstm": config.lstm_epochs, "san": config.san_epochs}[kind]
    train_config = TrainConfig.tutorial(kind, epochs=epochs, batch_size=config.batch_size, seed=config.seed,
                                        update_freq=10, **sizes)
    model_dir = workdir / "models" / kind
    start = time.perf_counter()
    train_model(train_config, data_dir=inputs.prepared, features_path=inputs.features(kind), out_dir=model_dir,
                logdir=workdir / "Graph" / kind, overwrite=True)
    seconds = time.perf_counter() - start
    samples = _num_training_questions(inputs.prepared) * epochs
    results = workdir / "results" / kind
    report = evaluate_model(model_dir, data_dir=inputs.prepared, features_path=inputs.features(kind), split="val",
                            results_path=results / "results.json", report_path=results / "report.json")
    return ModelResult(kind, report, seconds, samples / seconds)


def _num_training_questions(prepared: Path) -> int:
    """Train questions whose modal answer is in the top K (the ones the trainers use)."""
    from vqa.data import load_prepared

    labels = load_prepared(prepared, splits=(artifacts.TRAIN_SPLIT,)).splits[artifacts.TRAIN_SPLIT].labels
    return int((labels >= 0).sum())


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


def question_kinds(report: dict) -> dict[str, float]:
    """Official accuracy per question kind ("binding", "position": the part of a relational
    question type before its colon), from a report's per-question-type block."""
    from vqa.synthetic import question_kind

    groups: dict[str, list[float]] = {}
    for question_type, value in report["perQuestionType"].items():
        kind = question_kind(question_type)
        if kind is not None:
            groups.setdefault(kind, []).append(value)
    # Each template has about one question per image, so the mean of the templates is the kind's.
    return {kind: sum(values) / len(values) for kind, values in sorted(groups.items())}


def _row(name: str, report: dict, columns: list[str], values, extra: str = "") -> str:
    return f"{name:<24}{report['overall']:>8.2f}" + "".join(f"{values.get(c, float('nan')):>10.2f}" for c in columns) + extra


def format_table(results: list[ModelResult], question_only: dict, *, kinds: bool = False) -> str:
    """A summary table: accuracy overall and per answer type (or per relational question kind),
    train time and speed, and the best question-only answers last."""
    columns = ["binding", "position"] if kinds else list(artifacts.ANSWER_TYPES)
    split = question_kinds if kinds else (lambda report: report["perAnswerType"])
    header = f"{'model':<24}{'overall':>8}" + "".join(f"{c:>10}" for c in columns) + f"{'train s':>9}{'samples/s':>11}"
    rows = [header, "-" * len(header)]
    for result in results:
        rows.append(_row(f"{result.name.upper()} (image + question)", result.report, columns, split(result.report),
                         f"{result.train_seconds:>9.1f}{result.samples_per_second:>11.0f}"))
    rows.append(_row("question only (best)", question_only, columns, split(question_only)))
    return "\n".join(rows)


def serving_instructions(model_dir: Path, image: Path, question: str) -> str:
    """How to serve the demo's model (from the repository root) and query it with curl."""
    return (f"Serve it:  VQA_MODEL_DIR={model_dir} VQA_CNN_WEIGHTS=random "
            "gunicorn -w 1 -b 127.0.0.1:5000 'serving.app:create_app()'\n"
            f"Ask it:    curl -F image=@{image} -F 'question={question}' http://127.0.0.1:5000/predict\n"
            f"Watch it:  tensorboard --logdir {model_dir.parent.parent / 'Graph'}")


def relational_part(workdir: Path, config: DemoConfig, summary: DemoSummary) -> None:
    """Cluttered scenes whose questions need attention: the SAN on the grid beside the best
    question-only answers, and a picture of where the SAN looks."""
    _stage(7, STAGES, f"relations: vqa synth --relations ({config.relation_images} cluttered scenes: which "
                      "object has which colour, what is where), grid features, vqa prepare, vqa train san")
    folder = workdir / "relations"
    inputs = make_inputs(folder, config, relations=True)
    for kind in RELATIONAL_MODELS:
        summary.relational.append(train_and_evaluate(kind, workdir=folder, inputs=inputs, config=config,
                                                     epochs=config.relation_epochs))
    summary.relational_question_only = question_only_report(inputs.prepared)


def attention_picture(folder: Path, inputs: DemoInputs) -> Path:
    """``attention.png``: the SAN's attention layers over a val image ("what color is the <shape>?")."""
    from vqa.attention_figure import ask_with_attention_figure
    from vqa.predict import Predictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random VGG16 weights, as in training
        predictor = Predictor(folder / "models" / "san", cnn_weights="random")
    samples = sample_questions(inputs.raw, count=20)
    image, question = next(((image, question) for image, question in samples
                            if question.lower().startswith("what color is the")), samples[0])
    out = folder / "attention.png"
    ask_with_attention_figure(predictor, image, question, out=out, top=1)
    return out


def run_demo(workdir: Path = Path("demo"), *, config: DemoConfig = DemoConfig()) -> DemoSummary:
    """Run the tutorial end to end in ``workdir`` and print the summary tables.

    Returns:
        A DemoSummary with every model's official report and the question-only baselines.
    """
    workdir = Path(workdir).resolve()
    inputs = make_inputs(workdir, config)
    summary = DemoSummary(workdir)
    for step, kind in enumerate(MODELS, start=4):
        _stage(step, STAGES, f"vqa train {kind} + vqa evaluate --split val "
                             f"(TensorBoard logs: {workdir / 'Graph' / kind})")
        summary.results.append(train_and_evaluate(kind, workdir=workdir, inputs=inputs, config=config))
    summary.question_only = question_only_report(inputs.prepared)
    summary.attention_figure = attention_picture(workdir, inputs)
    if config.relations:
        relational_part(workdir, config, summary)
    _stage(STAGES, STAGES, "vqa ask: two questions about two val images")
    best = max(summary.results, key=lambda result: result.report["overall"])
    samples = sample_questions(inputs.raw)
    summary.answers = ask_samples(workdir / "models" / best.name, samples)
    print("\n".join(summary.answers))
    num_val = len(summary.question_only["perQuestion"])
    print(f"\nOfficial VQA accuracy on the synthetic val split ({num_val} questions, one shape per image):\n")
    print(format_table(summary.results, summary.question_only))
    if summary.relational:
        num_val = len(summary.relational_question_only["perQuestion"])
        print(f"\nRelations: cluttered scenes ({num_val} val questions), official accuracy per question kind:\n")
        print(format_table(summary.relational, summary.relational_question_only, kinds=True))
    print(f"\nWhere the SAN looks: {summary.attention_figure}")
    print("\n" + serving_instructions(workdir / "models" / best.name, *samples[0]))
    return summary
