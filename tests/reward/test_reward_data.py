"""Ranking transforms with ties: strict pairs with margins, consensus, lists."""

from reward.data import apply_consensus, dense_ranks, listwise_groups, pairwise_rows, strict_pairs


def row(task_id: int, ranks: list[int], annotator: str = "a") -> dict:
    return {
        "task_id": task_id,
        "prompt": "Q?",
        "texts": ["w", "x", "y", "z"][: len(ranks)],
        "ranks": ranks,
        "annotator": annotator,
    }


def test_pairs_from_a_ranking_with_ties() -> None:
    rows = pairwise_rows([row(1, [2, 1, 1, 3])], margin=True)
    got = {(r["chosen"][0]["content"], r["rejected"][0]["content"], r["margin"]) for r in rows}
    # x and y tie for best (no pair between them); w is second; z last.
    assert got == {("x", "w", 1.0), ("y", "w", 1.0), ("x", "z", 2.0), ("y", "z", 2.0), ("w", "z", 1.0)}
    assert rows[0]["prompt"] == [{"role": "user", "content": "Q?"}]
    assert "margin" not in pairwise_rows([row(1, [1, 2])])[0]
    assert strict_pairs([1, 1, 1]) == []


def test_consensus_all_or_aggregate() -> None:
    rows = [row(1, [1, 2, 3], "a"), row(1, [2, 1, 3], "b"), row(1, [1, 3, 2], "c"), row(2, [2, 1], "a")]
    assert apply_consensus(rows, "all") == rows
    merged = apply_consensus(rows, "aggregate")
    assert len(merged) == 2
    task1 = next(r for r in merged if r["task_id"] == 1)
    # Mean ranks: w (1+2+1)/3 = 1.33, x (2+1+3)/3 = 2, y (3+3+2)/3 = 2.67.
    assert task1["ranks"] == [1, 2, 3] and task1["n_rankings"] == 3
    assert dense_ranks([1.5, 1.5, 3.0]) == [1, 1, 2]
    tie = apply_consensus([row(3, [1, 2], "a"), row(3, [2, 1], "b")], "aggregate")
    assert tie[0]["ranks"] == [1, 1]  # disagreement averages to a tie
    assert len(pairwise_rows(rows, consensus="all")) == 3 + 3 + 3 + 1
    assert len(pairwise_rows(rows, consensus="aggregate")) == 3 + 1


def test_listwise_groups_keep_display_order_and_ties() -> None:
    groups = listwise_groups([row(1, [2, 1, 1, 3])])
    assert groups == [
        {
            "prompt": [{"role": "user", "content": "Q?"}],
            "responses": ["w", "x", "y", "z"],
            "ranks": [2, 1, 1, 3],
        }
    ]
