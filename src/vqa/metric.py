"""The official VQA accuracy (VQAEval of the VQA API) as pure functions: no file I/O.

This module owns the metric: the official normalisation tables and regexes,
the per-answer soft targets (`answer_scores`, for `--loss soft`),
per-question accuracy (a plain reference version and a cached, vectorised one),
the aggregation into the official report and the official demo's printout. It
is reimplemented from the rules of the official evaluation code so that every
figure (per question, overall, per answer type, per question type) is
bit-for-bit the official one:

* every human answer and the prediction get newline and tab replaced by a space
  and are stripped;
* only when the human answers are not all identical are they and the
  prediction normalised (punctuation, then digits/articles/contractions);
* a question scores the mean, over its humans, of ``min(1, matches among the
  other humans / 3)``;
* figures are percent, rounded with Python's ``round`` to 2 places, means taken
  over the unrounded per-question values, summed in annotation order.

Normalisation is cached per distinct answer string and matching is vectorised
with numpy, so VQA v2 val (214,354 questions) scores in about a second.
Reading the official files lives in `vqa.official`, reports in `vqa.evaluate`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from vqa.errors import InputError, VQAError

# Figures are reported with 2 decimals, as the official demo (VQAEval(n=2)).
DECIMALS = 2

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


def answer_scores(human_answers: Sequence[Sequence[str]], answers: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each question's soft targets: min(n / 3, 1) for every answer class that some human gave.

    n counts the humans whose answer equals the class's answer under the official rules:
    cleaned strings when the humans all agree, normalised ones otherwise (so "two" counts for
    a class "2", and "Yes" for "yes" only when the humans disagree). Classes that normalise
    to the same string share a score. This equals the official credit of predicting the class
    for n = 0 and n >= 4; for n = 1, 2, 3 the official mean over the ten leave-one-out subsets
    gives 0.3, 0.6, 0.9 where min(n / 3, 1) gives 1/3, 2/3, 1.

    Args:
        human_answers: N lists of human answer strings (10 each in VQA).
        answers: the K answer classes (class i is answers[i]).
    Returns:
        (classes int32 (N, W), scores float32 (N, W)): the classes with a nonzero score per
        question, in class order, padded with -1 and 0; W is the widest question's count (>= 1).
    """
    by_clean: dict[str, list[int]] = {}
    by_normal: dict[str, list[int]] = {}
    normal_of: dict[str, str] = {}

    def normal(text: str) -> str:
        if text not in normal_of:
            normal_of[text] = normalize_answer(text)
        return normal_of[text]

    for index, answer in enumerate(answers):
        cleaned = clean_answer(answer)
        by_clean.setdefault(cleaned, []).append(index)
        by_normal.setdefault(normal(cleaned), []).append(index)
    def score_row(humans: tuple[str, ...]) -> list[tuple[int, float]]:
        cleaned = [clean_answer(answer) for answer in humans]
        agree = len(set(cleaned)) == 1
        counts = Counter(cleaned if agree else [normal(text) for text in cleaned])
        table = by_clean if agree else by_normal
        return sorted((index, min(count / 3, 1.0)) for key, count in counts.items() for index in table.get(key, ()))

    done: dict[tuple[str, ...], list[tuple[int, float]]] = {}  # VQA repeats answer sets ("yes" x 10)
    rows = [done[key] if (key := tuple(humans)) in done else done.setdefault(key, score_row(key))
            for humans in human_answers]
    width = max((len(row) for row in rows), default=0) or 1
    classes = np.full((len(rows), width), -1, dtype=np.int32)
    scores = np.zeros((len(rows), width), dtype=np.float32)
    for position, row in enumerate(rows):
        if row:
            classes[position, :len(row)], scores[position, :len(row)] = zip(*row)
    return classes, scores


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
    """The lines the official demo (vqaEvalDemo.py) prints: overall, per question type, per answer type.

    Args:
        report: dict from `summarize_accuracy`.
    Returns:
        str, newline-terminated text.
    """
    lines = [f"Overall Accuracy is: {report['overall']:.02f}", "",
             "Per Question Type Accuracy is the following:"]
    lines += [f"{name} : {value:.02f}" for name, value in report["perQuestionType"].items()]
    lines += ["", "Per Answer Type Accuracy is the following:"]
    lines += [f"{name} : {value:.02f}" for name, value in report["perAnswerType"].items()]
    return "\n".join(lines) + "\n"
