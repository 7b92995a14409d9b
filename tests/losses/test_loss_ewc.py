import pytest
import torch

from alignkit.losses import ewc_penalty, fisher_diagonal_update


def test_ewc_penalty_hand_value_and_gradient():
    params = {"a": torch.tensor([1.0, 2.0], requires_grad=True), "b": torch.tensor([3.0], requires_grad=True),
              "frozen": torch.tensor([9.0], requires_grad=True)}
    anchors = {"a": torch.tensor([0.0, 0.0]), "b": torch.tensor([1.0]), "frozen": torch.tensor([0.0])}
    fisher = {"a": torch.tensor([0.5, 2.0]), "b": torch.tensor([4.0])}
    # sum F (theta - theta*)^2 = 0.5*1 + 2*4 + 4*4 = 24.5 ; * strength/2 = 1.5 -> 36.75
    penalty = ewc_penalty(params, anchors, fisher, strength=3.0)
    assert penalty.shape == ()
    assert penalty.item() == pytest.approx(36.75)
    penalty.backward()
    # d/dtheta = strength * F * (theta - theta*)
    torch.testing.assert_close(params["a"].grad, torch.tensor([1.5, 12.0]))
    torch.testing.assert_close(params["b"].grad, torch.tensor([24.0]))
    assert params["frozen"].grad is None


def test_fisher_running_mean_of_squared_gradients():
    grads = [{"w": torch.tensor([1.0, -2.0])}, {"w": torch.tensor([3.0, 0.0])}, {"w": torch.tensor([-1.0, 2.0])}]
    fisher = {}
    for n, g in enumerate(grads, start=1):
        previous = fisher
        fisher = fisher_diagonal_update(fisher, g, n)
        assert fisher is not previous
    # mean of squares: [(1 + 9 + 1) / 3, (4 + 0 + 4) / 3]
    torch.testing.assert_close(fisher["w"], torch.tensor([11 / 3, 8 / 3]))


def test_fisher_update_is_pure_and_missing_grad_counts_as_zero():
    fisher = {"w": torch.tensor([4.0]), "v": torch.tensor([6.0])}
    new = fisher_diagonal_update(fisher, {"w": torch.tensor([2.0])}, n=3)
    # w: 4 + (4 - 4)/3 = 4 ; v: 6 + (0 - 6)/3 = 4
    torch.testing.assert_close(new["w"], torch.tensor([4.0]))
    torch.testing.assert_close(new["v"], torch.tensor([4.0]))
    assert fisher["v"].item() == 6.0
