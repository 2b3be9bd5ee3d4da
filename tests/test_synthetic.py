"""Tests for vqa.synthetic: official formats, image-dependent balanced answers, determinism."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest

from vqa import synthetic
from vqa.cli import main
from vqa.errors import InputError
from vqa.evaluate import question_only_answers
from vqa.official import modal_answer
from vqa.synthetic import COLORS, SceneObject

QUESTION_KEYS = {"info", "task_type", "data_type", "license", "data_subtype", "questions"}
ANNOTATION_KEYS = {"info", "license", "data_subtype", "annotations"}
ANNOTATION_FIELDS = {"question_id", "image_id", "question_type", "answer_type", "multiple_choice_answer", "answers"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    summary = synthetic.generate_dataset(out, num_images=30, seed=3)
    return out, summary


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_files_are_in_the_official_v2_layout(dataset):
    out, summary = dataset
    for split in ("train2014", "val2014", "test-dev2015"):
        questions = load(out / f"v2_OpenEnded_mscoco_{split}_questions.json")
        assert set(questions) == QUESTION_KEYS
        assert questions["task_type"] == "Open-Ended" and questions["data_subtype"] == split
        assert all(set(q) == {"image_id", "question", "question_id"} for q in questions["questions"])
        assert len(questions["questions"]) == summary.num_questions[split]
    assert not (out / "v2_mscoco_test-dev2015_annotations.json").exists()
    for split in ("train2014", "val2014"):
        questions = load(out / f"v2_OpenEnded_mscoco_{split}_questions.json")["questions"]
        annotations = load(out / f"v2_mscoco_{split}_annotations.json")
        assert ANNOTATION_KEYS <= set(annotations) and annotations["data_subtype"] == split
        annotations = annotations["annotations"]
        assert [(q["question_id"], q["image_id"]) for q in questions] == \
            [(a["question_id"], a["image_id"]) for a in annotations]
        for annotation in annotations:
            assert set(annotation) == ANNOTATION_FIELDS
            assert annotation["answer_type"] in ("yes/no", "number", "other")
            assert [a["answer_id"] for a in annotation["answers"]] == list(range(1, 11))
            assert {a["answer_confidence"] for a in annotation["answers"]} <= {"yes", "maybe", "no"}
            counts = Counter(a["answer"] for a in annotation["answers"])
            assert counts[annotation["multiple_choice_answer"]] == max(counts.values())


def test_ids_are_unique_coco_style_and_images_exist(dataset):
    out, summary = dataset
    train, val = summary.image_ids["train2014"], summary.image_ids["val2014"]
    assert len(train) == 24 and len(val) == 6 and not set(train) & set(val)
    question_ids = []
    for split in ("train2014", "val2014", "test-dev2015"):
        for q in load(out / f"v2_OpenEnded_mscoco_{split}_questions.json")["questions"]:
            assert q["question_id"] // 1000 == q["image_id"]
            assert q["image_id"] in (train if split == "train2014" else val)
            question_ids.append(q["question_id"])
    assert len(question_ids) == len(set(question_ids))
    for split, ids in summary.image_ids.items():
        files = sorted(p.name for p in (out / "images" / split).iterdir())
        assert files == sorted(f"COCO_{split}_{i:012d}.jpg" for i in ids)


def check_answer(question: str, answer: str, objects: list[SceneObject]) -> None:
    """Recompute the true answer of a generated question from the scene itself."""
    if match := re.fullmatch(r"What color is the (\w+)\?", question):
        (color,) = [o.color for o in objects if o.shape == match[1]]
        assert answer == color
    elif match := re.fullmatch(r"How many (\w+)s are there\?", question):
        assert answer == str(sum(o.shape == match[1] for o in objects))
    elif match := re.fullmatch(r"Is there a (\w+) (\w+)\?", question):
        present = any(o.color == match[1] and o.shape == match[2] for o in objects)
        assert answer == ("yes" if present else "no")
    elif match := re.fullmatch(r"What shape is the (\w+) object\?", question):
        (shape,) = [o.shape for o in objects if o.color == match[1]]
        assert answer == shape
    else:
        pytest.fail(f"unexpected question {question!r}")


def test_every_answer_is_true_of_its_scene():
    rng = np.random.default_rng(0)
    kinds = Counter()
    for _ in range(300):
        objects = synthetic.sample_scene(rng)
        assert 1 <= len(objects) <= 4
        for question, question_type, answer_type, answer in synthetic.ask_questions(objects, rng):
            check_answer(question, answer, objects)
            kinds[question_type, answer_type] += 1
    assert set(kinds) == {("what color is the", "other"), ("how many", "number"),
                          ("is there a", "yes/no"), ("what shape is the", "other")}


def test_render_draws_each_shape_in_its_colour():
    objects = [SceneObject("circle", "red", (56, 56), 40), SceneObject("square", "blue", (168, 168), 30),
               SceneObject("triangle", "yellow", (168, 56), 40)]
    pixels = np.asarray(synthetic.render_scene(objects))
    assert pixels.shape == (224, 224, 3)
    assert tuple(pixels[56, 56]) == COLORS["red"] and tuple(pixels[168, 168]) == COLORS["blue"]
    assert tuple(pixels[70, 168]) == COLORS["yellow"]  # inside the triangle, below its apex
    assert tuple(pixels[20, 140]) == synthetic.BACKGROUND  # beside the apex
    assert tuple(pixels[56 + 39, 56 + 39]) == synthetic.BACKGROUND  # a circle has no corners
    assert tuple(pixels[168 + 29, 168 + 29]) == COLORS["blue"]  # a square does


def test_answers_depend_on_the_image_and_are_balanced(tmp_path):
    synthetic.generate_dataset(tmp_path, num_images=150, seed=1)
    annotations = load(tmp_path / "v2_mscoco_train2014_annotations.json")["annotations"]
    questions = {q["question_id"]: q["question"]
                 for q in load(tmp_path / "v2_OpenEnded_mscoco_train2014_questions.json")["questions"]}
    by_text: dict[str, Counter] = {}
    for a in annotations:
        by_text.setdefault(questions[a["question_id"]], Counter())[a["multiple_choice_answer"]] += 1
    # The same question has different answers on different images...
    assert len(by_text["What color is the circle?"]) >= 4
    assert len(by_text["How many squares are there?"]) >= 3
    # ...and knowing the question text alone gets well under half of the "other" and yes/no answers right.
    for answer_type, ceiling in (("other", 0.45), ("yes/no", 0.65)):
        typed = [(questions[a["question_id"]], a["multiple_choice_answer"]) for a in annotations
                 if a["answer_type"] == answer_type]
        texts, answers = zip(*typed)
        best_guesses = question_only_answers(texts, answers, texts)  # train as its own val: the ceiling
        assert np.mean([guess == answer for guess, answer in zip(best_guesses, answers)]) < ceiling, answer_type
    yes_no = Counter(a["multiple_choice_answer"] for a in annotations if a["answer_type"] == "yes/no")
    assert 0.4 < yes_no["yes"] / (yes_no["yes"] + yes_no["no"]) < 0.6
    assert {a["multiple_choice_answer"] for a in annotations if a["question_type"] == "what color is the"} \
        == set(COLORS)


def test_human_answers_disagree_realistically_but_keep_the_truth_modal():
    rng = np.random.default_rng(0)
    seen = Counter()
    for answer, answer_type in [("2", "number"), ("yes", "yes/no"), ("red", "other"), ("circle", "other")] * 100:
        answers = synthetic.simulate_human_answers(answer, answer_type, rng)
        texts = [a["answer"] for a in answers]
        assert texts.count(answer) >= 6 and modal_answer(texts) == answer
        seen.update(t for t in texts if t != answer)
    # Other surface forms (normalised away by the official metric) and real mistakes both occur.
    assert {"two", "2.", "Yes", "yes.", "red.", "a circle"} <= set(seen)
    assert {"1", "3", "no"} & set(seen) and set(COLORS) - {"red"} & set(seen)
    unanimous = sum(1 for _ in range(200) if len({a["answer"] for a in synthetic.simulate_human_answers("no", "yes/no", rng)}) == 1)
    assert 40 < unanimous < 140


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    first, second, other = (tmp_path / name for name in ("a", "b", "c"))
    synthetic.generate_dataset(first, num_images=8, seed=5)
    synthetic.generate_dataset(second, num_images=8, seed=5)
    synthetic.generate_dataset(other, num_images=8, seed=6)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 5 + 8
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
    name = "v2_OpenEnded_mscoco_train2014_questions.json"
    assert (first / name).read_bytes() != (other / name).read_bytes()


def test_too_few_images_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="at least 2"):
        synthetic.generate_dataset(tmp_path / "x", num_images=1)
    assert not (tmp_path / "x").exists()


def test_max_objects_limits_the_scenes(tmp_path):
    synthetic.generate_dataset(tmp_path / "one", num_images=12, seed=1, max_objects=1)
    annotations = load(tmp_path / "one" / "v2_mscoco_train2014_annotations.json")["annotations"]
    counts = [int(a["multiple_choice_answer"]) for a in annotations if a["answer_type"] == "number"]
    assert counts and max(counts) <= 1
    assert main(["synth", "--out", str(tmp_path / "bad"), "--max-objects", "7"]) == 1
    assert not (tmp_path / "bad").exists()


def test_cli_synth(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "d"), "--images", "10", "--seed", "2"]) == 0
    assert len(list((tmp_path / "d" / "images").rglob("*.jpg"))) == 10
    assert (tmp_path / "d" / "v2_mscoco_val2014_annotations.json").is_file()
    assert main(["synth", "--out", str(tmp_path / "e"), "--images", "0"]) == 1
    assert "at least 2" in capsys.readouterr().err


@pytest.mark.slow
def test_karpathy_files_convert_with_vqa_features(tmp_path):
    with pytest.warns(UserWarning, match="RANDOM"):
        summary = synthetic.generate_dataset(tmp_path, num_images=4, seed=0, karpathy=True)
    dataset_json = load(tmp_path / "coco" / "dataset.json")
    assert dataset_json["dataset"] == "coco"
    assert [image["imgid"] for image in dataset_json["images"]] == [0, 1, 2, 3]
    for image in dataset_json["images"]:
        assert (tmp_path / "images" / image["filepath"] / image["filename"]).is_file()
        assert image["split"] in ("train", "val") and image["sentences"] == []
    out = tmp_path / "features.h5"
    assert main(["features", "--karpathy", str(tmp_path / "coco"), "--out", str(out)]) == 0
    with h5py.File(out, "r") as h5:
        ids = h5["image_ids"][:]
        rows = h5["features"][:]
    assert sorted(ids) == sorted(i for split_ids in summary.image_ids.values() for i in split_ids)
    assert rows.shape == (4, 4096) and (rows > 0).any(axis=1).all()


@pytest.mark.slow
def test_random_vgg16_features_encode_colour_and_shape():
    """A linear probe reads a single shape's colour off random-weight fc2 features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from vqa.features import load_cnn, preprocess_images

    rng = np.random.default_rng(1)
    scenes = [synthetic.sample_scene(rng, num_objects=1) for _ in range(100)]
    pixels = np.stack([np.asarray(synthetic.render_scene(s), dtype=np.float32) for s in scenes])
    with pytest.warns(UserWarning, match="RANDOM"):
        cnn = load_cnn("random")
    rows = np.concatenate([cnn.predict_on_batch(preprocess_images(pixels[i:i + 25])) for i in range(0, 100, 25)])
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    colours = np.array([s[0].color for s in scenes])
    assert cross_val_score(probe, rows, colours, cv=4).mean() >= 0.9
    shapes = np.array([s[0].shape for s in scenes])
    assert cross_val_score(probe, rows, shapes, cv=4).mean() >= 0.75


