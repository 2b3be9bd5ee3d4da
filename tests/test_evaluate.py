"""vqa evaluate: results files, reports, the errors, the CLI and the model path (the metric: test_metric.py)."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from vqa import evaluate, metric, official
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
        "Overall Accuracy is: 58.00", "", "Per Question Type Accuracy is the following:",
        "is the : 50.00", "how many : 100.00", "what color : 45.00", "",
        "Per Answer Type Accuracy is the following:", "yes/no : 50.00", "number : 100.00", "other : 45.00"]
    assert set(json.loads(report_path.read_text())) == {"overall", "perAnswerType", "perQuestionType", "perQuestion"}


def results_without(qid):
    return [{"question_id": q, "answer": a} for q, a in PREDICTIONS.items() if q != qid]


@pytest.mark.parametrize("records, message", [
    (results_without(20), "no answer for question_id 20"),
    (results_without(-1) + [{"question_id": 99, "answer": "x"}], "question_id 99 is not in the annotations"),
    (results_without(-1) + [{"question_id": 30, "answer": "x"}], "question_id 30 occurs more than once"),
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
        official.load_annotations(annotations)


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
def make_report_inputs(num_types=22):
    """Question types t00..t21 with 23-i questions each; t_i all correct when i is even."""
    question_types, answer_types, accuracies = [], [], []
    for i in range(num_types):
        for _ in range(num_types + 1 - i):
            question_types.append(f"t{i:02d}")
            answer_types.append("yes/no" if i % 2 else "other")
            accuracies.append(1.0 if i % 2 == 0 else 0.0)
    ids = list(range(len(accuracies)))
    report = metric.summarize_accuracy(ids, np.array(accuracies), question_types=question_types,
                                         answer_types=answer_types)
    return report, question_types, answer_types


def test_report_text_lists_the_20_largest_types_beside_the_tutorial():
    report, question_types, answer_types = make_report_inputs()
    text = evaluate.format_report_text(report, question_types=question_types, answer_types=answer_types)
    assert "tutorial's figure" in text and "48.33 (MLP)" in text and "54.88 (LSTM)" in text
    assert "tutorial's own scoring" in text and "whole answer string" in text
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
                  accuracies=metric.score_predictions(humans, ["red", "yes"]))
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
    assert {"checkpoint": "last", **rescored} == json.loads((evaluated_val / "report.json").read_text())


def test_model_path_writes_report_chart_and_error_dump(evaluated_val):
    report = json.loads((evaluated_val / "report.json").read_text())
    text = (evaluated_val / "evaluation_val2014.txt").read_text()
    assert f"{report['overall']:.2f}" in text and "48.33" in text and "tutorial's figure" in text
    assert "(checkpoint: last)" in text.splitlines()[0] and report["checkpoint"] == "last"
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


def test_model_path_with_name_writes_the_official_file_answering_every_question(synth_data, mlp_model_dir, tmp_path,
                                                                                   capsys):
    questions = synth_data.root / "v2_OpenEnded_mscoco_test-dev2015_questions.json"
    code = main(["evaluate", "--model", str(mlp_model_dir), "--data", str(synth_data.prepared),
                 "--features", str(synth_data.features), "--split", "test-dev", "--name", "mlp",
                 "--results-dir", str(tmp_path / "out"), "--questions", str(questions)])
    path = tmp_path / "out" / "vqa_OpenEnded_mscoco_test-dev2015_mlp_results.json"
    assert code == 0 and sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert main(["evaluate", "--check-submission", str(path), "--questions", str(questions)]) == 0
    asked = json.loads(questions.read_text())["questions"]
    assert capsys.readouterr().out.endswith(f"OK: {len(asked)} answers for test-dev2015\n")


def test_model_path_refuses_a_submission_that_leaves_a_question_unanswered(synth_data, mlp_model_dir, tmp_path,
                                                                            capsys):
    data = json.loads((synth_data.root / "v2_OpenEnded_mscoco_test-dev2015_questions.json").read_text())
    extra = max(q["question_id"] for q in data["questions"]) + 1
    data["questions"].append({**data["questions"][0], "question_id": extra})
    questions = write_json(tmp_path / "questions.json", data)
    code = main(["evaluate", "--model", str(mlp_model_dir), "--data", str(synth_data.prepared),
                 "--features", str(synth_data.features), "--split", "test-dev", "--name", "mlp",
                 "--results-dir", str(tmp_path / "out"), "--questions", str(questions)])
    err = capsys.readouterr().err
    assert code == 1 and f"question_id {extra} has no answer" in err and "nothing written" in err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, message", [
    (["--split", "val", "--name", "mlp"], "for test-dev2015 or test2015 only, not val2014"),
    (["--split", "test-dev", "--name", "mlp", "--results", "r.json"], "give --name"),
    (["--split", "test-dev", "--results-dir", "out", "--results", "r.json"], "--results-dir goes with --name"),
    (["--split", "test-dev"], "give --results PATH, or --name NAME"),
    (["--split", "test-dev", "--name", "a/b"], "--name 'a/b': use 1-100 letters"),
])
def test_results_file_path_takes_results_or_name(flags, message):
    values = dict(zip(flags[::2], flags[1::2]))
    with pytest.raises(InputError, match=message):
        evaluate.results_file_path(values["--split"], results_path=values.get("--results"),
                                   name=values.get("--name"), results_dir=values.get("--results-dir"))


def test_results_file_path_puts_the_official_name_in_the_folder(tmp_path):
    assert evaluate.results_file_path("test", name="lstm", results_dir=tmp_path) == (
        tmp_path / "vqa_OpenEnded_mscoco_test2015_lstm_results.json")
    assert evaluate.results_file_path("test-dev", name="lstm").parent == Path(".")
    assert evaluate.results_file_path("val", results_path=tmp_path / "r.json") == tmp_path / "r.json"


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
    from vqa.evaluate import question_only_answers

    train = ["Is it red?", "is it red?", "Is it red?", "How many?"], ["yes", "no", "yes", "2"]
    assert question_only_answers(*train, ["IS IT RED?", "How many?", "What?"]) == ["yes", "2", "yes"]
    assert question_only_answers(*train, ["What?"], unseen=None) == [None]
    # Any hashable key: rows of token ids, with labels as answers.
    rows = [bytes([1, 2]), bytes([1, 2]), bytes([3, 0]), bytes([1, 2])]
    assert question_only_answers(rows, [4, 5, 6, 5], [bytes([1, 2]), bytes([3, 0])]) == [5, 6]


class FakePredictor:
    """Stands in for vqa.predict.Predictor (and its parts): answers "yes" to everything, records how it was built."""

    built_with: dict = {}
    words: list = []  # the prepared data's vocabulary, so that no re-tokenising is needed

    def __init__(self, model_dir, **kwargs):
        FakePredictor.built_with = kwargs
        self.answers, self.config = ["no", "yes"], {"model": "mlp"}
        self.images, self.questions, self.answerer = SimpleNamespace(layout="vector"), self, self

    def outputs(self, token_ids, image_features, *, batch_size=512):
        return {"answer": np.tile(np.array([[0.2, 0.8]], dtype=np.float32), (len(token_ids), 1))}

    def best_answers(self, probabilities):
        return [self.answers[i] for i in np.argmax(probabilities, axis=1)]


@pytest.mark.parametrize("checkpoint", ["last", "best"])
def test_evaluate_model_passes_the_checkpoint_and_names_it(synth_data, tmp_path, monkeypatch, checkpoint):
    from vqa import predict
    from vqa.prepared import load_prepared

    monkeypatch.setattr(predict, "Predictor", FakePredictor)
    monkeypatch.setattr(FakePredictor, "words", load_prepared(synth_data.prepared).words)
    out = tmp_path / "results.json"
    code = main(["evaluate", "--model", str(tmp_path), "--data", str(synth_data.prepared), "--features",
                 str(synth_data.features), "--results", str(out), "--report", str(tmp_path / "report.json"),
                 "--checkpoint", checkpoint])
    assert code == 0
    assert FakePredictor.built_with == {"cnn_weights": None, "checkpoint": checkpoint}
    assert json.loads((tmp_path / "report.json").read_text())["checkpoint"] == checkpoint
    assert f"(checkpoint: {checkpoint})" in (tmp_path / "evaluation_val2014.txt").read_text()
    assert {r["answer"] for r in json.loads(out.read_text())} == {"yes"}


def test_predict_split_rejects_an_unknown_checkpoint(synth_data):
    from vqa.prepared import load_prepared_split

    with pytest.raises(VQAError, match="checkpoint must be one of last, best, got 'middle'"):
        evaluate.predict_split(synth_data.root, load_prepared_split(synth_data.prepared, "val"),
                               features_path=synth_data.features, checkpoint="middle")


def test_model_path_scores_a_san_on_its_grid_features_and_names_the_papers_figure(synth_data, san_model_dir, tmp_path):
    grid = san_model_dir.parent / "grid.h5"  # the features san_model_dir was trained on
    code = main(["evaluate", "--model", str(san_model_dir), "--data", str(synth_data.prepared), "--features", str(grid),
                 "--split", "val", "--results", str(tmp_path / "results.json"), "--report", str(tmp_path / "report.json")])
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    rescored = evaluate.evaluate_results_file(synth_data.root / "v2_OpenEnded_mscoco_val2014_questions.json",
                                              synth_data.root / "v2_mscoco_val2014_annotations.json",
                                              tmp_path / "results.json")
    assert report["overall"] == rescored["overall"]
    assert "SAN paper" in (tmp_path / "evaluation_val2014.txt").read_text()


@pytest.mark.parametrize("model, features, fix", [("san", "fc7", "--grid"), ("mlp", "grid", "--karpathy")])
def test_model_path_with_the_other_layout_names_the_command(synth_data, mlp_model_dir, san_model_dir, tmp_path, capsys,
                                                             model, features, fix):
    model_dir = {"san": san_model_dir, "mlp": mlp_model_dir}[model]
    path = {"fc7": synth_data.features, "grid": san_model_dir.parent / "grid.h5"}[features]
    code = main(["evaluate", "--model", str(model_dir), "--data", str(synth_data.prepared), "--features", str(path),
                 "--split", "val", "--results", str(tmp_path / "results.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and fix in err[0] and "vqa features" in err[0]
    assert not (tmp_path / "results.json").exists()
