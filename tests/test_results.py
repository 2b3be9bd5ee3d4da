"""vqa.results: official results files and report files, round trips and bad input."""

import json
import re

import numpy as np
import pytest

from vqa import atomic
from vqa.errors import InputError, VQAError
from vqa.cli import main
from vqa.results import (check_submission, file_name_problems, load_report, load_results, read_results,
                         submission_file_name, write_report, write_results, write_submission)

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


# ------------------------------------------------------------------ submissions
TEST_DEV_IDS = [5, 6, 7]
OFFICIAL_NAME = "vqa_OpenEnded_mscoco_test-dev2015_lstm_results.json"


@pytest.fixture
def questions(tmp_path):
    """A hand-made official questions file of test-dev2015: question ids 5, 6, 7."""
    path = tmp_path / "questions.json"
    path.write_text(json.dumps({"data_subtype": "test-dev2015", "questions": [
        {"question_id": qid, "image_id": 1, "question": "Is it red?"} for qid in TEST_DEV_IDS]}))
    return path


def answers(*ids):
    return [{"question_id": qid, "answer": "yes"} for qid in ids]


def test_submission_file_name_is_the_official_one():
    assert submission_file_name("test-dev", "lstm") == OFFICIAL_NAME
    assert submission_file_name("test2015", "san-2.v1") == "vqa_OpenEnded_mscoco_test2015_san-2.v1_results.json"


@pytest.mark.parametrize("split, name, message", [
    ("val", "lstm", "for test-dev2015 or test2015 only, not val2014; write val2014 results with --results"),
    ("test-dev", "../lstm", "--name '../lstm': use 1-100 letters"),
    ("test-dev", "my model", "--name 'my model': use 1-100 letters"),
    ("test-dev", "", "--name '': use 1-100 letters"),
])
def test_submission_file_name_refuses_other_splits_and_names(split, name, message):
    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        submission_file_name(split, name)


@pytest.mark.parametrize("name, split, message", [
    (OFFICIAL_NAME, "test-dev2015", None),
    ("my_answers.json", "test-dev2015", None),  # not meant to be official: not checked
    ("vqa_OpenEnded_mscoco_test2015_lstm_results.json", "test-dev2015",
     "the file name says test2015 but the answers are for test-dev2015; name it " + OFFICIAL_NAME),
    ("vqa_test-dev2015_lstm_results.json", "test-dev2015", "does not follow the official pattern"),
    ("lstm_results.json", "test-dev2015", "does not follow the official pattern"),
    ("vqa_MultipleChoice_mscoco_test-dev2015_lstm_results.json", None, "does not follow the official pattern"),
])
def test_file_name_problems(tmp_path, name, split, message):
    problems = file_name_problems(tmp_path / name, split)
    if message is None:
        assert problems == []
    else:
        assert len(problems) == 1 and message in problems[0] and problems[0].startswith(f"{tmp_path / name}: ")


def test_a_complete_submission_passes(tmp_path, questions):
    path = tmp_path / OFFICIAL_NAME
    path.write_text(json.dumps(answers(7, 5, 6)))
    check = check_submission(path, questions)
    assert check.ok and check.num_answers == 3 and check.split == "test-dev2015" and check.lines() == []


@pytest.mark.parametrize("content, message", [
    (answers(5, 6), "question_id 7 has no answer"),
    (answers(5, 6, 7, 6), "question_id 6 is answered 2 times"),
    (answers(5, 6, 7, 8), "question_id 8 is not a question of test-dev2015"),
    (answers(5, 6) + [{"question_id": "7", "answer": "yes"}], 'record #2: "question_id" is not an int ("7")'),
    (answers(5, 6) + [{"question_id": 7.0, "answer": "yes"}], 'record #2: "question_id" is not an int (7.0)'),
    (answers(5, 6) + [{"answer": "yes"}], 'record #2: "question_id" is missing'),
    (answers(5, 6) + [{"question_id": 7, "answer": 2}], 'question_id 7: "answer" is not a string (2)'),
    (answers(5, 6) + [{"question_id": 7}], 'question_id 7: "answer" is missing'),
    (answers(5, 6) + [["7", "yes"]], "record #2 is not an object"),
    ({"5": "yes"}, 'expected a JSON list of {"question_id": int, "answer": str}, got dict'),
    ("[{", "not valid JSON (Expecting property name"),
])
def test_each_problem_is_one_line_naming_the_file(tmp_path, questions, content, message):
    path = tmp_path / OFFICIAL_NAME
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    problems = check_submission(path, questions).lines()
    # a record that is not {int, str} is also unanswered: its own line, then the missing id
    assert message in problems[0] and all(line.startswith(f"{path}: ") and "\n" not in line for line in problems)
    assert len(problems) <= 2


