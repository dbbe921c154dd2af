"""Several annotators' rankings of one task, merged into one (`consensus` in the reward config).

Each method returns one rank per candidate (1 = best; equal ranks tie):

* `borda` (`aggregate` is its old name): the mean rank, as annotator/agreement.py's consensus.
* `bradley-terry`: strengths p fitted to the pairwise outcomes (i above j is a win for i; a tie, half
  each) by Hunter's (2004) MM iteration p_i <- W_i / sum_j n_ij / (p_i + p_j), with one virtual tie
  between every pair so a candidate that never lost keeps a finite strength. Ranked by strength.
* `plackett-luce`: worths w fitted to each ranking read as successive choices (the best of all, then
  the best of the rest, ...) by Hunter's MM iteration w_i <- c_i / sum_{stages s where i was left}
  1 / sum_{k left at s} w_k, where c_i counts i's choices; a block of tied candidates is chosen
  together, each credited 1/|block|; the same virtual tie as above keeps worths finite.
* `ranked-pairs` (Tideman): every pair's majority margin; pairs are locked in from the largest margin
  down unless one would close a cycle; the candidates in the order the locked graph gives (a pair with
  no majority stays tied when nothing else orders it).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Literal

Method = Literal["borda", "bradley-terry", "plackett-luce", "ranked-pairs"]
METHODS: tuple[str, ...] = ("borda", "bradley-terry", "plackett-luce", "ranked-pairs")
ITERATIONS = 500


def merge(rankings: Sequence[Sequence[int]], method: str) -> list[int]:
    """One ranking (1 = best) from several of the same candidates."""
    if not rankings:
        raise ValueError("no rankings to merge")
    if method not in METHODS:
        raise ValueError(f"unknown aggregation {method!r}; valid: {', '.join(METHODS)}")
    if method == "ranked-pairs":
        return ranked_pairs(rankings)
    if method == "borda":
        return dense([-sum(r[c] for r in rankings) / len(rankings) for c in range(len(rankings[0]))])
    return dense(bradley_terry(rankings) if method == "bradley-terry" else plackett_luce(rankings))


def dense(scores: Sequence[float], digits: int = 9) -> list[int]:
    """1 for the highest score; scores equal to `digits` places share a rank."""
    distinct = sorted({round(s, digits) for s in scores}, reverse=True)
    return [distinct.index(round(s, digits)) + 1 for s in scores]


def _outcomes(rankings: Sequence[Sequence[int]]) -> list[list[float]]:
    """wins[i][j]: how often i was ranked above j (ties half each), plus one virtual tie per pair."""
    k = len(rankings[0])
    wins = [[0.0] * k for _ in range(k)]
    for i, j in combinations(range(k), 2):
        wins[i][j] = wins[j][i] = 0.5  # the virtual tie
        for r in rankings:
            if r[i] < r[j]:
                wins[i][j] += 1
            elif r[j] < r[i]:
                wins[j][i] += 1
            else:
                wins[i][j] += 0.5
                wins[j][i] += 0.5
    return wins


def bradley_terry(rankings: Sequence[Sequence[int]]) -> list[float]:
    """Bradley-Terry strengths (they sum to the number of candidates)."""
    wins = _outcomes(rankings)
    k = len(wins)
    p = [1.0] * k
    for _ in range(ITERATIONS):
        p = [
            sum(wins[i]) / sum((wins[i][j] + wins[j][i]) / (p[i] + p[j]) for j in range(k) if j != i)
            for i in range(k)
        ]
        total = sum(p)
        p = [x * k / total for x in p]
    return p


def plackett_luce(rankings: Sequence[Sequence[int]]) -> list[float]:
    """Plackett-Luce worths (they sum to the number of candidates)."""
    k = len(rankings[0])
    # Each stage: (who is still left, who is chosen there, credit each). The virtual tie between every
    # pair is a two-candidate stage that both win, half each.
    stages: list[tuple[list[int], list[int], float]] = [
        ([i, j], [i, j], 0.5) for i, j in combinations(range(k), 2)
    ]
    for r in rankings:
        left = list(range(k))
        for rank in sorted(set(r)):
            block = [c for c in left if r[c] == rank]
            if len(left) > 1:  # the last one left is no choice (it would not move the fit either)
                stages.append((list(left), block, 1.0 / len(block)))
            left = [c for c in left if c not in block]
    chosen = [0.0] * k
    for _, block, credit in stages:
        for c in block:
            chosen[c] += credit
    w = [1.0] * k
    for _ in range(ITERATIONS):
        denom = [0.0] * k
        for left, _, _ in stages:
            share = 1.0 / sum(w[c] for c in left)
            for c in left:
                denom[c] += share
        w = [chosen[i] / denom[i] for i in range(k)]
        total = sum(w)
        w = [x * k / total for x in w]
    return w


def ranked_pairs(rankings: Sequence[Sequence[int]]) -> list[int]:
    """Tideman's ranked pairs, as ranks (1 = best)."""
    k = len(rankings[0])
    margins = []
    for i, j in combinations(range(k), 2):
        m = sum((r[i] < r[j]) - (r[j] < r[i]) for r in rankings)
        if m:
            margins.append((abs(m), (i, j) if m > 0 else (j, i)))
    beats: dict[int, set[int]] = {c: set() for c in range(k)}  # locked: c above each of beats[c]

    def reaches(a: int, b: int) -> bool:
        todo, seen = [a], set()
        while todo:
            x = todo.pop()
            if x == b:
                return True
            if x not in seen:
                seen.add(x)
                todo.extend(beats[x])
        return False

    for _, (winner, loser) in sorted(margins, key=lambda m: (-m[0], m[1])):
        if not reaches(loser, winner):  # locking winner > loser closes no cycle
            beats[winner].add(loser)
    # A candidate's rank: 1 + the longest chain of locked pairs above it.
    above: dict[int, int] = {}

    def depth(c: int) -> int:
        if c not in above:
            above[c] = max((depth(x) + 1 for x in range(k) if c in beats[x]), default=0)
        return above[c]

    return [depth(c) + 1 for c in range(k)]
