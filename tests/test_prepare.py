"""vqa prepare: official JSON -> text files + HDF5, on small hand-written fixtures."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from vqa import artifacts as names, text
from vqa.cli import main
from vqa.errors import InputError
from vqa.official import modal_answer
from vqa.prepare import encode_labels, prepare_dataset, select_top_answers
from vqa.text import OOV_ID, PAD_ID

YES = ["yes"] * 10
TRAIN = [  # (question_id, image_id, question, answers, answer_type)
    (1000, 1, "What color is the circle?", ["red"] * 7 + ["blue"] * 3, "other"),
    (1001, 1, "Is there a circle?", YES, "yes/no"),
    (2000, 2, "What color is the square?", ["blue"] * 6 + ["red"] * 4, "other"),
    (2001, 2, "How many squares are there?", ["2"] * 5 + ["two"] * 5, "number"),
    (3000, 3, "What color is the xqzzyplorf?", ["red"] * 10, "other"),
]
VAL = [
    (4000, 4, "What color is the circle?", ["green"] * 10, "other"),
    (4001, 4, "Is there a square?", ["no"] * 9 + ["yes"], "yes/no"),
]


def question_record(qid, image_id, question):
    return {"question_id": qid, "image_id": image_id, "question": question}


def annotation_record(qid, image_id, question, answers, answer_type):
    return {"question_id": qid, "image_id": image_id, "question_type": " ".join(question.lower().split()[:3]),
            "answer_type": answer_type, "multiple_choice_answer": modal_answer(answers),
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)]}


def write_split(folder: Path, split: str, rows, *, annotated=True, version="v2"):
    prefix = "v2_" if version == "v2" else ""
    questions = {"data_subtype": split, "questions": [question_record(*row[:3]) for row in rows]}
    (folder / f"{prefix}OpenEnded_mscoco_{split}_questions.json").write_text(json.dumps(questions))
    if annotated:
        annotations = {"data_subtype": split, "annotations": [annotation_record(*row) for row in rows]}
        (folder / f"{prefix}mscoco_{split}_annotations.json").write_text(json.dumps(annotations))


@pytest.fixture
def raw(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_split(folder, "train2014", TRAIN)
    write_split(folder, "val2014", VAL)
    write_split(folder, "test-dev2015", [(5000, 5, "What is it?")], annotated=False)
    return folder


@pytest.fixture
def prepared(raw, tmp_path):
    out = tmp_path / "pre"
    summary = prepare_dataset(data_dir=raw, out_dir=out, num_answers=2, progress=False)
    return out, summary


def read_lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def test_text_files_follow_the_question_order(prepared):
    out, _ = prepared
    assert read_lines(out / "questions_train2014.txt")[0] == "What color is the circle?"
    assert read_lines(out / "questions_id_train2014.txt") == [str(r[0]) for r in TRAIN]
    assert read_lines(out / "images_train2014.txt") == [str(r[1]) for r in TRAIN]
    assert read_lines(out / "questions_lengths_train2014.txt")[0] == "6"  # What color is the circle ?
    assert read_lines(out / "answers_train2014_modal.txt") == ["red", "yes", "blue", "2", "red"]
    assert read_lines(out / "answers_train2014_all.txt")[0] == ";".join(TRAIN[0][3])
    assert read_lines(out / "questions_test-dev2015.txt") == ["What is it?"]
    assert not (out / "answers_test-dev2015_modal.txt").exists()
    assert not list(out.glob(".prepare-*"))


def test_hdf5_round_trips_the_splits(prepared):
    out, summary = prepared
    with h5py.File(out / names.PREPARED_H5) as h5:
        assert set(h5) == {"vocabulary", "train2014", "val2014", "test-dev2015"}
        train = h5["train2014"]
        assert train["token_ids"].shape == (5, 30) and train["token_ids"].dtype == np.int32
        np.testing.assert_array_equal(train["question_ids"][:], [r[0] for r in TRAIN])
        np.testing.assert_array_equal(train["image_ids"][:], [r[1] for r in TRAIN])
        assert train["answers"].asstr()[1].tolist() == YES
        assert train["answers"].shape == (5, 10)
        assert h5["val2014/modal_answers"].asstr()[:].tolist() == ["green", "no"]
        answer_types = json.loads(h5.attrs["answer_types"])
        assert [answer_types[c] for c in train["answer_types"][:]] == [r[4] for r in TRAIN]
        question_types = json.loads(h5.attrs["question_types"])
        assert question_types[train["question_types"][0]] == "what color is"
        assert "labels" not in h5["test-dev2015"]
        assert h5.attrs["spacy_model"].startswith("en_core_web_md")
        assert h5.attrs["word_vectors_sha256"] == text.vectors_sha256(text.load_spacy())
    assert summary.num_questions == {"train2014": 5, "val2014": 2, "test-dev2015": 1}


def test_top_answers_are_sorted_and_labels_index_them(prepared):
    out, summary = prepared
    with h5py.File(out / names.PREPARED_H5) as h5:
        answers = json.loads(h5.attrs["answers"])
        assert answers == ["2", "red"]  # red twice; "2", "blue", "yes" tie once: the smallest string wins
        labels = h5["train2014/labels"][:].tolist()
        assert labels == [1, -1, -1, 0, 1]
        modal = h5["train2014/modal_answers"].asstr()[:].tolist()
    assert [answers[i] if i >= 0 else None for i in labels] == [m if m in answers else None for m in modal]
    assert summary.num_labelled["train2014"] == 3


def test_word_vectors_and_oov(prepared):
    out, _ = prepared
    from vqa.text import load_spacy

    nlp = load_spacy()
    with h5py.File(out / names.PREPARED_H5) as h5:
        words = h5["vocabulary/words"].asstr()[:].tolist()
        embeddings = h5["vocabulary/embeddings"][:]
        ids = h5["train2014/token_ids"][4]
        assert embeddings.dtype == np.float32 and embeddings.shape == (len(words), 300)
    assert words[:2] == ["<pad>", "<oov>"]
    assert not embeddings[PAD_ID].any() and not embeddings[OOV_ID].any()
    np.testing.assert_allclose(embeddings[words.index("circle")], nlp.vocab.get_vector("circle"))
    assert "xqzzyplorf" not in words
    assert ids[4] == OOV_ID and ids[6] == PAD_ID  # What color is the <oov> ? <pad>...


def test_long_questions_are_truncated_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "data"
    folder.mkdir()
    long_question = "is " + "very " * 40 + "red?"
    write_split(folder, "train2014", [(1, 1, long_question, YES, "yes/no")])
    with caplog.at_level("WARNING"):
        summary = prepare_dataset(data_dir=folder, out_dir=tmp_path / "pre", progress=False)
    assert summary.num_truncated == 1 and "truncated" in caplog.text
    with h5py.File(tmp_path / "pre" / names.PREPARED_H5) as h5:
        assert h5["train2014/lengths"][0] == 30 and h5["train2014/token_ids"][0, 29] != PAD_ID
    assert read_lines(tmp_path / "pre" / "questions_lengths_train2014.txt") == ["43"]


@pytest.mark.parametrize("answers, expected", [
    (["a"] * 6 + ["b"] * 4, "a"),
    (["b"] * 5 + ["a"] * 5, "b"),  # tie: the first to occur wins
    (["a", "b", "c", "c", "b", "a", "d", "e", "f", "g"], "a"),
    (["x", "y", "y", "x", "z", "y", "x", "q", "q", "q"], "x"),
])
def test_modal_answer_tie_rule(answers, expected):
    assert modal_answer(answers) == expected


def test_select_top_answers_breaks_count_ties_by_string():
    modal = ["yes", "no", "2", "no", "yes", "blue", "3"]
    assert select_top_answers(modal, 3) == ["2", "no", "yes"]
    assert select_top_answers(modal, 100) == sorted(set(modal))
    np.testing.assert_array_equal(encode_labels(["yes", "blue", "2"], ["2", "no", "yes"]), [2, -1, 0])


def test_explicit_files_and_v1_names(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    write_split(folder, "train2014", TRAIN, version="v1")
    summary = prepare_dataset(data_dir=folder, version="v1", out_dir=tmp_path / "a", progress=False)
    assert summary.num_questions == {"train2014": 5}
    other = tmp_path / "elsewhere"
    other.mkdir()
    write_split(other, "train2014", TRAIN[:2])
    code = main(["prepare", "--data-dir", str(folder), "--out", str(tmp_path / "b"), "--train-questions",
                 str(other / "v2_OpenEnded_mscoco_train2014_questions.json"), "--train-annotations",
                 str(other / "v2_mscoco_train2014_annotations.json")])
    assert code == 0
    assert len(read_lines(tmp_path / "b" / "questions_train2014.txt")) == 2


def corrupt(folder, kind):
    """Apply one kind of damage to the train files; return the expected message fragment."""
    questions = folder / "v2_OpenEnded_mscoco_train2014_questions.json"
    annotations = folder / "v2_mscoco_train2014_annotations.json"
    q, a = json.loads(questions.read_text()), json.loads(annotations.read_text())
    if kind == "malformed":
        questions.write_text('{"questions": [')
        return "malformed JSON"
    if kind == "missing_key":
        del q["questions"][1]["question"]
    elif kind == "no_annotation":
        a["annotations"] = [r for r in a["annotations"] if r["question_id"] != 2000]
    elif kind == "duplicate":
        q["questions"].append(dict(q["questions"][0]))
    elif kind == "few_answers":
        a["annotations"][3]["answers"] = a["annotations"][3]["answers"][:9]
    elif kind == "image_mismatch":
        a["annotations"][0]["image_id"] = 99
    elif kind == "answer_type":
        a["annotations"][0]["answer_type"] = "colour"
    elif kind == "extra_annotation":
        q["questions"] = [r for r in q["questions"] if r["question_id"] != 3000]
    elif kind == "wrong_type":
        q["questions"][2]["image_id"] = "2"
    elif kind == "answer_not_text":
        a["annotations"][1]["answers"][4] = {"answer": 7}
    questions.write_text(json.dumps(q))
    annotations.write_text(json.dumps(a))
    return {"missing_key": 'question_id 1001: key "question" is missing',
            "no_annotation": "question_id 2000 has no annotation",
            "duplicate": "question_id 1000 occurs more than once", "few_answers": "question_id 2001 has 9 answers",
            "image_mismatch": "question_id 1000 has image_id 99", "answer_type": "unknown answer_type 'colour'",
            "extra_annotation": "question_id 3000 is missing",
            "wrong_type": 'question_id 2000: key "image_id" is not of type int',
            "answer_not_text": 'question_id 1001: "answers" must be a non-empty list of {"answer": str}'}[kind]


@pytest.mark.parametrize("kind", ["malformed", "missing_key", "no_annotation", "duplicate", "few_answers",
                                  "image_mismatch", "answer_type", "extra_annotation", "wrong_type",
                                  "answer_not_text"])
def test_bad_input_is_one_line_and_writes_nothing(raw, tmp_path, kind, capsys):
    expected = corrupt(raw, kind)
    out = tmp_path / "pre"
    assert main(["prepare", "--data-dir", str(raw), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert expected in err[-1] and err[-1].startswith("vqa prepare: error:")
    assert ".json" in err[-1]
    assert not out.exists()


def test_failure_keeps_earlier_output_untouched(raw, prepared, capsys):
    out, _ = prepared
    before = sorted(p.name for p in out.iterdir())
    corrupt(raw, "few_answers")
    assert main(["prepare", "--data-dir", str(raw), "--out", str(out)]) == 1
    assert sorted(p.name for p in out.iterdir()) == before


def test_missing_train_files(tmp_path, capsys):
    assert main(["prepare", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "train questions not found" in capsys.readouterr().err


def test_missing_val_annotations(raw, tmp_path):
    (raw / "v2_mscoco_val2014_annotations.json").unlink()
    with pytest.raises(InputError, match="val2014 annotations not found"):
        prepare_dataset(data_dir=raw, out_dir=tmp_path / "o", progress=False)
