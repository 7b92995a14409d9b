"""Building blocks of PPO-based RLHF on token sequences.

Shapes: B sequences of T response positions; ``mask`` [B, T] is True on the generated tokens that are
trained on (padding and anything after EOS are False).

References: Schulman et al. 2017 (PPO), Schulman et al. 2016 (GAE), J. Schulman, "Approximating KL
Divergence" (2020 note), Ziegler et al. 2019 and Ouyang et al. 2022 (per-token KL penalty with the reward-model
score at the final token).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = [
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "KL_ESTIMATORS",
    "kl_estimate",
    "per_token_rewards",
    "whiten",
    "gae",
    "ppo_policy_loss",
    "ppo_value_loss",
    "adaptive_kl_coef",
    "explained_variance",
    "masked_mean_per_row",
]


def masked_mean_per_row(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over each row's masked positions: [B, T] -> [B] (0 for an empty row)."""
    keep = mask.bool()
    total = torch.where(keep, x, torch.zeros_like(x)).sum(-1)
    return total / keep.sum(-1).clamp(min=1).to(total.dtype)


# Per-token estimators of KL(pi || ref) from tokens sampled from pi (Schulman's note; log r = ref - logp).


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = log pi - log ref = -log r. Unbiased, high variance, can be negative."""
    return logp - ref_logp


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k2 = (log r)^2 / 2. Biased but low variance, always >= 0."""
    return 0.5 * (logp - ref_logp).square()


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = (r - 1) - log r. Unbiased, low variance, always >= 0."""
    log_r = ref_logp - logp
    # expm1 keeps r - 1 accurate when the two policies are close (log r ~ 0), the usual case.
    return torch.expm1(log_r) - log_r


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "k1": kl_k1,
    "k2": kl_k2,
    "k3": kl_k3,
}


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token KL(pi || ref) estimate for tokens sampled from pi.

    Args:
        logp: [B, T] log pi of the sampled tokens.
        ref_logp: [B, T] log ref of the same tokens.
        kind: "k1", "k2" or "k3" (see ``kl_k1``/``kl_k2``/``kl_k3``).

    Returns:
        [B, T] per-token estimates (not masked).
    """
    try:
        estimator = KL_ESTIMATORS[kind]
    except KeyError:
        raise ValueError(f"unknown KL estimator {kind!r}; expected one of {sorted(KL_ESTIMATORS)}") from None
    return estimator(logp, ref_logp)


def _last_valid_index(mask: torch.Tensor) -> torch.Tensor:
    t = mask.shape[-1]
    # argmax returns the first maximum, so on the reversed mask it finds the last True.
    return (t - 1) - mask.bool().flip(-1).int().argmax(-1)


