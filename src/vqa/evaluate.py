"""`vqa evaluate`: score a results file or a trained model, and write the reports.

This module owns the entry points (`evaluate_results_file`, `evaluate_model`,
`predict_split`) and the readable reports (the text report beside the tutorial's
figures, the per-question-type chart, the error-analysis dump). The metric itself
lives in `vqa.metric` (pure functions), the results and report JSON files in
`vqa.results`, reading the official questions/annotations JSON in `vqa.official`
and reading ``vqa_data.h5`` in `vqa.prepared`. Importing it does
not import TensorFlow, Keras or matplotlib.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vqa import artifacts, official
from vqa.atomic import write_atomically, write_text_atomically
from vqa.config import CHECKPOINT, EVALUATE_BATCH_SIZE
from vqa.errors import InputError, VQAError
from vqa.metric import DECIMALS, format_summary, score_predictions, summarize_accuracy
from vqa.results import load_results, submission_file_name, write_report, write_submission

if TYPE_CHECKING:
    from vqa.prepared import PreparedSplit

__all__ = ["evaluate_results_file", "evaluate_model", "results_file_path", "predict_split", "format_summary",
           "format_report_text", "save_question_type_chart", "write_error_analysis",
           "question_only_answers", "question_only_report"]

log = logging.getLogger(__name__)

# The tutorial's validation accuracy (%) on VQA v2 val, per model. Its own scoring compared a
# prediction with the question's whole answer string, not the official metric: not comparable as is.
TUTORIAL_ACCURACY = {"mlp": 48.33, "lstm": 54.88}
TUTORIAL_MODEL_NAMES = {"mlp": "MLP", "lstm": "LSTM"}
# The tutorial has no attention model; the SAN's reference is its paper's (Yang et al. 2016).
# The top-down model's papers scored detected objects, not a grid: no figure to compare with.
PAPER_FIGURES = {"san": "58.70 (the SAN paper's SAN(2, CNN), VQA v1 test-dev)",
                 "topdown": "none (its papers used detected objects, not a grid)"}
TUTORIAL_SCORING_NOTE = ("* the tutorial's own scoring: it compared a prediction with the whole answer string, "
                         "not the official VQA metric used here")


def format_report_text(report: Mapping, *, question_types: Sequence[str], answer_types: Sequence[str],
                       model_type: str | None = None, num_question_types: int = 20,
                       checkpoint: str | None = None) -> str:
    """A readable report: overall and per answer type, the largest question types, the tutorial's figures.

    Args:
        report: dict from `summarize_accuracy`.
        question_types: N question-type strings (to count questions per type).
        answer_types: N answer-type strings.
        model_type: "mlp", "lstm", "san" or "topdown" to name that model's reference figure, None to show the
            tutorial's two.
        num_question_types: how many of the largest question types to list.
        checkpoint: "last" or "best", the model checkpoint scored, named in the title; None to omit.
    Returns:
        str, plain text ending in a newline.
    """
    answer_counts, type_counts = Counter(answer_types), Counter(question_types)
    scored = f" (checkpoint: {checkpoint})" if checkpoint else ""
    lines = [f"Official VQA accuracy over {len(question_types):,} questions{scored}", "",
             f"{'':<28}{'questions':>10}{'accuracy':>10}  tutorial's figure*",
             f"{'overall':<28}{len(question_types):>10,}{report['overall']:>10.2f}  {_tutorial_figure(model_type)}",
             "", "per answer type"]
    lines += [f"  {name:<26}{answer_counts[name]:>10,}{value:>10.2f}" for name, value in report["perAnswerType"].items()]
    largest = sorted(report["perQuestionType"], key=lambda name: (-type_counts[name], name))[:num_question_types]
    lines += ["", f"{len(largest)} largest question types"]
    lines += [f"  {name:<26}{type_counts[name]:>10,}{report['perQuestionType'][name]:>10.2f}" for name in largest]
    lines += ["", TUTORIAL_SCORING_NOTE]
    return "\n".join(lines) + "\n"


def _tutorial_figure(model_type: str | None) -> str:
    """The tutorial's VQA v2 val accuracy for `model_type` (the paper's for the SAN), or both models' when None."""
    if model_type in PAPER_FIGURES:
        return PAPER_FIGURES[model_type]
    if model_type is None:
        return " / ".join(f"{value:.2f} ({TUTORIAL_MODEL_NAMES[name]})" for name, value in TUTORIAL_ACCURACY.items())
    if model_type not in TUTORIAL_ACCURACY:
        raise VQAError(f"unknown model type {model_type!r}; expected one of {', '.join(TUTORIAL_ACCURACY)}")
    return f"{TUTORIAL_ACCURACY[model_type]:.2f} ({TUTORIAL_MODEL_NAMES[model_type]}, VQA v2 val)"


