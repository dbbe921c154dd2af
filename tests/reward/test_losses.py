"""Reward losses on literal tensors, against numbers worked out by hand."""

import math

import pytest
import torch

from reward.losses import bradley_terry_loss, plackett_luce_loss


def test_bradley_terry_by_hand() -> None:
    # -log sigmoid(1) = log(1 + e^-1) = 0.31326; -log sigmoid(-2) = log(1 + e^2) = 2.12693.
    loss = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 2.0]))
    assert loss.item() == pytest.approx((0.313262 + 2.126928) / 2, abs=1e-5)
    # A margin of 1 on the first pair: -log sigmoid(0) = log 2.
    loss = bradley_terry_loss(torch.tensor([2.0]), torch.tensor([1.0]), margin=torch.tensor([1.0]))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)


def test_plackett_luce_without_ties_by_hand() -> None:
    # s = [2, 1, 0], order 1 > 2 > 3:
    # -(2 - log(e^2 + e + 1)) - (1 - log(e + 1)) - 0 = (2.40761 - 2) + (1.31326 - 1) = 0.72087.
    loss = plackett_luce_loss(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[1, 2, 3]]))
    assert loss.item() == pytest.approx(0.720869, abs=1e-5)
    # The same scores ranked in reverse, best first: the s=0 response against all three, then s=1
    # against {s=1, s=2}: -(0 - log(1 + e + e^2)) - (1 - log(e + e^2)) - 0 = 2.40761 + 1.31326.
    loss = plackett_luce_loss(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[3, 2, 1]]))
    assert loss.item() == pytest.approx(2.407606 + 1.313262, abs=1e-5)


def test_plackett_luce_of_two_is_bradley_terry() -> None:
    s = torch.tensor([[0.3, 1.7]])
    assert plackett_luce_loss(s, torch.tensor([[2, 1]])).item() == pytest.approx(
        bradley_terry_loss(torch.tensor([1.7]), torch.tensor([0.3])).item(), abs=1e-6
    )


def test_plackett_luce_ties_use_breslow() -> None:
    # s = [1, 1, 0], ranks [1, 1, 2]: both tied responses face the risk set {all three}:
    # 2 * -(1 - log(2e + 1)) + -(0 - log 1) = 2 * (log(6.43656) - 1) = 1.72395.
    loss = plackett_luce_loss(torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([[1, 1, 2]]))
    assert loss.item() == pytest.approx(2 * (math.log(2 * math.e + 1) - 1), abs=1e-5)
    # All tied, s = [a, b]: -(a + b) + 2 log(e^a + e^b); at a = b = 0 that is 2 log 2.
    assert plackett_luce_loss(torch.zeros(1, 2), torch.tensor([[1, 1]])).item() == pytest.approx(
        2 * math.log(2)
    )


def test_plackett_luce_padding_and_batching() -> None:
    # A list of 2 padded to 3 gives the same loss as the list alone, and the batch loss is the mean.
    padded = plackett_luce_loss(
        torch.tensor([[2.0, 1.0, 99.0]]), torch.tensor([[1, 2, 1]]), torch.tensor([[True, True, False]])
    )
    alone = plackett_luce_loss(torch.tensor([[2.0, 1.0]]), torch.tensor([[1, 2]]))
    assert padded.item() == pytest.approx(alone.item(), abs=1e-6)
    batch = plackett_luce_loss(
        torch.tensor([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0]]), torch.tensor([[1, 2, 3], [3, 2, 1]])
    )
    assert batch.item() == pytest.approx((0.720869 + 2.407606 + 1.313262) / 2, abs=1e-5)
    s = torch.tensor([[2.0, 1.0, 5.0]], requires_grad=True)
    plackett_luce_loss(s, torch.tensor([[1, 2, 1]]), torch.tensor([[True, True, False]])).backward()
    assert torch.isfinite(s.grad).all() and s.grad[0, 2] == 0  # padding gets no gradient


def test_strength_weights_in_the_listwise_loss_by_hand() -> None:
    """loss = -sum_i w_i [s_i - log sum_{r_j >= r_i} exp(s_j)], w_i = 1 + margin of i's level's strength."""
    from reward.strength import stage_weights

    # Ranks 1 > 2 > 3, "significantly" then "slightly": weights 1 + 1, 1 + 1/3, and 1 for the last level.
    w = stage_weights([1, 2, 3], ["significantly", "slightly"])
    assert w == pytest.approx([2.0, 4 / 3, 1.0])
    s = torch.tensor([[2.0, 1.0, 0.0]])
    loss = plackett_luce_loss(s, torch.tensor([[1, 2, 3]]), weights=torch.tensor([w]))
    # The two stages of the unweighted case (0.40761 and 0.31326), weighted 2 and 4/3.
    assert loss.item() == pytest.approx(2 * 0.407606 + 4 / 3 * 0.313262, abs=1e-5)
    # Without strengths every weight is 1: the loss of before.
    assert stage_weights([2, 1, 3], None) == [1.0, 1.0, 1.0]
    assert plackett_luce_loss(s, torch.tensor([[1, 2, 3]]), weights=torch.ones(1, 3)).item() == pytest.approx(
        0.720869, abs=1e-5
    )


def test_strength_margins_in_the_pairwise_loss_by_hand() -> None:
    """A pair's margin is the sum of the strengths between its levels (Llama 2's small margins)."""
    from reward.strength import pair_margin

    strengths = ["clearly", "negligibly"]
    assert pair_margin(strengths, 1, 2) == pytest.approx(2 / 3)
    assert pair_margin(strengths, 2, 3) == 0.0
    assert pair_margin(strengths, 1, 3) == pytest.approx(2 / 3)
    assert pair_margin(None, 1, 3) == 0.0
    # -log sigmoid(1 - 2/3) = log(1 + e^(-1/3)) = 0.54355.
    loss = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), margin=torch.tensor([2 / 3]))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1 / 3)), abs=1e-6)


def test_attribute_loss_counts_only_the_ratings_given() -> None:
    from reward.losses import attribute_loss

    predicted = torch.tensor([[0.5, 0.0], [1.0, 0.25]])
    ratings = torch.tensor([[1.0, 0.0], [0.5, 0.0]])  # already rating / 4
    rated = torch.tensor([[True, False], [True, True]])
    # (0.5 - 1)^2, (1 - 0.5)^2 and (0.25 - 0)^2 over three ratings.
    assert attribute_loss(predicted, ratings, rated).item() == pytest.approx((0.25 + 0.25 + 0.0625) / 3)
    assert attribute_loss(predicted, ratings, torch.zeros(2, 2, dtype=torch.bool)).item() == 0.0
