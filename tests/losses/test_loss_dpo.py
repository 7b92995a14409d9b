import math

import pytest
import torch

from alignkit.losses import DPO_LOSSES, dpo_hinge_loss, dpo_robust_loss, dpo_sigmoid_loss, ipo_loss

LOG_SIGMOID_HALF = 0.4740769841801067  # -log sigmoid(0.5) = log(1 + e^-0.5)


def _pair(h_chosen, h_rejected):
    # policy - reference log-ratios h_chosen and h_rejected, with arbitrary reference values.
    ref_c, ref_r = torch.tensor([-10.0]), torch.tensor([-12.0])
    return ref_c + h_chosen, ref_r + h_rejected, ref_c, ref_r


def test_dpo_sigmoid_hand_value_and_metrics():
    losses, m = dpo_sigmoid_loss(*_pair(1.0, 0.0), beta=0.5)
    torch.testing.assert_close(losses, torch.tensor([LOG_SIGMOID_HALF]))
    torch.testing.assert_close(m["chosen_rewards"], torch.tensor([0.5]))
    torch.testing.assert_close(m["rejected_rewards"], torch.tensor([0.0]))
    torch.testing.assert_close(m["reward_margin"], torch.tensor([0.5]))
    assert m["reward_accuracy"].tolist() == [1.0]


def test_dpo_sigmoid_policy_equals_reference_is_log2():
    x = torch.tensor([-3.0, -7.5])
    y = torch.tensor([-4.0, -1.0])
    losses, m = dpo_sigmoid_loss(x, y, x, y, beta=0.1)
    # Exactly log 2 (to float32 rounding): h = 0 whatever beta is.
    assert torch.equal(losses, torch.full((2,), math.log(2)))
    assert m["reward_accuracy"].tolist() == [0.0, 0.0]


def test_cdpo_label_smoothing_hand_value():
    # -(1-eps) log s(z) - eps log s(-z) = -log s(z) + eps z, with z = 0.5, eps = 0.1: 0.474077 + 0.05
    losses, _ = dpo_sigmoid_loss(*_pair(1.0, 0.0), beta=0.5, label_smoothing=0.1)
    torch.testing.assert_close(losses, torch.tensor([0.5240769841801067]))


def test_robust_dpo_hand_value():
    # [-(1-eps) log s(z) + eps log s(-z)] / (1-2eps) = -log s(z) - eps z / (1 - 2 eps)
    #   = 0.474077 - 0.1 * 0.5 / 0.8 = 0.411577
    losses, _ = dpo_robust_loss(*_pair(1.0, 0.0), beta=0.5, label_smoothing=0.1)
    torch.testing.assert_close(losses, torch.tensor([0.41157698418010663]))
    # eps = 0 is plain DPO
    losses, _ = dpo_robust_loss(*_pair(1.0, 0.0), beta=0.5, label_smoothing=0.0)
    torch.testing.assert_close(losses, torch.tensor([LOG_SIGMOID_HALF]))
    with pytest.raises(ValueError):
        dpo_robust_loss(*_pair(1.0, 0.0), beta=0.5, label_smoothing=0.5)


def test_ipo_hand_values():
    # policy == reference: h = 0 -> (1 / (2 * 0.1))^2 = 25
    losses, _ = ipo_loss(*_pair(0.0, 0.0), beta=0.1)
    torch.testing.assert_close(losses, torch.tensor([25.0]))
    # h = 1 - (-2) = 3, beta = 0.25 -> (3 - 2)^2 = 1
    losses, _ = ipo_loss(*_pair(1.0, -2.0), beta=0.25)
    torch.testing.assert_close(losses, torch.tensor([1.0]))


def test_hinge_hand_values():
    assert dpo_hinge_loss(*_pair(0.0, 0.0), beta=0.1)[0].tolist() == [1.0]
    torch.testing.assert_close(dpo_hinge_loss(*_pair(1.0, 0.0), beta=0.5)[0], torch.tensor([0.5]))
    assert dpo_hinge_loss(*_pair(4.0, 0.0), beta=0.5)[0].tolist() == [0.0]


@pytest.mark.parametrize("name", ["sigmoid", "robust", "ipo", "hinge"])
def test_gradient_signs(name):
    pc = torch.tensor([-5.0], requires_grad=True)
    pr = torch.tensor([-6.0], requires_grad=True)
    kwargs = {"label_smoothing": 0.1} if name == "robust" else {}
    losses, metrics = DPO_LOSSES[name](pc, pr, torch.tensor([-5.5]), torch.tensor([-5.5]), beta=0.1, **kwargs)
    losses.sum().backward()
    # Raising the chosen log-prob lowers the loss; raising the rejected one raises it.
    assert pc.grad.item() < 0 < pr.grad.item()
    assert all(not v.requires_grad for v in metrics.values())


def test_sigmoid_gradient_value():
    # dL/dpc = -beta * sigmoid(-beta h); h = 1, beta = 0.5 -> -0.5 * sigmoid(-0.5) = -0.1887703
    pc = torch.tensor([-9.0], requires_grad=True)
    dpo_sigmoid_loss(pc, torch.tensor([-12.0]), torch.tensor([-10.0]), torch.tensor([-12.0]), beta=0.5)[0].backward()
    assert pc.grad.item() == pytest.approx(-0.5 / (1 + math.exp(0.5)), abs=1e-7)
