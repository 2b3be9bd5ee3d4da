"""Official results files and report files: their only writers and readers.

A results file is what the VQA evaluation server takes: a JSON list of
``{"question_id": int, "answer": str}``, one per question. A report file is the
JSON `vqa evaluate --report` writes: ``{"overall": float, "perAnswerType": {...},
"perQuestionType": {...}, "perQuestion": {question id: float}}`` (see
`vqa.metric.summarize_accuracy`), plus ``"checkpoint"`` when a model was scored.
Both are written atomically; every problem reading one is an `InputError` line
naming the file.

A submission is a results file for the evaluation server's splits (test-dev2015,
test2015) under the official name ``vqa_OpenEnded_mscoco_<split>_<name>_results.json``
that answers every question of the split exactly once: `write_submission` refuses
to write any other, and `check_submission` lists every problem of a file before upload.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vqa import artifacts, official
from vqa.atomic import write_json_atomically
from vqa.errors import InputError, VQAError

_QUESTION_ID = "question_id"
_ANSWER = "answer"
_MISSING = object()
_REPORT_KEYS = ("overall", "perAnswerType", "perQuestionType", "perQuestion")

# The evaluation server's file name (the VQA API's vqa_[task]_[datatype]_[datasubtype]_[alg]_results.json).
SUBMISSION_FILE = "vqa_OpenEnded_mscoco_{split}_{name}_results.json"
SUBMISSION_SPLITS = (artifacts.TEST_DEV_SPLIT, artifacts.TEST_SPLIT)
# A file name that starts or ends like this one is checked against it.
_OFFICIAL_NAME = re.compile(r"vqa_OpenEnded_mscoco_(?P<split>[A-Za-z0-9-]+?)_(?P<name>.+)_results\.json")
_LOOKS_OFFICIAL = re.compile(r"vqa_.*|.*_results\.json")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
PROBLEMS_SHOWN = 10  # lines printed per kind of problem; the rest are counted


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


# ------------------------------------------------------------------ submissions to the evaluation server
def submission_file_name(split: str, name: str) -> str:
    """The official results file name of algorithm ``name`` on ``split``.

    Args:
        split: "test-dev" / "test-dev2015" or "test" / "test2015".
        name: the algorithm's name: letters, digits, "_", "." and "-", starting with a letter or digit.
    Returns:
        str, e.g. "vqa_OpenEnded_mscoco_test-dev2015_lstm_results.json".
    """
    split = artifacts.SPLIT_ALIASES.get(split, split)
    if split not in SUBMISSION_SPLITS:
        raise InputError(f"--name gives the evaluation server's file name, for {' or '.join(SUBMISSION_SPLITS)} "
                         f"only, not {split}; write {split} results with --results PATH")
    if not _NAME.fullmatch(name):
        raise InputError(f"--name {name!r}: use 1-100 letters, digits, '_', '.' or '-', starting with a "
                         "letter or digit (it becomes part of the file name)")
    return SUBMISSION_FILE.format(split=split, name=name)


def file_name_problems(path: Path, split: str | None) -> list[str]:
    """What is wrong with a results file's name that looks official: its pattern, or a split other than ``split``.

    A name that neither starts with "vqa_" nor ends in "_results.json" is not meant to be official: no problem.
    """
    path = Path(path)
    if not _LOOKS_OFFICIAL.fullmatch(path.name):
        return []
    match = _OFFICIAL_NAME.fullmatch(path.name)
    if match is None or not _NAME.fullmatch(match.group("name")):
        return [f"{path}: the file name does not follow the official pattern "
                f"{SUBMISSION_FILE.format(split='<split>', name='<name>')}"]
    if split is not None and match.group("split") != split:
        return [f"{path}: the file name says {match.group('split')} but the answers are for {split}; "
                f"name it {SUBMISSION_FILE.format(split=split, name=match.group('name'))}"]
    return []


def coverage_problems(path: Path, question_ids: Iterable[int], split_question_ids: Sequence[int] | None,
                      *, split: str | None) -> list[tuple[str, str]]:
    """(kind, line) for every id answered more than once, not of the split, or of the split but unanswered.

    Args:
        path: the results file, named in each line.
        question_ids: the answered ids, in file order.
        split_question_ids: every question id of the split, or None to check repeats only.
        split: the split's name for the lines ("test-dev2015"), or None.
    """
    counts = Counter(question_ids)
    problems = [("repeated ids", f"{path}: question_id {qid} is answered {count} times")
                for qid, count in counts.items() if count > 1]
    if split_question_ids is None:
        return problems
    of_split = f"a question of {split}" if split else "in the questions file"
    split_question_ids = [int(qid) for qid in split_question_ids]
    expected = set(split_question_ids)
    problems += [("extra ids", f"{path}: question_id {qid} is not {of_split}") for qid in counts if qid not in expected]
    problems += [("unanswered questions", f"{path}: question_id {qid} has no answer")
                 for qid in split_question_ids if qid not in counts]
    return problems


def write_submission(path: Path, question_ids: Sequence[int], answers: Sequence[str], *, split: str,
                     split_question_ids: Sequence[int] | None = None) -> None:
    """Write a results file for ``split``, refusing (nothing written) one the evaluation server would not take.

    Args:
        path: Path of the results JSON; on test-dev / test, an official-looking name must be the official one
            for ``split``.
        question_ids: N question ids, answers: N answer strings (as `write_results`).
        split: the split answered ("test-dev2015", ...).
        split_question_ids: every question id of the split; each must be answered once, and no other.
    Raises:
        InputError: one line: the first problem and how many there are.
    """
    ids = [int(qid) for qid in question_ids]
    named = file_name_problems(path, split) if split in SUBMISSION_SPLITS else []
    problems = named + [line for _, line in coverage_problems(
        path, ids, split_question_ids, split=split)]
    if problems:
        more = f" ({len(problems)} problems in all)" if len(problems) > 1 else ""
        raise InputError(f"{problems[0]}{more}; nothing written")
    write_results(path, ids, answers)


@dataclass(frozen=True)
class SubmissionCheck:
    """What `check_submission` found: the answers counted and every problem as (kind, line)."""

    path: Path
    split: str | None
    num_answers: int
    problems: tuple[tuple[str, str], ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self, shown: int = PROBLEMS_SHOWN) -> list[str]:
        """One line per problem, at most ``shown`` of each kind and then a line counting the rest."""
        by_kind: dict[str, list[str]] = {}
        for kind, line in self.problems:
            by_kind.setdefault(kind, []).append(line)
        lines = []
        for kind, kind_lines in by_kind.items():
            lines += kind_lines[:shown]
            if len(kind_lines) > shown:
                lines.append(f"{self.path}: ... and {len(kind_lines) - shown:,} more {kind} (not shown)")
        return lines


def check_submission(path: Path, questions_path: Path) -> SubmissionCheck:
    """Check a results file against the official questions of its split before it is uploaded.

    It must be a JSON list of {"question_id": int, "answer": str} answering every question of
    ``questions_path`` exactly once and no other, under the official name if it looks like one.

    Args:
        path: Path of the results file to check.
        questions_path: Path of the official questions JSON of the split.
    Returns:
        SubmissionCheck; every problem of the file is in it, none is raised.
    Raises:
        InputError: the questions file itself is missing or malformed.
    """
    path = Path(path)
    questions = official.load_questions(questions_path)
    problems = [("file name", line) for line in file_name_problems(path, questions.split)]
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return SubmissionCheck(path, questions.split, 0, tuple(problems + [("file", f"{path}: not found")]))
    except (OSError, ValueError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        problem = f"not valid JSON ({error})" if isinstance(error, ValueError) else f"cannot be read ({error})"
        return SubmissionCheck(path, questions.split, 0, tuple(problems + [("file", f"{path}: {problem}")]))
    if not isinstance(records, list):
        problems.append(("file", f"{path}: expected a JSON list of {{\"question_id\": int, \"answer\": str}}, "
                                 f"got {type(records).__name__}"))
        return SubmissionCheck(path, questions.split, 0, tuple(problems))
    ids, record_problems = _answered_ids(path, records)
    problems += record_problems + coverage_problems(path, ids, questions.question_ids, split=questions.split)
    return SubmissionCheck(path, questions.split, len(records), tuple(problems))


def _answered_ids(path: Path, records: list) -> tuple[list[int], list[tuple[str, str]]]:
    """The int question ids of ``records`` and a (kind, line) for each record that is not {int, str}."""
    ids, problems = [], []
    for position, record in enumerate(records):
        if not isinstance(record, dict):
            problems.append(("malformed records", f"{path}: record #{position} is not an object"))
            continue
        qid, answer = record.get(_QUESTION_ID, _MISSING), record.get(_ANSWER, _MISSING)
        if type(qid) is not int:
            problem = "is missing" if qid is _MISSING else f"is not an int ({_shown(qid)})"
            problems.append(("malformed records", f'{path}: record #{position}: "question_id" {problem}'))
        else:
            ids.append(qid)
        if type(answer) is not str:
            where = f"question_id {qid}" if type(qid) is int else f"record #{position}"
            problem = "is missing" if answer is _MISSING else f"is not a string ({_shown(answer)})"
            problems.append(("malformed records", f'{path}: {where}: "answer" {problem}'))
    return ids, problems


def _shown(value) -> str:
    """A JSON value as a short text for a message."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
