"""Small VQA datasets in the exact official v2 formats, over rendered images of shapes.

Each image shows 1-4 (up to 6 on request) coloured circles, squares or triangles on a grey background;
its questions ("what color is the circle?", "how many squares are there?",
"is there a red triangle?", "what shape is the blue object?") can only be answered
by looking, and the answers are balanced so that the question alone does not give
them away. Ten simulated humans answer each question, mostly right, sometimes
with another surface form ("2" / "two", "Yes", "red."), a synonym or a wrong
answer, so the official metric and the modal-answer rule have work to do.

With ``relations=True`` (``vqa synth --relations``) each image holds 4-6 shapes of
different colours on a 3 x 2 grid, and the questions need to know which object has
which colour and shape ("binding": "is the square blue?") or where it is
("position": "what shape is at the top left?"). A pooled image vector keeps which
colours and shapes occur but not that; an attention model can keep both.

The folder it writes is what ``vqa prepare --data-dir DIR --version v2`` and
``vqa features --images DIR/images`` read (and, with ``karpathy=True``,
``vqa features --karpathy DIR/coco``). This module owns the scenes, questions and
simulated answers; the modal-answer rule is `vqa.official`'s and every file is
written through `vqa.atomic`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from vqa import artifacts
from vqa.atomic import write_atomically, write_json_atomically
from vqa.config import (MAX_OBJECTS, QUADRANT_OBJECTS, RELATION_MAX_OBJECTS, RELATION_MIN_OBJECTS,
                        SYNTH_DISAGREEMENTS, SYNTH_IMAGES, SYNTH_SEED)
from vqa.errors import InputError
from vqa.official import modal_answer

SCENE_SIZE = 224  # side in pixels of a rendered scene (VGG16 resizes images to its own input anyway)
BACKGROUND = (128, 128, 128)
# Saturated, far-apart colours: even a random-weight VGG16 separates them linearly.
COLORS = {"red": (230, 25, 25), "green": (20, 190, 40), "blue": (30, 60, 240),
          "yellow": (250, 230, 20), "white": (250, 250, 250)}
SHAPES = ("circle", "square", "triangle")
MIN_RADIUS, MAX_RADIUS, MAX_JITTER = 40, 50, 6
SMALL_RADIUS = (28, 34)
# The 3 x 2 grid that relation questions talk about ("at the top left", "left of").
GRID_ROWS, GRID_COLUMNS = 2, 3
ROW_NAMES, COLUMN_NAMES = ("top", "bottom"), ("left", "middle", "right")
# Relation question types: "<kind>: <template>", so per-question-type reports keep the kinds apart.
BINDING, POSITION = "binding", "position"
BINDING_COLOR, BINDING_SHAPE, BINDING_YES_NO = ("binding: color of <shape>", "binding: shape of <color> object",
                                                "binding: is <shape> <color>")
POSITION_SHAPE, POSITION_BESIDE, POSITION_ABOVE = ("position: shape at <cell>", "position: color left/right of <shape>",
                                                   "position: is <object> above <object>")
RELATION_QUESTION_TYPES = (BINDING_COLOR, BINDING_SHAPE, BINDING_YES_NO,
                           POSITION_SHAPE, POSITION_BESIDE, POSITION_ABOVE)
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
# --disagreement real: P(k of the 10 humans give the true answer), k = 10, 9, ..., 1, per answer type.
# Calibrated (tests/test_soft_loss.py checks it) so that the mean human accuracy, each human's answer
# scored min(matches among the other 9 / 3, 1) after the official normalisation, is the "Human"
# accuracy on real images, open-ended, of Antol et al. 2015 ("VQA: Visual Question Answering", ICCV,
# Table 2): yes/no 95.77, number 83.39, other 72.67 (percent).
HUMAN_ACCURACY = {"yes/no": 95.77, "number": 83.39, "other": 72.67}
REAL_AGREEMENT = {
    "yes/no": (0.7, 0.069, 0.055, 0.044, 0.035, 0.028, 0.023, 0.018, 0.015, 0.013),
    "number": (0.4, 0.117, 0.1, 0.085, 0.072, 0.061, 0.052, 0.044, 0.038, 0.031),
    # Few answers to choose from (5 colours, 3 shapes) make wrong answers agree by chance, so the
    # true answer's share must fall lower than on real "other" questions for the same accuracy.
    "other": (0.12, 0.065, 0.071, 0.078, 0.086, 0.095, 0.104, 0.115, 0.126, 0.14),
}
RIVAL_SHARE = 0.3  # a straying human gives the question's one rival answer (so it can win), else any other
VARIANT_SHARE = 0.1  # a human with the true answer writes a form that normalises to it ("Yes", "two")
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
    relations: bool = False
    # image id -> its shapes (in memory only): where each named object is, for tests.
    scenes: dict[int, list[SceneObject]] = field(default_factory=dict, repr=False)


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
    columns = 2 if max_objects <= QUADRANT_OBJECTS else GRID_COLUMNS
    low, high = (MIN_RADIUS, MAX_RADIUS) if columns == 2 else SMALL_RADIUS
    objects = []
    for quadrant in rng.permutation(2 * columns)[:count]:
        # Big shapes, little jitter: random-weight VGG16 features then still encode
        # colour. A linear probe on one-shape images reads it at 94% (100 images)
        # and 98% (240), 4-fold CV; smaller, freer shapes (radius 30-45, +-12 px) gave 87%.
        center, radius = _place(int(quadrant), columns, (low, high), rng)
        objects.append(SceneObject(SHAPES[rng.integers(len(SHAPES))],
                                   list(COLORS)[rng.integers(len(COLORS))], center, radius))
    return objects


def _place(cell_index: int, columns: int, radii: tuple[int, int],
           rng: np.random.Generator) -> tuple[tuple[int, int], int]:
    """Centre (x, y) and radius of a shape in cell ``cell_index`` (row-major) of a ``columns`` x 2 grid."""
    cell, row = SCENE_SIZE // columns, SCENE_SIZE // 2
    radius = int(rng.integers(radii[0], radii[1] + 1))
    jitter = max(0, min(MAX_JITTER, cell // 2 - radius - 3))
    x, y = (cell_index % columns) * cell + cell // 2, (cell_index // columns) * row + row // 2
    return (x + int(rng.integers(-jitter, jitter + 1)), y + int(rng.integers(-jitter, jitter + 1))), radius


def sample_cluttered_scene(rng: np.random.Generator, *, min_objects: int = RELATION_MIN_OBJECTS,
                           max_objects: int = RELATION_MAX_OBJECTS) -> list[SceneObject]:
    """Draw 4-6 shapes on the 3 x 2 grid for the relation questions (``vqa synth --relations``).

    Unlike :func:`sample_scene`, the colours differ from object to object (all five
    are used before one repeats) and at least one kind of shape occurs exactly once.
    Different colours make every other object a real distractor: the colour of
    "the circle" is one of several present, so an image summary that keeps which
    colours occur but not which object has which cannot tell them apart.

    Args:
        rng: the random generator.
        min_objects: the fewest shapes, 4..max_objects.
        max_objects: the most shapes, at most 6 (one per cell).

    Returns:
        The shapes, one per cell (see :func:`cell_of`).
    """
    count = int(rng.integers(min_objects, max_objects + 1))
    cells = rng.permutation(GRID_ROWS * GRID_COLUMNS)[:count]
    while True:  # a uniquely named shape anchors the "circle" questions
        shapes = rng.integers(len(SHAPES), size=count)
        if 1 in Counter(shapes.tolist()).values():
            break
    palette = list(COLORS)
    colors = rng.permutation(len(palette)).tolist()  # all five before any repeats
    colors += rng.integers(len(palette), size=max(0, count - len(palette))).tolist()
    objects = []
    for cell_index, shape, color in zip(cells.tolist(), shapes.tolist(), colors):
        center, radius = _place(cell_index, GRID_COLUMNS, SMALL_RADIUS, rng)
        objects.append(SceneObject(SHAPES[shape], palette[color], center, radius))
    return objects


def cell_of(obj: SceneObject) -> tuple[int, int]:
    """The (row, column) of a shape on the 3 x 2 grid: row 0 top / 1 bottom, column 0 left .. 2 right.

    Only meaningful for scenes drawn on that grid (5-6 shapes, or :func:`sample_cluttered_scene`).
    """
    x, y = obj.center
    return min(GRID_ROWS - 1, y // (SCENE_SIZE // GRID_ROWS)), min(GRID_COLUMNS - 1, x // (SCENE_SIZE // GRID_COLUMNS))


def render_scene(objects: list[SceneObject]) -> Image.Image:
    """Draw the shapes on a plain grey 224 x 224 RGB image.

    Args:
        objects: shapes from :func:`sample_scene`.

    Returns:
        A PIL RGB image.
    """
    image = Image.new("RGB", (SCENE_SIZE, SCENE_SIZE), BACKGROUND)
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


# --------------------------------------------------------------------------- relation questions
def ask_relation_questions(objects: list[SceneObject], rng: np.random.Generator) -> list[tuple[str, str, str, str]]:
    """Write binding and position questions about one cluttered scene (``vqa synth --relations``).

    One question of each of the six kinds the scene allows (usually all six), in
    random order. Binding questions name one object among several and ask about
    it ("What color is the circle?", "What shape is the red object?", "Is the
    square blue?"); position questions ask where ("What shape is at the top
    left?", "What color is the shape left of the circle?", "Is the red square
    above the blue circle?"). Colour and shape answers are drawn uniformly over the
    values the scene offers, and yes/no is a fair coin, so neither the question
    text nor which colours and shapes occur gives the answer away.

    Args:
        objects: a scene from :func:`sample_cluttered_scene`.
        rng: the random generator.

    Returns:
        ``(question, question_type, answer_type, answer)`` tuples; question_type is one of
        :data:`RELATION_QUESTION_TYPES` and starts with its kind (``binding:`` or ``position:``).
    """
    askers = (_binding_color, _binding_shape, _binding_yes_no, _position_shape, _position_beside, _position_above)
    questions = [question for question in (ask(objects, rng) for ask in askers) if question is not None]
    return [questions[i] for i in rng.permutation(len(questions))]


def question_kind(question_type: str) -> str | None:
    """``"binding"`` or ``"position"`` for a relation question type, else None."""
    kind = question_type.split(":", 1)[0]
    return kind if question_type in RELATION_QUESTION_TYPES else None


def _unique_by(objects: list[SceneObject], key) -> list[SceneObject]:
    """The objects whose ``key`` (shape, colour, ...) no other object in the scene shares."""
    counts = Counter(key(obj) for obj in objects)
    return [obj for obj in objects if counts[key(obj)] == 1]


def _pick_balanced(candidates: list[tuple[str, str]], question_type: str,
                   rng: np.random.Generator) -> tuple[str, str, str, str] | None:
    """One of the (question, answer) candidates, its answer uniform over the distinct answers on offer.

    Choosing the answer first means a colour or shape that occurs twice in the
    scene is no likelier to be the answer than one that occurs once.
    """
    if not candidates:
        return None
    answers = sorted({answer for _, answer in candidates})
    answer = answers[rng.integers(len(answers))]
    questions = [question for question, candidate in candidates if candidate == answer]
    return questions[rng.integers(len(questions))], question_type, "other", answer


def _cell_name(obj: SceneObject) -> str:
    row, column = cell_of(obj)
    return f"{ROW_NAMES[row]} {COLUMN_NAMES[column]}"


def _binding_color(objects, rng):
    """'What color is the <shape>?' about a shape that occurs once."""
    candidates = [(f"What color is the {obj.shape}?", obj.color) for obj in _unique_by(objects, _shape)]
    return _pick_balanced(candidates, BINDING_COLOR, rng)


def _binding_shape(objects, rng):
    """'What shape is the <color> object?' about a colour that occurs once."""
    candidates = [(f"What shape is the {obj.color} object?", obj.shape) for obj in _unique_by(objects, _color)]
    return _pick_balanced(candidates, BINDING_SHAPE, rng)


def _binding_yes_no(objects, rng):
    """'Is the <shape> <color>?' about a shape that occurs once; "yes" half the time."""
    unique = _unique_by(objects, _shape)
    if not unique:
        return None
    obj = unique[rng.integers(len(unique))]
    if rng.random() < 0.5:
        return f"Is the {obj.shape} {obj.color}?", BINDING_YES_NO, "yes/no", "yes"
    # "No" names a colour another object has, so the colour is in the picture either way.
    others = sorted({other.color for other in objects} - {obj.color}) or sorted(set(COLORS) - {obj.color})
    return f"Is the {obj.shape} {others[rng.integers(len(others))]}?", BINDING_YES_NO, "yes/no", "no"


def _position_shape(objects, rng):
    """'What shape is at the <row> <column>?' about an occupied cell."""
    candidates = [(f"What shape is at the {_cell_name(obj)}?", obj.shape) for obj in objects]
    return _pick_balanced(candidates, POSITION_SHAPE, rng)


def _position_beside(objects, rng):
    """'What color is the shape left/right of the <shape>?': the neighbour in the same row of a unique shape."""
    by_cell = {cell_of(obj): obj for obj in objects}
    candidates = []
    for anchor in _unique_by(objects, _shape):
        row, column = cell_of(anchor)
        for side, step in (("left", -1), ("right", 1)):
            if (neighbour := by_cell.get((row, column + step))) is not None:
                candidates.append((f"What color is the shape {side} of the {anchor.shape}?", neighbour.color))
    return _pick_balanced(candidates, POSITION_BESIDE, rng)


def _position_above(objects, rng):
    """'Is the <color shape> above the <color shape>?' about two unique objects in different rows; "yes" half the time.

    The pair is drawn first and a fair coin decides which of the two is named first.
    """
    unique = _unique_by(objects, _description)
    pairs = [(top, bottom) for top in unique for bottom in unique if cell_of(top)[0] < cell_of(bottom)[0]]
    if not pairs:
        return None
    top, bottom = pairs[rng.integers(len(pairs))]
    first, second, answer = (top, bottom, "yes") if rng.random() < 0.5 else (bottom, top, "no")
    return (f"Is the {first.color} {first.shape} above the {second.color} {second.shape}?",
            POSITION_ABOVE, "yes/no", answer)


def _shape(obj: SceneObject) -> str:
    return obj.shape


def _color(obj: SceneObject) -> str:
    return obj.color


def _description(obj: SceneObject) -> tuple[str, str]:
    return obj.color, obj.shape


_TARGET_PATTERNS = (
    # (pattern, the one object it names): binding questions, then position questions.
    (re.compile(r"What color is the (\w+)\?"), lambda m, o: o.shape == m[1]),
    (re.compile(r"What shape is the (\w+) object\?"), lambda m, o: o.color == m[1]),
    (re.compile(r"Is the (\w+) (\w+)\?"), lambda m, o: o.shape == m[1]),
    (re.compile(r"What shape is at the (\w+) (\w+)\?"), lambda m, o: _cell_name(o) == f"{m[1]} {m[2]}"),
    (re.compile(r"Is the (\w+) (\w+) above the \w+ \w+\?"), lambda m, o: (o.color, o.shape) == (m[1], m[2])),
)
_BESIDE_PATTERN = re.compile(r"What color is the shape (left|right) of the (\w+)\?")


def question_target(question: str, objects: list[SceneObject]) -> SceneObject | None:
    """The object a binding or position question is about, found in its scene.

    "What color is the circle?" -> the circle; "What shape is the red object?" ->
    the red object; "Is the square blue?" -> the square; "What shape is at the top
    left?" -> the shape in that cell; "What color is the shape left of the
    circle?" -> that shape (the one whose colour is the answer, not the circle);
    "Is the red square above the blue circle?" -> the red square (the first named).

    Args:
        question: a question as written by :func:`ask_relation_questions` (or the
            two binding questions of :func:`ask_questions`).
        objects: the scene it was asked about (``SyntheticSummary.scenes[image_id]``).

    Returns:
        The object, or None when the question is of another kind or names no single object.
    """
    if match := _BESIDE_PATTERN.fullmatch(question):
        anchor = _the_one(objects, lambda obj: obj.shape == match[2])
        if anchor is None:
            return None
        row, column = cell_of(anchor)
        step = -1 if match[1] == "left" else 1
        return _the_one(objects, lambda obj: cell_of(obj) == (row, column + step))
    for pattern, names in _TARGET_PATTERNS:
        if match := pattern.fullmatch(question):
            return _the_one(objects, lambda obj, match=match, names=names: names(match, obj))
    return None


def _the_one(objects: list[SceneObject], predicate) -> SceneObject | None:
    matches = [obj for obj in objects if predicate(obj)]
    return matches[0] if len(matches) == 1 else None


def simulate_human_answers(answer: str, answer_type: str, rng: np.random.Generator, *,
                           disagreement: str = SYNTH_DISAGREEMENTS[0]) -> list[dict]:
    """Simulate the 10 human answers to a question whose true answer is ``answer``.

    ``disagreement="low"``: at most 4 humans stray (another surface form, a synonym, or a wrong
    answer), so the true answer is always the most common one. ``"real"``: `_real_human_answers`.

    Returns:
        10 dicts ``{"answer", "answer_confidence", "answer_id"}`` (ids 1..10).
    """
    if disagreement != SYNTH_DISAGREEMENTS[0]:
        texts = _real_human_answers(answer, answer_type, rng)
        return [{"answer": text, "answer_confidence": "yes" if confident else "maybe", "answer_id": index + 1}
                for index, (text, confident) in enumerate(texts)]
    num_stray = int(rng.choice(len(STRAY_COUNT_PROBABILITIES), p=STRAY_COUNT_PROBABILITIES))
    strays = set(rng.permutation(artifacts.NUM_ANSWERS_PER_QUESTION)[:num_stray].tolist())
    answers = []
    for index in range(artifacts.NUM_ANSWERS_PER_QUESTION):
        text, confidence = answer, "yes"
        if index in strays:
            text, confidence = _stray_answer(answer, answer_type, rng)
        answers.append({"answer": text, "answer_confidence": confidence, "answer_id": index + 1})
    return answers


def _real_human_answers(answer: str, answer_type: str, rng: np.random.Generator) -> list[tuple[str, bool]]:
    """Ten (answer, gave the true answer) pairs disagreeing as VQA's annotators do (``REAL_AGREEMENT``).

    k humans give the true answer (a tenth of them in a form that normalises to it); each of the
    others gives the question's rival answer (``RIVAL_SHARE``) or any other answer of the kind
    (a synonym that does not normalise to the true one, or a wrong answer), so the true answer
    need not be modal and a wrong one can reach 3 votes.
    """
    probabilities = REAL_AGREEMENT[answer_type]
    agreeing = len(probabilities) - int(rng.choice(len(probabilities), p=probabilities))
    rival = _wrong_answer(answer, answer_type, rng)
    if answer_type == "number":
        same, others = (NUMBER_WORDS[int(answer)], answer + "."), [str(n) for n in range(len(NUMBER_WORDS))]
    else:
        same = ANSWER_VARIANTS[answer][:2]
        others = [*(("yes", "no") if answer_type == "yes/no" else COLORS if answer in COLORS else SHAPES),
                  ANSWER_VARIANTS[answer][2]]
    others = [other for other in others if other != answer]
    texts = []
    for index in range(artifacts.NUM_ANSWERS_PER_QUESTION):
        if index < agreeing:
            texts.append((same[rng.integers(len(same))] if rng.random() < VARIANT_SHARE else answer, True))
        else:
            texts.append((rival if rng.random() < RIVAL_SHARE else others[rng.integers(len(others))], False))
    return [texts[i] for i in rng.permutation(len(texts))]


def _wrong_answer(answer: str, answer_type: str, rng: np.random.Generator) -> str:
    """A wrong answer of the same kind: the other of yes/no, a count off by one, another colour or shape."""
    if answer_type == "yes/no":
        return "no" if answer == "yes" else "yes"
    if answer_type == "number":
        return str(max(0, int(answer) + (-1, 1)[rng.integers(2)]))
    pool = [a for a in (COLORS if answer in COLORS else SHAPES) if a != answer]
    return pool[rng.integers(len(pool))]


def _stray_answer(answer: str, answer_type: str, rng: np.random.Generator) -> tuple[str, str]:
    """One human's off-canonical answer and their confidence in it."""
    if rng.random() < 0.6:
        variants = (NUMBER_WORDS[int(answer)], answer + ".") if answer_type == "number" else ANSWER_VARIANTS[answer]
        return variants[rng.integers(len(variants))], ("yes", "maybe")[rng.integers(2)]
    wrong = _wrong_answer(answer, answer_type, rng)
    return wrong, ("maybe", "no")[rng.integers(2)]


# --------------------------------------------------------------------------- the dataset
def generate_dataset(out_dir: Path, *, num_images: int = SYNTH_IMAGES, seed: int = SYNTH_SEED, karpathy: bool = False,
                     num_test_dev_images: int | None = None, max_objects: int | None = None,
                     min_objects: int | None = None, relations: bool = False,
                     disagreement: str = SYNTH_DISAGREEMENTS[0]) -> SyntheticSummary:
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
        max_objects: the most shapes per image, 1..6 (default 4; fewer make the questions easier;
            5-6 use a 3 x 2 grid of smaller shapes). With ``relations``, 4..6 (default 6).
        min_objects: the fewest shapes per image, 1..max_objects (default 1; with ``relations``, 4).
        relations: cluttered scenes on the 3 x 2 grid (:func:`sample_cluttered_scene`) and
            binding and position questions (:func:`ask_relation_questions`) instead of the
            colour / count / presence / shape ones.
        disagreement: how the 10 simulated humans disagree: "low" (at most 4 stray) or "real"
            (``REAL_AGREEMENT``, calibrated to VQA's human accuracy per answer type).

    Returns:
        A :class:`SyntheticSummary` (image ids and question counts per split, and every scene).
    """
    low = RELATION_MIN_OBJECTS if relations else 1
    high = RELATION_MAX_OBJECTS if relations else MAX_OBJECTS
    min_objects = low if min_objects is None else min_objects
    max_objects = (RELATION_MAX_OBJECTS if relations else QUADRANT_OBJECTS) if max_objects is None else max_objects
    if not low <= min_objects <= max_objects <= high:
        raise InputError(f"{'--relations needs' if relations else 'need'} {low} <= --min-objects <= --max-objects "
                         f"<= {high}, got {min_objects} and {max_objects}")
    if disagreement not in SYNTH_DISAGREEMENTS:
        raise InputError(f"--disagreement must be one of {', '.join(SYNTH_DISAGREEMENTS)}, got {disagreement!r}")
    if num_images < 2:
        raise InputError(f"--images must be at least 2 (one train and one val image), got {num_images}")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    # COCO-like ids, unique across splits.
    ids = sorted(rng.choice(np.arange(1, 600_000), size=num_images, replace=False).tolist())
    ids = [ids[i] for i in rng.permutation(num_images)]
    num_train = min(num_images - 1, max(1, round(TRAIN_FRACTION * num_images)))
    splits = {artifacts.TRAIN_SPLIT: sorted(ids[:num_train]), artifacts.VAL_SPLIT: sorted(ids[num_train:])}
    sample, ask = (sample_cluttered_scene, ask_relation_questions) if relations else (sample_scene, ask_questions)
    scenes = {image_id: sample(rng, max_objects=max_objects, min_objects=min_objects)
              for split_ids in splits.values() for image_id in split_ids}
    _write_images(out_dir, splits, scenes)
    num_questions = {}
    for split, split_ids in splits.items():
        num_questions[split] = _write_split_json(out_dir, split, split_ids, scenes, rng, ask=ask,
                                                 disagreement=disagreement)
    val_ids = splits[artifacts.VAL_SPLIT]
    test_dev_count = num_test_dev_images or max(1, len(val_ids) // 2)
    num_questions[artifacts.TEST_DEV_SPLIT] = _write_split_json(
        out_dir, artifacts.TEST_DEV_SPLIT, val_ids[:test_dev_count], scenes, rng, ask=ask, annotated=False)
    if karpathy:
        write_karpathy_files(out_dir, splits)
    return SyntheticSummary(out_dir, dict(splits), num_questions, karpathy, relations, scenes)


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
                      rng: np.random.Generator, *, ask=ask_questions, annotated: bool = True,
                      disagreement: str = SYNTH_DISAGREEMENTS[0]) -> int:
    """Write one split's questions JSON (and annotations JSON if ``annotated``); return the question count.

    ``ask(objects, rng)`` writes an image's questions (:func:`ask_questions` or :func:`ask_relation_questions`).
    """
    offset = 0 if annotated else TEST_DEV_QUESTION_OFFSET
    questions, annotations = [], []
    for image_id in image_ids:
        for k, (text, question_type, answer_type, answer) in enumerate(ask(scenes[image_id], rng)):
            question_id = image_id * 1000 + offset + k
            questions.append({"image_id": image_id, "question": text, "question_id": question_id})
            answers = simulate_human_answers(answer, answer_type, rng, disagreement=disagreement)
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
