"""Small VQA datasets in the exact official v2 formats, over rendered images of shapes.

Each image shows 1-4 (up to 6 on request) coloured circles, squares or triangles on a grey background;
its questions ("what color is the circle?", "how many squares are there?",
"is there a red triangle?", "what shape is the blue object?") can only be answered
by looking, and the answers are balanced so that the question alone does not give
them away. Ten simulated humans answer each question, mostly right, sometimes
with another surface form ("2" / "two", "Yes", "red."), a synonym or a wrong
answer, so the official metric and the modal-answer rule have work to do.

The folder it writes is what ``vqa prepare --data-dir DIR --version v2`` and
``vqa features --images DIR/images`` read (and, with ``karpathy=True``,
``vqa features --karpathy DIR/coco``). This module owns the scenes, questions and
simulated answers; the modal-answer rule is `vqa.official`'s and every file is
written through `vqa.atomic`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from vqa import artifacts
from vqa.atomic import write_atomically, write_json_atomically
from vqa.errors import InputError
from vqa.official import modal_answer

IMAGE_SIZE = 224
BACKGROUND = (128, 128, 128)
# Saturated, far-apart colours: even a random-weight VGG16 separates them linearly.
COLORS = {"red": (230, 25, 25), "green": (20, 190, 40), "blue": (30, 60, 240),
          "yellow": (250, 230, 20), "white": (250, 250, 250)}
SHAPES = ("circle", "square", "triangle")
MAX_OBJECTS = 6
# Up to 4 shapes: one per quadrant; 5-6: a 3 x 2 grid of smaller shapes.
QUADRANT_OBJECTS = 4
MIN_RADIUS, MAX_RADIUS, MAX_JITTER = 40, 50, 6
SMALL_RADIUS = (28, 34)
TEST_DEV_QUESTION_OFFSET = 500
TRAIN_FRACTION = 0.8
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
# Other ways people write the same answer (case, punctuation, articles, synonyms).
ANSWER_VARIANTS = {
    "yes": ("Yes", "yes.", "yeah"), "no": ("No", "no.", "nope"),
    "red": ("Red", "red.", "bright red"), "green": ("Green", "green.", "dark green"),
    "blue": ("Blue", "blue.", "dark blue"), "yellow": ("Yellow", "yellow.", "gold"),
    "white": ("White", "white.", "silver"),
    "circle": ("Circle", "a circle", "round"), "square": ("Square", "a square", "box"),
    "triangle": ("Triangle", "a triangle", "triangular"),
}
# How many of the 10 humans stray from the true answer: at most 4, so it stays modal.
STRAY_COUNT_PROBABILITIES = (0.4, 0.25, 0.15, 0.12, 0.08)
_INFO = {"description": "Synthetic VQA v2-format dataset of rendered shapes (vqa synth)",
         "url": "https://visualqa.org", "version": "2.0", "year": 2017,
         "contributor": "vqa-keras", "date_created": "2017-04-26 17:07:13"}
_LICENSE = {"url": "http://creativecommons.org/licenses/by/4.0/",
            "name": "Creative Commons Attribution 4.0 International License"}


@dataclass(frozen=True)
class SceneObject:
    """One shape in an image: its kind, colour name, centre (x, y) and half-size in pixels."""

    shape: str
    color: str
    center: tuple[int, int]
    radius: int


@dataclass(frozen=True)
class SyntheticSummary:
    """What :func:`generate_dataset` wrote."""

    out_dir: Path
    image_ids: dict[str, list[int]] = field(default_factory=dict)
    num_questions: dict[str, int] = field(default_factory=dict)
    karpathy: bool = False


# --------------------------------------------------------------------------- scenes and images
def sample_scene(rng: np.random.Generator, *, num_objects: int | None = None,
                 max_objects: int = QUADRANT_OBJECTS, min_objects: int = 1) -> list[SceneObject]:
    """Draw 1-6 shapes, one per grid cell so they never overlap (2 x 2 cells up to 4, else 3 x 2).

    Args:
        rng: the random generator.
        num_objects: how many shapes (default: uniform in min_objects..max_objects).
        max_objects: the most shapes a scene may have, 1..6.
        min_objects: the fewest, 1..max_objects.

    Returns:
        The shapes, each with a random kind, colour, position and size.
    """
    count = int(rng.integers(min_objects, max_objects + 1)) if num_objects is None else num_objects
    columns = 2 if max_objects <= QUADRANT_OBJECTS else 3
    cell, row = IMAGE_SIZE // columns, IMAGE_SIZE // 2
    low, high = (MIN_RADIUS, MAX_RADIUS) if columns == 2 else SMALL_RADIUS
    objects = []
    for quadrant in rng.permutation(2 * columns)[:count]:
        # Big shapes, little jitter: random-weight VGG16 features then still encode
        # colour. A linear probe on one-shape images reads it at 94% (100 images)
        # and 98% (240), 4-fold CV; smaller, freer shapes (radius 30-45, +-12 px) gave 87%.
        radius = int(rng.integers(low, high + 1))
        jitter = max(0, min(MAX_JITTER, cell // 2 - radius - 3))
        x, y = (quadrant % columns) * cell + cell // 2, (quadrant // columns) * row + row // 2
        center = (x + int(rng.integers(-jitter, jitter + 1)), y + int(rng.integers(-jitter, jitter + 1)))
        objects.append(SceneObject(SHAPES[rng.integers(len(SHAPES))],
                                   list(COLORS)[rng.integers(len(COLORS))], center, radius))
    return objects


def render_scene(objects: list[SceneObject]) -> Image.Image:
    """Draw the shapes on a plain grey 224 x 224 RGB image.

    Args:
        objects: shapes from :func:`sample_scene`.

    Returns:
        A PIL RGB image.
    """
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in objects:
        (x, y), r, fill = obj.center, obj.radius, COLORS[obj.color]
        if obj.shape == "circle":
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((x - r, y - r, x + r, y + r), fill=fill)
        else:
            draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)
    return image


# --------------------------------------------------------------------------- questions and answers
def ask_questions(objects: list[SceneObject], rng: np.random.Generator) -> list[tuple[str, str, str, str]]:
    """Write questions about one scene whose answers depend on it.

    One question of each kind that the scene allows: colour of a unique shape,
    count of a shape (any of the three, so 0 is common), a yes/no presence
    question that is "yes" half the time, and the shape of a uniquely coloured object.

    Returns:
        ``(question, question_type, answer_type, answer)`` tuples.
    """
    questions = [_count_question(objects, rng), _presence_question(objects, rng)]
    shape_counts = Counter(obj.shape for obj in objects)
    color_counts = Counter(obj.color for obj in objects)
    unique_shapes = [obj for obj in objects if shape_counts[obj.shape] == 1]
    unique_colors = [obj for obj in objects if color_counts[obj.color] == 1]
    if unique_shapes:
        obj = unique_shapes[rng.integers(len(unique_shapes))]
        questions.append((f"What color is the {obj.shape}?", "what color is the", "other", obj.color))
    if unique_colors:
        obj = unique_colors[rng.integers(len(unique_colors))]
        questions.append((f"What shape is the {obj.color} object?", "what shape is the", "other", obj.shape))
    return [questions[i] for i in rng.permutation(len(questions))]


def _count_question(objects: list[SceneObject], rng: np.random.Generator) -> tuple[str, str, str, str]:
    """'How many <shape>s are there?', half the time about the scene's commonest shape.

    Asking only about a random kind would make "0" and "1" most answers; the
    commonest kind spreads the counts over 1-4.
    """
    shape = SHAPES[rng.integers(len(SHAPES))]
    if rng.random() < 0.5:
        shape = Counter(obj.shape for obj in objects).most_common(1)[0][0]
    count = sum(obj.shape == shape for obj in objects)
    return f"How many {shape}s are there?", "how many", "number", str(count)


def _presence_question(objects: list[SceneObject], rng: np.random.Generator) -> tuple[str, str, str, str]:
    """'Is there a <color> <shape>?', true for exactly half of the draws."""
    present = {(obj.color, obj.shape) for obj in objects}
    if rng.random() < 0.5:
        color, shape = sorted(present)[rng.integers(len(present))]
        answer = "yes"
    else:
        absent = sorted((c, s) for c in COLORS for s in SHAPES if (c, s) not in present)
        color, shape = absent[rng.integers(len(absent))]
        answer = "no"
    return f"Is there a {color} {shape}?", "is there a", "yes/no", answer


def simulate_human_answers(answer: str, answer_type: str, rng: np.random.Generator) -> list[dict]:
    """Simulate the 10 human answers to a question whose true answer is ``answer``.

    At most 4 humans stray (another surface form, a synonym, or a wrong answer),
    so the true answer is always the most common one.

    Returns:
        10 dicts ``{"answer", "answer_confidence", "answer_id"}`` (ids 1..10).
    """
    num_stray = int(rng.choice(len(STRAY_COUNT_PROBABILITIES), p=STRAY_COUNT_PROBABILITIES))
    strays = set(rng.permutation(artifacts.NUM_ANSWERS_PER_QUESTION)[:num_stray].tolist())
    answers = []
    for index in range(artifacts.NUM_ANSWERS_PER_QUESTION):
        text, confidence = answer, "yes"
        if index in strays:
            text, confidence = _stray_answer(answer, answer_type, rng)
        answers.append({"answer": text, "answer_confidence": confidence, "answer_id": index + 1})
    return answers


def _stray_answer(answer: str, answer_type: str, rng: np.random.Generator) -> tuple[str, str]:
    """One human's off-canonical answer and their confidence in it."""
    if rng.random() < 0.6:
        variants = (NUMBER_WORDS[int(answer)], answer + ".") if answer_type == "number" else ANSWER_VARIANTS[answer]
        return variants[rng.integers(len(variants))], ("yes", "maybe")[rng.integers(2)]
    if answer_type == "yes/no":
        wrong = "no" if answer == "yes" else "yes"
    elif answer_type == "number":
        wrong = str(max(0, int(answer) + (-1, 1)[rng.integers(2)]))
    else:
        pool = [a for a in (COLORS if answer in COLORS else SHAPES) if a != answer]
        wrong = pool[rng.integers(len(pool))]
    return wrong, ("maybe", "no")[rng.integers(2)]


