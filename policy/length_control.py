"""How much of a win is length: two controls for a judge that may prefer any length, not only longer.

* `length_controlled`: the win probability at equal length in a Bradley-Terry model with a free length
  utility, P(candidate wins) = sigmoid(b0 + u(len_c) - u(len_b)), u a degree-4 polynomial in
  standardized log(1 + words). The length term cancels at equal length, so sigmoid(b0) is the win rate
  with length taken out, whatever shape the judge's length preference has (peaked at 12 words, say).
  AlpacaEval's LC regresses on tanh(length difference), which assumes more (or less) is always better:
  under a judge that peaks at some length, a policy that differs only in length keeps a large
  "length-controlled" win there (tests/policy/test_policy_evaluate.py shows both).
* `similar_length`: the raw win rate on the comparisons whose two responses are within `tolerance` of
  each other's length (relative to the longer one), with its own interval and count: no model at all,
  but fewer comparisons, and still a small edge for whichever side sits nearer the judge's favourite
  length.

Both resample prompt groups for their 95% intervals, as the raw win rate does.
"""

from __future__ import annotations

import numpy as np

from policy.stats import draws, groups, interval, logistic, win_rate

DEGREE = 4
SIMILAR_TOLERANCE = 0.2


def _features(cand_words: np.ndarray, base_words: np.ndarray) -> np.ndarray:
    """[1, p(len_c) - p(len_b)] with p the powers 1..DEGREE of standardized log(1 + words)."""
    z_c, z_b = np.log1p(np.maximum(cand_words, 0)), np.log1p(np.maximum(base_words, 0))
    pooled = np.concatenate([z_c, z_b])
    mu, sd = pooled.mean(), pooled.std() or 1.0

    def powers(z: np.ndarray) -> np.ndarray:
        return np.column_stack([((z - mu) / sd) ** k for k in range(1, DEGREE + 1)])

    return np.column_stack([np.ones(len(z_c)), powers(z_c) - powers(z_b)])


def length_controlled(
    wins: np.ndarray,
    cand_words: np.ndarray,
    base_words: np.ndarray,
    group: list[str],
    n_boot: int = 500,
    seed: int = 0,
) -> dict:
    """The win rate at equal length under a free length utility, with a grouped bootstrap interval."""
    wins = np.asarray(wins, float)
    X = _features(np.asarray(cand_words, float), np.asarray(base_words, float))
    ridge = np.array([0.0] + [1e-3] * DEGREE)  # the intercept is the estimate: never shrunk

    def at_equal_length(weight: np.ndarray) -> float:
        return float(1 / (1 + np.exp(-logistic(X, wins, weight, ridge)[0])))

    g, n_groups = groups(group)
    boots = np.array([at_equal_length(d[g].astype(float)) for d in draws(n_groups, n_boot, seed + 1)])
    return {
        "lc_win_rate": at_equal_length(np.ones_like(wins)),
        "lc_ci": interval(boots),
        "lc_method": f"Bradley-Terry with a degree-{DEGREE} length utility in log words",
    }


def similar_length(
    wins: np.ndarray,
    cand_words: np.ndarray,
    base_words: np.ndarray,
    group: list[str],
    n_boot: int = 2000,
    seed: int = 0,
    tolerance: float = SIMILAR_TOLERANCE,
) -> dict:
    """The raw win rate on comparisons of similar length: |len_c - len_b| <= tolerance x the longer."""
    c, b = np.asarray(cand_words, float), np.asarray(base_words, float)
    keep = np.abs(c - b) <= tolerance * np.maximum(np.maximum(c, b), 1.0)
    if not keep.any():
        return {"win_rate": None, "ci": None, "n": 0, "tolerance": tolerance}
    kept = win_rate(
        np.asarray(wins, float)[keep], [g for g, k in zip(group, keep, strict=True) if k], n_boot, seed
    )
    return {**kept, "tolerance": tolerance}
