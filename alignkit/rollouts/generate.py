"""Responses to a list of prompts (`alignkit generate`, `alignkit chat`): `sample` in length-sorted batches."""

from __future__ import annotations

import contextlib

import torch

from alignkit.data import Turns, render_prompt
from alignkit.rollouts.sampler import SamplingSettings, sample


@torch.no_grad()
def generate_responses(
    model,
    tokenizer,
    prompts: list[Turns],
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    seed: int = 0,
    precision: str = "fp32",
) -> list[str]:
    """Responses to `prompts`, each rendered by `data.render_prompt` (a string stays plain text, a message list goes
    through the chat template), as every other sampler renders them. temperature=0 means greedy, hence
    deterministic."""
    device = next(model.parameters()).device
    # Longest first: similar lengths share a batch, so less padding is generated over.
    lengths = [len(render_prompt(tokenizer, p)) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    out: list[str] = [""] * len(prompts)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        settings = SamplingSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                    seed=seed + start)
        with autocast:
            rollout = sample(model, tokenizer, [prompts[i] for i in idx], settings)
        for i, text in zip(idx, rollout.texts):
            out[i] = text
    return out
