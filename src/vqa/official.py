"""The official VQA questions/annotations JSON: the one reader, its checks and messages.

`vqa prepare` and `vqa evaluate` both read the official files through this
module, so they accept and reject exactly the same files with the same one-line
messages (each names the file and a question id, and says how to fix it):

* the JSON parses and holds an object with a non-empty "questions" /
  "annotations" list of objects;
* every record has its keys with the official types (question_id and image_id
  int, question, question_type, multiple_choice_answer str, answers a
  non-empty list of {"answer": str}), answer_type one of ``ANSWER_TYPES``;
* no question id occurs twice in a file;
* questions and annotations cover the same question ids with the same image ids.

Exactly 10 answers per question is required only where a caller asks for it:
`vqa prepare` stores the answers as a fixed (N, 10) array and the tutorial's
``answers_*_all.txt``, while the metric itself is defined for any number of
humans (the official code divides by the length of each answer list).

The module also owns two rules that every stage shares: the duplicate-id check
(`check_unique_ids`) and the modal answer (`modal_answer`). It reads columns
with list comprehensions and checks their types set-wise, so VQA v2 train
(443,757 questions) is checked in a fraction of its JSON parse time.
"""

from __future__ import annotations

import json
import operator
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from itertools import chain
from pathlib import Path

import numpy as np

from vqa.artifacts import ANSWER_TYPES
from vqa.errors import InputError

_MISSING = object()
# v2_OpenEnded_mscoco_test-dev2015_questions.json (VQA v2) or OpenEnded_mscoco_test-dev2015_questions.json (v1)
_OFFICIAL_QUESTIONS_NAME = re.compile(r"(?:v2_)?OpenEnded_mscoco_(?P<split>[A-Za-z0-9-]+)_questions\.json")
_FORMAT_FIX = "use the official VQA format"


@dataclass(frozen=True)
class Questions:
    """An official questions file's records as columns, in file order (N entries each)."""

    path: Path
    question_ids: list[int]
    image_ids: list[int]
    questions: list[str]
    split: str | None = None  # the file's "data_subtype" (e.g. "test-dev2015"), else from its official name


@dataclass(frozen=True)
class Annotations:
    """An official annotations file's records as columns (N entries each), in file order."""

    path: Path
    question_ids: list[int]
    image_ids: list[int]
    question_types: list[str]
    answer_types: list[str]
    modal_answers: list[str]  # the file's multiple_choice_answer
    human_answers: list[list[str]]

    def take(self, order: np.ndarray) -> "Annotations":
        """The annotations in another order: entry i is entry ``order[i]`` (int (N,)) of this one."""
        order = np.asarray(order)
        if np.array_equal(order, np.arange(len(self.question_ids))):
            return self  # the official files list questions and annotations in the same order
        indices = order.tolist()
        columns = {field.name: getattr(self, field.name) for field in fields(self) if field.name != "path"}
        return Annotations(self.path, **{name: [values[i] for i in indices] for name, values in columns.items()})


