"""Statistics an evaluation shares: judgments, the grouped bootstrap, a weighted logistic fit.

Responses to one prompt are not independent, so intervals resample prompt groups, not comparisons.
"""

from __future__ import annotations

import numpy as np


def judgments(candidate: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """1 where the candidate scores higher, 0.5 on a tie, 0 where it scores lower."""
    return 0.5 + 0.5 * np.sign(np.asarray(candidate, float) - np.asarray(baseline, float))


def groups(keys: list[str]) -> tuple[np.ndarray, int]:
    """Each key's group index, and how many groups there are."""
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    return np.array([index[k] for k in keys]), len(index)


def draws(n_groups: int, n: int, seed: int) -> np.ndarray:
    """(n x groups): how often each group was drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    return np.stack(
        [np.bincount(row, minlength=n_groups) for row in rng.integers(0, n_groups, (n, n_groups))]
    )


def interval(values: np.ndarray) -> list[float]:
    return [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]


def win_rate(wins: np.ndarray, group: list[str], n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean judgment and its 95% bootstrap interval, resampling groups (prompts)."""
    wins = np.asarray(wins, float)
    g, n_groups = groups(group)
    resamples = draws(n_groups, n_boot, seed)  # per-group sums keep memory at n_boot x groups
    boots = (resamples @ np.bincount(g, wins, n_groups)) / (resamples @ np.bincount(g, minlength=n_groups))
    return {"win_rate": float(wins.mean()), "ci": interval(boots), "n": int(len(wins)), "groups": n_groups}


def logistic(
    X: np.ndarray, y: np.ndarray, weight: np.ndarray, ridge: np.ndarray, iters: int = 50
) -> np.ndarray:
    """Weighted logistic regression of soft labels y on the columns of X by Newton's method, with an L2
    penalty `ridge` per coefficient."""
    theta = np.zeros(X.shape[1])
    penalty = np.diag(ridge)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-X @ theta))
        grad = X.T @ (weight * (p - y)) + penalty @ theta
        hess = (X * (weight * p * (1 - p))[:, None]).T @ X + penalty + 1e-9 * np.eye(len(theta))
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return theta


def cluster_mean_interval(values: np.ndarray, group: list[str], level: float = 0.95) -> dict:
    """A mean and its t-interval with a cluster-robust standard error (prompts are the clusters): it holds
    with few clusters where a percentile bootstrap over them is too narrow."""
    values = np.asarray(values, float)
    g, n_groups = groups(group)
    mean = float(values.mean())
    se = float("inf")  # one cluster: no spread to estimate, an interval without bounds
    if n_groups >= 2:
        residual_sums = np.bincount(g, values - mean, n_groups)
        se = float(np.sqrt(n_groups / (n_groups - 1) * (residual_sums**2).sum()) / len(values))
    df = n_groups - 1
    return {"mean": mean, "ci": t_bounds(mean, se, df, level), "se": se, "df": df, "groups": n_groups}


def t_bounds(mean: float, se: float, df: int, level: float) -> list[float]:
    """The two-sided t-interval at `level` around `mean` (what `cluster_mean_interval` gives at 95%)."""
    from scipy.stats import t

    if df < 1:
        return [float("-inf"), float("inf")]
    half = float(t.ppf(0.5 + level / 2, df)) * se
    return [mean - half, mean + half]
