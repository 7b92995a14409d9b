"""Rollouts: prompts -> sampled responses with the masks and per-token log-probs that RL losses need.

The backend is a seam: anything with `generate(model, prompt_ids, prompt_mask, prompt_index, settings, eos_id, pad_id)
-> (response_ids, logps)` can generate (a vLLM backend on GPUs would go here). Two exist:

- `DecodeLoopBackend` (the default, and what `rollouts.engine.generate` uses): each distinct prompt is prefilled once
  and its KV cache shared by its n samples, then a plain decode loop samples all rows together, writing keys and
  values in place (`rollouts/cache.py`) and dropping rows that have ended.
- `HFGenerateBackend`: transformers' `generate` on the prompts repeated n times (kept to compare against: the tests
  check that greedy decoding gives its tokens, and `bench/generation.py` times it).

Random streams. By default a batch draws from one stream seeded with `settings.seed`, so a row's samples depend on
the batch it was drawn in. With `prompt_seeds`, each prompt's samples draw from their own stream (the decode loop
samples by inverting each row's CDF at uniforms drawn per prompt), so a prompt gets the same samples whichever batch,
chunk or process it is sampled in, and whether or not finished rows are dropped: what sharding the prompts of an
online step over several processes needs to equal one process.

Log-probs are those of the sampling distribution p(token | prefix) = softmax(logits / temperature), read from the
raw logits the generation step produced (no second forward pass). top-p / top-k truncation is not part of them:
like most RLHF implementations, the policy-gradient ratio is taken against the tempered, untruncated distribution.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Protocol

import torch

from alignkit.data import Turns, pad_batch, render_prompt
from alignkit.models.forward import position_ids
from alignkit.rollouts.prefill import prefill
from alignkit.utils import sampling_defaults as defaults


@dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int = defaults.MAX_NEW_TOKENS
    temperature: float = defaults.TEMPERATURE
    top_p: float = defaults.TOP_P
    top_k: int = defaults.TOP_K
    n: int = 1  # samples per prompt
    seed: int = 0
    # One seed per prompt: its samples draw from their own stream (see the module docstring); None: one stream, `seed`.
    prompt_seeds: tuple[int, ...] | None = None


@dataclass
class Rollout:
    """A batch of B = prompts x n samples.

    prompt_ids [B,P] left-padded with prompt_mask; response_ids [B,R] right-padded; response_mask [B,R] is 1 on
    generated tokens up to and including the first EOS; logps [B,R] the sampling log-prob of each response token
    (0 where masked); eos [B] whether the response ended with EOS (False: cut at max_new_tokens);
    prompt_index [B] which input prompt each row answers.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    logps: torch.Tensor
    eos: torch.Tensor
    prompt_index: torch.Tensor
    texts: list[str]

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    @property
    def response_lengths(self) -> torch.Tensor:
        return self.response_mask.sum(-1)


def on_cpu(rollout: Rollout) -> Rollout:
    """`rollout` with its tensors in host memory (to be sent to another process, whatever device made it)."""
    return replace(rollout, **{f.name: getattr(rollout, f.name).cpu() for f in fields(rollout)
                               if isinstance(getattr(rollout, f.name), torch.Tensor)})


