import math

import pytest
import torch

from alignkit.losses import (
    all_pairs_ranking_loss,
    bradley_terry_loss,
    plackett_luce_loss,
    rating_regression_loss,
    reward_centering_penalty,
    soft_bradley_terry_loss,
)


def test_bradley_terry_hand_values_with_and_without_margin():
    chosen = torch.tensor([2.0, 0.0])
    rejected = torch.tensor([1.0, 1.0])
    losses, metrics = bradley_terry_loss(chosen, rejected)
    # -log sigmoid(1) = log(1 + e^-1) = 0.31326...; -log sigmoid(-1) = 1.31326...
    torch.testing.assert_close(losses, torch.tensor([0.31326168751822286, 1.3132616875182228]))
    assert metrics["accuracy"].tolist() == [1.0, 0.0]
    torch.testing.assert_close(metrics["margin"], torch.tensor([1.0, -1.0]))

    # Llama-2 margin 0.5: -log sigmoid(2 - 1 - 0.5) = log(1 + e^-0.5) = 0.474077
    losses, _ = bradley_terry_loss(chosen[:1], rejected[:1], margin=torch.tensor([0.5]))
    torch.testing.assert_close(losses, torch.tensor([0.4740769841801067]))


def test_bradley_terry_gradient_signs():
    chosen = torch.tensor([0.3], requires_grad=True)
    rejected = torch.tensor([0.1], requires_grad=True)
    bradley_terry_loss(chosen, rejected)[0].sum().backward()
    assert chosen.grad.item() < 0 < rejected.grad.item()
    # d/dr_c [-log sigmoid(d)] = -(1 - sigmoid(d)) = -sigmoid(-0.2)
    assert chosen.grad.item() == pytest.approx(-1 / (1 + math.exp(0.2)))
    assert rejected.grad.item() == pytest.approx(1 / (1 + math.exp(0.2)))


def test_plackett_luce_k3_hand_worked():
    # Items scores [1, 2, 3], ranking best-first: item 2 (s=3), item 0 (s=1), item 1 (s=2).
    # -log P = [log(e^3 + e^1 + e^2) - 3] + [log(e^1 + e^2) - 1] + 0
    #        = log(1 + e^-1 + e^-2) + log(1 + e) = 0.4076059... + 1.3132617... = 1.7208677
    scores = torch.tensor([[1.0, 2.0, 3.0]])
    order = torch.tensor([[2, 0, 1]])
    losses, metrics = plackett_luce_loss(scores, order)
    expected = math.log(1 + math.exp(-1) + math.exp(-2)) + math.log(1 + math.e)
    assert expected == pytest.approx(1.7208676519626027)
    torch.testing.assert_close(losses, torch.tensor([expected]))
    assert metrics["num_items"].tolist() == [3]