def test_min_and_max_objects_give_crowded_scenes():
    rng = np.random.default_rng(3)
    scenes = [synthetic.sample_scene(rng, min_objects=4, max_objects=6) for _ in range(40)]
    assert {len(scene) for scene in scenes} == {4, 5, 6}
    for scene in scenes:  # one shape per cell of a 3 x 2 grid: never overlapping, inside the image
        boxes = [(o.center[0] - o.radius, o.center[1] - o.radius, o.center[0] + o.radius, o.center[1] + o.radius)
                 for o in scene]
        assert all(0 <= b[0] and b[2] < synthetic.SCENE_SIZE and 0 <= b[1] and b[3] < synthetic.SCENE_SIZE for b in boxes)
        assert all(a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]
                   for i, a in enumerate(boxes) for b in boxes[i + 1:])
    with pytest.raises(InputError, match="min-objects"):
        synthetic.generate_dataset(Path("unused"), min_objects=5, max_objects=4)


# --------------------------------------------------------------------------- relations (binding and position)
def row_and_column(obj: SceneObject) -> tuple[int, int]:
    """The 3 x 2 grid cell of a shape, recomputed here from its centre (row 0 = top, column 0 = left)."""
    return obj.center[1] * 2 // synthetic.SCENE_SIZE, obj.center[0] * 3 // synthetic.SCENE_SIZE


