"""Forward passes that compute only what a loss needs.

`TokenLogps` runs the transformer body over the whole sequence but applies the output projection (vocab-sized, the
most expensive matmul of a small model, and a [tokens, vocab] softmax) only at the positions whose *next* token is
trained (`selected_logits`). `SequenceScores` pools the hidden state of each sequence's last real token through a 1-output head.

Both are nn.Modules so that a distributed wrapper (DDP via accelerate) sees a normal forward call.
"""

from __future__ import annotations

import torch
from torch import nn

from alignkit.losses.logprobs import token_logprobs


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The underlying transformers model of a PEFT model (LoRA layers stay injected), or the model itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    # Correct for right padding (training) and left padding (generation-style batches) alike.
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _postprocess_logits(config, logits: torch.Tensor) -> torch.Tensor:
    # A few architectures transform logits inside their CausalLM.forward; mirror that since we bypass it.
    scale = getattr(config, "logit_scale", None)
    if isinstance(scale, (int, float)) and scale != 1:
        logits = logits * scale
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def selected_logits(model: nn.Module, input_ids, attention_mask, loss_mask):
    """Logits only where a trained token is predicted: (logits [N, V], rows [N], labels [N]).

    Runs the transformer body over the whole sequence but applies the output projection (vocab-sized, the most
    expensive matmul of a small model) only at positions whose *next* token is trained. Position t predicts token
    t+1, so a trained token at position 0 (no prefix) is ignored.
    """
    base = unwrap_peft(model)
    hidden = base.get_decoder()(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=_position_ids(attention_mask),
        use_cache=False,
    ).last_hidden_state
    rows, cols = loss_mask[:, 1:].nonzero(as_tuple=True)
    logits = _postprocess_logits(base.config, base.get_output_embeddings()(hidden[rows, cols]))
    return logits, rows, input_ids[rows, cols + 1]


class TokenLogps(nn.Module):
    """Per-token log-probs of the trained tokens of a right- or left-padded batch.

    forward(input_ids [B,T], attention_mask [B,T], loss_mask [B,T] bool) -> (logps [N], rows [N])
    where N = loss_mask[:, 1:].sum(): the log-prob the model assigns to each trained token given its prefix, and the
    batch row it belongs to (sum per row with `per_row_sum`).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor):
        logits, rows, labels = selected_logits(self.model, input_ids, attention_mask, loss_mask)
        return token_logprobs(logits, labels), rows


def per_row_sum(values: torch.Tensor, rows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Sum flat per-token values into their batch rows: [N] -> [B] (differentiable)."""
    out = torch.zeros(batch_size, dtype=values.dtype, device=values.device)
    return out.index_add(0, rows, values)


def full_token_logps(model: nn.Module, input_ids, attention_mask) -> torch.Tensor:
    """Reference implementation: log p(token t+1 | prefix) for every position, from the model's full logits [B,T-1].

    Used by tests to check `TokenLogps`, and where the whole distribution is needed.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=_position_ids(attention_mask)).logits
    return token_logprobs(logits[:, :-1], input_ids[:, 1:])


class SequenceScores(nn.Module):
    """Scalar score per sequence from a sequence-classification model with one output.

    forward(input_ids [B,T], attention_mask [B,T]) -> scores [B] (fp32), read at each row's last attended token.
    We pool by attention mask rather than by pad-token id: with pad == eos (SmolLM2, Llama-3) the pad-id rule of
    transformers' classification heads would skip the real final EOS token.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        base = unwrap_peft(self.model)
        backbone = getattr(base, base.base_model_prefix)
        hidden = backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=_position_ids(attention_mask),
            use_cache=False,
        ).last_hidden_state
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        last = (attention_mask.long() * positions).argmax(-1)
        pooled = hidden[torch.arange(input_ids.shape[0], device=input_ids.device), last]
        head = getattr(base, "score", None) or getattr(base, "classifier")
        return head(pooled).squeeze(-1).float()
