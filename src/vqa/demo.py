"""`vqa demo`: the whole tutorial, end to end, on built-in synthetic data.

synth -> features (VGG16, random weights: fc7 vectors and the block5_pool grid, from
one pass) -> prepare -> train the MLP, the LSTM and the stacked attention network
(with TensorBoard logs) -> evaluate each with the official metric -> a picture of
where the SAN looks -> ask two questions -> how to serve the trained model; with
``relations``, also the relational part (cluttered scenes, questions about which
object and where). It needs no dataset and no network, and ends with tables that
put each model beside the best question-only answers, so the image's contribution
is visible. The tables go to ``summary.txt`` and, with the time of every stage,
the peak memory, the command, commit and machine, to ``demo_results.json`` in the
workdir. It reads ``vqa_data.h5`` only through `vqa.prepared`.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vqa import artifacts, provenance
from vqa.atomic import write_json_atomically, write_text_atomically
from vqa.config import DemoSettings, demo_flag_fields, flag_name
from vqa.evaluate import question_only_report  # the question-only baseline's table (light: no TensorFlow)
from vqa.sample_dataset import SampleDataset

MODELS = ("mlp", "lstm", "san")
# The relational part trains the SAN only, on grid features only (the LSTM on fc7 beside it is
# bench/bench_attention.py's, which needs more scenes than a demo can render in minutes).
RELATIONAL_MODELS = ("san",)
RESULTS_JSON = "demo_results.json"
SUMMARY_TEXT = "summary.txt"


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
    # Wall seconds per stage, in the order they ran ("total": start to summary).
    seconds: dict[str, float] = field(default_factory=dict)
    num_stages: int = 6
    load_average_at_start: list[float] = field(default_factory=list)
    results_file: Path | None = None


@contextmanager
def _stage(summary: DemoSummary, name: str, text: str) -> Iterator[None]:
    """Announce a stage, run it, and record its wall seconds under ``name``."""
    print(f"\n[{len(summary.seconds) + 1}/{summary.num_stages}] {text}", flush=True)
    start = time.perf_counter()
    yield
    summary.seconds[name] = round(time.perf_counter() - start, 1)


def make_inputs(folder: Path, settings: DemoSettings, *, relations: bool = False) -> SampleDataset:
    """Synthesise a dataset, extract random-weight VGG16 features (fc7 and grid, one pass) and prepare it."""
    from vqa.sample_dataset import GRID, VECTOR, build_sample_dataset

    if relations:  # the relational part trains the SAN only: the grid is all it needs
        return build_sample_dataset(folder, num_images=settings.relation_images, seed=settings.seed, relations=True,
                                    features=(GRID,), grid_image_size=settings.grid_image_size,
                                    num_answers=settings.num_answers)
    return build_sample_dataset(folder, num_images=settings.num_images, seed=settings.seed,
                                max_objects=settings.max_objects, features=(VECTOR, GRID),
                                grid_image_size=settings.grid_image_size, num_answers=settings.num_answers,
                                progress=True)


def train_and_evaluate(kind: str, *, workdir: Path, inputs: SampleDataset, settings: DemoSettings,
                       epochs: int | None = None) -> ModelResult:
    """Train one model on ``inputs`` under ``workdir``, then score it on val with the official metric."""
    from vqa.evaluate import evaluate_model
    from vqa.train import TrainConfig, train_model

    sizes = {"mlp": {}, "lstm": {"lstm_units": settings.lstm_units},
             "san": {"lstm_units": settings.san_units, "attention_units": settings.attention_units,
                     "dropout": 0.0, "lr_schedule": "none"}}[kind]
    if epochs is None:
        epochs = {"mlp": settings.mlp_epochs, "lstm": settings.lstm_epochs, "san": settings.san_epochs}[kind]
    train_config = TrainConfig.for_model(kind, epochs=epochs, batch_size=settings.batch_size, seed=settings.seed,
                                        update_freq=10, **sizes)
    model_dir = workdir / "models" / kind
    start = time.perf_counter()
    train_model(train_config, data_dir=inputs.prepared, features_path=inputs.features_for(kind), out_dir=model_dir,
                logdir=workdir / "Graph" / kind, overwrite=True)
    seconds = time.perf_counter() - start
    samples = _num_training_questions(inputs.prepared) * epochs
    results = workdir / "results" / kind
    report = evaluate_model(model_dir, data_dir=inputs.prepared, features_path=inputs.features_for(kind),
                            split="val", results_path=results / "results.json", report_path=results / "report.json")
    return ModelResult(kind, report, seconds, samples / seconds)


def _num_training_questions(prepared: Path) -> int:
    """Train questions whose modal answer is in the top K (the ones the trainers use)."""
    from vqa.prepared import load_prepared

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
    """How to serve the demo's model (gunicorn, through `vqa serve`) and query it with curl."""
    from vqa.serve_config import ServeSettings

    settings = ServeSettings(model_dir=model_dir, cnn_weights="random")  # the demo's features used random VGG16
    return (f"Serve it:  {settings.command_line()}   (gunicorn on serving.app:create_app())\n"
            f"Ask it:    curl -F image=@{image} -F 'question={question}' {settings.url}/predict\n"
            f"Watch it:  tensorboard --logdir {model_dir.parent.parent / 'Graph'}")


