"""SimPO's loss against values worked out by hand, its limits and its gradient signs."""

import math

import torch

from alignkit.losses.simpo import simpo_loss


def test_hand_value_and_metrics():
    # chosen: -6 over 3 tokens -> average -2, reward 2 * -2 = -4; rejected: -12 over 4 -> -3, reward -6.
    # margin 2, minus gamma 1: -log sigmoid(1) = log(1 + e^-1) = 0.31326168751822286.
    losses, m = simpo_loss(torch.tensor([-6.0]), torch.tensor([-12.0]), torch.tensor([3.0]), torch.tensor([4.0]),
                           beta=2.0, gamma=1.0)
    torch.testing.assert_close(losses, torch.tensor([0.31326168751822286]))
    torch.testing.assert_close(m["chosen_rewards"], torch.tensor([-4.0]))
    torch.testing.assert_close(m["rejected_rewards"], torch.tensor([-6.0]))
    torch.testing.assert_close(m["reward_margin"], torch.tensor([2.0]))
    assert m["reward_accuracy"].tolist() == [1.0]


def test_equal_averages_without_margin_is_log2_whatever_the_lengths():
    # The same average log-prob per token: a rejected completion twice as long is not preferred for it.
    losses, m = simpo_loss(torch.tensor([-4.0, -1.0]), torch.tensor([-8.0, -3.0]), torch.tensor([2.0, 1.0]),
                           torch.tensor([4.0, 3.0]), beta=2.5, gamma=0.0)
    torch.testing.assert_close(losses, torch.full((2,), math.log(2)))
    assert m["reward_accuracy"].tolist() == [0.0, 0.0]


def test_margin_gamma_raises_the_loss_by_the_shift():
    # With equal rewards, the loss is -log sigmoid(-gamma) = log(1 + e^gamma).
    losses, _ = simpo_loss(torch.tensor([-2.0]), torch.tensor([-2.0]), torch.tensor([1.0]), torch.tensor([1.0]),
                           beta=2.0, gamma=0.5)
    torch.testing.assert_close(losses, torch.tensor([math.log(1 + math.exp(0.5))]))


def test_large_margin_limit_is_zero_and_gradients_push_the_pair_apart():
    far, _ = simpo_loss(torch.tensor([-1.0]), torch.tensor([-100.0]), torch.tensor([1.0]), torch.tensor([1.0]),
                        beta=2.0, gamma=1.0)
    assert float(far) < 1e-40 or float(far) == 0.0
    chosen = torch.tensor([-5.0], requires_grad=True)
    rejected = torch.tensor([-5.0], requires_grad=True)
    loss, _ = simpo_loss(chosen, rejected, torch.tensor([5.0]), torch.tensor([2.0]), beta=2.0, gamma=1.0)
    loss.sum().backward()
    # Raising the chosen log-prob lowers the loss, raising the rejected one raises it, each per token of its own
    # length: dL/dc = -(1 - s) beta / |y_c|, dL/dr = (1 - s) beta / |y_r|, where s = sigmoid(z) and
    # z = 2 * -5/5 - 2 * -5/2 - 1 = -2 + 5 - 1 = 2.
    assert chosen.grad.item() < 0 < rejected.grad.item()
    s = torch.sigmoid(torch.tensor(2.0))
    torch.testing.assert_close(chosen.grad, -(1 - s) * 2.0 / 5 * torch.ones(1))
    torch.testing.assert_close(rejected.grad, (1 - s) * 2.0 / 2 * torch.ones(1))
