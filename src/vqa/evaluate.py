"""The official VQA accuracy (VQAEval of the VQA API), reports and results files.

The metric is reimplemented from the rules of the official evaluation code so
that every figure (per question, overall, per answer type, per question type)
is bit-for-bit the official one:

* every human answer and the prediction get newline and tab replaced by a space
  and are stripped;
* only when the human answers are not all identical are they and the
  prediction normalised (punctuation, then digits/articles/contractions);
* a question scores the mean, over its humans, of ``min(1, matches among the
  other humans / 3)``;
* figures are percent, rounded with Python's ``round`` to 2 places, means taken
  over the unrounded per-question values, summed in annotation order.

Normalisation is cached per distinct answer string and matching is vectorised
with numpy, so VQA v2 val (214,354 questions) scores in seconds.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from vqa import artifacts
from vqa.atomic import write_atomically, write_text_atomically
from vqa.errors import InputError, VQAError

log = logging.getLogger(__name__)

# Figures are reported with 2 decimals, as the official demo (VQAEval(n=2)).
DECIMALS = 2
# The tutorial's validation accuracy (%) on VQA v2 val, per model.
TUTORIAL_ACCURACY = {"mlp": 48.33, "lstm": 54.88}
TUTORIAL_MODEL_NAMES = {"mlp": "MLP", "lstm": "LSTM"}

# ------------------------------------------------------------------ official normalisation tables
# Order matters: each character is handled in turn, as the official loop does.
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
               ">", "<", "@", "`", ",", "?", "!")
# The official pattern: its "(?!<=\d)" is a (no-op) lookahead, so in effect this
# removes a period that is not followed by a digit.
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
# The official code passes re.UNICODE (== 32) where re.sub takes its count.
PERIOD_STRIP_COUNT = int(re.UNICODE)
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})
# The official contraction table, entries kept verbatim (some keys are
# capitalised and so can never match a lowercased word; one maps backwards).
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}


def clean_answer(text: str) -> str:
    """Replace newlines and tabs by spaces and strip, as the official code does to every answer.

    Args:
        text: str, a human or predicted answer.
    Returns:
        str, the cleaned answer (compared as is when the humans agree).
    """
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """The official punctuation step: drop or space out punctuation, then strip periods.

    A character is deleted when it touches a space in the original text or the text
    holds a digit-comma-digit ("1,000"); otherwise it becomes a space.

    Args:
        text: str, a cleaned answer.
    Returns:
        str, the answer after punctuation processing.
    """
    has_number_comma = COMMA_STRIP.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        # The test looks at the original text, the replacement at the running output.
        if has_number_comma or mark + " " in text or " " + mark in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return PERIOD_STRIP.sub("", out, count=PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    """The official word step: lowercase, number words to digits, drop articles, fix contractions.

    Args:
        text: str, an answer after punctuation processing.
    Returns:
        str, the words joined by single spaces.
    """
    words = (NUMBER_WORDS.get(word, word) for word in text.lower().split())
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalize_answer(text: str) -> str:
    """Punctuation then digit/article processing of an already cleaned answer.

    Args:
        text: str, a cleaned answer (see `clean_answer`).
    Returns:
        str, the normalised answer the official code compares when humans disagree.
    """
    return process_digit_article(process_punctuation(text))


def question_accuracy(human_answers: Sequence[str], prediction: str) -> float:
    """Score one question by the official rules, with no caching (the reference implementation).

    Args:
        human_answers: the (usually 10) human answer strings of the question.
        prediction: str, the predicted answer.
    Returns:
        float in [0, 1]: mean over humans of min(1, matches among the other humans / 3).
    """
    if not human_answers:
        raise VQAError("a question needs at least one human answer to be scored")
    humans = [clean_answer(answer) for answer in human_answers]
    predicted = clean_answer(prediction)
    if len(set(humans)) > 1:
        humans = [normalize_answer(answer) for answer in humans]
        predicted = normalize_answer(predicted)
    total = 0
    for index in range(len(humans)):
        others = humans[:index] + humans[index + 1:]
        total += min(1, float(sum(answer == predicted for answer in others)) / 3)
    return float(total) / len(humans)


# ------------------------------------------------------------------ vectorised scoring
class _AnswerIndex:
    """Ids for distinct answer strings, with each string's cleaning and normalisation done once."""

    def __init__(self) -> None:
        self.raw: dict[str, int] = {}
        self.texts: dict[str, int] = {}

    def ids(self, answers: Sequence[str]) -> list[int]:
        """Raw-string ids of `answers`, registering new strings."""
        raw = self.raw
        return [raw.setdefault(answer, len(raw)) for answer in answers]

    def lookup_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """(cleaned id, normalised id) per raw id: int64 (R,), int64 (R,); ids share one space."""
        cleaned = np.empty(len(self.raw), dtype=np.int64)
        normalised = np.empty(len(self.raw), dtype=np.int64)
        cache: dict[str, str] = {}
        for answer, raw_id in self.raw.items():
            text = clean_answer(answer)
            if text not in cache:
                cache[text] = normalize_answer(text)
            cleaned[raw_id] = self.texts.setdefault(text, len(self.texts))
            normalised[raw_id] = self.texts.setdefault(cache[text], len(self.texts))
        return cleaned, normalised