def test_a_wrong_file_name_is_a_problem_too(tmp_path, questions):
    path = tmp_path / "vqa_OpenEnded_mscoco_test2015_lstm_results.json"
    path.write_text(json.dumps(answers(5, 6, 7)))
    assert [line.split(": ", 1)[1] for line in check_submission(path, questions).lines()] == [
        f"the file name says test2015 but the answers are for test-dev2015; name it {OFFICIAL_NAME}"]


def test_problems_are_capped_per_kind_with_a_count(tmp_path):
    questions = tmp_path / "v2_OpenEnded_mscoco_test2015_questions.json"  # no data_subtype: the name says
    questions.write_text(json.dumps({"questions": [{"question_id": qid, "image_id": 1, "question": "Why?"}
                                                   for qid in range(100)]}))
    path = tmp_path / "results.json"
    path.write_text(json.dumps(answers(*range(70), 500, 70, 70)))
    lines = check_submission(path, questions).lines(shown=3)
    assert [line.split(": ", 1)[1] for line in lines] == [
        "question_id 70 is answered 2 times", "question_id 500 is not a question of test2015",
        "question_id 71 has no answer", "question_id 72 has no answer", "question_id 73 has no answer",
        "... and 26 more unanswered questions (not shown)"]


def test_check_submission_exit_status(tmp_path, questions, capsys):
    path = tmp_path / OFFICIAL_NAME
    path.write_text(json.dumps(answers(5, 6, 7)))
    assert main(["evaluate", "--check-submission", str(path), "--questions", str(questions)]) == 0
    assert capsys.readouterr().out == "OK: 3 answers for test-dev2015\n"
    path.write_text(json.dumps(answers(5, 5, 9)))
    assert main(["evaluate", "--check-submission", str(path), "--questions", str(questions)]) == 1
    captured = capsys.readouterr()
    assert [line.split(": ", 1)[1] for line in captured.out.splitlines()] == [
        "question_id 5 is answered 2 times", "question_id 9 is not a question of test-dev2015",
        "question_id 6 has no answer", "question_id 7 has no answer"]
    assert captured.err == f"vqa evaluate: error: {path}: 4 problems; fix them before uploading\n"


@pytest.mark.parametrize("flags, message", [
    ([], "--check-submission needs --questions"),
    (["--questions", "q.json", "--results", "r.json"], "--check-submission takes --questions only, not --results"),
    (["--questions", "missing.json"], "missing.json: questions file not found"),
])
def test_check_submission_usage_errors(tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--check-submission", "r.json", *flags]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_write_submission_writes_only_a_complete_file_under_its_name(tmp_path):
    path = tmp_path / OFFICIAL_NAME
    write_submission(path, np.array([7, 5, 6]), ["a", "b", "c"], split="test-dev2015", split_question_ids=[5, 6, 7])
    assert read_results(path) == {7: "a", 5: "b", 6: "c"}
    for ids, split, message in [([5, 6], "test-dev2015", "question_id 7 has no answer"),
                                ([5, 6, 8], "test-dev2015", "question_id 8 is not a question of test-dev2015 "
                                                               "(2 problems in all)"),
                                ([5, 6, 7], "test2015", "the file name says test-dev2015 but the answers are for "
                                                        "test2015")]:
        path = tmp_path / "new" / OFFICIAL_NAME
        with pytest.raises(InputError, match=re.escape(message)) as error:
            write_submission(path, ids, ["a"] * len(ids), split=split, split_question_ids=[5, 6, 7])
        assert str(error.value).endswith("; nothing written") and "\n" not in str(error.value)
        assert not path.parent.exists()
