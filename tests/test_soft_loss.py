"""--loss soft: the soft targets against the official metric, their storage and feed, the sigmoid models,
old files and model directories, bad input, and `vqa synth --disagreement real`."""

import json

import h5py
import numpy as np
import pytest
from helpers import FAST, WORDS, grid_features, set_attribute, write_features, write_grid, write_tiny_dataset

from vqa import artifacts, modeldir, synthetic
from vqa.cli import main
from vqa.config import MODEL_KINDS, TrainConfig
from vqa.errors import InputError
from vqa.metric import answer_scores, clean_answer, normalize_answer, score_predictions
from vqa.prepared import AnswerScores, SplitRecords, load_prepared, write_prepared


def official_credit(humans, answer):
    """The official metric's score for predicting ``answer``."""
    return float(score_predictions([humans], [answer])[0])


def leave_one_out(n):
    """The official credit of an answer n of 10 humans gave: mean over the 10 subsets of 9 humans."""
    return (n * min((n - 1) / 3, 1) + (10 - n) * min(n / 3, 1)) / 10


def targets(humans, answers):
    classes, scores = answer_scores([humans], answers)
    return {answers[c]: float(s) for c, s in zip(classes[0], scores[0]) if c >= 0}


# --------------------------------------------------------------------------- the targets
@pytest.mark.parametrize("humans, expected", [
    # "2" and "two" normalise alike: both classes get the credit of the 4 humans who gave either.
    (["2", "2", "two", "two"] + ["red"] * 6, {"2": 1.0, "two": 1.0, "red": 1.0}),
    # All ten identical: the official metric compares raw strings, so "yes" gets nothing for "Yes".
    (["Yes"] * 10, {"Yes": 1.0}),
    # Disagreeing humans are normalised: "yes." and "Yes" count for "yes" (and for "Yes").
    (["yes."] + ["Yes"] * 2 + ["no"] * 7, {"yes": 1.0, "Yes": 1.0, "no": 1.0}),
    (["red"] + ["blue"] * 2 + ["green"] * 7, {"red": 1 / 3, "blue": 2 / 3}),
    (["red"] * 3 + ["blue"] * 3 + ["a blue"] + ["green"] * 3, {"red": 1.0, "blue": 1.0, "no": 0.0}),
])
def test_soft_targets_are_min_n_over_3_under_the_official_matching(humans, expected):
    answers = ["2", "Yes", "blue", "no", "red", "two", "yes"]
    got = targets(humans, answers)
    for answer in answers:
        want = expected.get(answer, 0.0)
        assert got.get(answer, 0.0) == pytest.approx(want)
        # n as the official metric counts it: cleaned strings when the humans agree, normalised otherwise.
        cleaned = [clean_answer(h) for h in humans]
        agree = len(set(cleaned)) == 1
        n = sum((c if agree else normalize_answer(c)) == (answer if agree else normalize_answer(answer))
                for c in cleaned)
        assert want == pytest.approx(min(n / 3, 1))
        # Equal to the official credit for n = 0 and n >= 4; below it by 1/30, 2/30, 3/30 for n = 1, 2, 3.
        assert official_credit(humans, answer) == pytest.approx(leave_one_out(n))
        if n == 0 or n >= 4:
            assert official_credit(humans, answer) == pytest.approx(want)


def test_answer_scores_are_sparse_padded_and_in_class_order():
    classes, scores = answer_scores([["b"] * 5 + ["a"] * 5, ["z"] * 10, ["c"] + ["a"] * 9], ["a", "b", "c"])
    assert classes.dtype == np.int32 and scores.dtype == np.float32 and classes.shape == (3, 2)
    assert classes.tolist() == [[0, 1], [-1, -1], [0, 2]]
    np.testing.assert_allclose(scores, [[1, 1], [0, 0], [1, 1 / 3]], rtol=1e-6)


