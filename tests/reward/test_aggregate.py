"""Merging several rankings of one task (reward/aggregate.py), on literal examples worked by hand."""

from __future__ import annotations

import pytest

from reward.aggregate import bradley_terry, merge, plackett_luce, ranked_pairs
from reward.data import apply_consensus

# Five annotators rank A, B, C (ranks per candidate, 1 = best): three say A > B > C, two B > C > A.
# Pairwise: A beats B 3-2 and C 3-2, B beats C 5-0.
ELECTION = [[1, 2, 3]] * 3 + [[3, 1, 2]] * 2


def test_the_method_decides_who_wins() -> None:
    # Mean ranks: A (3 + 6) / 5 = 1.8, B (6 + 2) / 5 = 1.6, C (9 + 4) / 5 = 2.6: B first.
    assert merge(ELECTION, "borda") == [2, 1, 3]
    # Ranked pairs: lock B > C (margin 5), then A > B and A > C (margin 1 each): A first.
    assert merge(ELECTION, "ranked-pairs") == [1, 2, 3]
    # The maximum-likelihood fits weigh how decisively each wins: B's 5-0 over C outweighs its 2-3 loss to
    # A, so they side with Borda, not with the Condorcet winner (BT strengths about 1.13, 1.44, 0.42).
    assert merge(ELECTION, "bradley-terry") == [2, 1, 3] == merge(ELECTION, "plackett-luce")
    # The fit is the maximum-likelihood one: each candidate's expected wins equal its wins (W_i =
    # sum_j n_ij p_i / (p_i + p_j)), virtual ties included: A 3 + 3 + 1 = 7 of 12, B 2 + 5 + 1 = 8, C 2 + 1 = 3.
    p, n = bradley_terry(ELECTION), 6  # five rankings and the virtual tie per pair
    expected = [sum(n * p[i] / (p[i] + p[j]) for j in range(3) if j != i) for i in range(3)]
    assert expected == pytest.approx([7.0, 8.0, 3.0], abs=1e-6)


def test_two_candidates_fit_in_closed_form() -> None:
    """A above B in 3 of 4 rankings. Wins with the virtual tie: A 3.5, B 1.5. For two candidates Hunter's
    MM fixed point is p_A / p_B = W_A / W_B = 7 / 3, and both fits agree; scaled to sum 2: 1.4 and 0.6."""
    rankings = [[1, 2]] * 3 + [[2, 1]]
    for fit in (bradley_terry, plackett_luce):
        assert fit(rankings) == pytest.approx([1.4, 0.6], abs=1e-6)


def test_a_cycle_is_broken_where_it_is_weakest() -> None:
    # A > B > C, B > C > A, C > A > B: every pair 2-1, a Condorcet cycle. Equal margins lock in index
    # order: A > B, B > C; C > A would close the cycle and is dropped.
    cycle = [[1, 2, 3], [3, 1, 2], [2, 3, 1]]
    assert ranked_pairs(cycle) == [1, 2, 3]
    assert merge(cycle, "bradley-terry") == [1, 1, 1]  # symmetric: equal strengths, a three-way tie
    assert merge(cycle, "borda") == [1, 1, 1]


def test_ties_and_disagreement() -> None:
    assert merge([[1, 2], [2, 1]], "plackett-luce") == [1, 1]
    assert merge([[1, 2], [2, 1]], "ranked-pairs") == [1, 1]  # no majority: nothing orders them
    assert merge([[1, 1, 2]] * 2, "plackett-luce") == [1, 1, 2]  # a tied block chosen together
    assert merge([[1, 2, 3]], "ranked-pairs") == [1, 2, 3]


def test_consensus_merges_each_task_by_the_chosen_method() -> None:
    rows = [
        {"task_id": 1, "prompt": "Q", "texts": ["a", "b", "c"], "ranks": r, "annotator": f"n{i}"}
        for i, r in enumerate(ELECTION)
    ]
    assert apply_consensus(rows, "aggregate")[0]["ranks"] == [2, 1, 3]  # the old name of borda
    (merged,) = apply_consensus(rows, "ranked-pairs")
    assert merged["ranks"] == [1, 2, 3] and merged["n_rankings"] == 5
    with pytest.raises(ValueError, match="ranked-pairs"):
        apply_consensus(rows, "majority")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="valid: borda"):
        merge(ELECTION, "kemeny")
