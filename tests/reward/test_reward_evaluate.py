"""Held-out metrics on literal rows and scores, worked by hand."""

import json
import math

import pytest

from reward.evaluate import agreement_level, ece, metrics


def row(task_id, ranks, sps=("a v1", "b v1", "a v1"), agreement=None, hidden=None, noise=0.5):
    return {
        "task_id": task_id,
        "ranks": ranks,
        "system_prompts": list(sps),
        "task_agreement": agreement,
        "hidden_utility": hidden,
        "annotator_profile": json.dumps({"noise": noise}) if hidden else None,
    }


def test_accuracy_by_agreement_and_system_prompt() -> None:
    rows = [row(1, [1, 2, 3], agreement=1.0), row(2, [1, 1, 2])]
    scores = [
        [3.0, 2.0, 1.0],  # orders all 3 strict pairs right
        [0.0, 1.0, 2.0],
    ]  # strict pairs (0,2), (1,2): both wrong
    m = metrics(rows, scores)
    assert (m["pairs"], m["pairwise_accuracy"]) == (5, 0.6)
    assert m["by_agreement"] == {
        "high": {"pairs": 3, "accuracy": 1.0},
        "single": {"pairs": 2, "accuracy": 0.0},
    }
    # Pairs involving "b v1": (0,1) and (1,2) of row 1 (right), (1,2) of row 2 (wrong).
    assert m["by_system_prompt"]["b v1"] == {"pairs": 3, "accuracy": round(2 / 3, 4)}
    assert m["by_system_prompt"]["a v1"] == {"pairs": 5, "accuracy": 0.6}
    assert "hidden" not in m
    assert [agreement_level(x) for x in (None, 0.9, 0.6, 0.2)] == ["single", "high", "medium", "low"]


def test_equal_scores_count_half() -> None:
    assert metrics([row(1, [1, 2], sps=("a", "b"))], [[1.0, 1.0]])["pairwise_accuracy"] == 0.5


def test_ece_by_hand() -> None:
    # Two bins: p = 0.9 (labels 1, 1 -> accuracy 1, gap 0.1) and p = 0.3 (labels 1, 0 -> accuracy 0.5, gap 0.2).
    assert ece([0.9, 0.9, 0.3, 0.3], [1, 1, 1, 0]) == pytest.approx(0.5 * 0.1 + 0.5 * 0.2)
    assert ece([], []) is None


def test_hidden_preference_and_noise_ceiling() -> None:
    # Hidden utilities [1, 0]: candidate 0 is truly better. The label got it wrong (ranks [2, 1]);
    # the model got it right. Expected label agreement = sigmoid(1 / 0.5).
    m = metrics([row(1, [2, 1], sps=("a", "b"), hidden=[1.0, 0.0])], [[2.0, 0.0]])
    assert m["pairwise_accuracy"] == 0.0
    assert m["hidden"] == {
        "pairs": 1,
        "model_vs_hidden": 1.0,
        "labels_vs_hidden": 0.0,
        "expected_label_agreement": round(1 / (1 + math.exp(-2)), 4),
    }
