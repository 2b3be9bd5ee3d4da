"""The prepared data (``vqa_data.h5`` and the tutorial's text files): schema, only writer, only readers.

``vqa_data.h5`` holds the vocabulary (``vocabulary/words`` str (V,),
``vocabulary/embeddings`` float32 (V, 300)) and one group per split (named like
``train2014``) with ``token_ids`` int32 (N, T), ``lengths`` int32 (N,),
``question_ids`` int64 (N,), ``image_ids`` int64 (N,), ``questions`` str (N,);
annotated splits add ``question_types`` and ``answer_types`` int16 (N,) (codes into
the file's lists), ``labels`` int32 (N,) (-1 = outside the top K),
``modal_answers`` str (N,), ``answers`` str (N, 10) and, since format 2, the soft
targets ``score_classes`` int32 (N, W) and ``scores`` float32 (N, W): per question the
answer classes that at least one human gave (under the official metric's matching,
`vqa.metric.answer_scores`) and their min(n/3, 1), padded with -1 and 0. File attributes:
``format`` (``FORMAT_VERSION``), ``version`` (VQA "v1"/"v2"), ``spacy_model``,
``max_question_length``, ``num_answers``, and JSON lists ``answers`` (label i is
answer i), ``question_types`` and ``answer_types``. Files written before
``format`` existed are format 1; format 1 files have no soft targets (``--loss soft``, the MLP's
default, asks for a re-run of ``vqa prepare`` or ``--loss modal``), and load otherwise as before.

Beside it, per split, the tutorial's text files (one line per question): the
questions, their token counts, question and image ids, and for annotated splits
the modal answers and all ten answers joined by ";".

`write_prepared` writes everything at once (nothing replaces an older output
unless every file is complete); `load_prepared` (training) and
`load_prepared_split` (evaluation, the demo) read. Every problem is one
`InputError` line naming the file. `vqa.prepare` computes what is written here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from vqa import artifacts
from vqa.atomic import staging_folder
from vqa.errors import InputError

FORMAT_VERSION = 2

_WORDS = "vocabulary/words"
_EMBEDDINGS = "vocabulary/embeddings"
_TOKEN_IDS = "token_ids"
_LENGTHS = "lengths"
_QUESTION_IDS = "question_ids"
_IMAGE_IDS = "image_ids"
_QUESTIONS = "questions"
_QUESTION_TYPES = "question_types"  # int16 codes into the _QUESTION_TYPES_ATTR list
_ANSWER_TYPES = "answer_types"  # int16 codes into the _ANSWER_TYPES_ATTR list
_LABELS = "labels"
_MODAL_ANSWERS = "modal_answers"
_HUMAN_ANSWERS = "answers"  # (N, 10) strings
_SCORE_CLASSES = "score_classes"  # int32 (N, W), -1 = padding
_SCORES = "scores"  # float32 (N, W), min(n/3, 1) of each class in _SCORE_CLASSES
_FORMAT_ATTR = "format"
_VERSION_ATTR = "version"
_SPACY_MODEL_ATTR = "spacy_model"
_VECTORS_SHA256_ATTR = "word_vectors_sha256"
_MAX_QUESTION_LENGTH_ATTR = "max_question_length"
_NUM_ANSWERS_ATTR = "num_answers"
_ANSWERS_ATTR = "answers"
_QUESTION_TYPES_ATTR = "question_types"
_ANSWER_TYPES_ATTR = "answer_types"

_QUESTIONS_TXT = "questions_{split}.txt"
_QUESTION_LENGTHS_TXT = "questions_lengths_{split}.txt"
_QUESTION_IDS_TXT = "questions_id_{split}.txt"
_IMAGE_IDS_TXT = "images_{split}.txt"
_MODAL_ANSWERS_TXT = "answers_{split}_modal.txt"
_ALL_ANSWERS_TXT = "answers_{split}_all.txt"
_RERUN = "re-run 'vqa prepare'"


# --------------------------------------------------------------------------- what is read
@dataclass(frozen=True)
class AnswerScores:
    """Sparse soft targets: classes int32 (N, W) (-1 = padding) and their scores float32 (N, W)."""

    classes: np.ndarray
    scores: np.ndarray

    def select(self, mask: np.ndarray) -> "AnswerScores":
        return AnswerScores(self.classes[mask], self.scores[mask])


@dataclass(frozen=True)
class Split:
    """One split's arrays: token_ids int32 (N, T), lengths int32 (N,), image_ids int64 (N,),
    question_ids int64 (N,), labels int32 (N,) (-1 = outside the top K, or None when unannotated),
    and the soft targets ``scores`` when they were asked for (``load_prepared(scores=True)``)."""

    name: str
    token_ids: np.ndarray
    lengths: np.ndarray
    image_ids: np.ndarray
    question_ids: np.ndarray
    labels: np.ndarray | None
    scores: AnswerScores | None = None

    def select(self, mask: np.ndarray) -> "Split":
        """The questions where ``mask`` (bool (N,)) is True."""
        labels = None if self.labels is None else self.labels[mask]
        scores = None if self.scores is None else self.scores.select(mask)
        return Split(self.name, self.token_ids[mask], self.lengths[mask], self.image_ids[mask],
                     self.question_ids[mask], labels, scores)


@dataclass(frozen=True)
class PreparedData:
    """What ``vqa prepare`` wrote into ``vqa_data.h5``: vocabulary, embeddings, answers, splits."""

    words: list[str]
    embeddings: np.ndarray
    answers: list[str]
    spacy_model: str
    max_question_length: int
    splits: dict[str, Split]
    word_vectors_sha256: str = ""  # "" in files written before it was recorded


@dataclass(frozen=True)
class PreparedSplit:
    """One split of ``vqa_data.h5`` with its text, as evaluation needs it (annotation fields None on test splits)."""

    name: str
    question_ids: np.ndarray  # int64 (N,)
    image_ids: np.ndarray  # int64 (N,)
    token_ids: np.ndarray  # int32 (N, T)
    questions: list[str]
    words: list[str]  # the vocabulary the token ids index
    question_types: list[str] | None
    answer_types: list[str] | None
    modal_answers: list[str] | None
    human_answers: list[list[str]] | None

    @property
    def annotated(self) -> bool:
        return self.human_answers is not None


# --------------------------------------------------------------------------- what is written
@dataclass(frozen=True)
class SplitRecords:
    """One split as `write_prepared` takes it; the annotation fields are all None for test splits.

    Attributes:
        name: the subtype, e.g. "train2014".
        question_ids, image_ids: int (N,).
        questions: N question strings (one line each).
        token_ids: int (N, T), T = max_question_length; lengths: int (N,), at most T.
        question_lengths: the N untruncated token counts (the text file's), or None for ``lengths``.
        question_types, answer_types, modal_answers: N strings each; human_answers: N x 10 strings;
        labels: int (N,), index into the answers or -1.
        scores: the soft targets (`vqa.metric.answer_scores`), for annotated splits.
    """

    name: str
    question_ids: np.ndarray
    image_ids: np.ndarray
    questions: Sequence[str]
    token_ids: np.ndarray
    lengths: np.ndarray
    question_lengths: Sequence[int] | None = None
    question_types: Sequence[str] | None = None
    answer_types: Sequence[str] | None = None
    modal_answers: Sequence[str] | None = None
    human_answers: Sequence[Sequence[str]] | None = None
    labels: np.ndarray | None = None
    scores: AnswerScores | None = None

    @property
    def annotated(self) -> bool:
        return self.human_answers is not None


def write_prepared(out_dir: Path, *, words: Sequence[str], embeddings: np.ndarray, answers: Sequence[str],
                   splits: Sequence[SplitRecords], vqa_version: str = "v2", spacy_model: str = "",
                   max_question_length: int = artifacts.MAX_QUESTION_LENGTH, word_vectors_sha256: str = "") -> None:
    """Write ``vqa_data.h5`` and every split's text files into ``out_dir``, all or none.

    Args:
        out_dir: the prepared folder (created if needed); files appear only when all are complete.
        words: the V vocabulary words (row i of ``embeddings`` is word i; 0 = padding, 1 = unknown).
        embeddings: float (V, 300) word vectors.
        answers: the K answer classes, label i is answer i.
        splits: the splits to write, each a `SplitRecords`.
        vqa_version, spacy_model, max_question_length: the file's attributes.
        word_vectors_sha256: the SHA-256 of the spaCy vector table (`vqa.text.vectors_sha256`), or "".
    """
    question_types = sorted({t for s in splits if s.annotated for t in s.question_types})
    attrs = {_FORMAT_ATTR: FORMAT_VERSION, _VERSION_ATTR: vqa_version, _SPACY_MODEL_ATTR: spacy_model,
             _VECTORS_SHA256_ATTR: word_vectors_sha256,
             _MAX_QUESTION_LENGTH_ATTR: max_question_length, _NUM_ANSWERS_ATTR: len(answers),
             _ANSWERS_ATTR: json.dumps(list(answers)), _QUESTION_TYPES_ATTR: json.dumps(question_types),
             _ANSWER_TYPES_ATTR: json.dumps(list(artifacts.ANSWER_TYPES))}
    if len(words) != len(embeddings):
        raise InputError(f"{out_dir}: {len(words)} words but {len(embeddings)} embedding rows")
    with staging_folder(Path(out_dir), prefix=".prepare-") as staging:
        with h5py.File(staging / artifacts.PREPARED_H5, "w") as h5:
            h5.attrs.update(attrs)
            h5.create_dataset(_WORDS, data=np.asarray(words, dtype=object), dtype=h5py.string_dtype())
            h5.create_dataset(_EMBEDDINGS, data=np.asarray(embeddings, dtype=np.float32))
            for split in splits:
                _write_split_group(h5, split, {t: code for code, t in enumerate(question_types)})
        for split in splits:
            _write_text_files(staging, split)


def _write_split_group(h5: h5py.File, split: SplitRecords, type_codes: dict[str, int]) -> None:
    """One split's arrays in a group named after the split."""
    text = h5py.string_dtype()
    group = h5.create_group(split.name)
    group.create_dataset(_TOKEN_IDS, data=np.asarray(split.token_ids, np.int32), compression="lzf")
    group.create_dataset(_LENGTHS, data=np.asarray(split.lengths, np.int32))
    group.create_dataset(_QUESTION_IDS, data=np.asarray(split.question_ids, np.int64))
    group.create_dataset(_IMAGE_IDS, data=np.asarray(split.image_ids, np.int64))
    group.create_dataset(_QUESTIONS, data=np.asarray(split.questions, dtype=object), dtype=text)
    if not split.annotated:
        return
    answer_codes = {name: code for code, name in enumerate(artifacts.ANSWER_TYPES)}
    group.create_dataset(_QUESTION_TYPES, data=np.array([type_codes[t] for t in split.question_types], np.int16))
    group.create_dataset(_ANSWER_TYPES, data=np.array([answer_codes[t] for t in split.answer_types], np.int16))
    group.create_dataset(_LABELS, data=np.asarray(split.labels, np.int32))
    group.create_dataset(_MODAL_ANSWERS, data=np.asarray(split.modal_answers, dtype=object), dtype=text)
    group.create_dataset(_HUMAN_ANSWERS, data=np.asarray(split.human_answers, dtype=object), dtype=text)
    if split.scores is not None:
        group.create_dataset(_SCORE_CLASSES, data=np.asarray(split.scores.classes, np.int32), compression="lzf")
        group.create_dataset(_SCORES, data=np.asarray(split.scores.scores, np.float32), compression="lzf")


def _write_text_files(folder: Path, split: SplitRecords) -> None:
    """The tutorial's per-split text files, one line per question in file order."""
    lengths = split.question_lengths if split.question_lengths is not None else np.asarray(split.lengths).tolist()
    columns = {_QUESTIONS_TXT: split.questions, _QUESTION_LENGTHS_TXT: lengths,
               _QUESTION_IDS_TXT: np.asarray(split.question_ids).tolist(),
               _IMAGE_IDS_TXT: np.asarray(split.image_ids).tolist()}
    if split.annotated:
        columns[_MODAL_ANSWERS_TXT] = split.modal_answers
        columns[_ALL_ANSWERS_TXT] = [";".join(answers) for answers in split.human_answers]
    for pattern, values in columns.items():
        with open(folder / pattern.format(split=split.name), "w", encoding="utf-8") as handle:
            handle.writelines(f"{value}\n" for value in values)


# --------------------------------------------------------------------------- reading
@contextmanager
def _open_prepared(data_dir: Path):
    """Yield ``(path, h5py.File)`` of ``DIR/vqa_data.h5``, its format checked; problems are one-line InputErrors."""
    path = Path(data_dir) / artifacts.PREPARED_H5
    if not path.is_file():
        raise InputError(f"{path}: not found; run 'vqa prepare --out {data_dir}' first")
    try:
        h5 = h5py.File(path, "r")
    except OSError as error:
        raise InputError(f"{path}: not a prepared VQA file ({error}); {_RERUN}") from None
    with h5:
        version = int(h5.attrs.get(_FORMAT_ATTR, 1))
        if version > FORMAT_VERSION:
            raise InputError(f"{path}: prepared data format {version}, newer than the {FORMAT_VERSION} this vqa "
                             "reads; upgrade vqa")
        yield path, h5


def _dataset(path: Path, parent, name: str, *, ndim: int, kind: str, rows: int | None = None):
    """``parent[name]`` checked: present, ``ndim`` dimensions, of dtype kind ``kind`` ("i", "f" or "S"), N rows."""
    dataset = parent.get(name)
    where = f"{parent.name.strip('/')}/{name}".strip("/")
    if not isinstance(dataset, h5py.Dataset):
        raise InputError(f"{path}: no {where!r} dataset; {_RERUN}")
    dtype_kind = "S" if h5py.check_string_dtype(dataset.dtype) else dataset.dtype.kind
    kinds = {"i": "iu", "f": "f", "S": "S"}[kind]
    if dataset.ndim != ndim or dtype_kind not in kinds or (rows is not None and dataset.shape[0] != rows):
        wanted = {"i": "integers", "f": "floats", "S": "strings"}[kind]
        raise InputError(f"{path}: {where!r} is {dataset.dtype} of shape {dataset.shape}, expected {wanted} "
                         f"of {ndim} dimension(s){'' if rows is None else f' and {rows} rows'}; {_RERUN}")
    return dataset


def _attr(path: Path, h5: h5py.File, name: str):
    """A required file attribute; a missing one is a one-line InputError."""
    if name not in h5.attrs:
        raise InputError(f"{path}: no {name!r} attribute; {_RERUN}")
    return h5.attrs[name]


def _strings(dataset) -> list:
    """An HDF5 string dataset as (nested) lists of Python str."""
    return dataset.asstr()[()].tolist()


def _type_names(path: Path, h5, group, dataset: str, attr: str, rows: int) -> list[str]:
    """Decode a split's int16 type codes with the file's JSON list of names, parsed once per split."""
    names = np.asarray(json.loads(_attr(path, h5, attr)), dtype=object)
    codes = _dataset(path, group, dataset, ndim=1, kind="i", rows=rows)[()]
    if len(codes) and not 0 <= codes.min() <= codes.max() < len(names):
        raise InputError(f"{path}: {group.name}/{dataset} has codes outside its {len(names)} names; {_RERUN}")
    return names[codes].tolist()


def _read_scores(path: Path, group, rows: int) -> AnswerScores:
    """A split's soft targets; a file written before they were stored is a one-line InputError."""
    if _SCORES not in group:
        raise InputError(f"{path}: {group.name.strip('/')} has no answer scores for --loss soft (the MLP's "
                         f"default; files prepared before they were stored lack them); {_RERUN}, or pass --loss modal")
    classes = _dataset(path, group, _SCORE_CLASSES, ndim=2, kind="i", rows=rows)[()]
    scores = _dataset(path, group, _SCORES, ndim=2, kind="f", rows=rows)[()]
    if classes.shape != scores.shape:
        raise InputError(f"{path}: {group.name}/{_SCORE_CLASSES} and {_SCORES} differ in shape; {_RERUN}")
    return AnswerScores(np.asarray(classes, np.int32), np.asarray(scores, np.float32))


def _read_split(path: Path, group, name: str, *, scores: bool = False) -> Split:
    """One split group's arrays; labels are None for unannotated splits, scores unless asked for."""
    token_ids = _dataset(path, group, _TOKEN_IDS, ndim=2, kind="i")
    rows = token_ids.shape[0]
    labels = (np.asarray(_dataset(path, group, _LABELS, ndim=1, kind="i", rows=rows)[()], dtype=np.int32)
              if _LABELS in group else None)
    # Files written before question ids were stored number the questions in order.
    question_ids = (_dataset(path, group, _QUESTION_IDS, ndim=1, kind="i", rows=rows)[()]
                    if _QUESTION_IDS in group else np.arange(rows))
    return Split(name, np.asarray(token_ids[()], dtype=np.int32),
                 np.asarray(_dataset(path, group, _LENGTHS, ndim=1, kind="i", rows=rows)[()], dtype=np.int32),
                 np.asarray(_dataset(path, group, _IMAGE_IDS, ndim=1, kind="i", rows=rows)[()], dtype=np.int64),
                 np.asarray(question_ids, dtype=np.int64), labels,
                 _read_scores(path, group, rows) if scores and labels is not None else None)


def load_prepared(data_dir: Path, *, splits: tuple[str, ...] = artifacts.ANNOTATED_SPLITS,
                  scores: bool = False) -> PreparedData:
    """Read the prepared HDF5 (``DIR/vqa_data.h5``) into memory, for training.

    Args:
        data_dir: folder written by ``vqa prepare``.
        splits: split names to load if present (missing ones are skipped).
        scores: also read the annotated splits' soft targets (``--loss soft``); InputError when
            the file predates them.
    Returns:
        PreparedData with embeddings float32 (V, 300) and the present splits' arrays.
    """
    with _open_prepared(data_dir) as (path, h5):
        words = _strings(_dataset(path, h5, _WORDS, ndim=1, kind="S"))
        embeddings = np.asarray(_dataset(path, h5, _EMBEDDINGS, ndim=2, kind="f")[()], dtype=np.float32)
        answers = list(json.loads(_attr(path, h5, _ANSWERS_ATTR)))
        spacy_model = str(h5.attrs.get(_SPACY_MODEL_ATTR, ""))
        vectors_sha256 = str(h5.attrs.get(_VECTORS_SHA256_ATTR, ""))
        max_length = int(h5.attrs.get(_MAX_QUESTION_LENGTH_ATTR, artifacts.MAX_QUESTION_LENGTH))
        found = {s: _read_split(path, h5[s], s, scores=scores) for s in splits if s in h5}
    if len(words) != embeddings.shape[0]:
        raise InputError(f"{path}: {len(words)} words but {embeddings.shape[0]} embedding rows; {_RERUN}")
    return PreparedData(words, embeddings, answers, spacy_model, max_length, found, vectors_sha256)


def load_prepared_split(data_dir: Path, split: str) -> PreparedSplit:
    """Read one split with its question text and, when annotated, its types and human answers.

    Args:
        data_dir: folder written by ``vqa prepare``.
        split: "train", "val", "test-dev", "test" or a subtype name ("val2014").
    Returns:
        PreparedSplit; the type codes are decoded with one JSON parse per split.
    """
    name = artifacts.SPLIT_ALIASES.get(split, split)
    with _open_prepared(data_dir) as (path, h5):
        if name not in h5:
            raise InputError(f"{path}: no {name} split; run 'vqa prepare' with that split's questions")
        group = h5[name]
        arrays = _read_split(path, group, name)
        rows = len(arrays.token_ids)
        annotations = (None,) * 4
        if _HUMAN_ANSWERS in group:
            annotations = (
                _type_names(path, h5, group, _QUESTION_TYPES, _QUESTION_TYPES_ATTR, rows),
                _type_names(path, h5, group, _ANSWER_TYPES, _ANSWER_TYPES_ATTR, rows),
                _strings(_dataset(path, group, _MODAL_ANSWERS, ndim=1, kind="S", rows=rows)),
                _strings(_dataset(path, group, _HUMAN_ANSWERS, ndim=2, kind="S", rows=rows)))
        questions = _strings(_dataset(path, group, _QUESTIONS, ndim=1, kind="S", rows=rows))
        words = _strings(_dataset(path, h5, _WORDS, ndim=1, kind="S"))
        return PreparedSplit(name, arrays.question_ids, arrays.image_ids, arrays.token_ids, questions, words,
                             *annotations)