def the_one(objects: list[SceneObject], predicate) -> SceneObject:
    (obj,) = [o for o in objects if predicate(o)]
    return obj


def check_relation_answer(question: str, answer: str, objects: list[SceneObject]) -> SceneObject:
    """Recompute the answer of a relation question from the scene; return the object it is about."""
    rows, columns = ("top", "bottom"), ("left", "middle", "right")
    if match := re.fullmatch(r"What color is the (\w+)\?", question):
        target = the_one(objects, lambda o: o.shape == match[1])
        expected = target.color
    elif match := re.fullmatch(r"What shape is the (\w+) object\?", question):
        target = the_one(objects, lambda o: o.color == match[1])
        expected = target.shape
    elif match := re.fullmatch(r"Is the (\w+) (\w+)\?", question):
        target = the_one(objects, lambda o: o.shape == match[1])
        expected = "yes" if target.color == match[2] else "no"
        # "No" names a colour that is in the picture, on another object.
        assert any(o.color == match[2] for o in objects)
    elif match := re.fullmatch(r"What shape is at the (\w+) (\w+)\?", question):
        target = the_one(objects, lambda o: row_and_column(o) == (rows.index(match[1]), columns.index(match[2])))
        expected = target.shape
    elif match := re.fullmatch(r"What color is the shape (left|right) of the (\w+)\?", question):
        row, column = row_and_column(the_one(objects, lambda o: o.shape == match[2]))
        column += -1 if match[1] == "left" else 1
        target = the_one(objects, lambda o: row_and_column(o) == (row, column))
        expected = target.color
    elif match := re.fullmatch(r"Is the (\w+) (\w+) above the (\w+) (\w+)\?", question):
        target = the_one(objects, lambda o: (o.color, o.shape) == (match[1], match[2]))
        other = the_one(objects, lambda o: (o.color, o.shape) == (match[3], match[4]))
        assert row_and_column(target)[0] != row_and_column(other)[0]
        expected = "yes" if row_and_column(target)[0] < row_and_column(other)[0] else "no"
    else:
        pytest.fail(f"unexpected question {question!r}")
    assert answer == expected, question
    return target