def _human_id_matrix(index: _AnswerIndex, human_answers: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Raw ids of the human answers, right-padded: int64 (N, W) and its validity mask bool (N, W)."""
    lengths = np.fromiter((len(answers) for answers in human_answers), dtype=np.int64, count=len(human_answers))
    if len(lengths) and lengths.min() == 0:
        position = int(np.argmin(lengths))
        raise InputError(f"question #{position} has no human answers; every annotation needs its 10 answers")
    width = int(lengths.max()) if len(lengths) else 0
    valid = np.arange(width) < lengths[:, None]
    ids = np.full((len(lengths), width), -1, dtype=np.int64)
    ids[valid] = index.ids([answer for answers in human_answers for answer in answers])
    return ids, valid


def score_predictions(human_answers: Sequence[Sequence[str]], predictions: Sequence[str]) -> np.ndarray:
    """Official per-question accuracy of many predictions at once (cached, vectorised).

    Args:
        human_answers: N lists of human answer strings (10 each in VQA).
        predictions: N predicted answer strings, aligned with `human_answers`.
    Returns:
        float64 (N,): accuracy in [0, 1] per question, bit-identical to `question_accuracy`.
    """
    if len(human_answers) != len(predictions):
        raise VQAError(f"{len(predictions)} predictions for {len(human_answers)} questions")
    index = _AnswerIndex()
    raw_humans, valid = _human_id_matrix(index, human_answers)
    raw_predictions = np.asarray(index.ids(list(predictions)), dtype=np.int64)
    cleaned, normalised = index.lookup_tables()
    humans = np.where(valid, cleaned[raw_humans], -1)
    disagree = ((humans != humans[:, :1]) & valid).any(axis=1)
    humans = np.where(valid & disagree[:, None], normalised[raw_humans], humans)
    predicted = np.where(disagree, normalised[raw_predictions], cleaned[raw_predictions])
    matches = (humans == predicted[:, None]) & valid
    others = matches.sum(axis=1, keepdims=True) - matches
    per_human = np.minimum(1.0, others / 3.0)
    # Column by column, so the float sum has the official (sequential) order.
    total = np.zeros(len(predicted))
    for column in range(per_human.shape[1]):
        total = total + np.where(valid[:, column], per_human[:, column], 0.0)
    return total / valid.sum(axis=1)


def _percent(values: Sequence[float]) -> float:
    """Official aggregate: round(100 * sum / count, 2), summed in the given order."""
    return round(100 * float(sum(values)) / len(values), DECIMALS)


def summarize_accuracy(question_ids: Sequence[int], accuracies: np.ndarray, *,
                       question_types: Sequence[str], answer_types: Sequence[str]) -> dict:
    """The official accuracy report from per-question accuracies.

    Args:
        question_ids: N question ids (int), in annotation order.
        accuracies: float64 (N,) per-question accuracy in [0, 1] (from `score_predictions`).
        question_types: N question-type strings ("what color", ...).
        answer_types: N answer-type strings ("yes/no", "number", "other").
    Returns:
        dict with "overall" (float, %), "perAnswerType" and "perQuestionType" ({type: %}) and
        "perQuestion" ({str(question_id): %}), every figure rounded to 2 places.
    """
    values = [float(value) for value in np.asarray(accuracies, dtype=np.float64)]
    if not values:
        raise InputError("no questions to score")
    by_question_type: dict[str, list[float]] = {}
    by_answer_type: dict[str, list[float]] = {}
    for value, question_type, answer_type in zip(values, question_types, answer_types, strict=True):
        by_question_type.setdefault(question_type, []).append(value)
        by_answer_type.setdefault(answer_type, []).append(value)
    return {
        "overall": _percent(values),
        "perAnswerType": {name: _percent(group) for name, group in by_answer_type.items()},
        "perQuestionType": {name: _percent(group) for name, group in by_question_type.items()},
        "perQuestion": {str(qid): round(100 * value, DECIMALS) for qid, value in zip(question_ids, values, strict=True)},
    }


def format_summary(report: Mapping) -> str:
    """The lines the official demo prints: overall accuracy, then one line per answer type.

    Args:
        report: dict from `summarize_accuracy`.
    Returns:
        str, newline-terminated text.
    """
    lines = [f"Overall Accuracy is: {report['overall']:.02f}", "",
             "Per Answer Type Accuracy is the following:"]
    lines += [f"{name} : {value:.02f}" for name, value in report["perAnswerType"].items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ official JSON files
@dataclass(frozen=True)
class Annotations:
    """The fields of an official annotations file that scoring needs, in file order."""

    question_ids: list[int]
    image_ids: list[int]
    question_types: list[str]
    answer_types: list[str]
    modal_answers: list[str]
    human_answers: list[list[str]]


def _load_json(path: Path, *, what: str):
    """Parse a JSON file, turning a missing or malformed file into an InputError naming it."""
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except FileNotFoundError:
        raise InputError(f"{path}: {what} file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a valid JSON {what} file ({error})") from None


def _records(path: Path, data, *, key: str | None, what: str) -> list:
    """The list of records of an official file (`data[key]`, or `data` itself when key is None)."""
    records = data.get(key) if key is not None and isinstance(data, dict) else data
    if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
        shape = f'an object with a "{key}" list' if key else "a list of objects"
        raise InputError(f"{path}: expected {shape} ({what} file in the official VQA format)")
    return records


def _field(path: Path, record: dict, name: str, kind: type, position: int):
    """`record[name]`, checked to be of `kind` (bools are not ints), or an InputError naming the file."""
    value = record.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        known_id = name != "question_id" and "question_id" in record
        where = f"question_id {record['question_id']}" if known_id else f"record #{position}"
        problem = "missing" if name not in record else f"not of type {kind.__name__}"
        raise InputError(f"{path}: {where}: key \"{name}\" is {problem}; use the official VQA format")
    return value


def _unique_ids(path: Path, question_ids: list[int], *, what: str) -> None:
    """Raise an InputError naming a question id that occurs twice in `path`."""
    if len(set(question_ids)) != len(question_ids):
        duplicate = next(qid for qid, count in Counter(question_ids).items() if count > 1)
        raise InputError(f"{path}: question_id {duplicate} occurs more than once; keep one {what} per question")


def _human_answers(path: Path, record: dict, position: int) -> list[str]:
    """The answer strings of one annotation record, checked."""
    answers = _field(path, record, "answers", list, position)
    if not answers or not all(isinstance(answer, dict) and isinstance(answer.get("answer"), str) for answer in answers):
        raise InputError(f"{path}: question_id {record['question_id']}: \"answers\" must be a non-empty list "
                         f"of {{\"answer\": str}} objects")
    return [answer["answer"] for answer in answers]


def load_annotations(path: Path) -> Annotations:
    """Read an official VQA annotations JSON file.

    Args:
        path: Path to e.g. v2_mscoco_val2014_annotations.json.
    Returns:
        Annotations with N entries per field, in file order.
    """
    records = _records(path, _load_json(path, what="annotations"), key="annotations", what="annotations")
    columns: dict[str, list] = {field.name: [] for field in fields(Annotations)}
    for position, record in enumerate(records):
        columns["question_ids"].append(_field(path, record, "question_id", int, position))
        columns["image_ids"].append(_field(path, record, "image_id", int, position))
        columns["question_types"].append(_field(path, record, "question_type", str, position))
        columns["answer_types"].append(_field(path, record, "answer_type", str, position))
        columns["modal_answers"].append(_field(path, record, "multiple_choice_answer", str, position))
        columns["human_answers"].append(_human_answers(path, record, position))
    if not records:
        raise InputError(f"{path}: the annotations list is empty; nothing to score")
    _unique_ids(path, columns["question_ids"], what="annotation")
    return Annotations(**columns)


def load_questions(path: Path) -> dict[int, tuple[str, int]]:
    """Read an official VQA questions JSON file.

    Args:
        path: Path to e.g. v2_OpenEnded_mscoco_val2014_questions.json.
    Returns:
        {question_id: (question text, image_id)}, in file order.
    """
    records = _records(path, _load_json(path, what="questions"), key="questions", what="questions")
    questions = {}
    for position, record in enumerate(records):
        question_id = _field(path, record, "question_id", int, position)
        if question_id in questions:
            raise InputError(f"{path}: question_id {question_id} occurs more than once; keep one question per id")
        questions[question_id] = (_field(path, record, "question", str, position),
                                  _field(path, record, "image_id", int, position))
    return questions


def check_questions_match(questions: Mapping[int, tuple[str, int]], annotations: Annotations, *,
                          questions_path: Path, annotations_path: Path) -> None:
    """Raise an InputError naming a question id when the questions and annotations files disagree.

    Args:
        questions: {question_id: (question, image_id)} from `load_questions`.
        annotations: from `load_annotations`.
        questions_path, annotations_path: Paths, for the message.
    """
    annotated = set(annotations.question_ids)
    missing = [qid for qid in annotations.question_ids if qid not in questions]
    extra = [qid for qid in questions if qid not in annotated]
    if missing or extra:
        qid, side = (missing[0], questions_path) if missing else (extra[0], annotations_path)
        raise InputError(f"{questions_path} and {annotations_path} do not match: question_id {qid} is missing "
                         f"from {side} ({len(missing) + len(extra)} ids differ); use files of the same split")


def load_results(path: Path, question_ids: Sequence[int]) -> list[str]:
    """Read an official results file and align its answers with `question_ids`.

    Args:
        path: Path to a JSON list of {"question_id": int, "answer": str}.
        question_ids: the N annotated question ids, in the order wanted.
    Returns:
        N answer strings, one per question id, in that order.
    """
    records = _records(path, _load_json(path, what="results"), key=None, what="results")
    answers: dict[int, str] = {}
    for position, record in enumerate(records):
        question_id = _field(path, record, "question_id", int, position)
        if question_id in answers:
            raise InputError(f"{path}: question_id {question_id} is answered more than once; keep one answer each")
        answers[question_id] = _field(path, record, "answer", str, position)
    wanted = set(question_ids)
    unknown = [qid for qid in answers if qid not in wanted]
    if unknown:
        raise InputError(f"{path}: question_id {unknown[0]} is not in the annotations ({len(unknown)} unknown ids); "
                         "score results against the annotations of the same split")
    missing = [qid for qid in question_ids if qid not in answers]
    if missing:
        raise InputError(f"{path}: no answer for question_id {missing[0]} ({len(missing)} questions unanswered); "
                         "the results file must answer every annotated question")
    return [answers[qid] for qid in question_ids]


# ------------------------------------------------------------------ output files
def write_json(path: Path, data) -> None:
    """Write `data` as indented UTF-8 JSON to `path`, atomically.

    Args:
        path: Path of the JSON file to (over)write.
        data: anything `json.dumps` accepts.
    """
    write_text_atomically(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def write_results(path: Path, question_ids: Sequence[int], answers: Sequence[str]) -> None:
    """Write an official results file, atomically.

    Args:
        path: Path of the results JSON: [{"question_id": int, "answer": str}], in the given order.
        question_ids: N question ids (int or integer numpy values), all distinct.
        answers: N answer strings, aligned with `question_ids`.
    """
    if len(question_ids) != len(answers):
        raise VQAError(f"{len(answers)} answers for {len(question_ids)} question ids")
    ids = [int(qid) for qid in question_ids]
    _unique_ids(Path(path), ids, what="answer")
    if not all(isinstance(answer, str) for answer in answers):
        raise VQAError("every answer must be a str")
    write_json(path, [{"question_id": qid, "answer": answer} for qid, answer in zip(ids, answers)])


def format_report_text(report: Mapping, *, question_types: Sequence[str], answer_types: Sequence[str],
                       model_type: str | None = None, num_question_types: int = 20) -> str:
    """A readable report: overall and per answer type, the largest question types, the tutorial's figures.

    Args:
        report: dict from `summarize_accuracy`.
        question_types: N question-type strings (to count questions per type).
        answer_types: N answer-type strings.
        model_type: "mlp" or "lstm" to name that model's figure, None to show both.
        num_question_types: how many of the largest question types to list.
    Returns:
        str, plain text ending in a newline.
    """
    answer_counts, type_counts = Counter(answer_types), Counter(question_types)
    lines = [f"Official VQA accuracy over {len(question_types):,} questions", "",
             f"{'':<28}{'questions':>10}{'accuracy':>10}  tutorial's figure",
             f"{'overall':<28}{len(question_types):>10,}{report['overall']:>10.2f}  {_tutorial_figure(model_type)}",
             "", "per answer type"]
    lines += [f"  {name:<26}{answer_counts[name]:>10,}{value:>10.2f}" for name, value in report["perAnswerType"].items()]
    largest = sorted(report["perQuestionType"], key=lambda name: (-type_counts[name], name))[:num_question_types]
    lines += ["", f"{len(largest)} largest question types"]
    lines += [f"  {name:<26}{type_counts[name]:>10,}{report['perQuestionType'][name]:>10.2f}" for name in largest]
    return "\n".join(lines) + "\n"


def _tutorial_figure(model_type: str | None) -> str:
    """The tutorial's VQA v2 val accuracy for `model_type`, or both models' when None."""
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
    annotations = load_annotations(annotations_path)
    questions = load_questions(questions_path)
    check_questions_match(questions, annotations, questions_path=questions_path, annotations_path=annotations_path)
    predictions = load_results(results_path, annotations.question_ids)
    accuracies = score_predictions(annotations.human_answers, predictions)
    report = summarize_accuracy(annotations.question_ids, accuracies, question_types=annotations.question_types,
                                answer_types=annotations.answer_types)
    if report_path is not None:
        write_json(report_path, report)
    return report


@dataclass(frozen=True)
class PreparedSplit:
    """One split of ``vqa_data.h5`` as the evaluation needs it (annotation fields None on test splits)."""

    name: str
    question_ids: np.ndarray  # int64 (N,)
    image_ids: np.ndarray  # int64 (N,)
    token_ids: np.ndarray  # int32 (N, T)
    questions: list[str]
    words: list[str]  # the vocabulary the token ids index
    question_types: list[str] | None
    answer_types: list[str] | None
    modal_answers: list[str] | None
    human_answers: list[list[str]] | None

    @property
    def annotated(self) -> bool:
        return self.human_answers is not None


def load_prepared_split(data_dir: Path, split: str) -> PreparedSplit:
    """Read one split (``val``/``test-dev``/``test`` or its subtype name) of ``DIR/vqa_data.h5``."""
    import h5py

    name = artifacts.SPLIT_ALIASES.get(split, split)
    path = Path(data_dir) / artifacts.PREPARED_H5
    if not path.is_file():
        raise InputError(f"{path}: not found; run 'vqa prepare --out {data_dir}' first")
    with h5py.File(path, "r") as h5:
        if name not in h5:
            raise InputError(f"{path}: no {name} split; run 'vqa prepare' with that split's questions")
        group = h5[name]
        strings = lambda key: group[key].asstr()[()].tolist()  # noqa: E731
        annotated = "answers" in group
        codes = lambda key, attr: [json.loads(h5.attrs[attr])[c] for c in group[key][()]]  # noqa: E731
        return PreparedSplit(
            name, group["question_ids"][()], group["image_ids"][()], group["token_ids"][()], strings("questions"),
            h5["vocabulary/words"].asstr()[()].tolist(),
            codes("question_types", "question_types") if annotated else None,
            codes("answer_types", "answer_types") if annotated else None,
            strings("modal_answers") if annotated else None, strings("answers") if annotated else None)


def predict_split(model_dir: Path, prepared: PreparedSplit, *, features_path: Path,
                  batch_size: int = 512) -> tuple[list[str], str | None]:
    """The model's top answer for every question of a prepared split.

    Returns:
        (N answer strings, the model's kind "mlp"/"lstm" from its config.json).
    """
    from vqa.data import feature_rows, load_features
    from vqa.predict import Predictor

    predictor = Predictor(model_dir, cnn_weights=None)
    features, feature_ids = load_features(features_path)
    rows = feature_rows(prepared.image_ids, feature_ids, source=features_path)
    token_ids = prepared.token_ids
    if predictor.words != prepared.words:
        # Data prepared separately from the model's training data: its token ids mean other words.
        token_ids = predictor.encode_questions(prepared.questions)
    answers = []
    for start in range(0, len(rows), batch_size):
        batch = slice(start, start + batch_size)
        probabilities = predictor.predict_proba(token_ids[batch], np.asarray(features[rows[batch]]))
        answers += predictor.best_answers(probabilities)
    return answers, predictor.config.get("model")


def evaluate_model(model_dir: Path, *, data_dir: Path, features_path: Path, split: str, results_path: Path,
                   report_path: Path | None = None, batch_size: int = 512) -> dict:
    """Predict a split with a trained model, write the official results file and, on val, score it.

    Next to ``results_path`` it also writes, for an annotated split, the readable
    report (``evaluation_<split>.txt``, beside the tutorial's figures), a PNG chart of
    accuracy per question type and the tutorial's error-analysis dump (TSV).

    Args:
        model_dir: Path of a model directory written by `vqa train`.
        data_dir: Path of the preprocessed folder (`vqa prepare`).
        features_path: Path of the image-features HDF5 (`vqa features`).
        split: "val", "test-dev" or "test".
        results_path: Path of the results JSON to write (ready for the evaluation server).
        report_path: Path of the report JSON, or None.
        batch_size: int, questions per prediction batch.
    Returns:
        dict report as `evaluate_results_file` returns (empty for unannotated splits).
    """
    prepared = load_prepared_split(data_dir, split)
    predictions, model_type = predict_split(model_dir, prepared, features_path=features_path,
                                            batch_size=batch_size)
    write_results(results_path, prepared.question_ids, predictions)
    log.info("wrote %s answers for %s to %s", f"{len(predictions):,}", prepared.name, results_path)
    if not prepared.annotated:
        return {}
    accuracies = score_predictions(prepared.human_answers, predictions)
    report = summarize_accuracy(prepared.question_ids.tolist(), accuracies,
                                question_types=prepared.question_types, answer_types=prepared.answer_types)
    if report_path is not None:
        write_json(report_path, report)
    write_evaluation_files(Path(results_path).parent, prepared, predictions, accuracies, report,
                           model_type=model_type)
    return report


def write_evaluation_files(folder: Path, prepared: PreparedSplit, predictions: Sequence[str],
                           accuracies: np.ndarray, report: Mapping, *, model_type: str | None) -> None:
    """The readable report, the per-question-type chart and the error dump of one evaluated split."""
    split = prepared.name
    write_text_atomically(folder / artifacts.EVALUATION_TEXT.format(split=split),
                       format_report_text(report, question_types=prepared.question_types,
                                          answer_types=prepared.answer_types, model_type=model_type))
    save_question_type_chart(folder / artifacts.QUESTION_TYPE_CHART_PNG.format(split=split),
                             report["perQuestionType"], overall=report["overall"],
                             title=f"VQA accuracy per question type ({model_type or 'model'}, {split})")
    write_error_analysis(folder / artifacts.ERROR_ANALYSIS_TSV.format(split=split),
                         question_ids=prepared.question_ids.tolist(), image_ids=prepared.image_ids.tolist(),
                         questions=prepared.questions, predictions=predictions,
                         ground_truths=prepared.modal_answers, accuracies=accuracies,
                         human_answers=prepared.human_answers)


def question_only_answers(train: PreparedSplit, questions: Sequence[str]) -> list[str]:
    """The best image-blind guess: the most common train modal answer for the same question text.

    Unseen question texts fall back to the most common answer of all train questions.
    Comparing a model against it shows how much the image contributes.
    """
    by_question: dict[str, Counter] = {}
    for question, answer in zip(train.questions, train.modal_answers):
        by_question.setdefault(question.lower(), Counter())[answer] += 1
    overall = Counter(train.modal_answers).most_common(1)[0][0]
    return [by_question[q.lower()].most_common(1)[0][0] if q.lower() in by_question else overall
            for q in questions]