def scored_split(name, humans, answers, *, image_ids=None, token_ids=None):
    """An annotated SplitRecords over ``humans`` (one question each), with its soft targets."""
    n = len(humans)
    modal = [max(set(h), key=h.count) for h in humans]
    return SplitRecords(
        name, np.arange(n, dtype=np.int64) + 100, np.arange(n) if image_ids is None else image_ids,
        ["what is it"] * n, np.tile([[2, 9, 10, 0]], (n, 1)) if token_ids is None else token_ids,
        np.full(n, 3), question_types=["what"] * n, answer_types=["other"] * n, modal_answers=modal,
        human_answers=humans, labels=np.array([answers.index(m) if m in answers else -1 for m in modal]),
        scores=AnswerScores(*answer_scores(humans, answers)))


def test_the_prepared_file_keeps_the_scores_and_the_loader_reads_them_only_when_asked(tmp_path):
    answers = ["blue", "red"]
    split = scored_split(artifacts.TRAIN_SPLIT, [["red"] * 4 + ["blue"] * 2 + ["x"] * 4, ["x"] * 10], answers)
    write_prepared(tmp_path, words=WORDS, embeddings=np.zeros((len(WORDS), 300)), answers=answers, splits=[split])
    assert load_prepared(tmp_path).splits[artifacts.TRAIN_SPLIT].scores is None
    scores = load_prepared(tmp_path, scores=True).splits[artifacts.TRAIN_SPLIT].scores
    assert scores.classes.tolist() == [[0, 1], [-1, -1]]
    np.testing.assert_allclose(scores.scores, [[2 / 3, 1], [0, 0]], rtol=1e-6)
    assert scores.select(np.array([False, True])).classes.tolist() == [[-1, -1]]


def test_files_prepared_before_the_scores_load_for_modal_and_refuse_soft_in_one_line(tmp_path, capsys):
    data_dir, features = write_tiny_dataset(tmp_path, num_images=4, scores=False)
    with h5py.File(data_dir / artifacts.PREPARED_H5, "a") as h5:  # format 1: no format attribute either
        set_attribute("format")(h5)
    assert load_prepared(data_dir).splits[artifacts.TRAIN_SPLIT].labels is not None
    with pytest.raises(InputError, match=r"vqa_data.h5: train2014 has no answer scores for --loss soft .*re-run "
                                         r"'vqa prepare', or pass --loss modal$"):
        load_prepared(data_dir, scores=True)
    for flags in ([], ["--loss", "soft"]):  # soft is the MLP's default
        code = main(["train", "mlp", "--data", str(data_dir), "--features", str(features), "--out",
                     str(tmp_path / "m"), "--epochs", "1", *flags])
        error = capsys.readouterr().err.strip()
        assert code != 0 and "\n" not in error and str(data_dir / artifacts.PREPARED_H5) in error
        assert error.endswith("re-run 'vqa prepare', or pass --loss modal")
        assert not (tmp_path / "m").exists()


# --------------------------------------------------------------------------- settings and model directories
def test_loss_is_a_train_config_field_that_the_tutorial_recipe_sets_to_modal():
    # The MLP's default is soft, the others' modal (docs/training.md, the three-seed table).
    assert {kind: TrainConfig.for_model(kind).loss for kind in MODEL_KINDS} == {
        "mlp": "soft", "lstm": "modal", "san": "modal", "topdown": "modal"}
    assert TrainConfig.for_model("san", loss="soft").loss == "soft"
    assert TrainConfig.for_model("mlp", tutorial_recipe=True).loss == "modal"
    with pytest.raises(InputError, match="--loss must be one of modal, soft"):
        TrainConfig.for_model("mlp", loss="hinge")


def test_the_default_mlp_ends_in_a_sigmoid_and_the_tutorial_recipe_in_a_softmax():
    from vqa.train import build_model

    embeddings = np.random.default_rng(0).normal(size=(12, 300)).astype(np.float32)
    for recipe, activation in ((False, "sigmoid"), (True, "softmax")):
        config = TrainConfig.for_model("mlp", tutorial_recipe=recipe, hidden_units=8, hidden_layers=1)
        model, _ = build_model(config, embeddings=embeddings, num_answers=5, image_shape=(16,))
        assert model.get_layer("answer").get_config()["activation"] == activation


