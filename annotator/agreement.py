"""Inter-annotator agreement on rankings with ties: pure functions, no database.

A ranking is a list of ranks, one per candidate in display order (1 = best, equal
ranks = a tie). Two rankings of the same task agree on a pair of candidates when they
order it the same way (both prefer i, both prefer j, or both tie them).

* `pairwise_agreement(a, b)`: the share of candidate pairs two rankings agree on.
* `kendall_tau(a, b)`: Kendall's tau-b (tie-corrected), via scipy.
* `krippendorff_alpha(units, metric)`: Krippendorff's alpha over units of values
  with missing entries (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability");
  for rankings a unit is one candidate of one task and its values are the ranks
  annotators gave it, with the ordinal metric.
* `consensus(rankings)`: the mean rank of each candidate (Borda), the order that
  annotators are compared against with `agreement_with_consensus`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations, permutations

Ranking = Sequence[float]


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def pairwise_agreement(a: Ranking, b: Ranking) -> float:
    """Share of candidate pairs ordered the same way (ties included) by both rankings."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"need two rankings of the same 2+ candidates, got {len(a)} and {len(b)}")
    pairs = list(combinations(range(len(a)), 2))
    same = sum(_sign(a[i] - a[j]) == _sign(b[i] - b[j]) for i, j in pairs)
    return same / len(pairs)


def kendall_tau(a: Ranking, b: Ranking) -> float:
    """Kendall's tau-b; NaN when one ranking ties every candidate (no order to correlate)."""
    from scipy.stats import kendalltau

    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"need two rankings of the same 2+ candidates, got {len(a)} and {len(b)}")
    return float(kendalltau(a, b).statistic)


def _delta2(metric: str, c: float, k: float, marginals: dict[float, float]) -> float:
    if metric == "nominal":
        return float(c != k)
    if metric == "interval":
        return (c - k) ** 2
    if metric == "ordinal":
        lo, hi = min(c, k), max(c, k)
        between = sum(n for v, n in marginals.items() if lo <= v <= hi)
        return (between - (marginals[c] + marginals[k]) / 2) ** 2
    raise ValueError(f"unknown metric {metric!r}; valid: nominal, ordinal, interval")


def krippendorff_alpha(units: Sequence[Sequence[float | None]], metric: str = "ordinal") -> float:
    """Alpha over units (each: the values coders gave it, None = missing); NaN if nothing is pairable.

    alpha = 1 - D_o / D_e with D_o = sum o_ck d2_ck / n and D_e = sum n_c n_k d2_ck / (n (n - 1)),
    o the coincidence matrix (each unit's ordered value pairs weighted 1 / (m_u - 1)).
    """
    coincidence: dict[tuple[float, float], float] = {}
    for unit in units:
        values = [v for v in unit if v is not None]
        m = len(values)
        if m < 2:
            continue  # a value nobody else coded carries no information about agreement
        for i, j in permutations(range(m), 2):
            coincidence[(values[i], values[j])] = coincidence.get((values[i], values[j]), 0.0) + 1 / (m - 1)
    marginals: dict[float, float] = {}
    for (c, _), w in coincidence.items():
        marginals[c] = marginals.get(c, 0.0) + w
    n = sum(marginals.values())
    if n <= 1:
        return math.nan
    d_o = sum(w * _delta2(metric, c, k, marginals) for (c, k), w in coincidence.items()) / n
    d_e = sum(
        marginals[c] * marginals[k] * _delta2(metric, c, k, marginals) for c in marginals for k in marginals
    ) / (n * (n - 1))
    if d_e == 0:
        return 1.0 if d_o == 0 else math.nan  # every value the same: agreement is total but trivial
    return 1 - d_o / d_e


def ranking_units(task_rankings: Sequence[Sequence[Ranking | None]]) -> list[list[float | None]]:
    """Turn per-task rankings (one per annotator slot, None = did not rank) into alpha's units:
    one unit per (task, candidate) whose values are the ranks it got."""
    units = []
    for rankings in task_rankings:
        present = [r for r in rankings if r is not None]
        if not present:
            continue
        for c in range(len(present[0])):
            units.append([r[c] if r is not None else None for r in rankings])
    return units


def consensus(rankings: Sequence[Ranking]) -> list[float]:
    """The mean rank of each candidate over several rankings of one task (the same merge the
    reward stage's `consensus: aggregate` uses)."""
    return [sum(r[c] for r in rankings) / len(rankings) for c in range(len(rankings[0]))]


def agreement_with_consensus(own: Ranking, others: Sequence[Ranking]) -> float:
    """Pairwise agreement of one ranking with the consensus of the *other* annotators of the task
    (leave-one-out, so an annotator does not agree with themself)."""
    return pairwise_agreement(own, consensus(others))