def per_token_rewards(
    score: torch.Tensor,
    kl: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    eos_missing: torch.Tensor | None = None,
    missing_eos_penalty: float | None = None,
) -> torch.Tensor:
    """Dense RLHF reward: per-token KL penalty plus the sequence score on the final token.

        R[b, t] = -kl_coef * kl[b, t] + [t == last_b] * score'_b     on masked positions, 0 elsewhere,

    where last_b is the index of the last True in ``mask[b]`` (the final generated token, whose action
    produced the scored sequence; Ziegler et al. 2019, Ouyang et al. 2022 eq. 2) and
    score'_b = score_b - missing_eos_penalty if the sequence never emitted EOS (was truncated).

    Args:
        score: [B] reward-model scores.
        kl: [B, T] per-token KL estimates (e.g. ``kl_estimate``); values outside the mask are ignored.
        mask: [B, T] response-token mask.
        kl_coef: KL penalty coefficient.
        eos_missing: optional [B] bool, True for sequences without EOS.
        missing_eos_penalty: amount subtracted from the score of those sequences.

    Returns:
        [B, T] rewards. Rows with an empty mask are all zero.
    """
    keep = mask.bool()
    rewards = torch.where(keep, -kl_coef * kl, torch.zeros_like(kl))
    score = score.to(rewards.dtype)
    if missing_eos_penalty is not None:
        if eos_missing is None:
            raise ValueError("missing_eos_penalty needs eos_missing")
        score = score - missing_eos_penalty * eos_missing.to(score.dtype)
    last = _last_valid_index(keep)
    score = torch.where(keep.any(-1), score, torch.zeros_like(score))
    return rewards.scatter_add(-1, last.unsqueeze(-1), score.unsqueeze(-1))


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise x to zero mean and unit variance over all masked entries of the batch.

    The statistics are global over the masked elements (not per row), and the variance is the *unbiased*
    sample variance sum((x - mu)^2) / (n - 1), as in the summarize_from_feedback reference implementation
    (Stiennon et al. 2020) and TRL. With ``shift_mean=False`` the mean is added back, so only the scale
    changes (used for rewards, whose sign carries meaning).

    Args:
        x: [B, T] values (e.g. advantages).
        mask: [B, T], True on entries that count.
        shift_mean: whether the output keeps mean 0.
        eps: added to the variance.

    Returns:
        [B, T] whitened values; 0 outside the mask.
    """
    keep = mask.bool()
    zeros = torch.zeros_like(x)
    n = keep.sum().to(x.dtype)
    mean = torch.where(keep, x, zeros).sum() / n.clamp(min=1)
    centered = torch.where(keep, x - mean, zeros)
    var = centered.square().sum() / (n - 1).clamp(min=1)
    out = centered * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(keep, out, zeros)


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised Advantage Estimation, Schulman et al. 2016, eq. 16 (in recursive form).

        delta_t = r_t + gamma * V_{t+1} - V_t
        A_t     = delta_t + gamma * lam * A_{t+1}
        R_t     = A_t + V_t   (the lambda-return, target for the value head)

    The recursion runs backwards over the *valid* positions only: masked positions are skipped (the next
    valid position plays the role of t+1), and the value after the last valid token is 0 because the episode
    ends there. No gradient flows (inputs are detached).

    Args:
        rewards: [B, T] per-token rewards (e.g. ``per_token_rewards``).
        values: [B, T] value-head predictions from the rollout.
        mask: [B, T] response-token mask.
        gamma: discount; lam: GAE lambda.

    Returns:
        advantages [B, T], returns [B, T]; both 0 outside the mask.
    """
    keep = mask.bool()
    rewards = rewards.detach()
    values = values.detach()
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    for t in range(values.shape[1] - 1, -1, -1):
        valid = keep[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        # Invalid positions leave the carried state untouched so the recursion jumps over them.
        advantages[:, t] = torch.where(valid, adv, torch.zeros_like(adv))
        next_adv = torch.where(valid, adv, next_adv)
        next_value = torch.where(valid, values[:, t], next_value)
    returns = torch.where(keep, advantages + values, torch.zeros_like(values))
    return advantages, returns


def ppo_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate, Schulman et al. 2017, eq. 7, as a loss to minimise.

        rho_t = exp(logp_t - old_logp_t)
        l_t   = max(-A_t * rho_t, -A_t * clip(rho_t, 1 - eps, 1 + eps))

    i.e. -min(...) of the paper's objective, averaged over each sequence's valid tokens.

    Args:
        logp: [B, T] log-probs of the sampled tokens under the current policy (with grad).
        old_logp: [B, T] the same under the rollout policy.
        advantages: [B, T] (typically whitened GAE advantages).
        mask: [B, T] response-token mask.
        clip_range: epsilon.

    Returns:
        losses [B] (masked mean over tokens); metrics (per example, detached): "clipfrac" (fraction of tokens
        where the clipped term is active), "approx_kl" (k3 estimate of KL(old || new) on the rollout tokens),
        "ratio" (mean rho).
    """
    old_logp = old_logp.detach()
    advantages = advantages.detach()
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    losses = masked_mean_per_row(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        metrics = {
            "clipfrac": masked_mean_per_row((clipped > unclipped).to(logp.dtype), mask),
            # The rollout tokens are samples from the old policy, so old plays the role of pi in kl_k3.
            "approx_kl": masked_mean_per_row(kl_k3(old_logp, logp), mask),
            "ratio": masked_mean_per_row(ratio, mask),
        }
    return losses, metrics


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss (the PPO reference implementation's value clipping).

        V_clip = old_V + clip(V - old_V, -eps_v, eps_v)
        l_t    = 0.5 * max((V - R)^2, (V_clip - R)^2)

    Args:
        values: [B, T] current value predictions (with grad).
        old_values: [B, T] value predictions from the rollout.
        returns: [B, T] GAE returns (targets).
        mask: [B, T] response-token mask.
        clip_range_value: eps_v.

    Returns:
        losses [B] (masked mean over tokens); metrics: "value_clipfrac" [B] (fraction of tokens where the
        clipped error is the larger one).
    """
    old_values = old_values.detach()
    returns = returns.detach()
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    err_unclipped = (values - returns).square()
    err_clipped = (clipped_values - returns).square()
    losses = masked_mean_per_row(0.5 * torch.maximum(err_unclipped, err_clipped), mask)
    with torch.no_grad():
        metrics = {"value_clipfrac": masked_mean_per_row((err_clipped > err_unclipped).to(values.dtype), mask)}
    return losses, metrics


def adaptive_kl_coef(kl_coef: float, observed_kl: float, target: float, horizon: int, n_steps: int) -> float:
    """The adaptive KL controller of Ziegler et al. 2019 (sec. 2.2): steer the observed KL towards ``target``.

        e       = clip(observed_kl / target - 1, -0.2, 0.2)
        beta   <- beta * (1 + e * n_steps / horizon)

    ``observed_kl`` is the mean per-sequence KL of the last rollout batch, ``n_steps`` the number of sequences in
    it and ``horizon`` how many sequences the controller takes to move beta by about e (10000 in the paper).
    """
    if target <= 0 or horizon <= 0:
        raise ValueError(f"adaptive KL needs target > 0 and horizon > 0, got target={target}, horizon={horizon}")
    error = min(max(observed_kl / target - 1.0, -0.2), 0.2)
    return kl_coef * (1.0 + error * n_steps / horizon)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over the masked tokens: 1 is a perfect critic, <= 0 a useless one.

    NaN when the returns have no variance (nothing to explain)."""
    keep = mask.bool()
    r, v = returns[keep].double(), values[keep].double()
    var_r = r.var(unbiased=False)
    if r.numel() < 2 or var_r == 0:
        return float("nan")
    return float(1.0 - (r - v).var(unbiased=False) / var_r)