def relation_questions(num_scenes: int, seed: int) -> list[tuple[str, str, str, str]]:
    rng = np.random.default_rng(seed)
    return [q for _ in range(num_scenes)
            for q in synthetic.ask_relation_questions(synthetic.sample_cluttered_scene(rng), rng)]


def test_relation_answers_are_true_of_their_cluttered_scenes():
    rng = np.random.default_rng(0)
    kinds = Counter()
    for _ in range(300):
        objects = synthetic.sample_cluttered_scene(rng)
        assert 4 <= len(objects) <= 6
        assert len({row_and_column(o) for o in objects}) == len(objects)  # one shape per cell
        assert all(synthetic.cell_of(o) == row_and_column(o) for o in objects)
        assert len({o.color for o in objects}) == min(len(objects), len(COLORS))  # real distractors
        questions = synthetic.ask_relation_questions(objects, rng)
        assert 5 <= len(questions) <= 6
        assert {synthetic.question_kind(t) for _, t, _, _ in questions} == {"binding", "position"}
        for question, question_type, answer_type, answer in questions:
            target = check_relation_answer(question, answer, objects)
            assert synthetic.question_target(question, objects) == target
            kinds[question_type, answer_type] += 1
    assert set(kinds) == {
        ("binding: color of <shape>", "other"), ("binding: shape of <color> object", "other"),
        ("binding: is <shape> <color>", "yes/no"), ("position: shape at <cell>", "other"),
        ("position: color left/right of <shape>", "other"), ("position: is <object> above <object>", "yes/no")}
    assert set(synthetic.RELATION_QUESTION_TYPES) == {t for t, _ in kinds}


def test_question_target_and_cell_of_on_a_hand_made_scene():
    objects = [SceneObject("circle", "red", (37, 56), 30), SceneObject("square", "blue", (111, 56), 30),
               SceneObject("square", "green", (185, 168), 30), SceneObject("triangle", "white", (111, 168), 30)]
    assert [synthetic.cell_of(o) for o in objects] == [(0, 0), (0, 1), (1, 2), (1, 1)]
    red_circle, blue_square, green_square, white_triangle = objects
    target = synthetic.question_target
    assert target("What color is the circle?", objects) == red_circle
    assert target("What color is the square?", objects) is None  # two squares: no single object
    assert target("What shape is the blue object?", objects) == blue_square
    assert target("Is the triangle red?", objects) == white_triangle
    assert target("What shape is at the bottom right?", objects) == green_square
    assert target("What shape is at the bottom left?", objects) is None
    assert target("What color is the shape right of the circle?", objects) == blue_square
    assert target("What color is the shape left of the triangle?", objects) is None
    assert target("Is the green square above the red circle?", objects) == green_square
    assert target("How many squares are there?", objects) is None


