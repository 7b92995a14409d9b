"""Responses to a list of prompts (`alignkit generate`, `alignkit chat`): `sample` in length-sorted batches."""

from __future__ import annotations

import contextlib

import torch

from alignkit.data import Turns, render_prompt
from alignkit.rollouts.sampler import SamplingSettings, sample
from alignkit.utils.progress import batches


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
    for start in batches(len(order), batch_size, "generating"):
        idx = order[start : start + batch_size]
        settings = SamplingSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                    seed=seed + start)
        with autocast:
            rollout = sample(model, tokenizer, [prompts[i] for i in idx], settings)
        for i, text in zip(idx, rollout.texts):
            out[i] = text
    return out


def stream_response(model, tokenizer, prompt: Turns, on_text, *, max_new_tokens: int = 256,
                    temperature: float = 0.0) -> str:
    """One response to `prompt`, rendered by `data.render_prompt` as everywhere else, handed to `on_text` piece by
    piece as it is decoded (`alignkit chat`); returns the whole response as `generate_responses` gives it."""
    from transformers.generation.streamers import BaseStreamer

    class Pieces(BaseStreamer):
        """Decodes the new tokens so far and passes on what was added (whole characters only)."""

        def __init__(self):
            self.tokens: list[int] = []
            self.shown = ""
            self.prompt_seen = False

        def put(self, value):
            if not self.prompt_seen:  # generate hands over the prompt first
                self.prompt_seen = True
                return
            self.tokens.extend(value.reshape(-1).tolist())
            text = tokenizer.decode(self.tokens, skip_special_tokens=True)
            if not text.endswith("\ufffd") and len(text) > len(self.shown):
                on_text(text[len(self.shown):])
                self.shown = text

        def end(self):
            pass

    device = next(model.parameters()).device
    ids = torch.tensor([render_prompt(tokenizer, prompt)], device=device)
    sampling = temperature > 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=sampling, temperature=temperature if sampling else None,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                             streamer=Pieces())
    model.train(was_training)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
