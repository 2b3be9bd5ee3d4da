"""vqa.results: official results files and report files, round trips and bad input."""

import json

import numpy as np
import pytest

from vqa import atomic
from vqa.errors import InputError, VQAError
from vqa.results import load_report, load_results, read_results, write_report, write_results

REPORT = {"overall": 58.0, "perAnswerType": {"yes/no": 50.0}, "perQuestionType": {"is the": 50.0},
          "perQuestion": {"10": 100.0, "20": 0.0}}


def test_results_round_trip_in_the_given_order(tmp_path):
    path = tmp_path / "sub" / "results.json"
    write_results(path, np.array([30, 10, 20], dtype=np.int64), ["red", "Yes", "2"])
    assert json.loads(path.read_text()) == [{"question_id": 30, "answer": "red"},
                                            {"question_id": 10, "answer": "Yes"},
                                            {"question_id": 20, "answer": "2"}]
    assert read_results(path) == {30: "red", 10: "Yes", 20: "2"}
    assert load_results(path, [10, 20, 30]) == ["Yes", "2", "red"]
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


@pytest.mark.parametrize("ids, answers, message", [
    ([1, 2], ["a"], "1 answers for 2 question ids"),
    ([1, 1], ["a", "b"], "question_id 1 occurs more than once"),
    ([1, 2], ["a", 3], "every answer must be a str"),
])
def test_write_results_rejects_bad_input(tmp_path, ids, answers, message):
    path = tmp_path / "results.json"
    with pytest.raises(VQAError, match=message):
        write_results(path, ids, answers)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("records, message", [
    ([{"question_id": 1, "answer": "a"}, {"question_id": 1, "answer": "b"}], "question_id 1 occurs more than once"),
    ([{"question_id": "1", "answer": "a"}], '"question_id" is not of type int'),
    ([{"question_id": 1}], 'key "answer" is missing'),
    ({"question_id": 1, "answer": "a"}, "expected a list of objects"),
])
def test_read_results_names_the_file_and_the_problem_in_one_line(tmp_path, records, message):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(records))
    with pytest.raises(InputError, match=message) as error:
        read_results(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_load_results_wants_exactly_the_questions_asked(tmp_path):
    path = tmp_path / "results.json"
    write_results(path, [1, 2], ["a", "b"])
    with pytest.raises(InputError, match="no answer for question_id 3"):
        load_results(path, [1, 2, 3])
    with pytest.raises(InputError, match="question_id 2 is not in the annotations"):
        load_results(path, [1])


def test_report_round_trips(tmp_path):
    path = tmp_path / "report.json"
    write_report(path, {"checkpoint": "best", **REPORT})
    assert load_report(path) == {"checkpoint": "best", **REPORT}


@pytest.mark.parametrize("text, message", [
    (None, "not found; write it with 'vqa evaluate"),
    ("{", "not a JSON report"),
    ("[]", "a report is a JSON object, got list"),
    (json.dumps({k: v for k, v in REPORT.items() if k != "perQuestion"}), "no 'perQuestion' in the report"),
])
def test_load_report_names_the_file_and_the_problem(tmp_path, text, message):
    path = tmp_path / "report.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(InputError, match=message) as error:
        load_report(path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


def test_an_interrupted_write_leaves_the_old_files_and_no_temporary(tmp_path, monkeypatch):
    results, report = tmp_path / "results.json", tmp_path / "report.json"
    write_results(results, [1], ["old"])
    write_report(report, REPORT)

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_results(results, [1], ["new"])
    with pytest.raises(OSError, match="disk full"):
        write_report(report, {**REPORT, "overall": 1.0})
    monkeypatch.undo()
    assert load_results(results, [1]) == ["old"] and load_report(report) == REPORT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "results.json"]
