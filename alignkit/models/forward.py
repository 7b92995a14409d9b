"""Forward passes that compute only what a loss needs.

`TokenLogps` runs the transformer body over the whole sequence but applies the output projection (vocab-sized, the
most expensive matmul of a small model, and a [tokens, vocab] softmax) only at the positions whose *next* token is
trained (`selected_logits`). `SequenceScores` pools the hidden state of each sequence's last real token through a 1-output head.

Both are nn.Modules so that a distributed wrapper (DDP via accelerate) sees a normal forward call.
"""

from __future__ import annotations

import torch
from torch import nn

from alignkit.data.collate import pad_batch
from alignkit.losses.logprobs import token_logprobs


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The underlying transformers model of a PEFT model (LoRA layers stay injected), or the model itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def activation_checkpointing(model: nn.Module) -> bool:
    """Whether the model's layers recompute their activations in the backward pass (`gradient_checkpointing`)."""
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only (left or right padding)."""
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
        position_ids=position_ids(attention_mask),
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
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask)).logits
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
            position_ids=position_ids(attention_mask),
            use_cache=False,
        ).last_hidden_state
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        last = (attention_mask.long() * positions).argmax(-1)
        pooled = hidden[torch.arange(input_ids.shape[0], device=input_ids.device), last]
        head = getattr(base, "score", None) or getattr(base, "classifier")
        return head(pooled).squeeze(-1).float()


class SharedPromptLogps(nn.Module):
    """Per-token log-probs of K completions per prompt, running each prompt through the model only once.

    Chosen and rejected (or K ranked) completions share their prompt, which is often half the tokens. The prompts go
    through the transformer once with a KV cache; the cache is repeated for the K completions, which then attend to
    it. Gradients flow through the cache into the prompt pass, so the result — values and gradients — equals K
    full forward passes up to float rounding (tested against `TokenLogps`).

    forward(prompt_ids [B,P] left-padded, prompt_mask [B,P], completion_ids [K*B,L] right-padded with rows
    ordered completion-major (all first completions, then all second ...), completion_mask [K*B,L],
    completion_loss_mask [K*B,L] bool) -> (logps [N], rows [N]) as `TokenLogps` with rows in [0, K*B).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, prompt_ids, prompt_mask, completion_ids, completion_mask, completion_loss_mask):
        b, k = prompt_ids.shape[0], completion_ids.shape[0] // prompt_ids.shape[0]
        # Completion row r continues prompt r mod b (completion-major order).
        index = torch.arange(b, device=prompt_ids.device).repeat(k)
        states = response_states(self.model, prompt_ids, prompt_mask, index, completion_ids, completion_mask)
        logits, rows, cols = response_logits(self.model, states, completion_loss_mask)
        return token_logprobs(logits, completion_ids[rows, cols]), rows


def split_prompt(rendered: list, k: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Batch tensors for `SharedPromptLogps` from K completions per prompt.

    `rendered` is completion-major — the first completion of every example, then the second, ... — and the K
    completions of an example must carry identical prompt tokens (as `render_preference` guarantees).
    """
    b = len(rendered) // k
    prompts = [r.input_ids[: r.prompt_len] for r in rendered[:b]]
    for i, r in enumerate(rendered):
        if r.input_ids[: r.prompt_len] != prompts[i % b]:
            raise ValueError(f"completion {i} does not share its prompt tokens with the other completions of its example")
    prompt = pad_batch([(p, [0] * len(p)) for p in prompts], pad_id, side="left")
    completions = pad_batch([(r.input_ids[r.prompt_len :], r.loss_mask[r.prompt_len :]) for r in rendered], pad_id)
    return {
        "prompt_ids": prompt["input_ids"],
        "prompt_mask": prompt["attention_mask"],
        "completion_ids": completions["input_ids"],
        "completion_mask": completions["attention_mask"],
        "completion_loss_mask": completions["loss_mask"],
    }


def response_states(model: nn.Module, prompt_ids, prompt_mask, prompt_index, response_ids, response_mask) -> torch.Tensor:
    """Hidden states that predict each response token: [B, R, H], with each distinct prompt run once.

    A rollout batch holds n samples of each prompt. The distinct prompts ([p, P], left-padded) go through the
    transformer once with a KV cache, which row b of the responses ([B, R], right-padded) reuses through
    `prompt_index[b]`. Gradients flow through the cache into the prompt pass. Response token j is predicted by the
    prompt's last state (j = 0) or by the response's own state j-1, so position j of the result lines up with token j.
    """
    base = unwrap_peft(model)
    decoder = base.get_decoder()
    if base.training and torch.is_grad_enabled() and activation_checkpointing(base):
        # Checkpointed layers keep no KV cache (they run again in the backward pass), so each row runs its whole
        # sequence: the same states, the prompt computed once per row instead of once per prompt.
        ids, mask = torch.cat([prompt_ids[prompt_index], response_ids], 1), torch.cat([prompt_mask[prompt_index],
                                                                                          response_mask], 1)
        hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).last_hidden_state
        start = prompt_ids.shape[1] - 1
        return hidden[:, start : start + response_ids.shape[1]]
    first = decoder(
        input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position_ids(prompt_mask), use_cache=True
    )
    cache = first.cache
    cache.batch_select_indices(prompt_index)
    mask = prompt_mask[prompt_index]
    positions = mask.long().sum(-1, keepdim=True) + torch.arange(response_ids.shape[1], device=response_ids.device)
    hidden = decoder(
        input_ids=response_ids,
        attention_mask=torch.cat([mask, response_mask], dim=1),
        position_ids=positions,
        cache=cache,
        use_cache=True,
    ).last_hidden_state
    last_prompt = first.last_hidden_state[:, -1][prompt_index]
    return torch.cat([last_prompt[:, None], hidden[:, :-1]], dim=1)


def response_logits(model: nn.Module, states: torch.Tensor, response_mask: torch.Tensor):
    """Output logits at the response tokens only: (logits [N, V], rows [N], cols [N]) for mask positions."""
    base = unwrap_peft(model)
    rows, cols = response_mask.bool().nonzero(as_tuple=True)
    logits = _postprocess_logits(base.config, base.get_output_embeddings()(states[rows, cols]))
    return logits, rows, cols
