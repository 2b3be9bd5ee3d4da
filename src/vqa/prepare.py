"""Official VQA JSON -> ``preprocessed/``: the tutorial's text files and one HDF5 file.

This module owns turning checked official records into the tutorial's files:
tokens, vocabulary, modal answers, top-K labels and the writing of ``vqa_data.h5``
(schema in docs/data.md, "File formats"; every dataset and attribute name is a
constant in `vqa.artifacts`, read back only by `vqa.data`). Reading and checking
the official JSON (keys, types, duplicate ids, question/annotation alignment,
answer types) is `vqa.official`'s, with 10 answers each required here. Output is
staged in a hidden folder and moved into place only when every file is complete.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from vqa import artifacts as names
from vqa import official
from vqa.atomic import staging_folder
from vqa.errors import InputError

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


# --------------------------------------------------------------------------- writing
def write_text_files(folder: Path, data: SplitData, lengths: list[int], modal_answers: list[str] | None) -> None:
    """The tutorial's per-split text files, one line per question in file order."""
    columns = {
        names.QUESTIONS_TXT: data.questions,
        names.QUESTION_LENGTHS_TXT: lengths,
        names.QUESTION_IDS_TXT: data.question_ids.tolist(),
        names.IMAGE_IDS_TXT: data.image_ids.tolist(),
    }
    if data.annotated:
        columns[names.MODAL_ANSWERS_TXT] = modal_answers
        columns[names.ALL_ANSWERS_TXT] = [";".join(answers) for answers in data.answers]
    for pattern, values in columns.items():
        with open(folder / pattern.format(split=data.split), "w", encoding="utf-8") as handle:
            handle.writelines(f"{value}\n" for value in values)


def write_split_group(h5, data: SplitData, token_ids: np.ndarray, lengths: np.ndarray, *,
                      type_codes: dict[str, int], modal_answers: list[str] | None, labels: np.ndarray | None) -> None:
    """Write one split's arrays into an HDF5 group named after the split."""
    import h5py

    text = h5py.string_dtype()
    group = h5.create_group(data.split)
    group.create_dataset(names.TOKEN_IDS_DATASET, data=token_ids, compression="lzf")
    group.create_dataset(names.LENGTHS_DATASET, data=lengths)
    group.create_dataset(names.QUESTION_IDS_DATASET, data=data.question_ids)
    group.create_dataset(names.IMAGE_IDS_DATASET, data=data.image_ids)
    group.create_dataset(names.QUESTIONS_DATASET, data=np.asarray(data.questions, dtype=object), dtype=text)
    if not data.annotated:
        return
    answer_codes = {name: code for code, name in enumerate(names.ANSWER_TYPES)}
    group.create_dataset(names.QUESTION_TYPES_DATASET,
                         data=np.array([type_codes[t] for t in data.question_types], np.int16))
    group.create_dataset(names.ANSWER_TYPES_DATASET,
                         data=np.array([answer_codes[t] for t in data.answer_types], np.int16))
    group.create_dataset(names.LABELS_DATASET, data=labels)
    group.create_dataset(names.MODAL_ANSWERS_DATASET, data=np.asarray(modal_answers, dtype=object), dtype=text)
    group.create_dataset(names.HUMAN_ANSWERS_DATASET, data=np.asarray(data.answers, dtype=object), dtype=text)


@dataclass(frozen=True)
class PrepareSummary:
    """What `prepare_dataset` wrote."""

    out_dir: Path
    num_questions: dict[str, int]
    num_labelled: dict[str, int]
    num_truncated: int
    vocabulary_size: int
    num_answers: int


def prepare_dataset(*, data_dir: Path, version: str = "v2", out_dir: Path, num_answers: int = names.NUM_ANSWERS,
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
    question_types = sorted({t for d in splits if d.annotated for t in d.question_types})
    attrs = {names.VERSION_ATTR: version, names.SPACY_MODEL_ATTR: text.spacy_model_label(nlp),
             names.MAX_QUESTION_LENGTH_ATTR: max_question_length, names.NUM_ANSWERS_ATTR: len(top_answers),
             names.ANSWERS_ATTR: json.dumps(top_answers), names.QUESTION_TYPES_ATTR: json.dumps(question_types),
             names.ANSWER_TYPES_ATTR: json.dumps(list(names.ANSWER_TYPES))}
    with staging_folder(Path(out_dir), prefix=".prepare-") as staging:
        counts = write_outputs(staging, splits, tokens, modal, words=words, embeddings=embeddings, attrs=attrs,
                               top_answers=top_answers, question_types=question_types,
                               max_question_length=max_question_length)
    summary = PrepareSummary(Path(out_dir), *counts, vocabulary_size=len(words), num_answers=len(top_answers))
    _log_summary(summary, max_question_length)
    return summary


def write_outputs(folder: Path, splits: list[SplitData], tokens: dict[str, list[list[str]]],
                  modal: dict[str, list[str]], *, words: list[str], embeddings: np.ndarray, attrs: dict,
                  top_answers: list[str], question_types: list[str], max_question_length: int):
    """Write the HDF5 file and every split's text files into ``folder``.

    Returns:
        (questions per split, labelled questions per split, number of truncated questions).
    """
    import h5py

    from vqa import text

    word_index = text.word_index_of(words)
    type_codes = {t: code for code, t in enumerate(question_types)}
    num_questions, num_labelled, num_truncated = {}, {}, 0
    with h5py.File(folder / names.PREPARED_H5, "w") as h5:
        h5.attrs.update(attrs)
        h5.create_dataset(names.WORDS_DATASET, data=np.asarray(words, dtype=object), dtype=h5py.string_dtype())
        h5.create_dataset(names.EMBEDDINGS_DATASET, data=embeddings)
        for data in splits:
            token_ids, lengths = text.encode(tokens[data.split], word_index, max_question_length=max_question_length)
            full_lengths = [len(t) for t in tokens[data.split]]
            num_truncated += sum(length > max_question_length for length in full_lengths)
            split_modal = modal.get(data.split)
            labels = encode_labels(split_modal, top_answers) if data.annotated else None
            write_split_group(h5, data, token_ids, lengths, type_codes=type_codes,
                              modal_answers=split_modal, labels=labels)
            write_text_files(folder, data, full_lengths, split_modal)
            num_questions[data.split] = len(data.questions)
            if labels is not None:
                num_labelled[data.split] = int((labels >= 0).sum())
    return num_questions, num_labelled, num_truncated


def _log_summary(summary: PrepareSummary, max_question_length: int) -> None:
    for split, count in summary.num_questions.items():
        labelled = summary.num_labelled.get(split)
        extra = f", {labelled:,} with a modal answer in the top {summary.num_answers}" if labelled is not None else ""
        log.info("%s: %s questions%s", split, f"{count:,}", extra)
    if summary.num_truncated:
        log.warning("%s questions longer than %d tokens were truncated", f"{summary.num_truncated:,}",
                    max_question_length)
    log.info("vocabulary: %s words with vectors; wrote %s", f"{summary.vocabulary_size - 2:,}", summary.out_dir)
