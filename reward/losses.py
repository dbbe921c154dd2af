"""Reward-model losses on scores: pairwise Bradley-Terry and listwise Plackett-Luce with ties.

Bradley-Terry, per pair:  -log sigmoid(s_chosen - s_rejected - margin), averaged over pairs.

Plackett-Luce, per ranking of K responses with scores s and ranks r (1 = best):
ties use Breslow's approximation (as for tied event times in Cox's partial likelihood):
the responses of a tie group are chosen "at the same stage", each against the same
risk set, the group itself and everything ranked below it. So

    loss = -sum_i [ s_i - log sum_{j : r_j >= r_i} exp(s_j) ]

summed over the ranking's responses and averaged over rankings. Without ties this is
the exact Plackett-Luce negative log-likelihood (the last response's term is zero), and
for K = 2 it equals the Bradley-Terry loss of the pair. A tie group's terms are largest
when its members score alike, so ties pull scores together rather than being ignored.

With preference strengths each response's term is weighted by w_i (reward/strength.py:
1 + the strength margin from its rank level to the next, 1 when not given):

    loss = -sum_i w_i [ s_i - log sum_{j : r_j >= r_i} exp(s_j) ]

Attribute heads: a rated attribute's prediction p (the model's extra output) is pulled to
rating / 4 by the squared error, averaged over the ratings given.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None
) -> torch.Tensor:
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()


def plackett_luce_loss(
    scores: torch.Tensor,
    ranks: torch.Tensor,
    mask: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """scores, ranks: (B, K); mask: (B, K) bool, False for padding (lists shorter than K); weights:
    (B, K) per response's stage (default all 1)."""
    if mask is None:
        mask = torch.ones_like(scores, dtype=torch.bool)
    # risk[b, i, j]: response j is still "in the running" when i's tie group is chosen.
    risk = (ranks.unsqueeze(1) >= ranks.unsqueeze(2)) & mask.unsqueeze(1) & mask.unsqueeze(2)
    # Each response is in its own risk set; for padding this keeps the logsumexp (and its gradient) finite.
    risk = risk | torch.eye(scores.shape[1], dtype=torch.bool, device=scores.device)
    expanded = scores.unsqueeze(1).expand(-1, scores.shape[1], -1)
    log_denominator = torch.logsumexp(expanded.masked_fill(~risk, float("-inf")), dim=-1)
    terms = (scores - log_denominator).masked_fill(~mask, 0.0)
    if weights is not None:
        terms = terms * weights
    return -terms.sum(dim=1).mean()


def attribute_loss(predicted: torch.Tensor, ratings: torch.Tensor, rated: torch.Tensor) -> torch.Tensor:
    """predicted, ratings (already scaled to 0..1), rated (bool): (N, A). Mean squared error over the
    ratings given; 0 (with a gradient path) when none is."""
    if not rated.any():
        return predicted.sum() * 0.0
    return ((predicted - ratings)[rated] ** 2).mean()
