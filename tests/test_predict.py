"""Tests for vqa.predict: training-identical inputs, probabilities, answers, threads, `vqa ask`."""

from __future__ import annotations

import json
import shutil
import threading

import h5py
import numpy as np
import pytest

from vqa import artifacts, text
from vqa.cli import main
from vqa.errors import InputError, VQAError
from vqa.modeldir import check_model_dir
from vqa.predict import Predictor, answer_sentence
from vqa.text import OOV_ID, PAD_ID


@pytest.fixture(scope="module")
def val_split(synth_data):
    """The prepared val questions with their token ids and image ids (what training saw)."""
    with h5py.File(synth_data.prepared / artifacts.PREPARED_H5, "r") as h5:
        group = h5[artifacts.VAL_SPLIT]
        questions = [q.decode() if isinstance(q, bytes) else str(q) for q in group["questions"][()]]
        return questions, group["token_ids"][()], group["image_ids"][()]


def image_id_of(path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


# --------------------------------------------------------------------------- inputs as in training
def test_encode_questions_reproduces_prepared_token_ids(predictor, val_split):
    questions, token_ids, _ = val_split
    encoded = predictor.questions.encode(questions)
    assert encoded.dtype == np.int32 and encoded.shape == token_ids.shape
    np.testing.assert_array_equal(encoded, token_ids)


def test_encode_questions_oov_padding_and_truncation(predictor):
    known = predictor.questions.words[2]
    long_question = " ".join([known] * (predictor.questions.max_question_length + 7))
    encoded = predictor.questions.encode([f"{known} zqxjkvw", long_question])
    assert encoded.shape == (2, predictor.questions.max_question_length)
    assert list(encoded[0, :2]) == [predictor.questions.word_index[known], OOV_ID]
    assert (encoded[0, 2:] == PAD_ID).all()
    assert (encoded[1] == predictor.questions.word_index[known]).all()


def test_image_features_match_the_features_file(predictor, synth_data):
    with h5py.File(synth_data.features, "r") as h5:
        row = list(h5["image_ids"][()]).index(image_id_of(synth_data.image))
        expected = h5["features"][row]
    features = predictor.images.features([synth_data.image, synth_data.image.read_bytes()])
    assert features.dtype == np.float32 and features.shape == (2, 4096)
    np.testing.assert_allclose(features[0], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(features[0], features[1])


# --------------------------------------------------------------------------- probabilities and answers
def test_answer_probabilities_match_the_keras_model_and_ignores_batch_size(predictor, val_split, synth_data):
    _, token_ids, _ = val_split
    rng = np.random.default_rng(0)
    features = rng.random((len(token_ids), 4096), dtype=np.float32)
    probabilities = predictor.answerer.outputs(token_ids, features, batch_size=512)["answer"]
    answerer = predictor.answerer
    reference = answerer.model.predict({"question": token_ids, "image_features": features}, verbose=0)["answer"]
    assert probabilities.dtype == np.float32 and probabilities.shape == (len(token_ids), len(answerer.answers))
    np.testing.assert_allclose(probabilities, reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(answerer.outputs(token_ids, features, batch_size=3)["answer"], probabilities,
                               rtol=1e-5, atol=1e-6)


def test_top_and_best_answers_are_ordered_by_probability(predictor):
    answerer, answers = predictor.answerer, predictor.answerer.answers
    num_answers = len(answers)
    probabilities = np.zeros((2, num_answers), dtype=np.float32)
    probabilities[0, [3, 1, 0]] = [0.5, 0.3, 0.2]
    probabilities[1, num_answers - 1] = 1.0
    top = answerer.top_answers(probabilities, top=3)
    assert top[0] == [(answers[3], 0.5), (answers[1], pytest.approx(0.3)), (answers[0], pytest.approx(0.2))]
    assert top[1][0] == (answers[-1], 1.0)
    assert answerer.best_answers(probabilities) == [answers[3], answers[-1]]


def test_ask_accepts_path_bytes_or_feature_vector_alike(predictor, synth_data):
    question = "What color is the circle?"
    from_path = predictor.ask(synth_data.image, question, top=4)
    vector = predictor.images.features([synth_data.image])[0]
    assert len(from_path) == 4
    assert [p for _, p in from_path] == sorted((p for _, p in from_path), reverse=True)
    for other in (predictor.ask(synth_data.image.read_bytes(), question, top=4), predictor.ask(vector, question, top=4)):
        assert [a for a, _ in other] == [a for a, _ in from_path]
        np.testing.assert_allclose([p for _, p in other], [p for _, p in from_path], rtol=1e-5)


def test_ask_many_equals_one_by_one(predictor, synth_data):
    images = sorted((synth_data.root / "images" / "val2014").glob("*.jpg"))[:3]
    questions = ["How many squares are there?", "Is there a red circle?", "What shape is the blue object?"]
    together = predictor.ask_many(images, questions, top=2, batch_size=2)
    for image, question, answers in zip(images, questions, together):
        alone = predictor.ask(image, question, top=2)
        assert [a for a, _ in alone] == [a for a, _ in answers]
        np.testing.assert_allclose([p for _, p in alone], [p for _, p in answers], rtol=1e-5)


def test_predictor_without_cnn_takes_feature_vectors_only(mlp_model_dir, predictor, synth_data):
    bare = Predictor(mlp_model_dir, cnn_weights=None)
    vector = predictor.images.features([synth_data.image])[0]
    with_cnn = predictor.ask(vector, "what color is the square?", top=3)
    without = bare.ask(vector, "what color is the square?", top=3)
    assert [a for a, _ in without] == [a for a, _ in with_cnn]
    np.testing.assert_allclose([p for _, p in without], [p for _, p in with_cnn], rtol=1e-5)
    with pytest.raises(VQAError, match="no CNN"):
        bare.ask(synth_data.image, "what color is the square?")


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, message", [
    (lambda p: p.answerer.outputs(np.zeros((2, 30), np.int32), np.zeros((3, 4096), np.float32)), "image features"),
    (lambda p: p.answerer.outputs(np.zeros((2, 30), np.float32), np.zeros((2, 4096), np.float32)), "integer"),
    (lambda p: p.answerer.outputs(np.full((1, 30), 10**6, np.int32), np.zeros((1, 4096), np.float32)), "token ids"),
    (lambda p: p.ask(np.zeros(4096, np.float32), "   "), "empty"),
    (lambda p: p.ask(np.zeros(4096, np.float32), "what?", top=0), "top"),
    (lambda p: p.ask(np.zeros(4096, np.float32), "what?", top=len(p.answerer.answers) + 1), "top"),
    (lambda p: p.ask(np.zeros(512, np.float32), "what?"), "shape"),
    (lambda p: p.ask(b"not an image", "what?"), "cannot read"),
    (lambda p: p.ask_many([np.zeros(4096, np.float32)], ["a?", "b?"]), "one image per question"),
    (lambda p: p.answerer.outputs(np.zeros((1, 30), np.int32), np.zeros((1, 4096), np.float32), batch_size=0),
     "batch size"),
], ids=["rows", "float-ids", "id-range", "empty-question", "top-0", "top-over-K", "vector-size", "not-image",
        "count-mismatch", "batch-size"])
def test_bad_input_raises_input_error(predictor, call, message):
    with pytest.raises(InputError, match=message):
        call(predictor)


def test_missing_model_dir_says_to_train(tmp_path):
    with pytest.raises(InputError, match="vqa train"):
        Predictor(tmp_path / "nothing", cnn_weights=None)


# --------------------------------------------------------------------------- which weights answer
def copy_model_dir(model_dir, to, *, without=(), status=None):
    shutil.copytree(model_dir, to, ignore=shutil.ignore_patterns(artifacts.BACKUP_DIR, *without))
    if status is not None:
        config = json.loads((to / artifacts.CONFIG_JSON).read_text())
        (to / artifacts.CONFIG_JSON).write_text(json.dumps({**config, "status": status}))
    return to


def test_checkpoint_best_loads_the_lowest_val_loss_model(mlp_model_dir, val_split):
    import keras

    _, token_ids, _ = val_split
    features = np.random.default_rng(1).random((len(token_ids), 4096), dtype=np.float32)
    best = Predictor(mlp_model_dir, cnn_weights=None, checkpoint="best")
    reference = keras.saving.load_model(mlp_model_dir / artifacts.BEST_MODEL_FILE)
    expected = reference.predict({"question": token_ids, "image_features": features}, verbose=0)["answer"]
    assert best.checkpoint == "best" and best.info()["checkpoint"] == "best"
    np.testing.assert_allclose(best.answerer.outputs(token_ids, features)["answer"], expected, rtol=1e-5, atol=1e-6)


def test_checkpoint_defaults_to_the_last_epoch(predictor):
    assert predictor.checkpoint == "last" and predictor.info()["checkpoint"] == "last"


@pytest.mark.parametrize("without, status, checkpoint, message", [
    ((), None, "first", "checkpoint must be one of last, best"),
    ((artifacts.BEST_MODEL_FILE,), None, "best", "no best.keras"),
    ((artifacts.ANSWERS_JSON,), None, "last", "missing answers.json"),
    ((), "running", "last", "training has not finished"),
], ids=["unknown", "no-best", "unfinished-files", "running"])
def test_check_model_dir_rejects_what_cannot_answer(mlp_model_dir, tmp_path, without, status, checkpoint, message):
    model_dir = copy_model_dir(mlp_model_dir, tmp_path / "m", without=without, status=status)
    with pytest.raises(InputError, match=message):
        check_model_dir(model_dir, checkpoint=checkpoint)
    with pytest.raises(InputError, match=message):
        Predictor(model_dir, cnn_weights=None, checkpoint=checkpoint)


# --------------------------------------------------------------------------- spaCy only when needed
@pytest.fixture()
def spacy_forbidden(monkeypatch):
    """Make loading spaCy fail loudly, to prove a code path never needs it."""
    def refuse(*args, **kwargs):
        raise AssertionError("spaCy was loaded")

    monkeypatch.setattr(text, "load_spacy", refuse)


def test_predictor_loads_spacy_only_to_tokenise(mlp_model_dir, val_split, spacy_forbidden):
    _, token_ids, _ = val_split
    bare = Predictor(mlp_model_dir, cnn_weights=None)
    probabilities = bare.answerer.outputs(token_ids[:4], np.zeros((4, 4096), np.float32))["answer"]
    assert probabilities.shape == (4, len(bare.answerer.answers))
    with pytest.raises(AssertionError, match="spaCy was loaded"):
        bare.questions.encode(["what color is the square?"])


def test_vqa_evaluate_model_does_not_load_spacy(mlp_model_dir, synth_data, tmp_path, spacy_forbidden):
    assert main(["evaluate", "--model", str(mlp_model_dir), "--data", str(synth_data.prepared),
                 "--features", str(synth_data.features), "--split", "val",
                 "--results", str(tmp_path / "results.json")]) == 0
    assert (tmp_path / "results.json").is_file()


# --------------------------------------------------------------------------- threads
@pytest.mark.slow
def test_shared_predictor_gives_the_same_answers_from_many_threads(san_predictor, synth_data):
    predictor = san_predictor  # the SAN on 64-pixel images: 20 VGG16 passes of the convolutions alone
    images = sorted((synth_data.root / "images" / "val2014").glob("*.jpg"))[:2]
    questions = ["How many circles are there?", "What color is the triangle?"]
    cases = [(image, question) for image in images for question in questions]
    expected = {case: predictor.ask(*case, top=3) for case in cases}
    results, errors = [None] * 16, []

    def work(i):
        try:
            results[i] = (cases[i % len(cases)], predictor.ask(*cases[i % len(cases)], top=3))
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(results))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    for case, answers in results:
        assert [a for a, _ in answers] == [a for a, _ in expected[case]]
        np.testing.assert_allclose([p for _, p in answers], [p for _, p in expected[case]], rtol=1e-5)


