"""vqa.prepared: the prepared data's writer and readers, round trips, old files and bad input."""

import json

import h5py
import numpy as np
import pytest
from helpers import ANSWERS, WORDS, delete_dataset, replace_dataset, set_attribute, write_tiny_dataset

from vqa import artifacts, prepared
from vqa.errors import InputError
from vqa.prepared import SplitRecords, load_prepared, load_prepared_split, write_prepared


def two_splits():
    """A small annotated train split and an unannotated test-dev split."""
    train = SplitRecords(
        artifacts.TRAIN_SPLIT, question_ids=np.array([30, 10, 20]), image_ids=np.array([7, 7, 9]),
        questions=["what color is it", "is it red", "how many"], token_ids=np.array([[2, 3, 5, 0], [5, 6, 7, 0],
                                                                                     [8, 9, 0, 0]]),
        lengths=np.array([3, 3, 2]), question_lengths=[3, 3, 2], question_types=["what color", "is", "how many"],
        answer_types=["other", "yes/no", "number"], modal_answers=["red", "yes", "2"],
        human_answers=[["red"] * 10, ["yes"] * 9 + ["no"], ["2"] * 10], labels=np.array([1, 2, -1]))
    test_dev = SplitRecords(artifacts.TEST_DEV_SPLIT, question_ids=np.array([5]), image_ids=np.array([11]),
                            questions=["what is this"], token_ids=np.array([[2, 5, 1, 1]]), lengths=np.array([4]),
                            question_lengths=[6])
    return [train, test_dev]


WORDS_10 = ["<pad>", "<oov>", "what", "color", "is", "it", "red", "many", "how", "this"]


def write_small(folder):
    embeddings = np.arange(len(WORDS_10) * 300, dtype=np.float32).reshape(-1, 300)
    write_prepared(folder, words=WORDS_10, embeddings=embeddings, answers=["blue", "red", "yes"], splits=two_splits(),
                   vqa_version="v1", spacy_model="en_core_web_md", max_question_length=4,
                   word_vectors_sha256="ab" * 32)
    return embeddings


# --------------------------------------------------------------------------- round trips
def test_write_then_load_gives_back_every_array_and_attribute(tmp_path):
    embeddings = write_small(tmp_path)
    data = load_prepared(tmp_path, splits=artifacts.SPLITS)
    assert data.words == WORDS_10 and data.answers == ["blue", "red", "yes"]
    assert (data.spacy_model, data.max_question_length) == ("en_core_web_md", 4)
    assert data.word_vectors_sha256 == "ab" * 32
    np.testing.assert_array_equal(data.embeddings, embeddings)
    train = data.splits[artifacts.TRAIN_SPLIT]
    assert train.token_ids.dtype == np.int32 and train.token_ids.tolist() == two_splits()[0].token_ids.tolist()
    assert train.lengths.tolist() == [3, 3, 2] and train.labels.tolist() == [1, 2, -1]
    assert train.question_ids.tolist() == [30, 10, 20] and train.image_ids.dtype == np.int64
    assert data.splits[artifacts.TEST_DEV_SPLIT].labels is None
    split = load_prepared_split(tmp_path, "train")
    assert split.questions == ["what color is it", "is it red", "how many"] and split.words == WORDS_10
    assert split.question_types == ["what color", "is", "how many"]
    assert split.answer_types == ["other", "yes/no", "number"] and split.modal_answers == ["red", "yes", "2"]
    assert split.human_answers[1] == ["yes"] * 9 + ["no"] and split.annotated
    test_dev = load_prepared_split(tmp_path, "test-dev")
    assert not test_dev.annotated and test_dev.questions == ["what is this"] and test_dev.question_types is None
    with h5py.File(tmp_path / artifacts.PREPARED_H5) as h5:
        assert (h5.attrs["format"], h5.attrs["version"], h5.attrs["num_answers"]) == (2, "v1", 3)
        assert json.loads(h5.attrs["question_types"]) == ["how many", "is", "what color"]


