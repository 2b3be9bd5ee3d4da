"""vqa.metric: hand-computed cases for every rule of the official VQA accuracy, and its printout."""

import random

import numpy as np
import pytest

from vqa import metric
from vqa.errors import InputError, VQAError


def ten(*groups):
    """Ten human answers from (answer, count) pairs, padded with 'zebra'."""
    answers = [answer for answer, count in groups for _ in range(count)]
    return answers + ["zebra"] * (10 - len(answers))


# ------------------------------------------------------------------ normalisation rules
@pytest.mark.parametrize("text, expected", [
    ("1,000", "1000"),                # digit-comma-digit: every punctuation mark is deleted
    ("1,000 dollars!", "1000 dollars"),
    ("3.5", "3.5"),                   # a period before a digit stays
    ("end.", "end"),
    ("1.5.", "1.5"),
    ("a.b", "ab"),
    ("well-lit", "well lit"),         # not next to a space: replaced by a space
    ("well - lit", "well  lit"),      # next to a space: deleted
    ("red, white", "red white"),
    ("yes!", "yes "),
    ('"hi"', " hi "),
    ("`hi`", " hi "),
    ("x ;y", "x y"),
    ("it's", "it's"),                 # apostrophes and colons are untouched
    ("10:30", "10:30"),
    ("." * 40, "." * 8),              # at most 32 periods are removed
])
def test_process_punctuation(text, expected):
    assert metric.process_punctuation(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Two Dogs", "2 dogs"),
    ("none", "0"), ("zero", "0"), ("ten", "10"), ("eleven", "eleven"),
    ("the dog", "dog"), ("a dog", "dog"), ("A An The", ""),
    ("dont", "don't"), ("isnt", "isn't"), ("whats", "what's"), ("Im", "im"),
    ("somebody'd", "somebodyd"),      # the official table maps this one backwards
    ("  lots   of  space ", "lots of space"),
])
def test_process_digit_article(text, expected):
    assert metric.process_digit_article(text) == expected


def test_contraction_table_is_complete():
    table = metric.CONTRACTIONS
    assert len(table) == 120
    assert table["youve"] == "you've" and table["y'allll"] == "y'all'll" and table["twas"] == "'twas"
    assert all(value.count("'") >= 1 or key == "somebody'd" for key, value in table.items())


@pytest.mark.parametrize("text, expected", [
    ("The Two-Dogs!", "2 dogs"),
    ("well-lit", "well lit"),
    ("1,000", "1000"),
    ("an apple.", "apple"),
])
def test_normalize_answer(text, expected):
    assert metric.normalize_answer(text) == expected


# ------------------------------------------------------------------ per-question accuracy
@pytest.mark.parametrize("humans, prediction, expected", [
    (ten(), "cat", 0.0),
    (ten(("cat", 1)), "cat", 0.3),                  # leave-one-out: 9 * (1/3) / 10
    (ten(("cat", 2)), "cat", 0.6),
    (ten(("cat", 3)), "cat", 0.9),
    (ten(("cat", 4)), "cat", 1.0),
    (["yes"] * 10, "Yes", 0.0),                     # humans agree: case-sensitive, no normalisation
    (["yes"] * 9 + ["Yes"], "Yes", 1.0),            # humans disagree: everything normalised
    (["yes"] * 10, " yes\n", 1.0),                  # whitespace cleaning always happens
    (["two"] * 10, "2", 0.0),
    (ten(("two", 3), ("2", 1)), "2", 1.0),
    (ten(("dog", 2), ("a dog", 1)), "the dog", 0.9),
    (ten(("1000", 1), ("1,000", 1)), "1,000", 0.6),
    (ten(("3.5", 1)), "3.5", 0.3),
    (ten(("3.5", 1)), "35", 0.0),
    (ten(("end", 2)), "end.", 0.6),
    (ten(("well lit", 1)), "well-lit", 0.3),
    (ten(("don't", 1), ("dont", 1)), "dont", 0.6),
])
def test_question_accuracy(humans, prediction, expected):
    assert metric.question_accuracy(humans, prediction) == pytest.approx(expected, abs=1e-12)
    vectorised = metric.score_predictions([humans], [prediction])
    assert vectorised.dtype == np.float64 and vectorised.shape == (1,)
    assert vectorised[0] == metric.question_accuracy(humans, prediction)


def test_vectorised_scoring_is_bit_identical_to_the_reference():
    rng = random.Random(7)
    vocabulary = ["yes", "Yes", "no", "two", "2", "2 ", "a dog", "dog", "the dog.", "well-lit", "well lit",
                  "1,000", "1000", "3.5", "dont", "don't", "red!", "red", "\tred", "end.", "end"]
    humans = [[rng.choice(vocabulary[:rng.randint(1, len(vocabulary))]) for _ in range(rng.choice([1, 3, 10]))]
              for _ in range(400)]
    predictions = [rng.choice(vocabulary) for _ in humans]
    reference = [metric.question_accuracy(h, p) for h, p in zip(humans, predictions)]
    assert metric.score_predictions(humans, predictions).tolist() == reference
    assert len(set(reference)) > 4


def test_score_predictions_rejects_misaligned_inputs():
    with pytest.raises(VQAError, match="2 predictions for 1 questions"):
        metric.score_predictions([["yes"] * 10], ["yes", "no"])
    with pytest.raises(InputError, match="question #1 has no human answers"):
        metric.score_predictions([["yes"], []], ["yes", "no"])
    with pytest.raises(VQAError, match="at least one human answer"):
        metric.question_accuracy([], "yes")


# ------------------------------------------------------------------ aggregation and rounding
def test_overall_is_the_mean_of_unrounded_question_accuracies():
    # Two identical humans matching: each sees 1 match among the others -> 1/3 (33.33 %).
    accuracies = metric.score_predictions([["x", "x"], ["y", "z"]], ["x", "x"])
    report = metric.summarize_accuracy([1, 2], accuracies, question_types=["a", "a"], answer_types=["other"] * 2)
    assert report["perQuestion"] == {"1": 33.33, "2": 0.0}
    # 100 * (1/3) / 2 = 16.666... -> 16.67, whereas the mean of the rounded figures would give 16.66.
    assert report["overall"] == 16.67 and report["perQuestionType"] == {"a": 16.67}


def test_summarize_groups_by_type_in_first_seen_order():
    report = metric.summarize_accuracy([5, 6, 7], np.array([1.0, 0.3, 0.6]), question_types=["how many", "what", "what"],
                                         answer_types=["number", "other", "other"])
    assert list(report) == ["overall", "perAnswerType", "perQuestionType", "perQuestion"]
    assert report["overall"] == 63.33
    assert report["perAnswerType"] == {"number": 100.0, "other": 45.0}
    assert report["perQuestionType"] == {"how many": 100.0, "what": 45.0}


def test_summarize_rejects_empty_input():
    with pytest.raises(InputError, match="no questions"):
        metric.summarize_accuracy([], np.array([]), question_types=[], answer_types=[])


def test_format_summary_prints_what_the_official_demo_prints():
    report = metric.summarize_accuracy([5, 6, 7], np.array([1.0, 0.3, 0.6]), question_types=["how many", "what", "what"],
                                       answer_types=["number", "other", "other"])
    assert metric.format_summary(report).splitlines() == [
        "Overall Accuracy is: 63.33", "",
        "Per Question Type Accuracy is the following:", "how many : 100.00", "what : 45.00", "",
        "Per Answer Type Accuracy is the following:", "number : 100.00", "other : 45.00"]
