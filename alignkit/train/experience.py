"""The online loop's experience as tensors: a rollout as a batch, batches packed and rows selected (each distinct
prompt kept once), the policy with its value head, and the per-row statistics the algorithms log."""

from __future__ import annotations

from typing import TypedDict

import torch
from torch import nn

from alignkit.losses import entropy_from_logits, kl_k1, token_logprobs
from alignkit.models.forward import response_logits, response_states
from alignkit.rollouts import Rollout

Batch = dict[str, torch.Tensor]


class Experience(TypedDict, total=False):
    """One iteration's experience, B = prompts x samples rows (P: distinct prompts, R: response tokens); the row
    operations (`select_rows`, `merge_batches`, the gather over processes) treat it as a `Batch`.

    From the rollout (`rollout_batch`): prompt_ids, prompt_mask [P, T] each distinct prompt once, left-padded;
    prompt_index [B] the prompt of each row; response_ids, response_mask [B, R] (the mask up to the first EOS).
    From the loop: scores [B] the judge's; eos [B] ended by the model (not cut at max_new_tokens); sample_logps
    [B, R] the sampler's log-probs; old_logps [B, R] and values [B, R] the rollout policy's (when the update is not
    one on-policy step, or there is a critic); ref_logps [B, R] the reference's (when there is a KL term).
    From the algorithm: advantages [B, R]; returns [B, R] (with a critic)."""

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    prompt_index: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    scores: torch.Tensor
    eos: torch.Tensor
    sample_logps: torch.Tensor
    old_logps: torch.Tensor
    values: torch.Tensor
    ref_logps: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


class PolicyWithValue(nn.Module):
    """The policy and, for PPO, a value function: a linear head on the policy's own hidden states (shared critic)
    or on a separate transformer (separate critic). One module, so one optimizer and one checkpoint cover both.

    forward(batch, temperature, with_values, with_entropy) -> {"logps": [B,R], "values": [B,R], "entropy": [B,R]
    (no grad)} for the response tokens of a rollout batch; 0 outside `response_mask`. Entropy costs a softmax over the
    vocabulary at every token, so only the update, which logs it, asks for it.
    """

    def __init__(self, policy: nn.Module, critic: str | None = None, critic_model: nn.Module | None = None):
        super().__init__()
        self.policy = policy
        self.critic = critic_model if critic == "separate" else None
        hidden = policy.config.hidden_size if critic_model is None else critic_model.config.hidden_size
        self.value_head = nn.Linear(hidden, 1) if critic else None
        if self.value_head is not None:
            # Zero init: the first values are 0, so early advantages are the raw (whitened) returns.
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)

    def forward(self, batch: Batch, temperature: float = 1.0, with_values: bool = False,
                with_entropy: bool = False) -> dict[str, torch.Tensor]:
        args = (batch["prompt_ids"], batch["prompt_mask"], batch["prompt_index"], batch["response_ids"],
                batch["response_mask"])
        states = response_states(self.policy, *args)
        logits, rows, cols = response_logits(self.policy, states, batch["response_mask"])
        if temperature > 0 and temperature != 1:
            logits = logits / temperature
        grid = torch.zeros(batch["response_ids"].shape, dtype=torch.float32, device=logits.device)
        out = {"logps": grid.index_put((rows, cols), token_logprobs(logits, batch["response_ids"][rows, cols]).float())}
        if with_entropy:
            with torch.no_grad():
                out["entropy"] = grid.index_put((rows, cols), entropy_from_logits(logits.detach()).float())
        if with_values:
            if self.value_head is None:
                raise RuntimeError("this policy has no value head (critic: none)")
            if self.critic is not None:
                states = response_states(self.critic, *args)
            values = self.value_head(states[rows, cols]).squeeze(-1).float()
            out["values"] = grid.index_put((rows, cols), values)
        return out


def select_rows(batch: Batch, rows: torch.Tensor) -> Batch:
    """Rows of a rollout batch (`prompt_ids`/`prompt_mask` hold each distinct prompt once, `prompt_index` maps rows to
    them), with the prompts those rows use re-indexed and columns that are padding in every row trimmed."""
    index = batch["prompt_index"][rows]
    distinct, inverse = torch.unique(index, return_inverse=True)
    prompt_mask = batch["prompt_mask"][distinct]
    keep_from = int((prompt_mask.sum(0) > 0).long().argmax())
    width = max(int(batch["response_mask"][rows].sum(-1).max()), 1)
    out = {
        "prompt_ids": batch["prompt_ids"][distinct][:, keep_from:],
        "prompt_mask": prompt_mask[:, keep_from:],
        "prompt_index": inverse,
    }
    for key, value in batch.items():
        if key not in out:
            value = value[rows]
            out[key] = value[:, :width] if value.ndim == 2 else value
    return out


def rollout_batch(rollout: Rollout) -> Batch:
    """The model inputs of a rollout, with each distinct prompt once and padding trimmed."""
    index = rollout.prompt_index.to(rollout.response_ids.device)
    # The first row of each prompt carries its (left-padded) tokens; rollouts are prompt-major.
    first_row = torch.stack([(index == p).nonzero()[0, 0] for p in range(int(index.max()) + 1)])
    full = {"prompt_ids": rollout.prompt_ids[first_row], "prompt_mask": rollout.prompt_mask[first_row],
            "prompt_index": index, "response_ids": rollout.response_ids, "response_mask": rollout.response_mask}
    return select_rows(full, torch.arange(index.shape[0], device=index.device))


def pad_to(x: torch.Tensor, width: int, value: float = 0, left: bool = False) -> torch.Tensor:
    if x.shape[1] >= width:
        return x
    return torch.nn.functional.pad(x, (width - x.shape[1], 0) if left else (0, width - x.shape[1]), value=value)


PROMPT_KEYS = ("prompt_ids", "prompt_mask")  # one row per distinct prompt, left-padded


def merge_batches(parts: list[Batch], pad_id: int) -> Batch:
    """Experience batches of consecutive shares of the prompts (process 0's first) as one batch, in the order one
    process would have made it: prompt tensors left-padded to one width, row tensors right-padded, `prompt_index`
    shifted past the prompts before each part."""
    merged: Batch = {}
    offsets = [0]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + part["prompt_ids"].shape[0])
    for key in parts[0]:
        values = [part[key] for part in parts]
        if key == "prompt_index":
            merged[key] = torch.cat([v + offset for v, offset in zip(values, offsets)])
        elif values[0].ndim == 2:
            width = max(v.shape[1] for v in values)
            pad = pad_id if key in ("prompt_ids", "response_ids") else 0
            merged[key] = torch.cat([pad_to(v, width, pad, left=key in PROMPT_KEYS) for v in values])
        else:
            merged[key] = torch.cat(values)
    return merged


def row_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.bool(), x, torch.zeros_like(x)).sum(-1)


def group_spread(scores: torch.Tensor, group_size: int) -> dict[str, float]:
    """The share of prompts whose samples all scored the same (a group baseline learns nothing from them)."""
    groups = scores.view(-1, group_size)
    return {"groups_without_spread": float((groups.max(-1).values == groups.min(-1).values).float().mean())}


def sampled_kl(exp: Batch) -> dict[str, float]:
    """The mean sequence KL (k1) of the samples to the reference, when the experience has reference log-probs."""
    if "ref_logps" not in exp:
        return {}
    return {"kl": float(row_sum(kl_k1(exp["sample_logps"], exp["ref_logps"]), exp["response_mask"]).mean())}