# --------------------------------------------------------------------------- the dataset
def generate_dataset(out_dir: Path, *, num_images: int = 200, seed: int = 0, karpathy: bool = False,
                     num_test_dev_images: int | None = None, max_objects: int = QUADRANT_OBJECTS,
                     min_objects: int = 1) -> SyntheticSummary:
    """Write a small VQA v2-format dataset with rendered images to ``out_dir``.

    Writes ``v2_OpenEnded_mscoco_{train2014,val2014,test-dev2015}_questions.json``,
    ``v2_mscoco_{train2014,val2014}_annotations.json`` and
    ``images/{train2014,val2014}/COCO_<split>_<id:012d>.jpg`` (~80% train, 20% val;
    test-dev asks new questions about some val images). Deterministic given ``seed``.

    Args:
        out_dir: output folder (created; existing files of the same names are replaced).
        num_images: number of images, at least 2.
        seed: random seed.
        karpathy: also write ``coco/dataset.json`` and ``coco/vgg_feats.mat``
            (features from the random-weight VGG16; slow: ~10 images/s on a CPU).
        num_test_dev_images: val images that get test-dev questions (default: half, at least 1).
        max_objects: the most shapes per image, 1..6 (fewer make the questions easier; 5-6 use
            a 3 x 2 grid of smaller shapes).
        min_objects: the fewest shapes per image, 1..max_objects.

    Returns:
        A :class:`SyntheticSummary` (image ids and question counts per split).
    """
    if not 1 <= min_objects <= max_objects <= MAX_OBJECTS:
        raise InputError(f"need 1 <= --min-objects <= --max-objects <= {MAX_OBJECTS}, got {min_objects} and {max_objects}")
    if num_images < 2:
        raise InputError(f"--images must be at least 2 (one train and one val image), got {num_images}")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    # COCO-like ids, unique across splits.
    ids = sorted(rng.choice(np.arange(1, 600_000), size=num_images, replace=False).tolist())
    ids = [ids[i] for i in rng.permutation(num_images)]
    num_train = min(num_images - 1, max(1, round(TRAIN_FRACTION * num_images)))
    splits = {artifacts.TRAIN_SPLIT: sorted(ids[:num_train]), artifacts.VAL_SPLIT: sorted(ids[num_train:])}
    scenes = {image_id: sample_scene(rng, max_objects=max_objects, min_objects=min_objects) for split_ids in splits.values() for image_id in split_ids}
    _write_images(out_dir, splits, scenes)
    num_questions = {}
    for split, split_ids in splits.items():
        num_questions[split] = _write_split_json(out_dir, split, split_ids, scenes, rng)
    val_ids = splits[artifacts.VAL_SPLIT]
    test_dev_count = num_test_dev_images or max(1, len(val_ids) // 2)
    num_questions[artifacts.TEST_DEV_SPLIT] = _write_split_json(
        out_dir, artifacts.TEST_DEV_SPLIT, val_ids[:test_dev_count], scenes, rng, annotated=False)
    if karpathy:
        write_karpathy_files(out_dir, splits)
    return SyntheticSummary(out_dir, dict(splits), num_questions, karpathy)


def _write_images(out_dir: Path, splits: dict[str, list[int]], scenes: dict[int, list[SceneObject]]) -> None:
    """Render and save every image as a COCO-named JPEG."""
    for split, split_ids in splits.items():
        (out_dir / artifacts.IMAGES_DIR / split).mkdir(parents=True, exist_ok=True)
        for image_id in tqdm(split_ids, desc=f"render {split}", unit="img", leave=False):
            path = image_path(out_dir, split, image_id)
            image = render_scene(scenes[image_id])
            write_atomically(path, lambda tmp, image=image: image.save(tmp, format="JPEG", quality=95))


def image_path(out_dir: Path, split: str, image_id: int) -> Path:
    """Where :func:`generate_dataset` puts image ``image_id`` of ``split``."""
    return Path(out_dir) / artifacts.IMAGES_DIR / split / artifacts.COCO_IMAGE_FILE.format(
        split=split, image_id=image_id)


def _write_split_json(out_dir: Path, split: str, image_ids: list[int], scenes: dict[int, list[SceneObject]],
                      rng: np.random.Generator, *, annotated: bool = True) -> int:
    """Write one split's questions JSON (and annotations JSON if ``annotated``); return the question count."""
    offset = 0 if annotated else TEST_DEV_QUESTION_OFFSET
    questions, annotations = [], []
    for image_id in image_ids:
        for k, (text, question_type, answer_type, answer) in enumerate(ask_questions(scenes[image_id], rng)):
            question_id = image_id * 1000 + offset + k
            questions.append({"image_id": image_id, "question": text, "question_id": question_id})
            answers = simulate_human_answers(answer, answer_type, rng)
            annotations.append({
                "question_type": question_type,
                "multiple_choice_answer": modal_answer([a["answer"] for a in answers]),
                "answers": answers, "image_id": image_id, "answer_type": answer_type,
                "question_id": question_id})
    write_json_atomically(out_dir / artifacts.V2_QUESTIONS_JSON.format(split=split), {
        "info": _INFO, "task_type": "Open-Ended", "data_type": "mscoco", "license": _LICENSE,
        "data_subtype": split, "questions": questions})
    if annotated:
        write_json_atomically(out_dir / artifacts.V2_ANNOTATIONS_JSON.format(split=split), {
            "info": _INFO, "license": _LICENSE, "data_subtype": split, "annotations": annotations,
            "data_type": "mscoco"})
    return len(questions)


def write_karpathy_files(out_dir: Path, splits: dict[str, list[int]]) -> int:
    """Write ``coco/dataset.json`` and ``coco/vgg_feats.mat`` (random-weight VGG16 fc2) for the images.

    Args:
        out_dir: the dataset folder holding ``images/``.
        splits: image ids per split, as written by :func:`generate_dataset`.

    Returns:
        The number of images (columns of ``feats``).
    """
    import scipy.io

    from vqa.features import load_cnn, load_image, preprocess_images

    entries = [(split, image_id) for split, split_ids in splits.items() for image_id in split_ids]
    cnn = load_cnn("random")
    columns = []
    for start in tqdm(range(0, len(entries), 32), desc="VGG16 (random) fc2", unit="batch"):
        batch = np.stack([load_image(image_path(out_dir, s, i)) for s, i in entries[start:start + 32]])
        columns.append(np.asarray(cnn.predict_on_batch(preprocess_images(batch)), dtype=np.float32).T)
    karpathy_dir = out_dir / artifacts.KARPATHY_DIR
    karpathy_dir.mkdir(parents=True, exist_ok=True)
    feats = np.concatenate(columns, axis=1)
    write_atomically(karpathy_dir / artifacts.KARPATHY_FEATS_MAT,
                      lambda tmp: scipy.io.savemat(tmp, {"feats": feats}, appendmat=False))
    images = [{"imgid": imgid, "cocoid": image_id, "split": "train" if split == artifacts.TRAIN_SPLIT else "val",
               "filepath": split, "filename": artifacts.COCO_IMAGE_FILE.format(split=split, image_id=image_id),
               "sentences": []} for imgid, (split, image_id) in enumerate(entries)]
    write_json_atomically(karpathy_dir / artifacts.KARPATHY_DATASET_JSON, {"images": images, "dataset": "coco"})
    return len(entries)