def test_an_unknown_loss_flag_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "mlp", "--features", "f.h5", "--out", "m", "--loss", "hinge"])
    assert exit_.value.code == 2 and "argument --loss: invalid choice: 'hinge'" in capsys.readouterr().err


def write_config(folder, train):
    record = modeldir.make_config(model="mlp", status="finished", train=train, max_question_length=30,
                                  spacy_model=None, num_answers=3, vocabulary_size=9, image_layout="vector",
                                  image_size=224, image_feature_shape=[64], cnn_weights=None, keras_version="3")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / artifacts.CONFIG_JSON).write_text(json.dumps(record))
    return folder


def test_a_model_directory_without_a_loss_reads_as_modal_and_an_unknown_one_is_one_line(tmp_path):
    assert modeldir.read_config(write_config(tmp_path / "old", {"epochs": 1}))["train"]["loss"] == "modal"
    assert modeldir.read_config(write_config(tmp_path / "soft", {"loss": "soft"}))["train"]["loss"] == "soft"
    folder = write_config(tmp_path / "bad", {"loss": "hinge"})
    with pytest.raises(InputError, match=r"config.json: field 'train.loss' is 'hinge', not one of modal, soft") as err:
        modeldir.read_config(folder)
    assert str(folder) in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------- the feed
def test_the_feeds_scatter_the_stored_scores_into_dense_targets():
    from vqa.data import QuestionBatches, dense_targets, in_graph_batches
    from vqa.prepared import Split

    humans = [["b"] * 4 + ["a"] * 6, ["c"] * 2 + ["z"] * 8, ["a"] * 10, ["c"] * 10]
    classes, scores = answer_scores(humans, ["a", "b", "c"])
    np.testing.assert_allclose(dense_targets(AnswerScores(classes, scores), np.array([1, 0]), 3),
                               [[0, 0, 2 / 3], [1, 1, 0]], rtol=1e-6)
    split = Split("s", np.ones((4, 3), np.int32), np.full(4, 3, np.int32), np.arange(4), np.arange(4),
                  np.array([0, 2, 0, 2], np.int32), AnswerScores(classes, scores))
    batches = QuestionBatches(split, np.eye(4, dtype=np.float32), np.arange(4), batch_size=4, shuffle=False,
                              num_answers=3)
    expected = dense_targets(split.scores, np.arange(4), 3)
    np.testing.assert_array_equal(batches[0][1]["answer"], expected)
    in_graph = next(iter(in_graph_batches(batches)))[1]["answer"].numpy()
    np.testing.assert_allclose(in_graph, expected, rtol=1e-6)