def test_write_also_writes_the_tutorials_text_files(tmp_path):
    write_small(tmp_path)
    read = lambda name: (tmp_path / name).read_text().splitlines()  # noqa: E731
    assert read("questions_train2014.txt") == ["what color is it", "is it red", "how many"]
    assert read("questions_lengths_test-dev2015.txt") == ["6"]  # the untruncated token count
    assert read("questions_id_train2014.txt") == ["30", "10", "20"] and read("images_train2014.txt") == ["7", "7", "9"]
    assert read("answers_train2014_modal.txt") == ["red", "yes", "2"]
    assert read("answers_train2014_all.txt")[1] == ";".join(["yes"] * 9 + ["no"])
    assert not (tmp_path / "answers_test-dev2015_modal.txt").exists()


def test_tiny_dataset_helper_writes_through_the_owner(tmp_path):
    data_dir, _ = write_tiny_dataset(tmp_path)
    data = load_prepared(data_dir)
    assert data.words == WORDS and data.answers == ANSWERS
    assert data.embeddings.shape == (len(WORDS), 300) and not data.embeddings[:2].any()
    train = data.splits[artifacts.TRAIN_SPLIT]
    assert train.token_ids.shape == (240, 30) and train.token_ids.dtype == np.int32
    assert ((train.labels >= -1) & (train.labels < len(ANSWERS))).all()
    assert set(data.splits) == {artifacts.TRAIN_SPLIT, artifacts.VAL_SPLIT}


def test_files_without_format_or_question_ids_still_load(tmp_path):
    """What the first versions wrote: no format attribute, no question ids, no spaCy model."""
    with h5py.File(tmp_path / artifacts.PREPARED_H5, "w") as h5:
        h5.attrs["answers"] = json.dumps(["a", "b"])
        h5["vocabulary/words"] = np.array(["<pad>", "<oov>", "x"], dtype=h5py.string_dtype())
        h5["vocabulary/embeddings"] = np.zeros((3, 300), np.float32)
        h5["train2014/token_ids"] = np.array([[2, 0], [2, 2]], np.int32)
        h5["train2014/lengths"] = np.array([1, 2], np.int32)
        h5["train2014/image_ids"] = np.array([4, 5])
        h5["train2014/labels"] = np.array([0, 1], np.int32)
    data = load_prepared(tmp_path)
    train = data.splits[artifacts.TRAIN_SPLIT]
    assert train.question_ids.tolist() == [0, 1] and data.max_question_length == artifacts.MAX_QUESTION_LENGTH
    assert data.spacy_model == ""