def test_relation_answers_are_balanced_and_the_question_alone_gives_little_away():
    questions = relation_questions(1500, seed=1)
    train, val = questions[:len(questions) // 2], questions[len(questions) // 2:]
    guesses = question_only_answers([q[0] for q in train], [q[3] for q in train], [q[0] for q in val], unseen="no")
    right, total = Counter(), Counter()
    for guess, (_, question_type, _, answer) in zip(guesses, val):
        right[question_type] += guess == answer
        total[question_type] += 1
    # Measured on these 1500 scenes: 22% (colour of a shape), 32% (shape of a colour), 51% and 51%
    # (yes/no), 33% (shape at a cell), 20% (colour beside a shape), 35% in all; chance is 20% / 33% / 50%.
    ceilings = {"binding: color of <shape>": 0.3, "binding: shape of <color> object": 0.42,
                "binding: is <shape> <color>": 0.58, "position: shape at <cell>": 0.42,
                "position: color left/right of <shape>": 0.3, "position: is <object> above <object>": 0.58}
    for question_type, ceiling in ceilings.items():
        assert right[question_type] / total[question_type] < ceiling, question_type
    assert sum(right.values()) / sum(total.values()) < 0.4
    for question_type in ("binding: is <shape> <color>", "position: is <object> above <object>"):
        answers = Counter(a for _, t, _, a in questions if t == question_type)
        assert 0.45 < answers["yes"] / (answers["yes"] + answers["no"]) < 0.55, question_type
    for question_type, values in (("binding: color of <shape>", COLORS),
                                  ("position: shape at <cell>", synthetic.SHAPES)):
        answers = Counter(a for _, t, _, a in questions if t == question_type)
        assert set(answers) == set(values) and max(answers.values()) / sum(answers.values()) < 0.45


def test_relations_dataset_keeps_its_scenes_and_is_deterministic(tmp_path):
    summary = synthetic.generate_dataset(tmp_path / "a", num_images=10, seed=4, relations=True)
    assert summary.relations and sorted(summary.scenes) == sorted(i for ids in summary.image_ids.values() for i in ids)
    for split in ("train2014", "val2014"):
        questions = {q["question_id"]: q["question"]
                     for q in load(tmp_path / "a" / f"v2_OpenEnded_mscoco_{split}_questions.json")["questions"]}
        for annotation in load(tmp_path / "a" / f"v2_mscoco_{split}_annotations.json")["annotations"]:
            assert annotation["question_type"] in synthetic.RELATION_QUESTION_TYPES
            assert [a["answer_id"] for a in annotation["answers"]] == list(range(1, 11))
            check_relation_answer(questions[annotation["question_id"]], annotation["multiple_choice_answer"],
                                  summary.scenes[annotation["image_id"]])
    synthetic.generate_dataset(tmp_path / "b", num_images=10, seed=4, relations=True)
    for name in ("v2_OpenEnded_mscoco_test-dev2015_questions.json", "v2_mscoco_train2014_annotations.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    plain = synthetic.generate_dataset(tmp_path / "c", num_images=4, seed=4)
    assert not plain.relations and len(plain.scenes) == 4


@pytest.mark.parametrize("flags", [["--min-objects", "3"], ["--max-objects", "7"],
                                   ["--min-objects", "5", "--max-objects", "4"]])
def test_relations_need_four_to_six_objects(tmp_path, capsys, flags):
    assert main(["synth", "--relations", "--out", str(tmp_path / "bad"), *flags]) == 1
    assert "--relations needs 4 <= --min-objects <= --max-objects <= 6" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_cli_synth_relations_passes_the_checks_of_vqa_prepare(tmp_path):
    """`vqa prepare` reads and checks the files with these two calls (the rest is spaCy, seconds to load)."""
    from vqa.prepare import find_split_files, load_split

    assert main(["synth", "--relations", "--out", str(tmp_path), "--images", "6", "--min-objects", "5"]) == 0
    splits = [load_split(sources) for sources in find_split_files(tmp_path, "v2", {})]
    assert [d.split for d in splits] == ["train2014", "val2014", "test-dev2015"]
    question_types = {t for d in splits if d.annotated for t in d.question_types}
    assert {synthetic.question_kind(t) for t in question_types} == {"binding", "position"}