def relational_part(workdir: Path, settings: DemoSettings, summary: DemoSummary) -> None:
    """Cluttered scenes whose questions need attention: the SAN on the grid beside the best question-only answers."""
    folder = workdir / "relations"
    with _stage(summary, "relations", f"relations: vqa synth --relations ({settings.relation_images} cluttered "
                "scenes: which object has which colour, what is where), grid features, vqa prepare, "
                "vqa train san"):
        inputs = make_inputs(folder, settings, relations=True)
        for kind in RELATIONAL_MODELS:
            summary.relational.append(train_and_evaluate(kind, workdir=folder, inputs=inputs, settings=settings,
                                                         epochs=settings.relation_epochs))
        summary.relational_question_only = question_only_report(inputs.prepared)


def attention_picture(folder: Path, inputs: SampleDataset) -> Path:
    """``attention.png``: the SAN's attention layers over a val image ("what color is the <shape>?")."""
    from vqa.attention_figure import ask_with_attention_figure
    from vqa.predict import Predictor

    predictor = Predictor(folder / "models" / "san", cnn_weights="random")
    samples = sample_questions(inputs.raw, count=20)
    image, question = next(((image, question) for image, question in samples
                            if question.lower().startswith("what color is the")), samples[0])
    out = folder / "attention.png"
    ask_with_attention_figure(predictor, image, question, out=out, top=1)
    return out


def run_demo(workdir: Path, *, settings: DemoSettings = DemoSettings()) -> DemoSummary:
    """Run the tutorial end to end in ``workdir``, print the summary tables and write the results file.

    Returns:
        A DemoSummary with every model's official report, the question-only baselines and the stage times.
    """
    from vqa.features import RandomWeightsWarning

    # The run's start as its results file records it: date, commit (and -dirty) and load, read now.
    start, load_at_start = time.perf_counter(), provenance.begin()["load_average"]
    summary = DemoSummary(Path(workdir).resolve())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # random VGG16 weights: the demo's own choice
        samples = run_stages(summary, settings)
    # From the process's start (Python and TensorFlow imports included) to the summary, where known.
    summary.seconds["total"] = provenance.seconds_since_start() or round(time.perf_counter() - start, 1)
    summary.load_average_at_start = load_at_start
    tables = format_demo_tables(summary)
    print("\n" + tables)
    print("\n" + serving_instructions(summary.workdir / "models" / best_model(summary), *samples[0]))
    summary.results_file = write_demo_results(summary, settings, tables)
    print(f"\nStage times, peak memory and accuracies: {summary.results_file}")
    return summary


def run_stages(summary: DemoSummary, settings: DemoSettings) -> list[tuple[Path, str]]:
    """Every stage of the demo, each timed into ``summary.seconds``; returns the sample questions asked."""
    workdir = summary.workdir
    summary.num_stages = 6 + settings.relations
    with _stage(summary, "data", f"vqa synth ({settings.num_images} images of coloured shapes, up to "
                f"{settings.max_objects} each, official VQA v2 JSON) -> vqa features (VGG16 fc7 and the 7 x 7 "
                "block5_pool grid for the SAN, one pass; random weights: no download needed, fine for "
                "shapes and colours) -> vqa prepare (spaCy tokens + en_core_web_md vectors)"):
        inputs = make_inputs(workdir, settings)
        _free_models()
    for kind in MODELS:
        with _stage(summary, kind, f"vqa train {kind} + vqa evaluate --split val "
                    f"(TensorBoard logs: {workdir / 'Graph' / kind})"):
            summary.results.append(train_and_evaluate(kind, workdir=workdir, inputs=inputs, settings=settings))
            _free_models()
    summary.question_only = question_only_report(inputs.prepared)
    with _stage(summary, "attention", "where the SAN looks: vqa ask --attention"):
        summary.attention_figure = attention_picture(workdir, inputs)
    if settings.relations:
        relational_part(workdir, settings, summary)
    samples = sample_questions(inputs.raw)
    with _stage(summary, "ask", "vqa ask: two questions about two val images"):
        summary.answers = ask_samples(workdir / "models" / best_model(summary), samples)
        print("\n".join(summary.answers))
    return samples


