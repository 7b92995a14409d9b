"""Batched generation with transformers' `generate` (KV cache, left padding, stop at EOS)."""

from __future__ import annotations

import contextlib

import torch

from alignkit.data import Turns


def chat_prompt_ids(tokenizer, prompt: Turns) -> list[int]:
    """Token ids of a prompt ready for the assistant's reply (chat template with the generation prompt)."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False).input_ids


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
    """Responses to `prompts` (strings or message lists). temperature=0 means greedy, hence deterministic."""
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    encoded = [chat_prompt_ids(tokenizer, p) for p in prompts]
    # Longest first: similar lengths share a batch, so less padding is generated over.
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    out: list[str] = [""] * len(encoded)
    generator_seed = torch.Generator().manual_seed(seed)
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            attention[row, width - len(encoded[i]) :] = 1
        sampling = temperature > 0
        if sampling:
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator_seed)))
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        with autocast:
            generated = model.generate(
                input_ids=ids.to(device),
                attention_mask=attention.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=sampling,
                temperature=temperature if sampling else None,
                top_p=top_p if sampling else None,
                top_k=None,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        for row, i in enumerate(idx):
            out[i] = tokenizer.decode(generated[row, width:], skip_special_tokens=True).strip()
    return out