# --------------------------------------------------------------------------- the sentence
@pytest.mark.parametrize("question, answer, probability, sentence", [
    ("What color is the ground?", "green", 0.7496, "We're 74.96% sure that the ground is green."),
    ("what colour are the  cars ?", "red", 0.5, "We're 50.00% sure that the cars are red."),
    ("How many dogs are in the picture?", "2", 0.25, "We're 25.00% sure that there are 2 dogs."),
    ("How many people?", "1", 0.25, "We're 25.00% sure that the number of people is 1."),
    ("How many squares are there?", "1", 0.5, "We're 50.00% sure that the number of squares is 1."),
    ("How many squares are there?", "yes", 0.1, 'We\'re 10.00% sure that the answer to "How many squares are there?" is yes.'),
    ("Is the man smiling?", "no", 0.912345, 'We\'re 91.23% sure that the answer to "Is the man smiling?" is no.'),
    ("What is the man holding", "bat", 0.3, 'We\'re 30.00% sure that the answer to "What is the man holding?" is bat.'),
])
def test_answer_sentence(question, answer, probability, sentence):
    assert answer_sentence(question, answer, probability) == sentence


# --------------------------------------------------------------------------- vqa ask
@pytest.mark.slow  # builds a random VGG16 for the CLI's own Predictor (the SAN's: 64 pixels, no fc6-fc7)
def test_vqa_ask_prints_top_answers_and_sentence(san_model_dir, synth_data, san_predictor, capsys):
    question = "What color is the circle?"
    expected = san_predictor.ask(synth_data.image, question, top=3)
    assert main(["ask", "--model", str(san_model_dir), "--image", str(synth_data.image), "--question", question,
                 "--top", "3", "--cnn-weights", "random"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    for line, (answer, probability) in zip(lines, expected):
        assert line.split() == [f"{100 * probability:.2f}%", *answer.split()]
    assert lines[3] == answer_sentence(question, *expected[0])


@pytest.mark.slow  # builds a random VGG16 (138M weights) for the CLI's own Predictor
def test_vqa_ask_checkpoint_best_answers_with_best_keras(mlp_model_dir, synth_data, predictor, capsys):
    question = "What color is the circle?"
    vector = predictor.images.features([synth_data.image])[0]
    expected = Predictor(mlp_model_dir, cnn_weights=None, checkpoint="best").ask(vector, question, top=2)
    assert main(["ask", "--model", str(mlp_model_dir), "--image", str(synth_data.image), "--question", question,
                 "--top", "2", "--cnn-weights", "random", "--checkpoint", "best"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(maxsplit=1)[1] for line in lines[:2]] == [answer for answer, _ in expected]


@pytest.mark.parametrize("flags, message", [
    (["--image", "missing.jpg"], "image not found"),
    (["--top", "0"], "top must be"),
    (["--model", "no-best", "--checkpoint", "best"], "no best.keras"),
])
def test_vqa_ask_errors_are_one_line(mlp_model_dir, synth_data, tmp_path, capsys, flags, message):
    args = {"--model": str(mlp_model_dir), "--image": str(synth_data.image), "--question": "what?",
            "--cnn-weights": "random"}
    args.update(dict(zip(flags[::2], flags[1::2])))
    if args["--image"] == "missing.jpg":
        args["--image"] = str(tmp_path / "missing.jpg")
    if args["--model"] == "no-best":
        args["--model"] = str(copy_model_dir(mlp_model_dir, tmp_path / "m", without=(artifacts.BEST_MODEL_FILE,)))
    assert main(["ask", *[x for pair in args.items() for x in pair]]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vqa ask: error:") and message in err[0]


# --------------------------------------------------------------------------- attention (a SAN)
def test_san_predictor_reports_attention_over_its_grid(san_predictor, synth_data):
    info = san_predictor.info()
    assert san_predictor.answerer.has_attention and info["attention"] is True
    assert info["image_layout"] == artifacts.LAYOUT_GRID
    assert san_predictor.answerer.grid_size == info["grid_size"] == info["image_size"] // 32
    answers, attention = san_predictor.ask_with_attention(synth_data.image, "what shape is at the top left?", top=3)
    grid = san_predictor.answerer.grid_size
    assert attention.dtype == np.float32 and attention.shape == (2, grid, grid)
    assert np.allclose(attention.sum(axis=(1, 2)), 1, atol=1e-5) and (attention >= 0).all()
    assert answers == san_predictor.ask(synth_data.image, "what shape is at the top left?", top=3)


def test_ask_with_attention_on_an_mlp_says_to_train_a_san(predictor, synth_data):
    assert not predictor.answerer.has_attention and predictor.info()["attention"] is False
    with pytest.raises(InputError, match="vqa train san"):
        predictor.ask_with_attention(synth_data.image, "what color is the circle?")


@pytest.mark.slow  # builds a random VGG16 (138M weights) for the CLI's own Predictor
def test_vqa_ask_attention_writes_the_figure(san_model_dir, san_predictor, synth_data, tmp_path, capsys):
    from PIL import Image

    from vqa.attention_figure import figure_size

    question = "What color is the circle?"
    expected = san_predictor.ask(synth_data.image, question, top=2)
    out = tmp_path / "figures" / "attention.png"
    assert main(["ask", "--model", str(san_model_dir), "--image", str(synth_data.image), "--question", question,
                 "--top", "2", "--cnn-weights", "random", "--attention", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(maxsplit=1)[1] for line in lines[:2]] == [answer for answer, _ in expected]
    assert lines[-1] == f"attention maps written to {out}"
    with Image.open(out) as figure:
        assert figure.format == "PNG" and figure.size == figure_size(2)


def test_vqa_ask_attention_with_an_mlp_is_a_one_line_error(mlp_model_dir, synth_data, tmp_path, capsys):
    out = tmp_path / "attention.png"
    assert main(["ask", "--model", str(mlp_model_dir), "--image", str(synth_data.image), "--question", "what?",
                 "--cnn-weights", "random", "--attention", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no attention" in err[0] and "vqa train san" in err[0]
    assert not out.exists()


# --------------------------------------------------------------------------- batching and the feature cache
def ask_together(predictor, cases, *, attention=False):
    """Ask every (image, question) case from its own thread, all released at once: (answers, outputs, timings)."""
    barrier, results = threading.Barrier(len(cases)), [None] * len(cases)

    def work(i):
        timing = {}
        barrier.wait()
        ask = predictor.ask_with_attention if attention else predictor.ask
        results[i] = (ask(*cases[i], top=3, timing=timing), timing)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results


@pytest.fixture(scope="module")
def batched_predictor(mlp_model_dir):
    """The session's MLP with batches of up to 4 single questions and a 1 MB feature cache."""
    return Predictor(mlp_model_dir, cnn_weights="random", max_batch_size=4, batch_timeout_ms=500,
                     feature_cache_mb=1)


def synth_images(synth_data) -> list:
    """Every generated image (train and val), sorted: tests below take disjoint slices, so that none
    finds another's features in a cache."""
    return sorted((synth_data.root / "images").rglob("*.jpg"))


@pytest.mark.slow  # many threads through VGG16 batches: >10 s
def test_batched_answers_equal_one_at_a_time(batched_predictor, predictor, synth_data):
    images = [p.read_bytes() for p in synth_images(synth_data)[:6]]
    questions = ["How many squares are there?", "What color is the circle?", "Is there a red triangle?"]
    cases = [(image, questions[i % 3]) for i, image in enumerate(images)]
    results = ask_together(batched_predictor, cases)
    assert max(timing["image_batch"] for _, timing in results) > 1  # the threads really shared VGG16 calls
    assert max(timing["answer_batch"] for _, timing in results) > 1
    for case, (answers, _) in zip(cases, results):
        alone = predictor.ask(*case, top=3)
        assert [a for a, _ in answers] == [a for a, _ in alone]
        np.testing.assert_allclose([p for _, p in answers], [p for _, p in alone], rtol=1e-5, atol=1e-6)


def test_batched_attention_maps_equal_one_at_a_time(san_model_dir, san_predictor, synth_data):
    batched = Predictor(san_model_dir, cnn_weights="random", max_batch_size=4, batch_timeout_ms=500)
    images = sorted((synth_data.root / "images" / "val2014").glob("*.jpg"))[:4]
    cases = [(image, q) for image, q in zip(images, ["what shape is at the top left?", "what color is the circle?",
                                                     "how many squares are there?", "is there a blue square?"])]
    results = ask_together(batched, cases, attention=True)
    assert max(timing["answer_batch"] for _, timing in results) > 1
    for case, ((answers, attention), _) in zip(cases, results):
        alone, alone_attention = san_predictor.ask_with_attention(*case, top=3)
        np.testing.assert_allclose(attention, alone_attention, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose([p for _, p in answers], [p for _, p in alone], rtol=1e-5, atol=1e-6)


def test_a_bad_image_among_batched_questions_fails_alone(batched_predictor, synth_data, jpeg_bytes):
    cases = [(jpeg_bytes, "what color is the circle?"), (b"not an image", "what?"),
             (jpeg_bytes, "how many squares are there?")]
    barrier, outcome = threading.Barrier(3), [None] * 3

    def work(i):
        barrier.wait()
        try:
            outcome[i] = batched_predictor.ask(*cases[i], top=2)
        except InputError as error:
            outcome[i] = error

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert isinstance(outcome[1], InputError) and "cannot read" in str(outcome[1])
    assert all(isinstance(answers, list) and len(answers) == 2 for answers in (outcome[0], outcome[2]))


@pytest.fixture(scope="module")
def jpeg_bytes(synth_data):
    return synth_images(synth_data)[6].read_bytes()


def test_second_question_about_an_image_skips_vgg16(batched_predictor, synth_data, monkeypatch):
    jpeg_bytes = synth_images(synth_data)[7].read_bytes()  # not yet asked
    first, second = {}, {}
    answers = batched_predictor.ask(jpeg_bytes, "what color is the circle?", top=3, timing=first)
    monkeypatch.setattr(batched_predictor.images, "run_cnn",
                        lambda *a: pytest.fail("VGG16 ran for a cached image"))
    again = batched_predictor.ask(jpeg_bytes, "what color is the circle?", top=3, timing=second)
    assert first["cache"] == "miss" and "vgg16" in first and first["decode"] >= 0
    assert second["cache"] == "hit" and "vgg16" not in second and "decode" not in second
    assert again == answers


def test_grid_features_are_cached_too(san_model_dir, synth_data):
    cached = Predictor(san_model_dir, cnn_weights="random", feature_cache_mb=1)
    timings = [{}, {}]
    for timing in timings:
        cached.ask_with_attention(synth_data.image, "what shape is at the top left?", timing=timing)
    assert [t["cache"] for t in timings] == ["miss", "hit"]
    assert len(cached.images.cache) == 1


@pytest.mark.parametrize("knob, value", [("max_batch_size", 0), ("batch_timeout_ms", -1), ("feature_cache_mb", "x")])
def test_bad_batching_knobs_stop_the_predictor_before_loading(mlp_model_dir, knob, value, monkeypatch):
    import vqa.modeldir

    monkeypatch.setattr(vqa.modeldir, "load_model_dir", lambda *a, **k: pytest.fail("loaded the model"))
    with pytest.raises(InputError, match=knob):
        Predictor(mlp_model_dir, cnn_weights=None, **{knob: value})
