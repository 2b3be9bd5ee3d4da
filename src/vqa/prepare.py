"""Official VQA JSON -> ``preprocessed/``: the tutorial's text files and one HDF5 file.

This module owns turning checked official records into the tutorial's files:
tokens, vocabulary, modal answers, top-K labels and soft targets; `vqa.prepared` owns the files'
schema and writes them (all or none). Reading and checking the official JSON (keys,
types, duplicate ids, question/annotation alignment, answer types) is
`vqa.official`'s, with 10 answers each required here.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from vqa import artifacts as names
from vqa import metric, official
from vqa.config import PREPARE_VERSION
from vqa.errors import InputError
from vqa.prepared import AnswerScores, SplitRecords, write_prepared

log = logging.getLogger(__name__)

OFFICIAL_FILE_NAMES = {
    "v2": (names.V2_QUESTIONS_JSON, names.V2_ANNOTATIONS_JSON),
    "v1": (names.V1_QUESTIONS_JSON, names.V1_ANNOTATIONS_JSON),
}
# `files` keys (the CLI's --train-questions ...) for each split; test splits have no annotations.
FILE_KEYS = {
    names.TRAIN_SPLIT: ("train_questions", "train_annotations"),
    names.VAL_SPLIT: ("val_questions", "val_annotations"),
    names.TEST_DEV_SPLIT: ("test_dev_questions", None),
    names.TEST_SPLIT: ("test_questions", None),
}


@dataclass(frozen=True)
class SplitSources:
    """Where one split's JSON files are (``annotations`` is None for test splits)."""

    split: str
    questions: Path
    annotations: Path | None


@dataclass
class SplitData:
    """One split's questions in file order, with their annotations when it has them."""

    split: str
    question_ids: np.ndarray  # int64 (N,)
    image_ids: np.ndarray  # int64 (N,)
    questions: list[str]
    question_types: list[str] | None = None
    answer_types: list[str] | None = None
    answers: list[list[str]] | None = None  # N x 10

    @property
    def annotated(self) -> bool:
        return self.answers is not None


# --------------------------------------------------------------------------- locating and reading
def find_split_files(data_dir: Path, version: str, files: dict[str, Path]) -> list[SplitSources]:
    """The splits to prepare: explicit files first, else the official names in ``data_dir``.

    Train (questions and annotations) is required; val and the test splits are used when present.
    """
    if version not in OFFICIAL_FILE_NAMES:
        raise InputError(f"unknown VQA version {version!r}: use v1 or v2")
    unknown = set(files) - {key for pair in FILE_KEYS.values() for key in pair if key}
    if unknown:
        raise InputError(f"unknown file keys: {sorted(unknown)}")
    question_name, annotation_name = OFFICIAL_FILE_NAMES[version]
    found = []
    for split, (question_key, annotation_key) in FILE_KEYS.items():
        questions = _locate(files.get(question_key), data_dir / question_name.format(split=split))
        if questions is None:
            if split == names.TRAIN_SPLIT:
                raise InputError(f"{data_dir / question_name.format(split=split)}: train questions not found; "
                                 "run data/get_data.sh or pass --train-questions")
            continue
        annotations = None
        if annotation_key is not None:
            default = data_dir / annotation_name.format(split=split)
            annotations = _locate(files.get(annotation_key), default)
            if annotations is None:
                raise InputError(f"{default}: {split} annotations not found (needed with {questions.name}); "
                                 f"pass --{annotation_key.replace('_', '-')}")
        found.append(SplitSources(split, questions, annotations))
    return found


def _locate(given: Path | None, default: Path) -> Path | None:
    """An explicitly given file (which must exist) or the default location if it exists."""
    if given is not None:
        if not Path(given).is_file():
            raise InputError(f"{given}: file not found")
        return Path(given)
    return default if default.is_file() else None


def one_line(text: str) -> str:
    """``text`` with runs of whitespace (newlines, tabs) collapsed to one space, stripped."""
    if text.isprintable() and "  " not in text and text == text.strip():
        return text  # the common case, checked in C
    return " ".join(text.split())


def _one_line_rows(rows: list[list[str]]) -> list[list[str]]:
    """`one_line` applied to every string of ``rows``, computed once per distinct string (VQA repeats most)."""
    distinct = set(chain.from_iterable(rows))
    fixed = {text: cleaned for text in distinct if (cleaned := one_line(text)) != text}
    if not fixed:
        return rows
    return [[fixed.get(text, text) for text in row] for row in rows]


def load_split(sources: SplitSources) -> SplitData:
    """Read and check one split's questions (and annotations, aligned to question order).

    The checks are `vqa.official`'s, plus exactly 10 answers per question: the HDF5
    stores them as a fixed (N, 10) array, as the tutorial's answers_*_all.txt does.
    """
    questions = official.load_questions(sources.questions)
    data = SplitData(sources.split, np.asarray(questions.question_ids, dtype=np.int64),
                     np.asarray(questions.image_ids, dtype=np.int64), [one_line(q) for q in questions.questions])
    if sources.annotations is not None:
        annotations = official.load_annotations(sources.annotations,
                                                answers_per_question=names.NUM_ANSWERS_PER_QUESTION)
        aligned = annotations.take(official.match_annotations(questions, annotations))
        data.question_types, data.answer_types = aligned.question_types, aligned.answer_types
        data.answers = _one_line_rows(aligned.human_answers)
    return data