# --------------------------------------------------------------------------- interrupted writer
def test_an_interrupted_write_leaves_the_older_files_and_nothing_else(tmp_path, monkeypatch):
    write_small(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full_disk(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(prepared, "_write_text_files", full_disk)
    with pytest.raises(OSError, match="disk full"):
        write_small(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    with pytest.raises(OSError):
        write_small(tmp_path / "new")
    assert not (tmp_path / "new").exists()


# --------------------------------------------------------------------------- bad input
def _edit(tmp_path, edit):
    write_small(tmp_path)
    with h5py.File(tmp_path / artifacts.PREPARED_H5, "a") as h5:
        edit(h5)


@pytest.mark.parametrize("edit, message", [
    (delete_dataset("train2014/token_ids"), "no 'train2014/token_ids' dataset; re-run 'vqa prepare'"),
    (delete_dataset("train2014/lengths"), "no 'train2014/lengths' dataset"),
    (delete_dataset("vocabulary/embeddings"), "no 'vocabulary/embeddings' dataset"),
    (lambda h5: h5.attrs.__delitem__("answers"), "no 'answers' attribute"),
    (set_attribute("format", 3), "prepared data format 3, newer than the 2 this vqa reads; upgrade vqa"),
    (replace_dataset("train2014/token_ids", np.zeros(3, np.int32)), r"'train2014/token_ids' is int32 of shape \(3,\), "
                                                             "expected integers of 2 dimension"),
    (replace_dataset("train2014/labels", np.zeros(3, np.float32)), "'train2014/labels' is float32"),
    (replace_dataset("train2014/image_ids", np.zeros(2, np.int64)), "expected integers of 1 dimension.* and 3 rows"),
    (replace_dataset("vocabulary/embeddings", np.zeros((4, 300), np.float32)), "10 words but 4 embedding rows"),
])
def test_load_prepared_names_the_file_and_the_problem_in_one_line(tmp_path, edit, message):
    _edit(tmp_path, edit)
    with pytest.raises(InputError, match=message) as error:
        load_prepared(tmp_path)
    assert str(error.value).startswith(f"{tmp_path / artifacts.PREPARED_H5}: ") and "\n" not in str(error.value)


@pytest.mark.parametrize("edit, message", [
    (delete_dataset("train2014/questions"), "no 'train2014/questions' dataset"),
    (delete_dataset("train2014/modal_answers"), "no 'train2014/modal_answers' dataset"),
    (lambda h5: h5.attrs.__delitem__("question_types"), "no 'question_types' attribute"),
    (replace_dataset("train2014/answer_types", np.array([0, 1, 7], np.int16)), "codes outside its 3 names"),
    (replace_dataset("train2014/answers", np.zeros((3, 10), np.int64)), "'train2014/answers' is int64"),
])
def test_load_prepared_split_names_the_problem(tmp_path, edit, message):
    _edit(tmp_path, edit)
    with pytest.raises(InputError, match=message):
        load_prepared_split(tmp_path, "train")


def test_load_prepared_errors_name_the_fix(tmp_path):
    with pytest.raises(InputError, match="run 'vqa prepare"):
        load_prepared(tmp_path)
    (tmp_path / artifacts.PREPARED_H5).write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="not a prepared VQA file"):
        load_prepared(tmp_path)


def test_load_prepared_split_matches_the_official_files_and_parses_types_once(synth_data, monkeypatch):
    from vqa import official

    parses = []
    real_loads = json.loads
    monkeypatch.setattr(prepared.json, "loads", lambda text: parses.append(text) or real_loads(text))
    val = load_prepared_split(synth_data.prepared, "val")
    monkeypatch.undo()
    assert len(parses) == 2  # question types and answer types: once per split, not once per question
    questions = official.load_questions(synth_data.root / "v2_OpenEnded_mscoco_val2014_questions.json")
    annotations = official.load_annotations(synth_data.root / "v2_mscoco_val2014_annotations.json")
    aligned = annotations.take(official.match_annotations(questions, annotations))
    assert val.question_ids.tolist() == questions.question_ids and val.questions == questions.questions
    assert val.question_types == aligned.question_types and val.answer_types == aligned.answer_types
    assert val.human_answers == aligned.human_answers
    assert val.modal_answers == [official.modal_answer(answers) for answers in aligned.human_answers]
    test_dev = load_prepared_split(synth_data.prepared, "test-dev")
    assert not test_dev.annotated and test_dev.question_types is None and len(test_dev.questions) > 0


def test_load_prepared_split_errors(synth_data, tmp_path):
    with pytest.raises(InputError, match="no test2015 split"):
        load_prepared_split(synth_data.prepared, "test")
    with pytest.raises(InputError, match="run 'vqa prepare"):
        load_prepared_split(tmp_path, "val")


def test_a_file_without_the_vector_table_hash_reads_as_unrecorded(tmp_path):
    write_small(tmp_path)
    with h5py.File(tmp_path / artifacts.PREPARED_H5, "a") as h5:
        del h5.attrs["word_vectors_sha256"]
    assert load_prepared(tmp_path, splits=()).word_vectors_sha256 == ""
