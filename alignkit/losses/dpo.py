"""Direct Preference Optimization and close relatives.

Every function takes sequence log-probabilities of the preferred ("chosen") and dispreferred ("rejected")
completions under the trained policy and under the frozen reference model, all [B], and returns
``(losses [B], metrics)``. With

    h = (log pi(y_c) - log ref(y_c)) - (log pi(y_r) - log ref(y_r)),

the implicit rewards are beta * (log pi(y) - log ref(y)) (Rafailov et al. 2023, eq. 5).

Metrics (per example, detached): "chosen_rewards", "rejected_rewards", "reward_margin"
(chosen - rejected) and "reward_accuracy" (1.0 where chosen_rewards > rejected_rewards).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["dpo_sigmoid_loss", "dpo_robust_loss", "ipo_loss", "dpo_hinge_loss", "DPO_LOSSES"]

Metrics = dict[str, torch.Tensor]


def _logratio_gap(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, Metrics]:
    chosen_logratio = policy_chosen - ref_chosen
    rejected_logratio = policy_rejected - ref_rejected
    with torch.no_grad():
        chosen_rewards = beta * chosen_logratio
        rejected_rewards = beta * rejected_logratio
        metrics = {
            "chosen_rewards": chosen_rewards,
            "rejected_rewards": rejected_rewards,
            "reward_margin": chosen_rewards - rejected_rewards,
            "reward_accuracy": (chosen_rewards > rejected_rewards).float(),
        }
    return chosen_logratio - rejected_logratio, metrics


def dpo_sigmoid_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, Metrics]:
    """DPO loss, Rafailov et al. 2023, eq. 7: L = -log sigmoid(beta * h).

    With ``label_smoothing`` = eps > 0 this is conservative DPO (cDPO, Mitchell 2023): the preference label is
    assumed flipped with probability eps, giving the cross-entropy against the smoothed label

        L = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h).

    Args:
        policy_chosen, policy_rejected, ref_chosen, ref_rejected: [B] sequence log-probs.
        beta: KL-regularisation strength (inverse temperature of the implicit reward).
        label_smoothing: eps in [0, 0.5].

    Returns:
        losses [B], metrics (see module docstring).
    """
    h, metrics = _logratio_gap(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    logits = beta * h
    losses = -F.logsigmoid(logits)
    if label_smoothing:
        losses = (1 - label_smoothing) * losses - label_smoothing * F.logsigmoid(-logits)
    return losses, metrics


def dpo_robust_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    label_smoothing: float,
) -> tuple[torch.Tensor, Metrics]:
    """Robust DPO, Chowdhury et al. 2024 ("Provably Robust DPO: Aligning Language Models with Noisy Feedback").

    Unbiased estimator of the clean-label DPO loss when labels are flipped with known rate eps:

        L = [ -(1 - eps) log sigmoid(beta h) + eps log sigmoid(-beta h) ] / (1 - 2 eps).

    Unlike cDPO the flipped term enters with a plus sign, so the loss can be negative; its expectation over
    the label noise equals the noiseless DPO loss.

    Args:
        policy_chosen, policy_rejected, ref_chosen, ref_rejected: [B] sequence log-probs.
        beta: as in DPO.
        label_smoothing: flip rate eps in [0, 0.5).

    Returns:
        losses [B], metrics (see module docstring).
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"robust DPO needs label_smoothing in [0, 0.5), got {label_smoothing}")
    h, metrics = _logratio_gap(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    logits = beta * h
    losses = (-(1 - label_smoothing) * F.logsigmoid(logits) + label_smoothing * F.logsigmoid(-logits)) / (
        1 - 2 * label_smoothing
    )
    return losses, metrics


def ipo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, Metrics]:
    """Identity Preference Optimisation, Azar et al. 2023, eq. 17: L = (h - 1 / (2 beta))^2.

    beta plays the role of the paper's tau. The squared loss grows with the square of sequence length if
    summed log-probs are used, so callers pass *length-averaged* log-probs (each sum divided by its number of
    trained tokens) for all four inputs; this is the normalisation the IPO authors used for their results and
    matches TRL's "ipo" loss.

    Args:
        policy_chosen, policy_rejected, ref_chosen, ref_rejected: [B] per-token-averaged log-probs.
        beta: regularisation strength tau > 0.

    Returns:
        losses [B], metrics (see module docstring; rewards use the averaged log-probs).
    """
    h, metrics = _logratio_gap(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    return (h - 1 / (2 * beta)).square(), metrics


def dpo_hinge_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, Metrics]:
    """Hinge loss on the DPO log-ratio gap: L = max(0, 1 - beta h).

    The calibration loss of SLiC-HF (Zhao et al. 2023; margin delta = 1 / beta) applied to the
    reference-normalised log-likelihoods, as in RSO (Liu et al. 2023, "Statistical Rejection Sampling").

    Args:
        policy_chosen, policy_rejected, ref_chosen, ref_rejected: [B] sequence log-probs.
        beta: scale of the gap (1/beta is the margin in log-ratio units).

    Returns:
        losses [B], metrics (see module docstring).
    """
    h, metrics = _logratio_gap(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    return torch.relu(1 - beta * h), metrics


DPO_LOSSES: dict[str, Callable[..., tuple[torch.Tensor, Metrics]]] = {
    "sigmoid": dpo_sigmoid_loss,
    "robust": dpo_robust_loss,
    "ipo": ipo_loss,
    "hinge": dpo_hinge_loss,
}