# --------------------------------------------------------------------------- answers
def select_top_answers(modal_answers: list[str], num_answers: int) -> list[str]:
    """The ``num_answers`` most frequent modal answers (ties by string), in LabelEncoder order (sorted)."""
    from sklearn.preprocessing import LabelEncoder

    if num_answers < 1:
        raise InputError(f"--num-answers must be at least 1, got {num_answers}")
    counts = Counter(modal_answers)
    top = sorted(counts, key=lambda answer: (-counts[answer], answer))[:num_answers]
    return LabelEncoder().fit(top).classes_.tolist()


def encode_labels(modal_answers: list[str], top_answers: list[str]) -> np.ndarray:
    """int32 (N,) index of each modal answer in ``top_answers`` (sorted), -1 when outside the top K."""
    from sklearn.preprocessing import LabelEncoder

    # The encoder fixes the label order; a dict applies it (np.isin on object arrays is ~100x slower).
    index = {answer: label for label, answer in enumerate(LabelEncoder().fit(top_answers).classes_.tolist())}
    return np.fromiter((index.get(answer, -1) for answer in modal_answers), dtype=np.int32,
                       count=len(modal_answers))


@dataclass(frozen=True)
class PrepareSummary:
    """What `prepare_dataset` wrote."""

    out_dir: Path
    num_questions: dict[str, int]
    num_labelled: dict[str, int]
    num_truncated: int
    vocabulary_size: int
    num_answers: int


def prepare_dataset(*, data_dir: Path, version: str = PREPARE_VERSION, out_dir: Path, num_answers: int = names.NUM_ANSWERS,
                    max_question_length: int = names.MAX_QUESTION_LENGTH, spacy_model: str | None = None,
                    files: dict[str, Path] | None = None, progress: bool = True) -> PrepareSummary:
    """Turn the official JSON of every available split into ``out_dir``'s text files and HDF5.

    Args:
        data_dir: folder with the official file names (see ``OFFICIAL_FILE_NAMES``).
        version: "v1" or "v2" (file names only; the formats are the same).
        out_dir: output folder; files appear there only when all are complete.
        num_answers: K, the most frequent train modal answers kept as classes.
        max_question_length: token ids per question; longer questions are truncated.
        spacy_model: word-vector model name or folder (default: auto-detect, see vqa.text).
        files: explicit paths keyed like ``FILE_KEYS`` (override ``data_dir``).
    Returns:
        A PrepareSummary.
    """
    from vqa import text

    if max_question_length < 1:
        raise InputError(f"--max-question-length must be at least 1, got {max_question_length}")
    sources = find_split_files(Path(data_dir), version, dict(files or {}))
    splits = [load_split(source) for source in sources]
    nlp = text.load_spacy(spacy_model)
    tokens = {d.split: text.tokenize(nlp, d.questions, progress=progress, total=len(d.questions)) for d in splits}
    words, embeddings = text.build_vocabulary(nlp, (t for split_tokens in tokens.values() for t in split_tokens))
    modal = {d.split: [official.modal_answer(answers) for answers in d.answers] for d in splits if d.annotated}
    top_answers = select_top_answers(modal[names.TRAIN_SPLIT], num_answers)
    word_index = text.word_index_of(words)
    records, num_truncated = [], 0
    for data in splits:
        token_ids, lengths = text.encode(tokens[data.split], word_index, max_question_length=max_question_length)
        full_lengths = [len(t) for t in tokens[data.split]]
        num_truncated += sum(length > max_question_length for length in full_lengths)
        records.append(_split_records(data, token_ids, lengths, full_lengths, modal.get(data.split), top_answers))
    write_prepared(Path(out_dir), words=words, embeddings=embeddings, answers=top_answers, splits=records,
                   vqa_version=version, spacy_model=text.spacy_model_label(nlp),
                   max_question_length=max_question_length, word_vectors_sha256=text.vectors_sha256(nlp))
    counts = ({r.name: len(r.questions) for r in records},
              {r.name: int((r.labels >= 0).sum()) for r in records if r.labels is not None}, num_truncated)
    summary = PrepareSummary(Path(out_dir), *counts, vocabulary_size=len(words), num_answers=len(top_answers))
    _log_summary(summary, max_question_length)
    return summary


def _split_records(data: SplitData, token_ids: np.ndarray, lengths: np.ndarray, full_lengths: list[int],
                   modal_answers: list[str] | None, top_answers: list[str]) -> SplitRecords:
    """One split as `vqa.prepared.write_prepared` takes it: ids, text, token ids and, when annotated, labels."""
    annotations = {}
    if data.annotated:
        annotations = dict(question_types=data.question_types, answer_types=data.answer_types,
                           modal_answers=modal_answers, human_answers=data.answers,
                           labels=encode_labels(modal_answers, top_answers),
                           scores=AnswerScores(*metric.answer_scores(data.answers, top_answers)))
    return SplitRecords(data.split, data.question_ids, data.image_ids, data.questions, token_ids, lengths,
                        question_lengths=full_lengths, **annotations)


def _log_summary(summary: PrepareSummary, max_question_length: int) -> None:
    for split, count in summary.num_questions.items():
        labelled = summary.num_labelled.get(split)
        extra = f", {labelled:,} with a modal answer in the top {summary.num_answers}" if labelled is not None else ""
        log.info("%s: %s questions%s", split, f"{count:,}", extra)
    if summary.num_truncated:
        log.warning("%s questions longer than %d tokens were truncated", f"{summary.num_truncated:,}",
                    max_question_length)
    log.info("vocabulary: %s words with vectors; wrote %s", f"{summary.vocabulary_size - 2:,}", summary.out_dir)
