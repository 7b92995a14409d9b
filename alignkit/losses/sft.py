"""Supervised fine-tuning (maximum likelihood) loss."""

from __future__ import annotations

import torch

__all__ = ["sft_loss"]


def sft_loss(token_logps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Negative log-likelihood of the masked tokens, summed per example.

    L_b = -sum_t mask[b, t] * log p(y_{b,t} | y_{b,<t}, x_b)

    The per-example values are *sums*, not means: the trainer divides the total over the whole (global,
    gradient-accumulated) batch by the global number of masked tokens, which weights every token equally
    regardless of how the batch was split across micro-batches and ranks.

    Args:
        token_logps: [B, T] per-token log-probs (e.g. from ``token_logprobs`` on shifted labels).
        mask: [B, T], nonzero on tokens that are trained on.

    Returns:
        losses [B], metrics {"tokens": [B] number of masked tokens per example}.
    """
    keep = mask.bool()
    losses = -torch.where(keep, token_logps, torch.zeros_like(token_logps)).sum(-1)
    return losses, {"tokens": keep.sum(-1).detach()}