def _free_models() -> None:
    """Drop the models of a finished stage (VGG16 alone is 0.5 GB); each stage builds or loads its own."""
    import gc

    import keras

    keras.backend.clear_session()
    gc.collect()


def best_model(summary: DemoSummary) -> str:
    """The name of the model with the highest overall val accuracy."""
    return max(summary.results, key=lambda result: result.report["overall"]).name


def format_demo_tables(summary: DemoSummary) -> str:
    """The summary tables: every model beside the question-only answers (and the relational part's)."""
    num_val = len(summary.question_only["perQuestion"])
    parts = [f"Official VQA accuracy on the synthetic val split ({num_val} questions, one shape per image):\n",
             format_table(summary.results, summary.question_only)]
    if summary.relational:
        num_val = len(summary.relational_question_only["perQuestion"])
        parts += [f"\nRelations: cluttered scenes ({num_val} val questions), official accuracy per question kind:\n",
                  format_table(summary.relational, summary.relational_question_only, kinds=True)]
    else:
        parts.append("\nRelational questions (which object, where): vqa demo --relations, and docs/attention.md")
    parts.append(f"\nWhere the SAN looks: {summary.attention_figure}")
    parts.append(f"Time: {format_seconds(summary.seconds)}")
    return "\n".join(parts)


def format_seconds(seconds: dict[str, float]) -> str:
    """``total 4 min 10 s (data 70.2 s, mlp 30.1 s, ...)``; the total counts from the process's start."""
    total = seconds.get("total", 0.0)
    stages = ", ".join(f"{name} {value:.1f} s" for name, value in seconds.items() if name != "total")
    return f"total {int(total // 60)} min {total % 60:.0f} s ({stages})"


def write_demo_results(summary: DemoSummary, settings: DemoSettings, tables: str) -> Path:
    """Write ``summary.txt`` (the tables) and ``demo_results.json`` (command, commit, machine, figures)."""
    write_text_atomically(summary.workdir / SUMMARY_TEXT, tables + "\n")
    # CPU seconds beside the wall seconds: on a shared machine the wall time says as much about the others.
    figures = {"seconds": summary.seconds, "cpu_seconds": provenance.cpu_seconds(),
               "load_average_at_start": summary.load_average_at_start,
               "peak_rss_gb": provenance.peak_rss_gb(), "config": asdict(settings),
               "accuracy": {result.name: _accuracies(result.report) for result in summary.results},
               "question_only": _accuracies(summary.question_only),
               "train": {result.name: {"seconds": round(result.train_seconds, 1),
                                       "samples_per_second": round(result.samples_per_second)}
                         for result in summary.results}}
    if summary.relational:
        figures["relations"] = {**{result.name: _accuracies(result.report, kinds=True) for result in summary.relational},
                                "question_only": _accuracies(summary.relational_question_only, kinds=True)}
    path = summary.workdir / RESULTS_JSON
    write_json_atomically(path, provenance.results_record(figures, command=demo_command(summary.workdir, settings)),
                          indent=2)
    return path


def _accuracies(report: dict, *, kinds: bool = False) -> dict:
    """Overall and per answer type (or per relational question kind) accuracy of one report, as printed."""
    split = question_kinds(report) if kinds else report["perAnswerType"]
    return {"overall": round(report["overall"], 2), **{name: round(value, 2) for name, value in split.items()}}


def demo_command(workdir: Path, settings: DemoSettings) -> str:
    """The `vqa demo` command line that runs ``settings`` (only the flags that differ from the defaults;
    the library-only fields are in the results file's config)."""
    words = ["vqa", "demo", "--workdir", str(workdir)]
    for item in demo_flag_fields():
        value = getattr(settings, item.name)
        if value != item.default:
            flag = flag_name(item)
            words += [flag if value else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, str(value)]
    return " ".join(words)
