"""SimPO, Simple Preference Optimization (Meng, Xia and Chen 2024): a reference-free, length-normalised margin loss.

The implicit reward of a completion is its average log-probability per token, scaled: r(y) = beta / |y| log pi(y|x)
(paper eq. 4), so no reference model is needed and a long completion gains nothing from its length. The loss asks
the chosen reward to beat the rejected one by a target margin gamma (eq. 6):

    L = -log sigmoid(beta / |y_c| log pi(y_c|x) - beta / |y_r| log pi(y_r|x) - gamma).

Takes the policy's sequence log-probs and trained-token counts of chosen and rejected, all [B]; returns
``(losses [B], metrics)`` with the per-example "chosen_rewards", "rejected_rewards", "reward_margin" (chosen -
rejected) and "reward_accuracy" (1.0 where the chosen reward is larger), as the DPO family does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def simpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
    beta: float,
    gamma: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SimPO loss, Meng et al. 2024, eq. 6.

    Args:
        policy_chosen, policy_rejected: [B] summed log-probs of the completions' trained tokens.
        chosen_tokens, rejected_tokens: [B] their numbers of trained tokens (|y|), each >= 1.
        beta: reward scale (the paper's 2.0 - 2.5).
        gamma: target reward margin (the paper's 0.5 - 1.6; 0 gives the plain length-normalised Bradley-Terry loss).
    """
    chosen_rewards = beta * policy_chosen / chosen_tokens
    rejected_rewards = beta * policy_rejected / rejected_tokens
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)
    with torch.no_grad():
        metrics = {
            "chosen_rewards": chosen_rewards.detach(),
            "rejected_rewards": rejected_rewards.detach(),
            "reward_margin": (chosen_rewards - rejected_rewards).detach(),
            "reward_accuracy": (chosen_rewards > rejected_rewards).float(),
        }
    return losses, metrics