# --------------------------------------------------------------------------- generic pieces
def load_json(path: Path, *, what: str):
    """Parse a JSON file, turning a missing, unreadable or malformed file into a one-line InputError.

    Args:
        path: Path of the file.
        what: what the file is ("questions", "annotations", "results"), for the message.
    Returns:
        The parsed JSON value.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except FileNotFoundError:
        raise InputError(f"{path}: {what} file not found") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not a valid JSON {what} file (malformed JSON: {error.msg} at line "
                         f"{error.lineno}); download it again") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read the {what} file ({error})") from None


def load_records(path: Path, *, key: str | None, what: str) -> list[dict]:
    """The list of record objects of an official file: ``data[key]``, or the top-level list when key is None.

    Args:
        path: Path of the JSON file.
        key: "questions" or "annotations"; None for a results file (a bare list).
        what: what the file is, for the messages.
    Returns:
        The records, each a dict.
    """
    return records_of(path, load_json(path, what=what), key=key, what=what)


def records_of(path: Path, data, *, key: str | None, what: str) -> list[dict]:
    """`load_records` on JSON already parsed from ``path`` (``data``)."""
    records = data.get(key) if key is not None and isinstance(data, dict) else data
    if not isinstance(records, list) or not set(map(type, records)) <= {dict}:
        shape = f'an object with a "{key}" list' if key else "a list of objects"
        raise InputError(f"{path}: expected {shape} ({what} file in the official VQA format)")
    return records


def _where(record: dict, position: int) -> str:
    """'question_id N' when the record has an int question id, else 'record #position'."""
    question_id = record.get("question_id")
    return f"question_id {question_id}" if type(question_id) is int else f"record #{position}"


def column(path: Path, records: list[dict], key: str, kind: type) -> list:
    """``record[key]`` of every record, checked to be exactly of type ``kind`` (so a bool is no int).

    Args:
        path: Path of the file, for the message.
        records: dicts from `load_records`.
        key: the field name.
        kind: int, str or list.
    Returns:
        N values of type ``kind``.
    """
    values = [record.get(key, _MISSING) for record in records]
    if set(map(type, values)) <= {kind}:
        return values
    position = next(i for i, value in enumerate(values) if type(value) is not kind)
    problem = "missing" if values[position] is _MISSING else f"not of type {kind.__name__}"
    where = _where(records[position], position) if key != "question_id" else f"record #{position}"
    raise InputError(f'{path}: {where}: key "{key}" is {problem}; {_FORMAT_FIX}')


def check_unique_ids(ids: Sequence[int] | np.ndarray, *, source: Path | str, what: str = "question_id",
                     fix: str = "keep one record per question") -> None:
    """Raise an InputError naming a repeated id (the smallest), if any.

    Args:
        ids: int (N,) ids that must be distinct.
        source: the file or folder they come from, named in the message.
        what: what the ids are ("question_id", "cocoid", "image id").
        fix: how to fix it, the end of the message.
    """
    ids = np.asarray(ids, dtype=np.int64)
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        repeated = unique[counts > 1]
        raise InputError(f"{source}: {what} {int(repeated[0])} occurs more than once "
                         f"({len(repeated)} duplicate ids in all); {fix}")


def modal_answer(answers: Sequence[str]) -> str:
    """The most frequent answer; a tie goes to the tied answer that occurs first in the list.

    Args:
        answers: the human answer strings of one question.
    Returns:
        str, the modal answer (the official ``multiple_choice_answer`` rule).
    """
    counts = Counter(answers)  # Counter keeps first-occurrence order, and max() keeps the first maximum
    return max(counts, key=counts.__getitem__)


# --------------------------------------------------------------------------- questions and annotations
def _records_and_ids(path: Path, key: str, data=_MISSING) -> tuple[list[dict], list[int]]:
    """The non-empty ``key`` list of an official file (or of its parsed ``data``) and its question ids, checked
    distinct."""
    if data is _MISSING:
        data = load_json(path, what=key)
    records = records_of(path, data, key=key, what=key)
    if not records:
        raise InputError(f"{path}: the {key} list is empty; use the complete official file")
    question_ids = column(path, records, "question_id", int)
    check_unique_ids(question_ids, source=path, fix=f"keep one {key.rstrip('s')} per question")
    return records, question_ids


def load_questions(path: Path) -> Questions:
    """Read and check an official VQA questions file.

    Args:
        path: Path to e.g. v2_OpenEnded_mscoco_val2014_questions.json.
    Returns:
        Questions with N entries per column, in file order.
    """
    path = Path(path)
    data = load_json(path, what="questions")
    records, question_ids = _records_and_ids(path, "questions", data)
    return Questions(path, question_ids, column(path, records, "image_id", int),
                     column(path, records, "question", str), split=_split_of(path, data))


def _split_of(path: Path, data) -> str | None:
    """The split an official file is of: its "data_subtype", else the one its official file name names."""
    subtype = data.get("data_subtype") if isinstance(data, dict) else None
    if isinstance(subtype, str) and subtype:
        return subtype
    match = _OFFICIAL_QUESTIONS_NAME.fullmatch(path.name)
    return match.group("split") if match else None


def load_annotations(path: Path, *, answers_per_question: int | None = None) -> Annotations:
    """Read and check an official VQA annotations file.

    Args:
        path: Path to e.g. v2_mscoco_val2014_annotations.json.
        answers_per_question: the exact number of human answers each question must have
            (10 for `vqa prepare`), or None for any non-empty list.
    Returns:
        Annotations with N entries per column, in file order.
    """
    path = Path(path)
    records, question_ids = _records_and_ids(path, "annotations")
    answer_types = column(path, records, "answer_type", str)
    _check_answer_types(path, records, answer_types)
    return Annotations(path, question_ids, column(path, records, "image_id", int),
                       column(path, records, "question_type", str), answer_types,
                       column(path, records, "multiple_choice_answer", str),
                       _human_answers(path, records, answers_per_question))


def _check_answer_types(path: Path, records: list[dict], answer_types: list[str]) -> None:
    """Raise an InputError naming the first answer_type outside ``ANSWER_TYPES``."""
    if set(answer_types) <= set(ANSWER_TYPES):
        return
    position = next(i for i, name in enumerate(answer_types) if name not in ANSWER_TYPES)
    raise InputError(f"{path}: {_where(records[position], position)}: unknown answer_type "
                     f"{answer_types[position]!r}; expected one of {list(ANSWER_TYPES)}")


def _human_answers(path: Path, records: list[dict], answers_per_question: int | None) -> list[list[str]]:
    """The answer strings of every record, checked: a non-empty list of {"answer": str} (of the given length)."""
    lists = column(path, records, "answers", list)
    try:
        answer_of = operator.itemgetter("answer")
        humans = [list(map(answer_of, answers)) for answers in lists]
        valid = set(map(type, chain.from_iterable(humans))) <= {str} and all(lists)
    except (TypeError, KeyError):
        valid = False
    if not valid:
        position = next(i for i, answers in enumerate(lists) if not answers or not all(
            type(answer) is dict and type(answer.get("answer")) is str for answer in answers))
        raise InputError(f'{path}: {_where(records[position], position)}: "answers" must be a non-empty list '
                         f'of {{"answer": str}} objects; {_FORMAT_FIX}')
    if answers_per_question is not None and set(map(len, humans)) != {answers_per_question}:
        position = next(i for i, answers in enumerate(humans) if len(answers) != answers_per_question)
        raise InputError(f"{path}: {_where(records[position], position)} has {len(humans[position])} answers, "
                         f"expected {answers_per_question}; use the official annotations")
    return humans


def match_annotations(questions: Questions, annotations: Annotations) -> np.ndarray:
    """Check that two files describe the same questions; return where each question's annotation is.

    The question ids must be the same sets and each question's image_id must agree.

    Args:
        questions: from `load_questions`.
        annotations: from `load_annotations` (ids unique in both).
    Returns:
        int64 (N,): position in ``annotations`` of each question, in question order.
    """
    question_ids = np.asarray(questions.question_ids, dtype=np.int64)
    annotated_ids = np.asarray(annotations.question_ids, dtype=np.int64)
    fix = "use the questions and annotations of the same split"
    unasked = ~np.isin(annotated_ids, question_ids)
    if unasked.any():
        raise InputError(f"{questions.path}: question_id {annotated_ids[unasked][0]} is missing "
                         f"({int(unasked.sum())} annotated questions are not in it; annotations: "
                         f"{annotations.path}); {fix}")
    sorter = np.argsort(annotated_ids, kind="stable")
    found_at = np.clip(np.searchsorted(annotated_ids, question_ids, sorter=sorter), 0, len(sorter) - 1)
    order = sorter[found_at]
    unannotated = annotated_ids[order] != question_ids
    if unannotated.any():
        raise InputError(f"{annotations.path}: question_id {question_ids[unannotated][0]} has no annotation "
                         f"({int(unannotated.sum())} questions of {questions.path} have none); {fix}")
    image_ids = np.asarray(questions.image_ids, dtype=np.int64)
    annotated_images = np.asarray(annotations.image_ids, dtype=np.int64)[order]
    differ = np.flatnonzero(annotated_images != image_ids)
    if len(differ):
        first = differ[0]
        raise InputError(f"{annotations.path}: question_id {question_ids[first]} has image_id "
                         f"{annotated_images[first]} but {questions.path} says {image_ids[first]}; {fix}")
    return order
