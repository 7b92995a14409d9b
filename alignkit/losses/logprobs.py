"""Token- and sequence-level log-probabilities from logits.

Everything here is a pure function of tensors. Log-probabilities are computed in at least fp32 even when the
model runs in bf16/fp16, because a log-softmax over a 50k-token vocabulary loses most of its precision in half
precision and the preference losses downstream take differences of sums of these numbers.
"""

from __future__ import annotations

import torch

__all__ = ["token_logprobs", "shift_labels", "entropy_from_logits"]

DEFAULT_CHUNK_ROWS = 1024


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # fp32 for half-precision inputs, but keep fp64 as is so gradcheck in double precision stays exact.
    return torch.promote_types(dtype, torch.float32)


class _ChunkedTokenLogprobs(torch.autograd.Function):
    """log p(label) = z_label - logsumexp(z), evaluated a block of rows at a time.

    A custom backward is used so that neither pass keeps an fp32 copy of the whole [N, V] logits alive: the
    forward saves only the (original-dtype) logits and the per-row logsumexp, and the backward rebuilds the
    softmax block by block: d log p(y) / d z = onehot(y) - softmax(z).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, chunk_rows: int, ignore_index: int):
        n_rows = logits.shape[0]
        dtype = _compute_dtype(logits.dtype)
        ignored = labels == ignore_index
        safe_labels = labels.masked_fill(ignored, 0).unsqueeze(-1)
        out = torch.empty(n_rows, dtype=dtype, device=logits.device)
        lse = torch.empty(n_rows, dtype=dtype, device=logits.device)
        for start in range(0, n_rows, chunk_rows):
            end = min(start + chunk_rows, n_rows)
            block = logits[start:end].to(dtype)
            lse[start:end] = block.logsumexp(-1)
            out[start:end] = block.gather(-1, safe_labels[start:end]).squeeze(-1) - lse[start:end]
        out = out.masked_fill(ignored, 0.0)
        ctx.save_for_backward(logits, safe_labels, lse, ignored)
        ctx.chunk_rows = chunk_rows
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, safe_labels, lse, ignored = ctx.saved_tensors
        grad_logits = None
        if ctx.needs_input_grad[0]:
            chunk_rows = ctx.chunk_rows
            dtype = lse.dtype
            grad_out = grad_out.to(dtype).masked_fill(ignored, 0.0).unsqueeze(-1)
            grad_logits = torch.empty_like(logits)
            for start in range(0, logits.shape[0], chunk_rows):
                end = min(start + chunk_rows, logits.shape[0])
                g = grad_out[start:end]
                probs = torch.exp(logits[start:end].to(dtype) - lse[start:end].unsqueeze(-1))
                block_grad = (-g) * probs
                block_grad.scatter_add_(-1, safe_labels[start:end], g)
                grad_logits[start:end] = block_grad.to(logits.dtype)
        return grad_logits, None, None, None


def token_logprobs(
    logits: torch.Tensor,
    labels: torch.Tensor,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ignore_index: int = -100,
) -> torch.Tensor:
    """Log-probability of each label token under the logits.

    Args:
        logits: [N, V] or [B, T, V] (any float dtype; computation is upcast to at least fp32).
        labels: [N] or [B, T] token ids, same leading shape as ``logits``. Entries equal to ``ignore_index``
            yield 0 and receive no gradient (masking is still the caller's job via the loss mask).
        chunk_rows: rows of the flattened logits processed at once; bounds the fp32 working set to
            ``chunk_rows * V`` elements in both forward and backward.

    Returns:
        log p(labels), shape ``labels.shape``, dtype fp32 (fp64 for fp64 logits). Differentiable w.r.t. logits.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} leading shapes differ")
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    vocab = logits.shape[-1]
    flat = _ChunkedTokenLogprobs.apply(logits.reshape(-1, vocab), labels.reshape(-1), chunk_rows, ignore_index)
    return flat.view(labels.shape)


def shift_labels(input_ids: torch.Tensor, loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token targets for a causal LM.

    The logit at position t predicts token t+1, so pair ``logits[:, :-1]`` with the returned labels.

    Args:
        input_ids: [B, T] token ids.
        loss_mask: [B, T], nonzero where the token *itself* should be scored (e.g. completion tokens).

    Returns:
        labels [B, T-1] with labels[:, t] = input_ids[:, t+1], and mask [B, T-1] (bool) with
        mask[:, t] = loss_mask[:, t+1].
    """
    if input_ids.shape != loss_mask.shape:
        raise ValueError("input_ids and loss_mask must have the same shape")
    return input_ids[:, 1:], loss_mask[:, 1:].bool()


def entropy_from_logits(logits: torch.Tensor, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> torch.Tensor:
    """Entropy H = -sum_v p_v log p_v of the softmax distribution, computed in at least fp32.

    Args:
        logits: [..., V].
        chunk_rows: rows of the flattened logits processed at once.

    Returns:
        [...] entropies (nats). Entries of -inf in the logits (banned tokens) contribute 0.
    """
    vocab = logits.shape[-1]
    flat = logits.reshape(-1, vocab)
    dtype = _compute_dtype(logits.dtype)
    parts = []
    for start in range(0, flat.shape[0], chunk_rows):
        logp = torch.log_softmax(flat[start : start + chunk_rows].to(dtype), dim=-1)
        p = logp.exp()
        # p * logp is 0 * -inf = NaN for banned tokens; their contribution is 0 by continuity.
        parts.append(-torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1))
    if not parts:
        return logits.new_zeros(logits.shape[:-1], dtype=dtype)
    return torch.cat(parts).view(logits.shape[:-1])
