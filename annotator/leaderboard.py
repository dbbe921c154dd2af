"""Bradley-Terry leaderboard of system prompts (or models) from every ranking, with bootstrap CIs.

Each ranking yields comparisons between candidates from different arms: the better
ranked arm wins, a tie is half a win each. Strengths are fitted with the MM algorithm
of Hunter (2004) on those win counts, with one pseudo-comparison of half a win each
way against every other arm (a weak prior, so an arm that never lost stays finite).
Scores are on the Elo scale (400 log10 strength, mean 0): +100 means winning ~64%
of comparisons against an average arm. Confidence intervals resample rankings.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

ELO = 400 / math.log(10)


@dataclass(frozen=True)
class RankedTask:
    """One ranking: each candidate's arm and rank, in display order."""

    arms: Sequence[Hashable]
    ranks: Sequence[float]


def comparisons(tasks: Sequence[RankedTask]) -> dict[tuple[Hashable, Hashable], float]:
    """(winner, loser) -> wins, summed over every cross-arm candidate pair; ties give 0.5 each way."""
    wins: dict[tuple[Hashable, Hashable], float] = defaultdict(float)
    for t in tasks:
        for i in range(len(t.arms)):
            for j in range(i + 1, len(t.arms)):
                a, b = t.arms[i], t.arms[j]
                if a == b:
                    continue
                if t.ranks[i] < t.ranks[j]:
                    wins[(a, b)] += 1
                elif t.ranks[i] > t.ranks[j]:
                    wins[(b, a)] += 1
                else:
                    wins[(a, b)] += 0.5
                    wins[(b, a)] += 0.5
    return wins


def fit(
    wins: dict[tuple[Hashable, Hashable], float],
    arms: Sequence[Hashable],
    prior: float = 0.5,
    iters: int = 500,
    tol: float = 1e-10,
) -> dict[Hashable, float]:
    """Bradley-Terry log-strengths on the Elo scale (mean 0) by minorization-maximization."""
    w = dict(wins)
    for a in arms:
        for b in arms:
            if a != b:
                w[(a, b)] = w.get((a, b), 0.0) + prior
    total_wins = {a: sum(v for (x, _), v in w.items() if x == a) for a in arms}
    games = {(a, b): w.get((a, b), 0.0) + w.get((b, a), 0.0) for a in arms for b in arms if a != b}
    p = dict.fromkeys(arms, 1.0)
    for _ in range(iters):
        new = {}
        for a in arms:
            denom = sum(games[(a, b)] / (p[a] + p[b]) for b in arms if b != a)
            new[a] = total_wins[a] / denom if denom else p[a]
        g = math.exp(sum(math.log(v) for v in new.values()) / len(new))
        new = {a: v / g for a, v in new.items()}
        done = max(abs(new[a] - p[a]) for a in arms) < tol
        p = new
        if done:
            break
    return {a: ELO * math.log(v) for a, v in p.items()}


@dataclass
class Standing:
    arm: Hashable
    score: float
    ci_low: float
    ci_high: float
    comparisons: float
    win_rate: float | None  # None for an arm that was never compared with another


def leaderboard(
    tasks: Sequence[RankedTask], n_boot: int = 200, seed: int = 0, level: float = 0.95
) -> list[Standing]:
    """Arms sorted best first, each with its score, a bootstrap CI over rankings, and raw win rate."""
    arms = sorted({a for t in tasks for a in t.arms}, key=str)
    if len(arms) < 2:
        return []
    wins = comparisons(tasks)
    scores = fit(wins, arms)
    rng = random.Random(seed)
    boots: dict[Hashable, list[float]] = {a: [] for a in arms}
    for _ in range(n_boot):
        resample = [tasks[rng.randrange(len(tasks))] for _ in tasks]
        for a, s in fit(comparisons(resample), arms, iters=200, tol=1e-6).items():
            boots[a].append(s)
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    out = []
    for a in arms:
        played = sum(v for (x, y), v in wins.items() if a in (x, y))
        won = sum(v for (x, _), v in wins.items() if x == a)
        b = sorted(boots[a]) or [scores[a]]
        out.append(
            Standing(
                a,
                scores[a],
                b[int(lo_q * (len(b) - 1))],
                b[int(math.ceil(hi_q * (len(b) - 1)))],
                played,
                won / played if played else None,
            )
        )
    return sorted(out, key=lambda s: -s.score)
