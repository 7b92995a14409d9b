import math

import pytest
import torch

from alignkit.losses import kto_kl_estimate, kto_loss, log_odds, orpo_loss


def test_log_odds_hand_values_and_extremes():
    # p = 0.5 -> odds 1 -> 0 ; p = 0.2 -> odds 1/4 -> -log 4 ; p = 0.9 -> log 9
    out = log_odds(torch.tensor([math.log(0.5), math.log(0.2), math.log(0.9)]))
    torch.testing.assert_close(out, torch.tensor([0.0, -math.log(4), math.log(9)]))
    # Far below zero log odds ~ log p; at p = 1 it stays finite.
    extreme = log_odds(torch.tensor([-80.0, 0.0]))
    assert extreme[0].item() == pytest.approx(-80.0)
    assert math.isfinite(extreme[1].item()) and extreme[1].item() > 15


def test_orpo_hand_value():
    # chosen avg logp log 0.5 (log odds 0), rejected log 0.2 (log odds -log 4): log OR = log 4.
    # L_OR = -log sigmoid(log 4) = -log(4/5) = log 1.25 = 0.2231436
    # L = NLL + beta L_OR = log 2 + 0.1 * log 1.25 = 0.7154615
    chosen = torch.tensor([math.log(0.5)])
    losses, m = orpo_loss(-chosen, chosen, torch.tensor([math.log(0.2)]), beta=0.1)
    torch.testing.assert_close(losses, torch.tensor([0.7154615356913663]))
    torch.testing.assert_close(m["log_odds_ratio"], torch.tensor([math.log(4)]))
    torch.testing.assert_close(m["or_loss"], torch.tensor([math.log(1.25)]))
    torch.testing.assert_close(m["chosen_rewards"], 0.1 * chosen)
    assert m["reward_accuracy"].tolist() == [1.0]


def test_orpo_gradient_signs():
    chosen = torch.tensor([-1.2], requires_grad=True)
    rejected = torch.tensor([-1.0], requires_grad=True)
    losses, _ = orpo_loss(-chosen, chosen, rejected, beta=0.5)
    losses.sum().backward()
    assert chosen.grad.item() < 0 < rejected.grad.item()


def test_kto_kl_estimate_mean_and_clamp():
    est = kto_kl_estimate(torch.tensor([1.0, -2.0, 3.0], requires_grad=True), torch.zeros(3))
    assert est.item() == pytest.approx(2 / 3)
    assert not est.requires_grad
    assert kto_kl_estimate(torch.tensor([-1.0]), torch.tensor([0.0])).item() == 0.0


def test_kto_hand_values():
    # beta 1, z0 = 1.
    # desirable, r = 2:   w_d (1 - sigmoid(2 - 1)) = 2 * sigmoid(-1) = 2 / (1 + e) = 0.5378828
    # undesirable, r = -1: w_u (1 - sigmoid(1 - (-1))) = 0.5 * sigmoid(-2) = 0.0596015
    policy = torch.tensor([-3.0, -6.0])
    ref = torch.tensor([-5.0, -5.0])
    labels = torch.tensor([True, False])
    losses, m = kto_loss(policy, ref, labels, torch.tensor(1.0), beta=1.0, desirable_weight=2.0,
                         undesirable_weight=0.5)
    torch.testing.assert_close(losses, torch.tensor([0.5378828427399902, 0.05960146101105884]))
    torch.testing.assert_close(m["rewards"], torch.tensor([2.0, -1.0]))
    assert m["chosen_rewards"][0].item() == 2.0 and math.isnan(m["chosen_rewards"][1].item())
    assert m["rejected_rewards"][1].item() == -1.0 and math.isnan(m["rejected_rewards"][0].item())
    assert m["desirable"].tolist() == [1.0, 0.0]
    assert m["kl"].item() == 1.0


def test_kto_at_reference_point_is_half():
    # r = z0 -> 1 - sigmoid(0) = 0.5 for both classes
    losses, _ = kto_loss(torch.tensor([-2.0, -2.0]), torch.tensor([-2.5, -2.5]), torch.tensor([True, False]),
                         torch.tensor(0.5), beta=0.3)
    torch.testing.assert_close(losses, torch.tensor([0.5, 0.5]))


def test_kto_gradient_signs():
    policy = torch.tensor([-3.0, -3.0], requires_grad=True)
    losses, _ = kto_loss(policy, torch.tensor([-3.2, -2.9]), torch.tensor([True, False]), torch.tensor(0.05),
                         beta=0.1)
    losses.sum().backward()
    # Desirable: raising log pi lowers the loss; undesirable: raising it raises the loss.
    assert policy.grad[0].item() < 0 < policy.grad[1].item()
