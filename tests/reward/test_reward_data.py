"""Ranking transforms with ties: strict pairs with margins, consensus, lists."""

from reward.aggregate import dense
from reward.conversation import conversation_key, split_key
from reward.data import apply_consensus, listwise_groups, pairwise_rows, split_of, strict_pairs


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
    assert dense([-1.5, -1.5, -3.0]) == [1, 1, 2]  # scores: higher is better
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
            "weights": [1.0, 1.0, 1.0, 1.0],
            "attributes": [{}, {}, {}, {}],
        }
    ]


def test_strengths_become_margins_and_weights_and_ratings_travel() -> None:
    r = row(1, [2, 1, 1, 3]) | {
        "strengths": ["significantly", "slightly"],
        "attributes": '[{"helpfulness": 3}, {}, {}, {"harmlessness": 0}]',
    }
    pairs = {
        (p["chosen"][0]["content"], p["rejected"][0]["content"]): p["margin"] for p in pairwise_rows([r])
    }
    # x, y (level 1) beat w (level 2) by "significantly" = 1, and z (level 3) by 1 + 1/3; w beats z by 1/3.
    assert pairs[("x", "w")] == 1.0 and pairs[("y", "z")] == 4 / 3 and pairs[("w", "z")] == 1 / 3
    # With the rank gap too, the two add; rows without strengths get 0 beside rows that have them.
    both = pairwise_rows([r, row(2, [1, 2])], margin=True)
    assert {p["margin"] for p in both if p["chosen"][0]["content"] == "x"} == {2.0, 2 + 4 / 3}
    assert [p["margin"] for p in pairwise_rows([row(2, [1, 2]), r])][:1] == [0.0]
    assert "margin" not in pairwise_rows([r], strength_margin=False)[0]
    (group,) = listwise_groups([r])
    assert group["weights"] == [1 + 1 / 3, 2.0, 2.0, 1.0]
    assert group["attributes"][0] == {"helpfulness": 3} and group["attributes"][3] == {"harmlessness": 0}
    # Merged rankings drop the strengths of the rankings they merge.
    merged = apply_consensus([r, row(1, [1, 2, 3, 4], "b")], "borda")
    assert merged[0]["strengths"] is None


def test_near_duplicates_and_one_opening_land_on_one_side() -> None:
    """Held out means held out: a prompt planted again with other case, spacing, punctuation or
    numbering, and every conversation that opens with it, falls on the side the prompt falls on,
    at every eval fraction."""
    base = "What is a cat?"
    planted = [
        "what is a cat #0-3",
        "  What  is a CAT?? (2)",
        "1. What is a cat",
        "What is a cat?\n",
        conversation_key(
            [
                {"role": "user", "content": "What is a cat?"},
                {"role": "assistant", "content": "An animal."},
                {"role": "user", "content": "Which one?"},
            ]
        ),
    ]
    assert {split_key(p) for p in planted} == {split_key(base)} == {"what is a cat"}
    for fraction in (0.1, 0.3, 0.5, 0.9):
        assert {split_of(p, fraction) for p in planted} == {split_of(base, fraction)}
    # Different questions are still told apart, so both sides fill.
    questions = [
        f"Why is the {thing} {colour}?" for thing in ("sky", "sea", "grass") for colour in ("blue", "red")
    ]
    assert len({split_key(q) for q in questions}) == 6
    sides = {split_of(f"Question number {word} about birds?", 0.5) for word in "abcdefghijklmnop"}
    assert sides == {"train", "eval"}
