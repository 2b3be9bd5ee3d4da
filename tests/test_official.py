"""vqa.official: the one reader of the official questions/annotations JSON, its checks and shared rules."""

import json

import numpy as np
import pytest

from vqa import official
from vqa.errors import InputError


def question(qid, image_id=1, text="Is it red?"):
    return {"question_id": qid, "image_id": image_id, "question": text}


def annotation(qid, image_id=1, answers=("yes",) * 10, answer_type="yes/no"):
    return {"question_id": qid, "image_id": image_id, "question_type": "is it", "answer_type": answer_type,
            "multiple_choice_answer": answers[0], "answers": [{"answer": a, "answer_id": i} for i, a in enumerate(answers)]}


def write(path, key, records):
    path.write_text(json.dumps({key: records}))
    return path


def test_columns_in_file_order(tmp_path):
    questions = official.load_questions(write(tmp_path / "q.json", "questions", [question(2, 5), question(1, 4, "Why?")]))
    assert (questions.question_ids, questions.image_ids, questions.questions) == ([2, 1], [5, 4], ["Is it red?", "Why?"])
    annotations = official.load_annotations(write(tmp_path / "a.json", "annotations",
                                                  [annotation(1, 4), annotation(2, 5, ("no", "No", "2"), "number")]))
    assert annotations.human_answers == [["yes"] * 10, ["no", "No", "2"]]
    assert annotations.answer_types == ["yes/no", "number"] and annotations.modal_answers == ["yes", "no"]
    order = official.match_annotations(questions, annotations)
    assert order.tolist() == [1, 0]
    assert annotations.take(order).question_ids == [2, 1] and annotations.take(order).image_ids == [5, 4]



@pytest.mark.parametrize("name, data, split", [
    ("q.json", {"data_subtype": "test-dev2015"}, "test-dev2015"),
    ("v2_OpenEnded_mscoco_test2015_questions.json", {}, "test2015"),
    ("OpenEnded_mscoco_val2014_questions.json", {"data_subtype": 2014}, "val2014"),
    ("q.json", {}, None),
])
def test_questions_know_their_split_from_data_subtype_or_official_name(tmp_path, name, data, split):
    path = tmp_path / name
    path.write_text(json.dumps({**data, "questions": [question(1)]}))
    assert official.load_questions(path).split == split

@pytest.mark.parametrize("record, message", [
    ({**question(1), "question_id": True}, 'record #0: key "question_id" is not of type int'),
    ({**question(1), "image_id": 1.0}, 'question_id 1: key "image_id" is not of type int'),
    ({"question_id": 1, "image_id": 1}, 'question_id 1: key "question" is missing'),
])
def test_question_types_are_exact(tmp_path, record, message):
    path = write(tmp_path / "q.json", "questions", [record])
    with pytest.raises(InputError, match=message) as error:
        official.load_questions(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


@pytest.mark.parametrize("answers, exact, message", [
    ([], None, '"answers" must be a non-empty list'),
    (["yes", 3], None, '"answers" must be a non-empty list'),
    (["yes"] * 9, 10, "question_id 1 has 9 answers, expected 10"),
])
def test_answers_rules(tmp_path, answers, exact, message):
    record = annotation(1, answers=["x"])
    record["answers"] = [{"answer": a} for a in answers]
    with pytest.raises(InputError, match=message):
        official.load_annotations(write(tmp_path / "a.json", "annotations", [record]), answers_per_question=exact)
    if exact:  # the metric itself takes any non-empty list
        assert official.load_annotations(tmp_path / "a.json").human_answers == [answers]


def test_unknown_answer_type_and_malformed_json(tmp_path):
    with pytest.raises(InputError, match="question_id 1: unknown answer_type 'colour'"):
        official.load_annotations(write(tmp_path / "a.json", "annotations", [annotation(1, answer_type="colour")]))
    (tmp_path / "bad.json").write_text('{"questions": [')
    with pytest.raises(InputError, match="not a valid JSON questions file .malformed JSON"):
        official.load_questions(tmp_path / "bad.json")


@pytest.mark.parametrize("questions, annotations, message", [
    ([question(1), question(2)], [annotation(1)], "question_id 2 has no annotation"),
    ([question(1)], [annotation(1), annotation(2)], "question_id 2 is missing"),
    ([question(1, image_id=7)], [annotation(1, image_id=8)], "question_id 1 has image_id 8 but"),
])
def test_questions_and_annotations_must_line_up(tmp_path, questions, annotations, message):
    loaded = (official.load_questions(write(tmp_path / "q.json", "questions", questions)),
              official.load_annotations(write(tmp_path / "a.json", "annotations", annotations)))
    with pytest.raises(InputError, match=message):
        official.match_annotations(*loaded)


def test_check_unique_ids_names_the_smallest_repeat():
    official.check_unique_ids(np.array([3, 1, 2]), source="x.json")
    with pytest.raises(InputError, match=r"^x.json: cocoid 2 occurs more than once \(2 duplicate ids in all\); fix it$"):
        official.check_unique_ids([5, 2, 5, 2, 1], source="x.json", what="cocoid", fix="fix it")


@pytest.mark.parametrize("answers, expected", [
    (["a"] * 6 + ["b"] * 4, "a"),
    (["b"] * 5 + ["a"] * 5, "b"),  # tie: the first to occur wins
    (["x", "y", "y", "x", "z"], "x"),
])
def test_modal_answer(answers, expected):
    assert official.modal_answer(answers) == expected