def save_question_type_chart(path: Path, per_question_type: Mapping[str, float], *,
                             overall: float | None = None, title: str = "VQA accuracy per question type") -> None:
    """Save a horizontal bar chart (PNG) of accuracy per question type, best first, atomically.

    Args:
        path: Path of the PNG file to write.
        per_question_type: {question type: accuracy in %} (report["perQuestionType"]).
        overall: accuracy in % drawn as a vertical line, or None.
        title: the chart's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    if not per_question_type:
        raise VQAError("no question types to chart")
    names = sorted(per_question_type, key=lambda name: (per_question_type[name], name))
    figure, axes = pyplot.subplots(figsize=(8, 1.5 + 0.22 * len(names)))
    try:
        axes.barh(names, [per_question_type[name] for name in names], color="tab:blue")
        if overall is not None:
            axes.axvline(overall, color="tab:red", linestyle="--", label=f"overall {overall:.2f}")
            axes.legend(loc="lower right")
        axes.set(xlim=(0, 100), xlabel="accuracy (%)", title=title)
        axes.tick_params(axis="y", labelsize=7)
        figure.tight_layout()
        write_atomically(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100))
    finally:
        pyplot.close(figure)


ERROR_ANALYSIS_COLUMNS = ("question_id", "image_id", "question", "prediction", "ground_truth",
                          "accuracy", "human_answers")


def _tsv_cell(value) -> str:
    """A value as one TSV cell: tabs and newlines become spaces."""
    return str(value).replace("\t", " ").replace("\r", " ").replace("\n", " ")


def write_error_analysis(path: Path, *, question_ids: Sequence[int], image_ids: Sequence[int],
                         questions: Sequence[str], predictions: Sequence[str], ground_truths: Sequence[str],
                         accuracies: np.ndarray, human_answers: Sequence[Sequence[str]],
                         errors_only: bool = False) -> int:
    """Write the tutorial's error-analysis dump: one TSV row per question, atomically.

    Columns: question_id, image_id, question, prediction, ground_truth (the modal answer),
    accuracy (%, 2 places) and human_answers (the 10 answers joined by ";").

    Args:
        path: Path of the TSV file.
        question_ids, image_ids: N ints each.
        questions, predictions, ground_truths: N strings each.
        accuracies: float64 (N,) per-question accuracy in [0, 1].
        human_answers: N lists of human answer strings.
        errors_only: keep only questions whose accuracy is below 100%.
    Returns:
        int, the number of rows written.
    """
    columns = (question_ids, image_ids, questions, predictions, ground_truths, accuracies, human_answers)
    if len({len(column) for column in columns}) != 1:
        raise VQAError("write_error_analysis: every column must have one entry per question")
    rows = ["\t".join(ERROR_ANALYSIS_COLUMNS)]
    for qid, image_id, question, prediction, truth, accuracy, humans in zip(*columns):
        if errors_only and accuracy >= 1.0:
            continue
        cells = (int(qid), int(image_id), question, prediction, truth, f"{round(100 * float(accuracy), DECIMALS):.2f}",
                 ";".join(humans))
        rows.append("\t".join(_tsv_cell(cell) for cell in cells))
    write_text_atomically(path, "\n".join(rows) + "\n")
    return len(rows) - 1


# ------------------------------------------------------------------ entry points
def evaluate_results_file(questions_path: Path, annotations_path: Path, results_path: Path, *,
                          report_path: Path | None = None) -> dict:
    """Score an official results file with the official VQA accuracy.

    Args:
        questions_path: Path to the official questions JSON of the split.
        annotations_path: Path to the official annotations JSON of the split.
        results_path: Path to the results JSON [{"question_id": int, "answer": str}], one per question.
        report_path: where to write the report JSON, or None.
    Returns:
        dict report: "overall", "perAnswerType", "perQuestionType", "perQuestion" (see `summarize_accuracy`).
    """
    annotations = official.load_annotations(annotations_path)
    official.match_annotations(official.load_questions(questions_path), annotations)
    predictions = load_results(results_path, annotations.question_ids)
    accuracies = score_predictions(annotations.human_answers, predictions)
    report = summarize_accuracy(annotations.question_ids, accuracies, question_types=annotations.question_types,
                                answer_types=annotations.answer_types)
    if report_path is not None:
        write_report(report_path, report)
    return report


def predict_split(model_dir: Path, prepared: PreparedSplit, *, features_path: Path, batch_size: int = 512,
                  checkpoint: str = CHECKPOINT) -> tuple[list[str], str | None]:
    """The model's top answer for every question of a prepared split.

    Args:
        model_dir: Path of a model directory written by `vqa train`.
        prepared: the split, from `vqa.prepared.load_prepared_split`.
        features_path: Path of the image-features HDF5 covering the split's image ids, of CNN weights
            that `vqa.feature_file.check_cnn_pairing` pairs with the model's (InputError otherwise).
        batch_size: int, questions per model call.
        checkpoint: "last" (the last epoch's model.keras) or "best" (best.keras, lowest val loss).
    Returns:
        (N answer strings, the model's kind "mlp"/"lstm" from its config.json).
    """
    from vqa.data import feature_rows
    from vqa.feature_file import CNNIdentity, FeaturesFile, check_cnn_pairing
    from vqa.predict import Predictor

    predictor = Predictor(model_dir, cnn_weights=None, checkpoint=checkpoint)
    features_file = FeaturesFile.open(features_path, layout=predictor.images.layout)
    trained = CNNIdentity.from_record(predictor.config.get("cnn_identity"),
                                      source=Path(model_dir) / artifacts.CONFIG_JSON)
    check_cnn_pairing(trained, features_file.cnn_identity, model=model_dir, asked_by=f"features file {features_path}")
    features, feature_ids = features_file.load()
    rows = feature_rows(prepared.image_ids, feature_ids, source=features_path)
    token_ids = prepared.token_ids
    if predictor.questions.words != prepared.words:
        # Data prepared separately from the model's training data: its token ids mean other words.
        token_ids = predictor.questions.encode(prepared.questions)
    answers = []
    for start in range(0, len(rows), batch_size):
        batch = slice(start, start + batch_size)
        outputs = predictor.answerer.outputs(token_ids[batch], np.asarray(features[rows[batch]]),
                                             batch_size=batch_size)
        answers += predictor.answerer.best_answers(outputs["answer"])
    return answers, predictor.config.get("model")


def evaluate_model(model_dir: Path, *, data_dir: Path, features_path: Path, split: str,
                   results_path: Path | None = None, name: str | None = None, results_dir: Path | None = None,
                   questions_path: Path | None = None, report_path: Path | None = None,
                   batch_size: int = EVALUATE_BATCH_SIZE, checkpoint: str = CHECKPOINT) -> dict:
    """Predict a split with a trained model, write the official results file and, on val, score it.

    Next to the results file it also writes, for an annotated split, the readable
    report (``evaluation_<split>.txt``, beside the tutorial's figures), a PNG chart of
    accuracy per question type and the tutorial's error-analysis dump (TSV). A results
    file is written only if it answers every question of the split once (of
    ``questions_path`` when given), and, for test-dev / test, only under the official
    name if its name looks like one (`vqa.results.write_submission`).

    Args:
        model_dir: Path of a model directory written by `vqa train`.
        data_dir: Path of the preprocessed folder (`vqa prepare`).
        features_path: Path of the image-features HDF5 (`vqa features`).
        split: "val", "test-dev" or "test".
        results_path: Path of the results JSON to write; give it or ``name``, not both.
        name: the algorithm's name: write ``results_dir``/vqa_OpenEnded_mscoco_<split>_<name>_results.json
            (test-dev and test only).
        results_dir: with ``name``, the folder to write into (default: the current folder).
        questions_path: the split's official questions JSON, to check that every question is answered.
        report_path: Path of the report JSON, or None.
        batch_size: int, questions per prediction batch.
        checkpoint: "last" or "best": which of the model directory's models to score.
    Returns:
        dict report: "checkpoint" (the one scored), then what `evaluate_results_file` returns
        (empty for unannotated splits).
    """
    from vqa.prepared import load_prepared_split

    results_path = results_file_path(split, results_path=results_path, name=name, results_dir=results_dir)
    questions = None if questions_path is None else official.load_questions(questions_path)
    prepared = load_prepared_split(data_dir, split)
    if questions is not None and questions.split not in (None, prepared.name):
        raise InputError(f"{questions_path}: questions of {questions.split}, not of {prepared.name}; "
                         "give the questions file of the split answered")
    predictions, model_type = predict_split(model_dir, prepared, features_path=features_path,
                                            batch_size=batch_size, checkpoint=checkpoint)
    write_submission(results_path, prepared.question_ids, predictions, split=prepared.name,
                     split_question_ids=(prepared.question_ids if questions is None else questions.question_ids))
    log.info("wrote %s answers for %s to %s", f"{len(predictions):,}", prepared.name, results_path)
    if not prepared.annotated:
        return {}
    accuracies = score_predictions(prepared.human_answers, predictions)
    report = {"checkpoint": checkpoint,
              **summarize_accuracy(prepared.question_ids.tolist(), accuracies,
                                   question_types=prepared.question_types, answer_types=prepared.answer_types)}
    if report_path is not None:
        write_report(report_path, report)
    write_evaluation_files(Path(results_path).parent, prepared, predictions, accuracies, report,
                           model_type=model_type)
    return report


def results_file_path(split: str, *, results_path: Path | None = None, name: str | None = None,
                      results_dir: Path | None = None) -> Path:
    """Where `vqa evaluate --model` writes: ``--results PATH`` as given, or the official name in ``--results-dir``.

    Args:
        split: "val", "test-dev" or "test" (or the subtype).
        results_path: the file, or None when ``name`` is given.
        name: the algorithm's name for the official file name (test-dev / test), or None.
        results_dir: with ``name``: the folder, None for the current folder.
    """
    if name is None:
        if results_path is None:
            raise InputError("give --results PATH, or --name NAME to write a test-dev or test submission "
                             "under its official file name")
        if results_dir is not None:
            raise InputError("--results-dir goes with --name; --results names the file itself")
        return Path(results_path)
    if results_path is not None:
        raise InputError("give --name (the official file name, in --results-dir) or --results PATH, not both")
    return Path(results_dir if results_dir is not None else ".") / submission_file_name(split, name)


def write_evaluation_files(folder: Path, prepared: PreparedSplit, predictions: Sequence[str],
                           accuracies: np.ndarray, report: Mapping, *, model_type: str | None) -> None:
    """The readable report, the per-question-type chart and the error dump of one evaluated split."""
    split = prepared.name
    write_text_atomically(folder / artifacts.EVALUATION_TEXT.format(split=split),
                          format_report_text(report, question_types=prepared.question_types,
                                             answer_types=prepared.answer_types, model_type=model_type,
                                             checkpoint=report.get("checkpoint")))
    save_question_type_chart(folder / artifacts.QUESTION_TYPE_CHART_PNG.format(split=split),
                             report["perQuestionType"], overall=report["overall"],
                             title=f"VQA accuracy per question type ({model_type or 'model'}, {split})")
    write_error_analysis(folder / artifacts.ERROR_ANALYSIS_TSV.format(split=split),
                         question_ids=prepared.question_ids.tolist(), image_ids=prepared.image_ids.tolist(),
                         questions=prepared.questions, predictions=predictions,
                         ground_truths=prepared.modal_answers, accuracies=accuracies,
                         human_answers=prepared.human_answers)


_COMMONEST = object()  # question_only_answers' default for unseen questions


def question_only_answers(train_questions: Iterable[Hashable], train_answers: Iterable[Hashable],
                          questions: Iterable[Hashable], *, unseen: object = _COMMONEST) -> list:
    """The best image-blind guess: for each question, the commonest train answer to the same question.

    The one home of the question-only baseline (the demo, the tests and the benchmarks use it):
    comparing a model against it shows how much the image contributes. Passing a split as its
    own train gives the image-blind ceiling of that split.

    Args:
        train_questions: question texts (compared lower-cased) or any hashable key per train
            question, e.g. ``bytes`` of a row of token ids.
        train_answers: the answer (modal answer text, or label) of each train question.
        questions: the questions to answer, keyed like ``train_questions``.
        unseen: the answer to a question train never asked; default: the commonest train answer.

    Returns:
        One answer per question (ties: the answer train gave first).
    """
    def key(question):
        return question.lower() if isinstance(question, str) else question

    by_question: dict[Hashable, Counter] = {}
    overall: Counter = Counter()
    for question, answer in zip(train_questions, train_answers):
        by_question.setdefault(key(question), Counter())[answer] += 1
        overall[answer] += 1
    if unseen is _COMMONEST:
        unseen = overall.most_common(1)[0][0]
    return [by_question[k].most_common(1)[0][0] if (k := key(q)) in by_question else unseen for q in questions]


def question_only_report(data_dir: Path, split: str = artifacts.VAL_SPLIT) -> dict:
    """The official report (overall, per answer and question type) of the question-only answers on ``split``.

    Args:
        data_dir: a `vqa prepare` output folder; its train split supplies the answers.
        split: the split to answer and score, with its annotations (val by default).
    """
    from vqa.prepared import load_prepared_split

    train = load_prepared_split(data_dir, artifacts.TRAIN_SPLIT)
    scored = load_prepared_split(data_dir, split)
    guesses = question_only_answers(train.questions, train.modal_answers, scored.questions)
    accuracies = score_predictions(scored.human_answers, guesses)
    return summarize_accuracy(scored.question_ids.tolist(), accuracies, question_types=scored.question_types,
                              answer_types=scored.answer_types)
