"""Official results files and report files: their only writers and readers.

A results file is what the VQA evaluation server takes: a JSON list of
``{"question_id": int, "answer": str}``, one per question. A report file is the
JSON `vqa evaluate --report` writes: ``{"overall": float, "perAnswerType": {...},
"perQuestionType": {...}, "perQuestion": {question id: float}}`` (see
`vqa.metric.summarize_accuracy`), plus ``"checkpoint"`` when a model was scored.
Both are written atomically; every problem reading one is an `InputError` line
naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from vqa import official
from vqa.atomic import write_json_atomically
from vqa.errors import InputError, VQAError

_QUESTION_ID = "question_id"
_ANSWER = "answer"
_REPORT_KEYS = ("overall", "perAnswerType", "perQuestionType", "perQuestion")


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
    official.check_unique_ids(ids, source=path, fix="keep one answer per question")
    if not all(isinstance(answer, str) for answer in answers):
        raise VQAError("every answer must be a str")
    write_json_atomically(path, [{_QUESTION_ID: qid, _ANSWER: answer} for qid, answer in zip(ids, answers)],
                          indent=1)


def read_results(path: Path) -> dict[int, str]:
    """Read an official results file as {question id: answer}, in file order.

    Raises:
        InputError: not found, not JSON, not a list of {"question_id": int, "answer": str}, or a repeated id.
    """
    records = official.load_records(path, key=None, what="results")
    ids = official.column(path, records, _QUESTION_ID, int)
    official.check_unique_ids(ids, source=path, fix="keep one answer per question")
    return dict(zip(ids, official.column(path, records, _ANSWER, str)))


def load_results(path: Path, question_ids: Sequence[int]) -> list[str]:
    """Read an official results file and align its answers with `question_ids`.

    Args:
        path: Path to a JSON list of {"question_id": int, "answer": str}.
        question_ids: the N annotated question ids, in the order wanted.
    Returns:
        N answer strings, one per question id, in that order.
    """
    answers = read_results(path)
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


def write_report(path: Path, report: Mapping) -> None:
    """Write a report (what `vqa.metric.summarize_accuracy` returns, maybe with "checkpoint") as JSON, atomically."""
    write_json_atomically(path, dict(report), indent=1)


def load_report(path: Path) -> dict:
    """Read a report file written by `write_report`.

    Raises:
        InputError: not found, not JSON, or lacking one of "overall", "perAnswerType",
            "perQuestionType", "perQuestion".
    """
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: not found; write it with 'vqa evaluate ... --report {path}'") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{path}: not a JSON report ({error}); re-run 'vqa evaluate --report'") from None
    if not isinstance(report, dict):
        raise InputError(f"{path}: a report is a JSON object, got {type(report).__name__}")
    missing = [key for key in _REPORT_KEYS if key not in report]
    if missing:
        raise InputError(f"{path}: no {missing[0]!r} in the report; re-run 'vqa evaluate --report'")
    return report
