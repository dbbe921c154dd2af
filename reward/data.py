"""From rankings to training signal: a ranking of K responses with ties becomes pairs or lists.

Pure functions over plain lists; no database. `strict_pairs` is also what
`rankloop export --format trl` writes: every pair the ranking orders strictly.
"""

from __future__ import annotations


def strict_pairs(ranks: list[int]) -> list[tuple[int, int, int]]:
    """(better, worse, rank gap) for every pair of positions the ranking orders strictly; ties give none."""
    return [
        (i, j, ranks[j] - ranks[i])
        for i in range(len(ranks))
        for j in range(len(ranks))
        if ranks[i] < ranks[j]
    ]
