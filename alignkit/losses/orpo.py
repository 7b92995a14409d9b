"""Odds Ratio Preference Optimization (Hong et al. 2024): reference-free, SFT plus an odds-ratio term."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["log_odds", "orpo_loss"]

_LOG_HALF = -math.log(2.0)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, accurate over the whole range (Maechler 2012)."""
    # Near 0, 1 - exp(x) cancels, so use expm1; far below 0, exp(x) underflows harmlessly and log1p is exact.
    near_zero = x > _LOG_HALF
    # Each branch only ever sees inputs from its own range: torch.where differentiates both branches, and an
    # out-of-range input would feed inf/NaN into the gradient even though its value is discarded.
    x_near = torch.where(near_zero, x, torch.full_like(x, _LOG_HALF))
    x_far = torch.where(near_zero, torch.full_like(x, _LOG_HALF), x)
    return torch.where(near_zero, torch.log(-torch.expm1(x_near)), torch.log1p(-torch.exp(x_far)))


def log_odds(logp: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) from log p, computed without forming p.

    Inputs are upcast to fp32 and clipped just below 0 so that p = 1 (possible after length averaging in low
    precision) gives a large finite value instead of inf.
    """
    logp = logp.float().clamp(max=-torch.finfo(torch.float32).eps)
    return logp - _log1mexp(logp)


def orpo_loss(
    chosen_nll: torch.Tensor,
    chosen_avg_logps: torch.Tensor,
    rejected_avg_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ORPO loss, Hong et al. 2024 ("ORPO: Monolithic Preference Optimization without Reference Model"), sec. 3.

        L = L_SFT + beta * L_OR,
        L_OR = -log sigmoid( log odds(P(y_c|x)) - log odds(P(y_r|x)) ),
        odds(P) = P / (1 - P),

    where P(y|x) is the length-normalised likelihood, so log P = the *average* per-token log-prob
    (as in the paper). beta is the paper's lambda.

    Args:
        chosen_nll: [B] SFT negative log-likelihood of the chosen completion (typically the token-averaged
            NLL, i.e. ``-chosen_avg_logps``, as in the paper).
        chosen_avg_logps: [B] average per-token log-prob of the chosen completion (< 0).
        rejected_avg_logps: [B] average per-token log-prob of the rejected completion (< 0).
        beta: weight of the odds-ratio term.

    Returns:
        losses [B]; metrics (per example, detached): "log_odds_ratio", "or_loss" (L_OR), "nll",
        "chosen_rewards" = beta * chosen_avg_logps, "rejected_rewards", "reward_accuracy".
    """
    log_odds_ratio = log_odds(chosen_avg_logps) - log_odds(rejected_avg_logps)
    or_loss = -F.logsigmoid(log_odds_ratio)
    losses = chosen_nll + beta * or_loss
    with torch.no_grad():
        chosen_rewards = beta * chosen_avg_logps
        rejected_rewards = beta * rejected_avg_logps
        metrics = {
            "log_odds_ratio": log_odds_ratio.detach(),
            "or_loss": or_loss.detach(),
            "nll": chosen_nll.detach(),
            "chosen_rewards": chosen_rewards,
            "rejected_rewards": rejected_rewards,
            "reward_accuracy": (chosen_rewards > rejected_rewards).float(),
        }
    return losses, metrics
