"""The official VQA accuracy: hand-computed cases for every rule, the files, the errors, the CLI."""

import json
import random
import subprocess
import sys

import numpy as np
import pytest

from vqa import evaluate
from vqa.cli import main
from vqa.errors import InputError, VQAError


# ------------------------------------------------------------------ official-format fixtures
def ten(*groups):
    """Ten human answers from (answer, count) pairs, padded with 'zebra'."""
    answers = [answer for answer, count in groups for _ in range(count)]
    return answers + ["zebra"] * (10 - len(answers))


def write_split(folder, items):
    """Write questions and annotations JSON for items (qid, qtype, atype, humans, question); return paths."""
    questions = {"data_subtype": "val2014", "questions": [
        {"question_id": qid, "image_id": qid // 10, "question": text} for qid, _, _, _, text in items]}
    annotations = {"data_subtype": "val2014", "annotations": [
        {"question_id": qid, "image_id": qid // 10, "question_type": qtype, "answer_type": atype,
         "multiple_choice_answer": humans[0],
         "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(humans)]}
        for qid, qtype, atype, humans, _ in items]}
    paths = folder / "questions.json", folder / "annotations.json"
    for path, data in zip(paths, (questions, annotations)):
        path.write_text(json.dumps(data))
    return paths


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


ITEMS = [
    (10, "is the", "yes/no", ["yes"] * 10, "Is the sky blue?"),
    (11, "is the", "yes/no", ["yes"] * 9 + ["no"], "Is it sunny?"),
    (20, "how many", "number", ten(("two", 3), ("2", 1)), "How many dogs?"),
    (30, "what color", "other", ten(("red", 1)), "What color is the car?"),
    (31, "what color", "other", ten(("blue", 2)), "What color is the sky?"),
]
# Predictions with hand-computed accuracy: "Yes" against ten identical "yes" is 0 (no normalisation);
# against a disagreeing set it normalises to "yes" (9 matches -> 1); "2" matches 3 "two" + 1 "2" -> 1;
# one matching human -> 0.3; two -> 0.6.
PREDICTIONS = {10: "Yes", 11: "Yes", 20: "2", 30: "red", 31: "blue"}
EXPECTED_PER_QUESTION = {"10": 0.0, "11": 100.0, "20": 100.0, "30": 30.0, "31": 60.0}


@pytest.fixture
def split_files(tmp_path):
    questions, annotations = write_split(tmp_path, ITEMS)
    results = write_json(tmp_path / "results.json",
                         [{"question_id": qid, "answer": answer} for qid, answer in PREDICTIONS.items()])
    return questions, annotations, results


# ------------------------------------------------------------------ normalisation rules
@pytest.mark.parametrize("text, expected", [
    ("1,000", "1000"),                # digit-comma-digit: every punctuation mark is deleted
    ("1,000 dollars!", "1000 dollars"),
    ("3.5", "3.5"),                   # a period before a digit stays
    ("end.", "end"),
    ("1.5.", "1.5"),
    ("a.b", "ab"),
    ("well-lit", "well lit"),         # not next to a space: replaced by a space
    ("well - lit", "well  lit"),      # next to a space: deleted
    ("red, white", "red white"),
    ("yes!", "yes "),
    ('"hi"', " hi "),
    ("`hi`", " hi "),
    ("x ;y", "x y"),
    ("it's", "it's"),                 # apostrophes and colons are untouched
    ("10:30", "10:30"),
    ("." * 40, "." * 8),              # at most 32 periods are removed
])
def test_process_punctuation(text, expected):
    assert evaluate.process_punctuation(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Two Dogs", "2 dogs"),
    ("none", "0"), ("zero", "0"), ("ten", "10"), ("eleven", "eleven"),
    ("the dog", "dog"), ("a dog", "dog"), ("A An The", ""),
    ("dont", "don't"), ("isnt", "isn't"), ("whats", "what's"), ("Im", "im"),
    ("somebody'd", "somebodyd"),      # the official table maps this one backwards
    ("  lots   of  space ", "lots of space"),
])
def test_process_digit_article(text, expected):
    assert evaluate.process_digit_article(text) == expected


def test_contraction_table_is_complete():
    table = evaluate.CONTRACTIONS
    assert len(table) == 120
    assert table["youve"] == "you've" and table["y'allll"] == "y'all'll" and table["twas"] == "'twas"
    assert all(value.count("'") >= 1 or key == "somebody'd" for key, value in table.items())


@pytest.mark.parametrize("text, expected", [
    ("The Two-Dogs!", "2 dogs"),
    ("well-lit", "well lit"),
    ("1,000", "1000"),
    ("an apple.", "apple"),
])
def test_normalize_answer(text, expected):
    assert evaluate.normalize_answer(text) == expected


# ------------------------------------------------------------------ per-question accuracy
@pytest.mark.parametrize("humans, prediction, expected", [
    (ten(), "cat", 0.0),
    (ten(("cat", 1)), "cat", 0.3),                  # leave-one-out: 9 * (1/3) / 10
    (ten(("cat", 2)), "cat", 0.6),
    (ten(("cat", 3)), "cat", 0.9),
    (ten(("cat", 4)), "cat", 1.0),
    (["yes"] * 10, "Yes", 0.0),                     # humans agree: case-sensitive, no normalisation
    (["yes"] * 9 + ["Yes"], "Yes", 1.0),            # humans disagree: everything normalised
    (["yes"] * 10, " yes\n", 1.0),                  # whitespace cleaning always happens
    (["two"] * 10, "2", 0.0),
    (ten(("two", 3), ("2", 1)), "2", 1.0),
    (ten(("dog", 2), ("a dog", 1)), "the dog", 0.9),
    (ten(("1000", 1), ("1,000", 1)), "1,000", 0.6),
    (ten(("3.5", 1)), "3.5", 0.3),
    (ten(("3.5", 1)), "35", 0.0),
    (ten(("end", 2)), "end.", 0.6),
    (ten(("well lit", 1)), "well-lit", 0.3),
    (ten(("don't", 1), ("dont", 1)), "dont", 0.6),
])
def test_question_accuracy(humans, prediction, expected):
    assert evaluate.question_accuracy(humans, prediction) == pytest.approx(expected, abs=1e-12)
    vectorised = evaluate.score_predictions([humans], [prediction])
    assert vectorised.dtype == np.float64 and vectorised.shape == (1,)
    assert vectorised[0] == evaluate.question_accuracy(humans, prediction)


def test_vectorised_scoring_is_bit_identical_to_the_reference():
    rng = random.Random(7)
    vocabulary = ["yes", "Yes", "no", "two", "2", "2 ", "a dog", "dog", "the dog.", "well-lit", "well lit",
                  "1,000", "1000", "3.5", "dont", "don't", "red!", "red", "\tred", "end.", "end"]
    humans = [[rng.choice(vocabulary[:rng.randint(1, len(vocabulary))]) for _ in range(rng.choice([1, 3, 10]))]
              for _ in range(400)]
    predictions = [rng.choice(vocabulary) for _ in humans]
    reference = [evaluate.question_accuracy(h, p) for h, p in zip(humans, predictions)]
    assert evaluate.score_predictions(humans, predictions).tolist() == reference
    assert len(set(reference)) > 4


def test_score_predictions_rejects_misaligned_inputs():
    with pytest.raises(VQAError, match="2 predictions for 1 questions"):
        evaluate.score_predictions([["yes"] * 10], ["yes", "no"])
    with pytest.raises(InputError, match="question #1 has no human answers"):
        evaluate.score_predictions([["yes"], []], ["yes", "no"])
    with pytest.raises(VQAError, match="at least one human answer"):
        evaluate.question_accuracy([], "yes")


# ------------------------------------------------------------------ aggregation and rounding
def test_overall_is_the_mean_of_unrounded_question_accuracies():
    # Two identical humans matching: each sees 1 match among the others -> 1/3 (33.33 %).
    accuracies = evaluate.score_predictions([["x", "x"], ["y", "z"]], ["x", "x"])
    report = evaluate.summarize_accuracy([1, 2], accuracies, question_types=["a", "a"], answer_types=["other"] * 2)
    assert report["perQuestion"] == {"1": 33.33, "2": 0.0}
    # 100 * (1/3) / 2 = 16.666... -> 16.67, whereas the mean of the rounded figures would give 16.66.
    assert report["overall"] == 16.67 and report["perQuestionType"] == {"a": 16.67}


def test_summarize_groups_by_type_in_first_seen_order():
    report = evaluate.summarize_accuracy([5, 6, 7], np.array([1.0, 0.3, 0.6]), question_types=["how many", "what", "what"],
                                         answer_types=["number", "other", "other"])
    assert list(report) == ["overall", "perAnswerType", "perQuestionType", "perQuestion"]
    assert report["overall"] == 63.33
    assert report["perAnswerType"] == {"number": 100.0, "other": 45.0}
    assert report["perQuestionType"] == {"how many": 100.0, "what": 45.0}


def test_summarize_rejects_empty_input():
    with pytest.raises(InputError, match="no questions"):
        evaluate.summarize_accuracy([], np.array([]), question_types=[], answer_types=[])


# ------------------------------------------------------------------ evaluate_results_file and the CLI
def test_evaluate_results_file_report(split_files, tmp_path):
    report_path = tmp_path / "out" / "report.json"
    report = evaluate.evaluate_results_file(*split_files, report_path=report_path)
    assert report["perQuestion"] == EXPECTED_PER_QUESTION
    assert report["overall"] == 58.0
    assert report["perAnswerType"] == {"yes/no": 50.0, "number": 100.0, "other": 45.0}
    assert report["perQuestionType"] == {"is the": 50.0, "how many": 100.0, "what color": 45.0}
    assert json.loads(report_path.read_text()) == report
    assert [p.name for p in report_path.parent.iterdir()] == ["report.json"]


def test_results_order_does_not_matter(split_files, tmp_path):
    questions, annotations, _ = split_files
    shuffled = write_json(tmp_path / "shuffled.json",
                          [{"question_id": qid, "answer": PREDICTIONS[qid]} for qid in sorted(PREDICTIONS, reverse=True)])
    assert evaluate.evaluate_results_file(questions, annotations, shuffled)["perQuestion"] == EXPECTED_PER_QUESTION


def test_cli_prints_the_official_lines(split_files, tmp_path, capsys):
    questions, annotations, results = split_files
    report_path = tmp_path / "report.json"
    status = main(["evaluate", "--questions", str(questions), "--annotations", str(annotations),
                   "--results", str(results), "--report", str(report_path)])
    assert status == 0
    assert capsys.readouterr().out.splitlines() == [
        "Overall Accuracy is: 58.00", "", "Per Answer Type Accuracy is the following:",
        "yes/no : 50.00", "number : 100.00", "other : 45.00"]
    assert set(json.loads(report_path.read_text())) == {"overall", "perAnswerType", "perQuestionType", "perQuestion"}


def results_without(qid):
    return [{"question_id": q, "answer": a} for q, a in PREDICTIONS.items() if q != qid]


@pytest.mark.parametrize("records, message", [
    (results_without(20), "no answer for question_id 20"),
    (results_without(-1) + [{"question_id": 99, "answer": "x"}], "question_id 99 is not in the annotations"),
    (results_without(-1) + [{"question_id": 30, "answer": "x"}], "question_id 30 is answered more than once"),
    (results_without(-1) + [{"question_id": "40", "answer": "x"}], '"question_id" is not of type int'),
    (results_without(-1) + [{"question_id": True, "answer": "x"}], '"question_id" is not of type int'),
    (results_without(10) + [{"question_id": 10}], 'question_id 10: key "answer" is missing'),
    (results_without(10) + [{"question_id": 10, "answer": None}], 'question_id 10: key "answer" is not of type str'),
    ({"question_id": 10, "answer": "x"}, "expected a list of objects"),
    ([1, 2], "expected a list of objects"),
])
def test_bad_results_file(split_files, tmp_path, records, message):
    questions, annotations, _ = split_files
    results = write_json(tmp_path / "bad.json", records)
    report_path = tmp_path / "report.json"
    with pytest.raises(InputError, match=message) as error:
        evaluate.evaluate_results_file(questions, annotations, results, report_path=report_path)
    assert str(results) in str(error.value) and "\n" not in str(error.value)
    assert not report_path.exists()


def test_malformed_and_missing_files(split_files, tmp_path):
    questions, annotations, results = split_files
    broken = tmp_path / "broken.json"
    broken.write_text('[{"question_id": 1, ')
    with pytest.raises(InputError, match=f"{broken}: not a valid JSON results file"):
        evaluate.evaluate_results_file(questions, annotations, broken)
    with pytest.raises(InputError, match="nowhere.json: annotations file not found"):
        evaluate.evaluate_results_file(questions, tmp_path / "nowhere.json", results)


@pytest.mark.parametrize("field", ["answers", "question_type", "answer_type", "question_id"])
def test_annotation_missing_key(split_files, tmp_path, field):
    questions, annotations, results = split_files
    data = json.loads(annotations.read_text())
    del data["annotations"][2][field]
    bad = write_json(tmp_path / "bad_annotations.json", data)
    with pytest.raises(InputError, match=f'key "{field}" is missing') as error:
        evaluate.evaluate_results_file(questions, bad, results)
    assert str(bad) in str(error.value)


@pytest.mark.parametrize("data, message", [
    ({"questions": []}, 'expected an object with a "annotations" list'),
    ({"annotations": []}, "the annotations list is empty"),
    ({"annotations": [{"question_id": 1, "image_id": 1, "question_type": "t", "answer_type": "other",
                       "multiple_choice_answer": "x", "answers": []}]}, '"answers" must be a non-empty list'),
])
def test_bad_annotations_file(split_files, tmp_path, data, message):
    questions, _, results = split_files
    with pytest.raises(InputError, match=message):
        evaluate.evaluate_results_file(questions, write_json(tmp_path / "a.json", data), results)


def test_duplicate_annotation_id(tmp_path):
    _, annotations = write_split(tmp_path, ITEMS + [ITEMS[0]])
    with pytest.raises(InputError, match="question_id 10 occurs more than once"):
        evaluate.load_annotations(annotations)


def test_questions_and_annotations_must_match(split_files, tmp_path):
    _, annotations, results = split_files
    folder = tmp_path / "other"
    folder.mkdir()
    other_questions, _ = write_split(folder, ITEMS[:-1] + [(77, "is the", "yes/no", ["no"] * 10, "Why?")])
    with pytest.raises(InputError, match="question_id 31 is missing"):
        evaluate.evaluate_results_file(other_questions, annotations, results)


def test_cli_error_is_one_line(split_files, tmp_path, capsys):
    questions, annotations, _ = split_files
    results = write_json(tmp_path / "partial.json", results_without(31))
    report_path = tmp_path / "report.json"
    status = main(["evaluate", "--questions", str(questions), "--annotations", str(annotations),
                   "--results", str(results), "--report", str(report_path)])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and "question_id 31" in err
    assert not report_path.exists()


def test_evaluate_model_needs_prepared_data(tmp_path):
    with pytest.raises(InputError, match="run 'vqa prepare"):
        evaluate.evaluate_model(tmp_path, data_dir=tmp_path, features_path=tmp_path / "f.h5", split="val",
                                results_path=tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


# ------------------------------------------------------------------ pieces for evaluate_model
def test_write_results_round_trips(tmp_path):
    path = tmp_path / "sub" / "results.json"
    evaluate.write_results(path, np.array([30, 10, 20], dtype=np.int64), ["red", "Yes", "2"])
    assert json.loads(path.read_text()) == [{"question_id": 30, "answer": "red"},
                                            {"question_id": 10, "answer": "Yes"},
                                            {"question_id": 20, "answer": "2"}]
    assert evaluate.load_results(path, [10, 20, 30]) == ["Yes", "2", "red"]
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


@pytest.mark.parametrize("ids, answers, message", [
    ([1, 2], ["a"], "1 answers for 2 question ids"),
    ([1, 1], ["a", "b"], "question_id 1 occurs more than once"),
    ([1, 2], ["a", 3], "every answer must be a str"),
])
def test_write_results_rejects_bad_input(tmp_path, ids, answers, message):
    path = tmp_path / "results.json"
    with pytest.raises(VQAError, match=message):
        evaluate.write_results(path, ids, answers)
    assert list(tmp_path.iterdir()) == []


def make_report_inputs(num_types=22):
    """Question types t00..t21 with 23-i questions each; t_i all correct when i is even."""
    question_types, answer_types, accuracies = [], [], []
    for i in range(num_types):
        for _ in range(num_types + 1 - i):
            question_types.append(f"t{i:02d}")
            answer_types.append("yes/no" if i % 2 else "other")
            accuracies.append(1.0 if i % 2 == 0 else 0.0)
    ids = list(range(len(accuracies)))
    report = evaluate.summarize_accuracy(ids, np.array(accuracies), question_types=question_types,
                                         answer_types=answer_types)
    return report, question_types, answer_types


def test_report_text_lists_the_20_largest_types_beside_the_tutorial():
    report, question_types, answer_types = make_report_inputs()
    text = evaluate.format_report_text(report, question_types=question_types, answer_types=answer_types)
    assert "tutorial's figure" in text and "48.33 (MLP)" in text and "54.88 (LSTM)" in text
    lines = text.splitlines()
    overall = next(line for line in lines if line.startswith("overall"))
    assert f"{len(question_types):,}" in overall and f"{report['overall']:.2f}" in overall
    assert any(line.split() == ["t00", "23", "100.00"] for line in lines)
    assert any(line.split() == ["t19", "4", "0.00"] for line in lines)
    assert "t20" not in text and "t21" not in text
    assert any(line.split()[:2] == ["yes/no", "132"] for line in lines)


def test_report_text_names_one_model():
    report, question_types, answer_types = make_report_inputs(3)
    text = evaluate.format_report_text(report, question_types=question_types, answer_types=answer_types,
                                       model_type="lstm")
    assert "54.88 (LSTM" in text and "48.33" not in text
    with pytest.raises(VQAError, match="unknown model type"):
        evaluate.format_report_text(report, question_types=question_types, answer_types=answer_types, model_type="cnn")


def test_question_type_chart_is_a_png(tmp_path):
    report, _, _ = make_report_inputs()
    path = tmp_path / "chart.png"
    evaluate.save_question_type_chart(path, report["perQuestionType"], overall=report["overall"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["chart.png"]
    with pytest.raises(VQAError, match="no question types"):
        evaluate.save_question_type_chart(tmp_path / "empty.png", {})


def test_error_analysis_dump(tmp_path):
    path = tmp_path / "errors.tsv"
    humans = [ten(("red", 1)), ["yes"] * 10]
    kwargs = dict(question_ids=[30, 10], image_ids=[3, 1], questions=["What\tcolor?", "Is it?"],
                  predictions=["red", "yes"], ground_truths=["zebra", "yes"], human_answers=humans,
                  accuracies=evaluate.score_predictions(humans, ["red", "yes"]))
    assert evaluate.write_error_analysis(path, **kwargs) == 2
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    assert rows[0] == list(evaluate.ERROR_ANALYSIS_COLUMNS)
    assert rows[1] == ["30", "3", "What color?", "red", "zebra", "30.00", ";".join(humans[0])]
    assert rows[2][:6] == ["10", "1", "Is it?", "yes", "yes", "100.00"]
    assert evaluate.write_error_analysis(path, errors_only=True, **kwargs) == 1
    assert len(path.read_text().splitlines()) == 2
    with pytest.raises(VQAError, match="one entry per question"):
        evaluate.write_error_analysis(path, **{**kwargs, "image_ids": [3]})


def test_module_import_is_light():
    code = ("import sys, vqa.evaluate; heavy = {'tensorflow', 'keras', 'matplotlib'} & set(sys.modules); "
            "print(sorted(heavy))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


# ------------------------------------------------------------------ the model path, on `vqa synth` data
@pytest.fixture(scope="module")
def evaluated_val(synth_data, mlp_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluated")
    code = main(["evaluate", "--model", str(mlp_model_dir), "--data", str(synth_data.prepared),
                 "--features", str(synth_data.features), "--split", "val",
                 "--results", str(out / "results.json"), "--report", str(out / "report.json")])
    assert code == 0
    return out


def test_model_path_writes_a_results_file_the_file_path_scores_identically(synth_data, evaluated_val):
    from vqa.evaluate import evaluate_results_file

    results = json.loads((evaluated_val / "results.json").read_text())
    questions = json.loads((synth_data.root / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())
    assert [r["question_id"] for r in results] == [q["question_id"] for q in questions["questions"]]
    assert all(isinstance(r["answer"], str) and r["answer"] for r in results)
    rescored = evaluate_results_file(synth_data.root / "v2_OpenEnded_mscoco_val2014_questions.json",
                                     synth_data.root / "v2_mscoco_val2014_annotations.json",
                                     evaluated_val / "results.json")
    assert rescored == json.loads((evaluated_val / "report.json").read_text())


def test_model_path_writes_report_chart_and_error_dump(evaluated_val):
    report = json.loads((evaluated_val / "report.json").read_text())
    text = (evaluated_val / "evaluation_val2014.txt").read_text()
    assert f"{report['overall']:.2f}" in text and "48.33" in text and "tutorial's figure" in text
    assert (evaluated_val / "accuracy_per_question_type_val2014.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (evaluated_val / "error_analysis_val2014.tsv").read_text().splitlines()
    assert len(rows) == 1 + len(report["perQuestion"])
    assert rows[0].split("\t")[:5] == ["question_id", "image_id", "question", "prediction", "ground_truth"]


def test_model_path_on_test_dev_writes_results_only(synth_data, mlp_model_dir, tmp_path):
    code = main(["evaluate", "--model", str(mlp_model_dir), "--data", str(synth_data.prepared),
                 "--features", str(synth_data.features), "--split", "test-dev", "--results",
                 str(tmp_path / "r.json")])
    questions = json.loads((synth_data.root / "v2_OpenEnded_mscoco_test-dev2015_questions.json").read_text())
    assert code == 0
    assert len(json.loads((tmp_path / "r.json").read_text())) == len(questions["questions"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


@pytest.mark.parametrize("flags, message", [
    (["--split", "test"], "no test2015 split"),
    (["--features", "missing.h5"], "missing.h5: not found"),
])
def test_model_path_errors(synth_data, mlp_model_dir, tmp_path, capsys, flags, message):
    args = {"--model": str(mlp_model_dir), "--data": str(synth_data.prepared),
            "--features": str(synth_data.features), "--split": "val", "--results": str(tmp_path / "r.json")}
    args.update(dict(zip(flags[::2], flags[1::2])))
    assert main(["evaluate", *[x for pair in args.items() for x in pair]]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_question_only_answers_use_the_most_common_answer_per_question():
    from vqa.evaluate import PreparedSplit, question_only_answers

    train = PreparedSplit("train2014", None, None, None, ["Is it red?", "is it red?", "Is it red?", "How many?"],
                          [], None, None, ["yes", "no", "yes", "2"], None)
    assert question_only_answers(train, ["IS IT RED?", "How many?", "What?"]) == ["yes", "2", "yes"]
