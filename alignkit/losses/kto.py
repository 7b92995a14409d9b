"""Kahneman-Tversky Optimization (Ethayarajh et al. 2024): learning from unpaired good/bad completions."""

from __future__ import annotations

import torch

__all__ = ["kto_kl_estimate", "kto_loss"]


def kto_kl_estimate(policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor) -> torch.Tensor:
    """Reference point z_0 of KTO: a batch estimate of KL(pi || ref), clamped at 0 and detached.

    Ethayarajh et al. 2024, sec. 4.1: z_0 = max(0, mean_i [log pi(y'_i|x_i) - log ref(y'_i|x_i)]) where y'_i
    is a completion belonging to a *different* prompt in the batch (mismatched pairs), so that the estimate
    is not correlated with the examples being scored. No gradient flows through z_0 (it only shifts the
    reference point). In data-parallel training the mean should be taken over the global batch: the KTO trainer
    all-reduces the unclamped sum and count instead of calling this (`alignkit.methods.kto.reference_point`).

    Args:
        policy_kl_logps: [M] sequence log-probs of the mismatched completions under the policy.
        ref_kl_logps: [M] the same under the reference model.

    Returns:
        scalar tensor z_0 >= 0.
    """
    return (policy_kl_logps - ref_kl_logps).mean().clamp(min=0).detach()


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    labels: torch.Tensor,
    kl: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """KTO loss, Ethayarajh et al. 2024, eq. 7: L = lambda_y - v(x, y).

    With r = log pi(y|x) - log ref(y|x), reference point z_0 = ``kl`` and lambda_D = w_d, lambda_U = w_u:
        desirable:    L = w_d * (1 - sigmoid(beta * (r - z_0)))
        undesirable:  L = w_u * (1 - sigmoid(beta * (z_0 - r)))

    The weights let the trainer correct for class imbalance (the paper suggests keeping
    w_d * n_d / (w_u * n_u) in [1, 4/3]).

    Args:
        policy_logps: [B] sequence log-probs of the completions under the policy.
        ref_logps: [B] the same under the reference model.
        labels: [B] bool, True for desirable completions.
        kl: scalar tensor z_0 from ``kto_kl_estimate`` (no gradient).
        beta: risk-aversion / KL strength.
        desirable_weight, undesirable_weight: lambda_D and lambda_U.

    Returns:
        losses [B]; metrics (detached): "rewards" [B] = beta * r, "desirable" [B] float (1.0 for desirable),
        "chosen_rewards" / "rejected_rewards" [B] = rewards on desirable / undesirable rows and NaN elsewhere
        (reduce with nanmean so each is averaged over its own class), "kl" scalar.
    """
    desirable = labels.bool()
    logratio = policy_logps - ref_logps
    kl = kl.detach()
    # 1 - sigmoid(x) is written as sigmoid(-x): same value, no cancellation when sigmoid(x) is close to 1.
    desirable_losses = desirable_weight * torch.sigmoid(-beta * (logratio - kl))
    undesirable_losses = undesirable_weight * torch.sigmoid(-beta * (kl - logratio))
    losses = torch.where(desirable, desirable_losses, undesirable_losses)
    with torch.no_grad():
        rewards = beta * logratio
        nan = torch.full_like(rewards, float("nan"))
        metrics = {
            "rewards": rewards,
            "desirable": desirable.float(),
            "chosen_rewards": torch.where(desirable, rewards, nan),
            "rejected_rewards": torch.where(desirable, nan, rewards),
            "kl": kl,
        }
    return losses, metrics
