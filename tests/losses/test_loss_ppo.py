import math

import pytest
import torch

from alignkit.losses import gae, kl_estimate, per_token_rewards, ppo_policy_loss, ppo_value_loss, whiten


def test_kl_estimators_hand_values():
    # pi(x) = 0.5, ref(x) = 0.25 -> log r = log(ref/pi) = -log 2
    # k1 = log 2 = 0.693147 ; k2 = (log 2)^2 / 2 = 0.240227 ; k3 = r - 1 - log r = 0.5 - 1 + log 2 = 0.193147
    logp = torch.tensor([[math.log(0.5)]])
    ref = torch.tensor([[math.log(0.25)]])
    assert kl_estimate(logp, ref, "k1").item() == pytest.approx(0.6931471805599453)
    assert kl_estimate(logp, ref, "k2").item() == pytest.approx(0.2402265069591007)
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx(0.1931471805599453)
    # Identical policies: all three are 0.
    for kind in ("k1", "k2", "k3"):
        assert kl_estimate(ref, ref, kind).item() == 0.0
    with pytest.raises(ValueError):
        kl_estimate(logp, ref, "k4")


def test_per_token_rewards_score_lands_on_last_valid_token():
    score = torch.tensor([2.0, 3.0, 5.0])
    kl = torch.full((3, 5), 0.5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]], dtype=torch.bool)
    rewards = per_token_rewards(score, kl, mask, kl_coef=0.1)
    expected = torch.tensor(
        [
            # last valid index 2: -0.05 + 2 ; index 3 (one past the end) must stay 0
            [-0.05, -0.05, 1.95, 0.0, 0.0],
            [-0.05, -0.05, -0.05, -0.05, 2.95],
            [0.0, -0.05, 4.95, 0.0, 0.0],
        ]
    )
    torch.testing.assert_close(rewards, expected)
    assert rewards[0, 3].item() == 0.0


def test_per_token_rewards_missing_eos_penalty_and_empty_row():
    score = torch.tensor([2.0, 3.0, 4.0])
    kl = torch.tensor([[0.2, -0.4], [1.0, 1.0], [7.0, 7.0]])
    mask = torch.tensor([[1, 1], [1, 0], [0, 0]], dtype=torch.bool)
    eos_missing = torch.tensor([False, True, True])
    rewards = per_token_rewards(score, kl, mask, kl_coef=0.5, eos_missing=eos_missing, missing_eos_penalty=1.0)
    # row 0: [-0.1, 0.2 + 2] ; row 1: -0.5 + (3 - 1) at index 0 ; row 2: empty mask -> zeros
    torch.testing.assert_close(rewards, torch.tensor([[-0.1, 2.2], [1.5, 0.0], [0.0, 0.0]]))


def test_whiten_hand_vector_uses_unbiased_variance():
    # masked values [1, 3, 5]: mean 3, unbiased var (4 + 0 + 4) / 2 = 4, std 2 -> [-1, 0, 1]
    # (the biased variance 8/3 would give +-1.2247)
    x = torch.tensor([[1.0, 3.0], [5.0, 100.0]])
    mask = torch.tensor([[1, 1], [1, 0]], dtype=torch.bool)
    torch.testing.assert_close(whiten(x, mask), torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
    torch.testing.assert_close(whiten(x, mask, shift_mean=False), torch.tensor([[2.0, 3.0], [4.0, 0.0]]))


def test_gae_1x3_by_hand_with_masked_tail():
    gamma, lam = 0.9, 0.95
    # A masked 4th position carries junk that must not leak in: the value after the last valid token is 0.
    rewards = torch.tensor([[0.0, 0.0, 1.0, 7.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    adv, ret = gae(rewards, values, mask, gamma, lam)
    # t=2: delta = 1 + 0.9*0 - 0.3 = 0.7                      A2 = 0.7
    # t=1: delta = 0 + 0.9*0.3 - 0.4 = -0.13                  A1 = -0.13 + 0.855*0.7 = 0.4685
    # t=0: delta = 0 + 0.9*0.4 - 0.5 = -0.14                  A0 = -0.14 + 0.855*0.4685 = 0.2605675
    torch.testing.assert_close(adv, torch.tensor([[0.2605675, 0.4685, 0.7, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.7605675, 0.8685, 1.0, 0.0]]))


def test_gae_skips_holes_in_mask():
    # Same three valid steps with a masked gap in the middle: the recursion jumps over it.
    rewards = torch.tensor([[0.0, 5.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 8.0, 0.4, 0.3]])
    mask = torch.tensor([[1, 0, 1, 1]], dtype=torch.bool)
    adv, _ = gae(rewards, values, mask, 0.9, 0.95)
    torch.testing.assert_close(adv, torch.tensor([[0.2605675, 0.0, 0.4685, 0.7]]))


def test_ppo_policy_loss_clipping_cases():
    clip = 0.2
    ratio = torch.tensor([[1.5], [0.5], [1.5], [0.5]])
    adv = torch.tensor([[1.0], [1.0], [-1.0], [-1.0]])
    old_logp = torch.full((4, 1), -2.0)
    logp = (old_logp + ratio.log()).requires_grad_()
    mask = torch.ones(4, 1, dtype=torch.bool)
    losses, m = ppo_policy_loss(logp, old_logp, adv, mask, clip)
    # A>0, rho 1.5: max(-1.5, -1.2) = -1.2 (clipped, no gain beyond 1+eps)
    # A>0, rho 0.5: max(-0.5, -0.8) = -0.5 (unclipped: pessimistic bound)
    # A<0, rho 1.5: max( 1.5,  1.2) =  1.5 (unclipped)
    # A<0, rho 0.5: max( 0.5,  0.8) =  0.8 (clipped)
    torch.testing.assert_close(losses, torch.tensor([-1.2, -0.5, 1.5, 0.8]))
    torch.testing.assert_close(m["clipfrac"], torch.tensor([1.0, 0.0, 0.0, 1.0]))
    # k3(old || new) with r = pi_new / pi_old: r - 1 - log r
    k3_15, k3_05 = 0.5 - math.log(1.5), -0.5 + math.log(2)
    torch.testing.assert_close(m["approx_kl"], torch.tensor([k3_15, k3_05, k3_15, k3_05]))
    torch.testing.assert_close(m["ratio"], ratio.squeeze(-1))
    losses.sum().backward()
    # Clipped tokens get no gradient; unclipped ones get d(-A rho)/dlogp = -A rho.
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0], [-0.5], [1.5], [0.0]]))


