"""Bradley-Terry leaderboard: comparisons from rankings with ties, and recovery of known strengths."""

import math
import random

import pytest

from annotator.leaderboard import ELO, RankedTask, comparisons, fit, leaderboard
from annotator.style_control import StyledTask, style, style_leaderboard


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


def test_style_control_takes_length_out_of_the_standings() -> None:
    """A made-up world: annotators prefer the longer of two answers (and nothing else). Arm "verbose"
    writes longer answers than "terse": the raw leaderboard puts it far ahead; with length as a
    covariate the two are even (the interval covers 0) and the length coefficient carries the
    preference. An arm that wins at equal length keeps its lead."""
    rng = random.Random(0)
    tasks = []
    for _ in range(300):
        a = " ".join(["word"] * rng.randint(10, 40))
        b = " ".join(["word"] * rng.randint(5, 25))
        p_a = 1 / (1 + math.exp(-(len(a) - len(b)) / 40))
        ranks = [1, 2] if rng.random() < p_a else [2, 1]
        tasks.append(StyledTask(["verbose", "terse"], ranks, [a, b]))
    raw = {s.arm: s for s in leaderboard([RankedTask(t.arms, t.ranks) for t in tasks], n_boot=50)}
    assert raw["verbose"].ci_low > 0 > raw["terse"].ci_high
    board = style_leaderboard(tasks, n_boot=50)
    arms = {r["arm"]: r for r in board["arms"]}
    assert arms["verbose"]["ci_low"] < 0 < arms["verbose"]["ci_high"], arms
    assert abs(arms["verbose"]["score"]) < 0.3 * raw["verbose"].score
    assert board["style"]["length"] > 0.5 and abs(board["style"]["bold"]) < 1e-6  # no bold anywhere
    # Equal lengths, one arm truly better: style control leaves its lead.
    even = [
        StyledTask(["good", "bad"], [1, 2] if rng.random() < 0.75 else [2, 1], ["word " * 20, "word " * 20])
        for _ in range(200)
    ]
    arms = {r["arm"]: r for r in style_leaderboard(even, n_boot=50)["arms"]}
    assert arms["good"]["ci_low"] > 0
    assert style("## Title\n\n- one\n- **two**\n1. three") == [5.0, 1.0, 3.0, 1.0]
