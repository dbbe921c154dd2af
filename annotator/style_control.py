"""A style-controlled leaderboard, as Chatbot Arena computes one (LMSYS, "Does style matter?", 2024):
Bradley-Terry with the candidates' style as covariates, so an arm does not climb by writing longer
or more heavily formatted answers.

Every cross-arm pair of a ranking is one comparison with outcome y (1 if the first is ranked better,
0 if worse, a tie counts half each way). The model is a logistic regression

    P(i beats j) = sigmoid( beta_arm(i) - beta_arm(j) + sum_f gamma_f * d_f(i, j) )

where for each style feature f (length in words, markdown headers, list items, bold spans) the
difference is normalized as Arena does, d = (f_i - f_j) / (f_i + f_j) (0 when both are 0), then
standardized over all comparisons. beta is fitted with a weak L2 prior (the raw leaderboard's
pseudo-comparisons play that part there) and reported on the Elo scale with mean 0; gamma says how
much each style feature sways annotators. Intervals resample rankings, as for the raw leaderboard.
"""

from __future__ import annotations

import random
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from annotator.leaderboard import ELO

FEATURES = ("length", "headers", "list_items", "bold")
_WORD = re.compile(r"\w+")
_HEADER = re.compile(r"^\s{0,3}#{1,6}\s", re.M)
_LIST = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s", re.M)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")
PRIOR = 0.01  # L2 on the arms' coefficients: keeps an arm that never lost finite


@dataclass(frozen=True)
class StyledTask:
    """One ranking: each candidate's arm, rank and text, in display order."""

    arms: Sequence[Hashable]
    ranks: Sequence[float]
    texts: Sequence[str]


def style(text: str) -> list[float]:
    return [
        float(len(_WORD.findall(text))),
        float(len(_HEADER.findall(text))),
        float(len(_LIST.findall(text))),
        float(len(_BOLD.findall(text))),
    ]


def _rows(
    tasks: Sequence[StyledTask], index: dict[Hashable, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arm pairs (n, 2), normalized style differences (n, F), outcomes (n,)) of every cross-arm pair."""
    pairs, diffs, ys = [], [], []
    for t in tasks:
        feats = [style(x) for x in t.texts]
        for i in range(len(t.arms)):
            for j in range(i + 1, len(t.arms)):
                if t.arms[i] == t.arms[j]:
                    continue
                pairs.append((index[t.arms[i]], index[t.arms[j]]))
                diffs.append(
                    [(a - b) / (a + b) if a + b else 0.0 for a, b in zip(feats[i], feats[j], strict=True)]
                )
                ys.append(1.0 if t.ranks[i] < t.ranks[j] else 0.0 if t.ranks[i] > t.ranks[j] else 0.5)
    return np.array(pairs, dtype=int).reshape(-1, 2), np.array(diffs).reshape(-1, len(FEATURES)), np.array(ys)


def _fit(pairs: np.ndarray, diffs: np.ndarray, ys: np.ndarray, n_arms: int) -> tuple[np.ndarray, np.ndarray]:
    """(arm coefficients, mean 0; style coefficients per standardized feature) by L-BFGS."""
    scale = diffs.std(axis=0)
    scale[scale == 0] = 1.0
    z = diffs / scale

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        beta, gamma = theta[:n_arms], theta[n_arms:]
        logit = beta[pairs[:, 0]] - beta[pairs[:, 1]] + z @ gamma
        p = 1 / (1 + np.exp(-logit))
        eps = 1e-12
        value = -np.sum(ys * np.log(p + eps) + (1 - ys) * np.log(1 - p + eps)) + PRIOR * beta @ beta
        resid = p - ys
        grad_beta = np.bincount(pairs[:, 0], resid, n_arms) - np.bincount(pairs[:, 1], resid, n_arms)
        return float(value), np.concatenate([grad_beta + 2 * PRIOR * beta, z.T @ resid])

    theta = minimize(loss, np.zeros(n_arms + z.shape[1]), jac=True, method="L-BFGS-B").x
    beta = theta[:n_arms]
    return beta - beta.mean(), theta[n_arms:]


def style_leaderboard(
    tasks: Sequence[StyledTask], n_boot: int = 100, seed: int = 0, level: float = 0.95
) -> dict:
    """Arms best first with their style-controlled score (Elo scale) and bootstrap CI, and the style
    coefficients (log-odds per standard deviation of each normalized difference)."""
    arms = sorted({a for t in tasks for a in t.arms}, key=str)
    if len(arms) < 2:
        return {"arms": [], "style": {}}
    index = {a: i for i, a in enumerate(arms)}
    pairs, diffs, ys = _rows(tasks, index)
    if not len(ys):
        return {"arms": [], "style": {}}
    beta, gamma = _fit(pairs, diffs, ys, len(arms))
    rng = random.Random(seed)
    boots: list[np.ndarray] = []
    for _ in range(n_boot):
        sample = [tasks[rng.randrange(len(tasks))] for _ in tasks]
        p, d, y = _rows(sample, index)
        if len(y):
            boots.append(_fit(p, d, y, len(arms))[0])
    grid = np.array(boots) if boots else beta[None, :]
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    rows = [
        {
            "arm": a,
            "score": round(float(ELO * beta[i]), 1),
            "ci_low": round(float(ELO * np.quantile(grid[:, i], lo_q)), 1),
            "ci_high": round(float(ELO * np.quantile(grid[:, i], hi_q)), 1),
        }
        for a, i in index.items()
    ]
    return {
        "arms": sorted(rows, key=lambda r: -r["score"]),
        "style": {f: round(float(g), 3) for f, g in zip(FEATURES, gamma, strict=True)},
        "comparisons": int(len(ys)),
    }