def test_ppo_policy_loss_masked_mean_per_example():
    logp = torch.zeros(1, 3)
    adv = torch.tensor([[1.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    losses, _ = ppo_policy_loss(logp, logp, adv, mask, 0.2)
    # rho = 1 everywhere: mean of -A over the two valid tokens = -2
    torch.testing.assert_close(losses, torch.tensor([-2.0]))


def test_ppo_value_loss_clipping():
    old = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    returns = torch.tensor([[2.0, 2.0, 2.0, 50.0]])
    values = torch.tensor([[1.5, 0.9, 3.0, 1.0]])
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    losses, m = ppo_value_loss(values, old, returns, mask, 0.2)
    # v=1.5: unclipped 0.25, clipped (1.2-2)^2 = 0.64 -> 0.5*0.64 = 0.32 (clipped wins)
    # v=0.9: inside the clip range -> 0.5*1.21 = 0.605
    # v=3.0: unclipped 1.0, clipped 0.64 -> 0.5*1.0 = 0.5
    torch.testing.assert_close(losses, torch.tensor([(0.32 + 0.605 + 0.5) / 3]))
    torch.testing.assert_close(m["value_clipfrac"], torch.tensor([1 / 3]))


def test_adaptive_kl_coef_moves_towards_the_target_by_hand():
    from alignkit.losses import adaptive_kl_coef

    # KL twice the target: error clipped to +0.2; 100 sequences of a 1000 horizon: beta * (1 + 0.2 * 0.1).
    assert adaptive_kl_coef(0.1, observed_kl=12.0, target=6.0, horizon=1000, n_steps=100) == pytest.approx(0.102)
    # KL 5% under the target: error -0.05, unclipped.
    assert adaptive_kl_coef(0.1, observed_kl=5.7, target=6.0, horizon=1000, n_steps=100) == pytest.approx(0.0995)
    assert adaptive_kl_coef(0.1, observed_kl=6.0, target=6.0, horizon=1000, n_steps=100) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        adaptive_kl_coef(0.1, 1.0, target=0.0, horizon=10, n_steps=1)


def test_explained_variance_by_hand():
    from alignkit.losses import explained_variance

    returns = torch.tensor([[1.0, 2.0, 3.0, 99.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert explained_variance(returns.clone(), returns, mask) == pytest.approx(1.0)
    # values all equal to the mean explain nothing; Var(r) = 2/3, residual r - 2 has the same variance.
    assert explained_variance(torch.full((1, 4), 2.0), returns, mask) == pytest.approx(0.0)
    # values = 0: residual variance equals Var(r) too (a constant shift): 0.
    assert explained_variance(torch.zeros(1, 4), returns, mask) == pytest.approx(0.0)
    # values [1, 2, 2]: residual [0, 0, 1], variance 2/9; 1 - (2/9)/(2/3) = 2/3.
    assert explained_variance(torch.tensor([[1.0, 2.0, 2.0, 0.0]]), returns, mask) == pytest.approx(2 / 3)
    assert explained_variance(torch.zeros(1, 4), torch.ones(1, 4), mask) != explained_variance(
        torch.zeros(1, 4), torch.ones(1, 4), mask)  # NaN when there is nothing to explain