def test_plackett_luce_padding_items_are_skipped_and_k2_is_bradley_terry():
    # Row 0: same 3 items plus a padding item (index 3, huge score) placed second in the order.
    # Row 1: two real items -> Bradley-Terry -log sigmoid(0.5 - 1.5) = log(1 + e) = 1.3132617
    scores = torch.tensor([[1.0, 2.0, 3.0, 50.0], [1.5, 0.5, 7.0, 7.0]], requires_grad=True)
    order = torch.tensor([[2, 3, 0, 1], [1, 0, 3, 2]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    losses, metrics = plackett_luce_loss(scores, order, mask)
    torch.testing.assert_close(losses, torch.tensor([1.7208676519626027, 1.3132616875182228]))
    assert metrics["num_items"].tolist() == [3, 2]
    losses.sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert scores.grad[0, 3] == 0 and scores.grad[1, 2:].abs().sum() == 0


def test_all_pairs_k3_with_tie():
    # gold [3, 1, 1]: items 1 and 2 tie, so the pairs are (0,1) and (0,2) only.
    # scores [2, 0, 1]: loss = [-log sigmoid(2) - log sigmoid(1)] / 2 = (0.126928 + 0.313262) / 2 = 0.220095
    scores = torch.tensor([[2.0, 0.0, 1.0]])
    gold = torch.tensor([[3.0, 1.0, 1.0]])
    losses, metrics = all_pairs_ranking_loss(scores, gold)
    torch.testing.assert_close(losses, torch.tensor([0.2200948492805977]))
    assert metrics["num_pairs"].tolist() == [2]
    assert metrics["accuracy"].tolist() == [1.0]


def test_all_pairs_mask_and_no_pairs():
    # Row 0: item 2 is padding; one pair (1 beats 0) with s_1 - s_0 = -1 -> log(1 + e) = 1.3132617, acc 0.
    # Row 1: all tied -> no pairs -> loss 0.
    scores = torch.tensor([[1.0, 0.0, 9.0], [1.0, 2.0, 3.0]])
    gold = torch.tensor([[0.0, 1.0, 5.0], [2.0, 2.0, 2.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    losses, metrics = all_pairs_ranking_loss(scores, gold, mask)
    torch.testing.assert_close(losses, torch.tensor([1.3132616875182228, 0.0]))
    assert metrics["num_pairs"].tolist() == [1, 0]
    assert metrics["accuracy"].tolist() == [0.0, 0.0]


def test_rating_regression_squared_error_and_huber():
    scores = torch.tensor([3.0, 1.0])
    ratings = torch.tensor([1.0, 1.5])
    losses, metrics = rating_regression_loss(scores, ratings)
    torch.testing.assert_close(losses, torch.tensor([4.0, 0.25]))
    torch.testing.assert_close(metrics["abs_error"], torch.tensor([2.0, 0.5]))
    # delta 1: |2| > 1 -> 2*1*2 - 1 = 3; |0.5| <= 1 -> 0.25
    losses, _ = rating_regression_loss(scores, ratings, huber_delta=1.0)
    torch.testing.assert_close(losses, torch.tensor([3.0, 0.25]))


def test_reward_centering_penalty():
    # 0.01 * (1 + 2)^2 = 0.09 ; 0.01 * (-1 + 1)^2 = 0
    out = reward_centering_penalty(torch.tensor([1.0, -1.0]), torch.tensor([2.0, 1.0]), coef=0.01)
    torch.testing.assert_close(out, torch.tensor([0.09, 0.0]))


def test_soft_bradley_terry_by_hand_and_its_limits():
    chosen, rejected = torch.tensor([2.0, 0.0, 1.0]), torch.tensor([1.0, 1.0, 1.0])
    p = torch.tensor([0.8, 0.3, 0.5])
    losses, metrics = soft_bradley_terry_loss(chosen, rejected, p)
    # diff 1: -(0.8 log s(1) + 0.2 log s(-1)) = 0.8 * 0.313262 + 0.2 * 1.313262 = 0.513262
    # diff -1: -(0.3 log s(-1) + 0.7 log s(1)) = 0.3 * 1.313262 + 0.7 * 0.313262 = 0.613262
    # diff 0: log 2
    torch.testing.assert_close(losses, torch.tensor([0.5132616875182228, 0.6132616875182228, math.log(2)]))
    # diff > 0 agrees with p > 0.5 on the first two; the third is a tie on both sides (no score lead, p = 0.5).
    assert metrics["accuracy"].tolist() == [1.0, 1.0, 1.0]
    # p = 1 is plain Bradley-Terry.
    torch.testing.assert_close(soft_bradley_terry_loss(chosen, rejected, torch.ones(3))[0],
                               bradley_terry_loss(chosen, rejected)[0])
    # The minimum over the score difference sits where sigmoid(diff) = p.
    diff = torch.tensor([0.0], requires_grad=True)
    for _ in range(500):
        loss = soft_bradley_terry_loss(diff, torch.zeros(1), torch.tensor([0.8]))[0].sum()
        (grad,) = torch.autograd.grad(loss, diff)
        diff = (diff - 0.5 * grad).detach().requires_grad_(True)
    assert float(torch.sigmoid(diff)) == pytest.approx(0.8, abs=1e-4)
