"""Bradley-Terry leaderboard: comparisons from rankings with ties, and recovery of known strengths."""

import math
import random

import pytest

from annotator.leaderboard import ELO, RankedTask, comparisons, fit, leaderboard


def test_comparisons_from_rankings_with_ties() -> None:
    wins = comparisons([RankedTask(["a", "b", "a", "c"], [1, 2, 2, 3])])
    # (a0,b) a wins; (a0,a2) same arm, ignored; (a0,c) a; (b,a2) tie; (b,c) b; (a2,c) a.
    assert wins == {("a", "b"): 1.5, ("a", "c"): 2.0, ("b", "a"): 0.5, ("b", "c"): 1.0}


def test_fit_two_arms_matches_closed_form() -> None:
    # With the half-win prior each way, p_a/p_b = (30 + 0.5) / (10 + 0.5).
    scores = fit({("a", "b"): 30.0, ("b", "a"): 10.0}, ["a", "b"])
    assert scores["a"] - scores["b"] == pytest.approx(ELO * math.log(30.5 / 10.5), rel=1e-6)
    assert scores["a"] + scores["b"] == pytest.approx(0, abs=1e-9)


def test_recovers_known_strengths_on_simulated_rankings() -> None:
    rng = random.Random(0)
    true = {"brief": 1.0, "friendly": 0.0, "detailed": -0.7}  # natural-log strengths
    tasks = []
    for _ in range(4000):  # the error's sd is ~0.03 here: 0.12 is a 4-sd margin
        arms = [rng.choice(list(true)) for _ in range(4)]
        # Plackett-Luce sample via Gumbel-max: pairwise marginals are exactly Bradley-Terry.
        noisy = [true[a] - math.log(-math.log(rng.random())) for a in arms]
        order = sorted(range(4), key=lambda i: -noisy[i])
        ranks = [0] * 4
        for r, i in enumerate(order, 1):
            ranks[i] = r
        tasks.append(RankedTask(arms, ranks))
    board = leaderboard(tasks, n_boot=100)
    assert [s.arm for s in board] == ["brief", "friendly", "detailed"]
    by = {s.arm: s for s in board}
    for a, b in [("brief", "friendly"), ("friendly", "detailed")]:
        est = (by[a].score - by[b].score) / ELO
        assert est == pytest.approx(true[a] - true[b], abs=0.12), (
            f"{a} - {b}: estimated {est:.3f}, true {true[a] - true[b]:.3f}, allowed error 0.12"
        )
    for s in board:
        assert s.ci_low is not None and s.ci_high is not None  # bootstrapped
        assert s.ci_low <= s.score <= s.ci_high
        width = s.ci_high - s.ci_low
        assert width < 40, f"{s.arm}: 95% interval {width:.1f} Elo wide; 4000 rankings should pin it under 40"
    brief, detailed = by["brief"].win_rate, by["detailed"].win_rate
    assert brief is not None and detailed is not None and brief > 0.5 > detailed


def test_one_arm_has_no_leaderboard() -> None:
    assert leaderboard([RankedTask(["a", "a"], [1, 2])]) == []


def test_an_arm_never_compared_has_no_win_rate() -> None:
    """Arms that only ever met themselves (e.g. imported pairs) get None, not NaN (JSON has no NaN)."""
    board = leaderboard([RankedTask(["a", "a"], [1, 2]), RankedTask(["b", "b"], [2, 1])], n_boot=5)
    assert {s.arm: s.win_rate for s in board} == {"a": None, "b": None}
    assert all(s.comparisons == 0 and math.isfinite(s.score) for s in board)
