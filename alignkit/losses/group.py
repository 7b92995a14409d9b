"""Critic-free baselines over groups of samples of the same prompt (GRPO, RLOO).

Rows are grouped prompt-major: rows [k*G, (k+1)*G) are the G samples of prompt k (the order `rollouts.sample`
produces). The advantages are per sequence, [B]; broadcast them over the response tokens and feed them to
`ppo_policy_loss` for the clipped policy-gradient step.
"""

from __future__ import annotations

import torch


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if rewards.ndim != 1 or group_size < 2 or rewards.shape[0] % group_size:
        raise ValueError(
            f"rewards must be [B] with B a multiple of group_size >= 2; got shape {tuple(rewards.shape)}, "
            f"group_size {group_size}"
        )
    return rewards.view(-1, group_size)


def group_relative_advantages(rewards: torch.Tensor, group_size: int, *, scale: bool = True,
                              eps: float = 1e-4) -> torch.Tensor:
    """GRPO advantages (Shao et al. 2024, DeepSeekMath, sec. 4.1.2): A_i = (r_i - mean(r_g)) / (std(r_g) + eps).

    std is the unbiased sample standard deviation of the group. With scale=False the division is dropped
    (Liu et al. 2025, "Dr. GRPO": scaling by std up-weights groups whose rewards barely differ). A group whose
    rewards are all equal gets advantage 0: it carries no learning signal.

    rewards: [B] -> advantages [B].
    """
    g = _groups(rewards.float(), group_size)
    centred = g - g.mean(-1, keepdim=True)
    if scale:
        centred = centred / (g.std(-1, keepdim=True) + eps)
    return centred.reshape(-1)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024): A_i = r_i - mean_{j != i} r_j.

    Each sample's baseline is the mean reward of the other samples of its prompt, an unbiased baseline; equal to
    G/(G-1) * (r_i - mean(r_g)). rewards: [B] -> advantages [B].
    """
    g = _groups(rewards.float(), group_size)
    others = (g.sum(-1, keepdim=True) - g) / (group_size - 1)
    return (g - others).reshape(-1)
