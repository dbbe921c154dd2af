"""Ranking validation, ranking-to-pairs, and the simulated annotators' preference and noise."""

import math
import random
from typing import Any

import pytest
from pydantic import ValidationError

from annotator.ranking import Flag, RankingError, Submission, check_flags, normalize_ranks
from annotator.simulated import Preference, Profile, follows_instruction, rank, utility
from reward.data import strict_pairs


@pytest.mark.parametrize(
    "ranks, k, dense",
    [
        ([1, 2, 3, 4], 4, [1, 2, 3, 4]),
        ([2, 1], 2, [2, 1]),
        ([1, 1, 2, 3], 4, [1, 1, 2, 3]),
        ([1, 1, 3, 4], 4, [1, 1, 2, 3]),
        ([1, 1, 1], 3, [1, 1, 1]),
        ([3, 1, 1], 3, [2, 1, 1]),
    ],
)
def test_valid_rankings_normalize_to_dense(ranks, k, dense) -> None:
    assert normalize_ranks(ranks, k) == dense


@pytest.mark.parametrize(
    "ranks, k, message",
    [
        ([1, 2, 3], 4, "the task has 4 candidates but 3 ranks were given"),
        ([1, 2, 5, 3], 4, "rank 5 is outside 1..4"),
        ([0, 1], 2, "rank 0 is outside 1..2"),
        ([2, 2, 3], 3, "do not form an order"),
        ([1, 3, 3, 3], 4, "do not form an order"),
    ],
)
def test_invalid_rankings_say_what_is_valid(ranks, k, message) -> None:
    with pytest.raises(RankingError, match=message):
        normalize_ranks(ranks, k)


def test_submission_shape() -> None:
    Submission(task_id=1, submission_id="x", ranks=[1, 2])
    Submission(task_id=1, submission_id="x", skip_reason="cannot_judge")
    bads: list[dict[str, Any]] = [dict(ranks=[1, 2], skip_reason="other"), dict(), dict(skip_reason="bored")]
    for bad in bads:
        with pytest.raises(ValidationError):
            Submission(task_id=1, submission_id="x", **bad)
    with pytest.raises(ValidationError, match="needs a text"):
        Flag(position=0, reason="other")
    with pytest.raises(RankingError, match="outside 0..1"):
        check_flags([Flag(position=2, reason="unsafe")], 2)
    with pytest.raises(RankingError, match="flagged twice"):
        check_flags([Flag(position=0, reason="unsafe"), Flag(position=0, reason="broken")], 2)


def test_strict_pairs_skip_ties_and_carry_the_gap() -> None:
    assert strict_pairs([1, 2, 2, 3]) == [(0, 1, 1), (0, 2, 1), (0, 3, 2), (1, 3, 1), (2, 3, 1)]
    assert strict_pairs([1, 1]) == []
    assert len(strict_pairs([1, 2, 3, 4])) == 6


def test_instruction_following() -> None:
    assert follows_instruction("Answer in one short sentence.", "Cats purr.") is True
    assert follows_instruction("Answer in one short sentence.", "Cats purr. They nap.") is False
    assert follows_instruction("Answer in detail, with several sentences.", "A. B. C.") is True
    assert follows_instruction("Answer in a warm and friendly way.", "Happy to help! Cats purr.") is True
    assert follows_instruction("You are a helpful assistant.", "x") is None


def test_utility_by_hand() -> None:
    pref = Preference(
        target_words=4, length_weight=1.0, liked={"calm": 0.5}, disliked={"ice": 1.0}, instruction_weight=2.0
    )
    # 4 words (length term 0), one liked word, follows "one short sentence": 0 + 0.5 + 2.
    assert utility(pref, "The sea is calm.", "Answer in one short sentence.") == pytest.approx(2.5)
    # 8 words: -|8-4|/4 = -1; two "ice": -2; two sentences, so no instruction bonus.
    assert utility(
        pref, "Ice is cold. Ice is white and hard.", "Answer in one short sentence."
    ) == pytest.approx(-3.0)


def test_simulated_ranking_follows_bradley_terry() -> None:
    """P(a ranked above b) should be sigmoid((u_a - u_b) / noise) under Gumbel (Plackett-Luce) noise."""
    pref = Preference(target_words=5, length_weight=1.0, liked={}, disliked={}, instruction_weight=0.0)
    good, bad = {"text": "one two three four five"}, {"text": "one two three four five six seven"}
    gap = utility(pref, good["text"], None) - utility(pref, bad["text"], None)  # 0.4
    profile = Profile(preference=pref, noise=0.5, tie_margin=0.0)
    rng = random.Random(1)
    wins = sum(rank(profile, [good, bad], rng) == [1, 2] for _ in range(20000))  # sd 0.0033: 0.02 is 6 sd
    expected = 1 / (1 + math.exp(-gap / 0.5))
    assert wins / 20000 == pytest.approx(expected, abs=0.02), (
        f"P(a above b) {wins / 20000:.4f}, expected {expected:.4f}"
    )


def test_ties_bias_and_unreliable() -> None:
    rng = random.Random(0)  # each check below has its own generator, so one cannot shift another
    same = [{"text": "A b."}, {"text": "A b."}, {"text": "Completely different and much longer text here."}]
    assert rank(Profile(), same, rng)[:2] in ([1, 1], [2, 2])
    flat = Profile(
        preference=Preference(length_weight=0, liked={}, disliked={}, instruction_weight=0),
        noise=0.1,
        position_bias=3.0,
        tie_margin=0.0,
    )
    cands = [{"text": "x"}, {"text": "y"}, {"text": "z"}]
    rng = random.Random(1)
    first_wins = sum(rank(flat, cands, rng)[0] == 1 for _ in range(200))
    assert first_wins > 190, f"the first shown won {first_wins} of 200; with this bias it nearly always wins"
    rng = random.Random(2)
    noisy = [rank(Profile(unreliable=True), cands, rng) for _ in range(1200)]
    assert all(sorted(r) == [1, 2, 3] for r in noisy)
    share = sum(r[0] == 1 for r in noisy) / 1200  # about a third; sd 0.014, so the bounds are 4.5 sd away
    assert 0.27 < share < 0.40, (
        f"an unreliable annotator put the first candidate first {share:.3f} of the time"
    )
