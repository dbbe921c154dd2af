"""RewardScorer reads each distinct input once and batches by length; the scores are those of each
input scored alone, in the order given."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_repeated_and_mixed_length_items_score_as_each_alone(tiny_model: Path) -> None:
    from reward.score import RewardScorer, distinct

    scorer = RewardScorer(tiny_model, batch_size=3)
    items = [
        ("Tell me about cats.", "Cats purr."),
        ("Tell me about the sea in a few words.", "Waves, salt and a long grey horizon at dusk."),
        ("Tell me about cats.", "Cats purr."),  # the same answer in another pair
        ("Hi", "Hello there, friend."),
        ("Tell me about cats.", "Bread."),
    ]
    alone = [scorer.score_pairs([item])[0] for item in items]
    assert scorer.score_pairs(items) == pytest.approx(alone, abs=1e-4)
    assert alone[0] == alone[2] and len({round(a, 4) for a in alone}) == 4
    assert distinct([[1, 2], [3], [1, 2]]) == ([[1, 2], [3]], [0, 1, 0])