# --------------------------------------------------------------------------- training
def disagreeing_dataset(root, *, questions=240, seed=0):
    """One question over noise images; 60% of the time humans split 4 "red" / 3 "blue" / 3 "green" (modal red,
    every answer full credit), 40% of the time all 10 say "blue": modal training learns "red" (60% credit),
    the soft targets "blue" (100%)."""
    rng = np.random.default_rng(seed)
    answers = ["blue", "green", "red"]

    def humans(n):
        return [["red"] * 4 + ["blue"] * 3 + ["green"] * 3 if rng.random() < 0.6 else ["blue"] * 10 for _ in range(n)]

    embeddings = rng.normal(size=(len(WORDS), 300)) * 50
    embeddings[:2] = 0
    train, val = humans(questions), humans(questions // 4)
    splits = [scored_split(artifacts.TRAIN_SPLIT, train, answers, image_ids=np.arange(len(train))),
              scored_split(artifacts.VAL_SPLIT, val, answers, image_ids=np.arange(len(val)) + 10_000)]
    data_dir = root / "prepared"
    write_prepared(data_dir, words=WORDS, embeddings=embeddings, answers=answers, splits=splits)
    image_ids = np.concatenate([np.arange(len(train)), np.arange(len(val)) + 10_000])
    write_features(root / "features.h5", np.maximum(rng.normal(size=(len(image_ids), 16)), 0), image_ids)
    return data_dir, root / "features.h5", val


def official_accuracy(model_dir, data_dir, features, val_humans):
    from vqa.answerer import Answerer
    from vqa.feature_file import load_features

    loaded = modeldir.load_model_dir(model_dir)
    split = load_prepared(data_dir).splits[artifacts.VAL_SPLIT]
    matrix, image_ids = load_features(features, layout=artifacts.LAYOUT_VECTOR)
    rows = np.searchsorted(image_ids, split.image_ids)
    answerer = Answerer(loaded.model, loaded.answers, vocabulary_size=len(loaded.words), image_shape=(16,),
                        layout_name="vectors", loss=loaded.config["train"]["loss"])
    probabilities = answerer.outputs(split.token_ids, matrix[rows])["answer"]
    predictions = answerer.best_answers(probabilities)
    return float(score_predictions(val_humans, predictions).mean()), probabilities, loaded


@pytest.mark.slow
def test_soft_training_scores_at_least_as_well_as_modal_under_the_official_metric(tmp_path):
    from vqa.train import train_model

    data_dir, features, val = disagreeing_dataset(tmp_path)
    scores = {}
    for loss in ("modal", "soft"):
        config = TrainConfig.for_model("mlp", epochs=3, hidden_units=16, hidden_layers=1, loss=loss, **FAST)
        train_model(config, data_dir=data_dir, features_path=features, out_dir=tmp_path / loss,
                    logdir=tmp_path / "logs")
        scores[loss], probabilities, loaded = official_accuracy(tmp_path / loss, data_dir, features, val)
        assert loaded.config["train"]["loss"] == loss
        # What `vqa ask` shows: probabilities over the K answers that sum to 1, for either loss.
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert scores["soft"] >= scores["modal"]
    assert scores["soft"] > 0.85 and scores["modal"] < 0.8  # the designed gap, up to noise-image overfitting


@pytest.mark.parametrize("kind", ["mlp", "lstm", "topdown"])
def test_a_sigmoid_output_starts_each_answer_near_one_over_k(kind):
    """At 0.5 each, K independent sigmoids would first learn only to say no to everything."""
    from vqa.train import build_model

    config = TrainConfig.for_model(kind, loss="soft", lstm_units=8, hidden_units=8, attention_units=4)
    shape = (2, 2, 512) if kind == "topdown" else (4096,)
    embeddings = np.random.default_rng(0).normal(size=(12, 300)).astype(np.float32)
    model, _ = build_model(config, embeddings=embeddings, num_answers=1000, image_shape=shape)
    rng = np.random.default_rng(1)
    scores = np.asarray(model({"question": rng.integers(2, 12, (4, 5)).astype(np.int32),
                               "image_features": rng.random((4, *shape), dtype=np.float32)}, training=False)["answer"])
    assert scores.shape == (4, 1000) and 0.0002 < scores.mean() < 0.005


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lstm", "san"])
def test_lstm_and_san_train_with_a_sigmoid_output_under_soft(tmp_path, kind):
    from vqa.train import train_model

    answers = ["blue", "green", "red"]
    rng = np.random.default_rng(1)
    humans = [["red"] * 4 + ["blue"] * 6 if rng.random() < 0.5 else ["green"] * 10 for _ in range(48)]
    split = scored_split(artifacts.TRAIN_SPLIT, humans, answers, image_ids=np.arange(48))
    write_prepared(tmp_path / "p", words=WORDS, embeddings=rng.normal(size=(len(WORDS), 300)), answers=answers,
                   splits=[split])
    if kind == "san":
        write_grid(tmp_path / "f.h5", grid_features(48), np.arange(48))
        sizes = dict(lstm_units=8, attention_units=8)
    else:
        write_features(tmp_path / "f.h5", rng.random((48, 16)), np.arange(48))
        sizes = dict(lstm_units=8, hidden_units=8, hidden_layers=1)
    config = TrainConfig.for_model(kind, epochs=4, loss="soft", learning_rate=0.01, **sizes, **FAST)
    history = train_model(config, data_dir=tmp_path / "p", features_path=tmp_path / "f.h5", out_dir=tmp_path / "m",
                          logdir=tmp_path / "logs")
    assert history["loss"][-1] < history["loss"][0] and 0 <= history["accuracy"][-1] <= 1
    loaded = modeldir.load_model_dir(tmp_path / "m")
    assert loaded.model.get_layer("answer").get_config()["activation"] == "sigmoid"
    assert loaded.config["train"]["loss"] == "soft"


# --------------------------------------------------------------------------- vqa synth --disagreement
def test_default_synth_answers_are_unchanged():
    """The same draws, in the same order, as before --disagreement existed (same seed = same files)."""
    rng = np.random.default_rng(7)
    got = [[a["answer"] for a in synthetic.simulate_human_answers(answer, kind, rng)]
           for answer, kind in (("yes", "yes/no"), ("2", "number"), ("red", "other"), ("circle", "other"))]
    # Drawn by the code before --disagreement was added.
    assert got == [["yes"] * 4 + ["no"] + ["yes"] * 5, ["2"] * 4 + ["2."] + ["2"] * 5,
                   ["green", "red", "red", "red", "Red", "bright red", "red", "red", "blue", "red"],
                   ["circle"] * 9 + ["a circle"]]


def human_accuracy(answer, kind, *, questions, seed):
    """Mean over humans of min(matches among the other 9 / 3, 1), official normalisation, and the share of
    questions whose true answer (normalised) is not the modal one."""
    rng = np.random.default_rng(seed)
    total, not_modal = 0.0, 0
    for _ in range(questions):
        humans = [clean_answer(a["answer"]) for a in
                  synthetic.simulate_human_answers(answer, kind, rng, disagreement="real")]
        keys = humans if len(set(humans)) == 1 else [normalize_answer(h) for h in humans]
        total += np.mean([min((keys.count(k) - 1) / 3, 1) for k in keys])
        not_modal += max(keys.count(k) for k in keys) > keys.count(normalize_answer(answer))
    return 100 * total / questions, not_modal / questions


@pytest.mark.parametrize("kind, answers", [("yes/no", ("yes", "no")), ("number", ("1", "3")),
                                           ("other", ("red", "square", "white", "triangle"))])
def test_real_disagreement_matches_the_published_human_accuracy(kind, answers):
    results = [human_accuracy(answer, kind, questions=400, seed=i) for i, answer in enumerate(answers)]
    accuracy = np.mean([r[0] for r in results])
    assert accuracy == pytest.approx(synthetic.HUMAN_ACCURACY[kind], abs=1.5)
    assert np.mean([r[1] for r in results]) > 0.01  # the true answer is sometimes not the modal one


def test_real_disagreement_is_an_option_of_vqa_synth_and_a_bad_value_is_refused(tmp_path, capsys):
    with pytest.raises(InputError, match="--disagreement must be one of low, real, got 'wild'"):
        synthetic.generate_dataset(tmp_path / "x", num_images=2, disagreement="wild")
    with pytest.raises(SystemExit):
        main(["synth", "--out", str(tmp_path / "y"), "--disagreement", "wild"])
    assert "invalid choice: 'wild'" in capsys.readouterr().err


@pytest.mark.slow
def test_vqa_prepare_stores_the_official_credit_of_disagreeing_synth_answers(tmp_path):
    from vqa.prepared import load_prepared_split
    from vqa.sample_dataset import RANDOM, build_sample_dataset

    sample = build_sample_dataset(tmp_path, num_images=20, features=(RANDOM,), num_answers=20, disagreement="real")
    data = load_prepared(sample.prepared, scores=True)
    split = load_prepared_split(sample.prepared, "train")
    scores = data.splits[artifacts.TRAIN_SPLIT].scores
    partial = 0
    for humans, classes, values in zip(split.human_answers, scores.classes, scores.scores):
        for c, value in zip(classes[classes >= 0], values[classes >= 0]):
            credit = official_credit(humans, data.answers[c])
            if value < 1 or credit < 1:  # n = 1, 2, 3: above the leave-one-out credit by n / 30
                assert value - credit == pytest.approx(round(value * 3) / 30, abs=1e-6)
            else:  # n >= 4
                assert value == credit == 1
            partial += value < 1
    assert partial > 0  # some answers got 1 or 2 votes: partial credit, where modal training sees none