class RolloutBackend(Protocol):
    def generate(self, model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, prompt_index: torch.Tensor,
                 settings: SamplingSettings, eos_id: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Distinct prompts [p,P] (left-padded) and the prompt of each output row [B] -> (response_ids [B,R] with
        anything after EOS unspecified, sampling log-probs [B,R])."""
        ...


def prompt_uniforms(settings: SamplingSettings, prompt_index: torch.Tensor) -> torch.Tensor:
    """Uniforms in (0, 1] [B, max_new_tokens], one row per output row: the rows of prompt p are drawn, in order, from
    a generator seeded with `settings.prompt_seeds[p]`, so they do not depend on the other prompts of the batch."""
    seeds = settings.prompt_seeds
    index = prompt_index.cpu()
    if seeds is None or len(seeds) != int(index.max()) + 1:
        raise ValueError(f"prompt_seeds: expected one seed per prompt ({int(index.max()) + 1}), got "
                         f"{None if seeds is None else len(seeds)}")
    out = torch.empty((index.shape[0], settings.max_new_tokens))
    for p, seed in enumerate(seeds):
        rows = (index == p).nonzero().squeeze(-1)
        out[rows] = torch.rand((rows.shape[0], settings.max_new_tokens), generator=torch.Generator().manual_seed(seed))
    return 1.0 - out  # torch.rand is in [0, 1); a draw of 0 could land on a token of probability 0


def inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """The token of each row [b] whose CDF interval holds the row's uniform in (0, 1]: a draw from `probs` [b, V].
    Tokens of probability 0 have empty intervals and are never drawn."""
    cdf = probs.cumsum(-1)
    target = uniforms.to(cdf.device, cdf.dtype)[:, None] * cdf[:, -1:]  # the total is 1 up to rounding
    return torch.searchsorted(cdf, target).squeeze(-1).clamp_(max=probs.shape[-1] - 1)


def _filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k then nucleus (top-p) truncation: tokens outside get -inf. The most likely token always survives."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, -1)
        # Drop a token when the tokens strictly more likely already reach top_p.
        drop = (probs.cumsum(-1) - probs) >= top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


class DecodeLoopBackend:
    """Shared-prefix prefill + a plain decode loop (see the module docstring); stops when every row has ended.

    Rows that have ended are dropped from the batch (and from the KV cache) once they make up `compact_fraction` of
    it: at the batch sizes where decoding is compute-bound, a step costs in proportion to the rows it carries, and
    answers end at very different lengths (a refusal in 20 tokens beside an answer cut at the limit). Dropping rows
    changes neither greedy outputs nor the sampling distribution; from one random stream, sampled rows draw in a
    different order than without dropping, so the same seed gives other (equally valid) samples (with prompt_seeds,
    the same samples). 0 never drops.
    """

    def __init__(self, compact_fraction: float = 0.125, share_prefixes: bool = True):
        if not 0 <= compact_fraction <= 1:
            raise ValueError(f"compact_fraction must be in [0, 1], got {compact_fraction}")
        self.compact_fraction = compact_fraction
        self.share_prefixes = share_prefixes  # prefill prompt parts several prompts share once (rollouts/prefill.py)

    def generate(self, model, prompt_ids, prompt_mask, prompt_index, settings: SamplingSettings, eos_id: int,
                 pad_id: int, on_step=None):
        """`on_step(rows, tokens)`, if given, is called after each step with the output rows still decoding and the
        token each drew (`alignkit chat` streams through it)."""
        sampling = settings.temperature > 0
        uniforms = (prompt_uniforms(settings, prompt_index).to(prompt_ids.device)
                    if sampling and settings.prompt_seeds is not None else None)
        # Keys and values are written in place into room for the prompt and every new token (rollouts/cache.py); parts
        # that several prompts share are computed once (rollouts/prefill.py).
        cache, layout, last_logits = prefill(model, prompt_ids, prompt_mask, settings.max_new_tokens, pad_id,
                                             share=self.share_prefixes)
        cache.batch_select_indices(prompt_index)
        width = layout.shape[1]
        # The attention mask of the whole sequence, filled in as it grows; each step passes the filled part.
        mask = torch.ones((prompt_index.shape[0], width + settings.max_new_tokens), dtype=prompt_mask.dtype,
                          device=prompt_mask.device)
        mask[:, :width] = layout[prompt_index]
        logits = last_logits.float()[prompt_index]
        position = mask[:, :width].long().sum(-1, keepdim=True)
        rows, device = prompt_index.shape[0], prompt_ids.device
        tokens = torch.full((rows, settings.max_new_tokens), pad_id, dtype=torch.long, device=device)
        logps = torch.zeros((rows, settings.max_new_tokens), device=device)
        active = torch.arange(rows, device=device)  # the output row of each row still in the batch
        done = torch.zeros(rows, dtype=torch.bool, device=device)
        steps = 0
        for step in range(settings.max_new_tokens):
            if sampling:
                scaled = logits / settings.temperature
                log_probs = torch.log_softmax(scaled, -1)
                probs = torch.softmax(_filter_logits(scaled, settings.top_k, settings.top_p), -1)
                if uniforms is None:
                    token = torch.multinomial(probs, 1).squeeze(-1)
                else:
                    token = inverse_cdf(probs, uniforms[active, step])
                logp = log_probs.gather(-1, token[:, None]).squeeze(-1)
            else:
                # Greedy: the likeliest token (max's index: the first maximum, as argmax, measured 5x faster on a
                # [128, 49152] CPU tensor) and its log-prob, -log sum exp(logits - max), without a [rows, vocab]
                # log-softmax.
                top, token = logits.max(-1)
                logp = -torch.exp(logits - top[:, None]).sum(-1).log()
            token = torch.where(done, torch.full_like(token, pad_id), token)
            tokens[active, step] = token
            logps[active, step] = logp
            steps = step + 1
            if on_step is not None:
                on_step(active[~done], token[~done])
            done = done | (token == eos_id)
            if bool(done.all()) or step == settings.max_new_tokens - 1:
                break
            if self.compact_fraction and int(done.sum()) >= max(1, self.compact_fraction * len(active)):
                keep = (~done).nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                active, token, mask, position, done = (active[keep], token[keep], mask[keep], position[keep],
                                                       done[keep])
            out = model(input_ids=token[:, None], attention_mask=mask[:, : width + step + 1],
                        position_ids=position + step, cache=cache, use_cache=True, logits_to_keep=1)
            cache = out.cache
            logits = out.logits[:, -1].float()
        return tokens[:, :steps], logps[:, :steps]


class HFGenerateBackend:
    """transformers' `generate`: KV cache, left padding, sampling or greedy (temperature 0)."""

    def generate(self, model, prompt_ids, prompt_mask, prompt_index, settings: SamplingSettings, eos_id: int,
                 pad_id: int):
        sampling = settings.temperature > 0
        if sampling and settings.prompt_seeds is not None:
            raise ValueError("HFGenerateBackend draws from one stream; prompt_seeds needs the DecodeLoopBackend")
        prompt_ids, prompt_mask = prompt_ids[prompt_index], prompt_mask[prompt_index]
        out = model.generate(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            max_new_tokens=settings.max_new_tokens,
            do_sample=sampling,
            temperature=settings.temperature if sampling else None,
            top_p=settings.top_p if sampling and settings.top_p < 1 else None,
            top_k=settings.top_k if sampling and settings.top_k > 0 else None,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
            return_dict_in_generate=True,
            output_logits=True,
        )
        response = out.sequences[:, prompt_ids.shape[1] :]
        logits = torch.stack(out.logits, dim=1).float()  # [B, R, V], raw (before temperature / truncation)
        if sampling:
            logits = logits / settings.temperature
        logps = torch.log_softmax(logits, -1).gather(-1, response[..., None]).squeeze(-1)
        return response, logps


def _left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch = pad_batch([(seq, [0] * len(seq)) for seq in sequences], pad_id, side="left")
    return batch["input_ids"], batch["attention_mask"]


def response_masks(response: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask [B,R]: 1 up to and including the first EOS, eos_reached [B])."""
    is_eos = response == eos_id
    seen_before = (is_eos.long().cumsum(-1) - is_eos.long()) > 0  # an EOS strictly earlier in the row
    return (~seen_before).long(), is_eos.any(-1)


@torch.no_grad()
def sample(model, tokenizer, prompts: list[Turns], settings: SamplingSettings = SamplingSettings(),
           backend: RolloutBackend | None = None, on_step=None) -> Rollout:
    """Sample `settings.n` responses to each prompt as one batch; rows are prompt-major (prompt 0's n samples first).
    Callers go through `rollouts.engine.generate`, which batches, orders, seeds and sets the precision."""
    backend = backend or DecodeLoopBackend()
    device = next(model.parameters()).device
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    encoded = [render_prompt(tokenizer, p) for p in prompts]  # the one prompt rule (data/render.py)
    prompt_index = torch.arange(len(prompts)).repeat_interleave(settings.n)
    distinct_ids, distinct_mask = _left_pad(encoded, pad_id)
    prompt_ids, prompt_mask = distinct_ids[prompt_index], distinct_mask[prompt_index]
    was_training = model.training
    model.eval()
    # Seeded through a forked RNG so sampling is reproducible without disturbing the caller's random state.
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(settings.seed)
        extra = {} if on_step is None else {"on_step": on_step}
        response, logps = backend.generate(model, distinct_ids.to(device), distinct_mask.to(device),
                                           prompt_index.to(device), settings, eos_id, pad_id, **extra)
    model.train(was_training)
    mask, eos = response_masks(response, eos_id)
    response = torch.where(mask.bool(), response, torch.full_like(response, pad_id))
    logps = logps * mask
    texts = [tokenizer.decode(r[m.bool()], skip_special_tokens=True).strip() for r, m in zip(response, mask)]
    return Rollout(prompt_ids.to(device), prompt_mask.to(device), response, mask, logps, eos, prompt_index, texts)
