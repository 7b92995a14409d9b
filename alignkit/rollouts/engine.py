"""The one way alignkit generates: prompts in, responses out, whoever asks (evaluation, judges' feedback writing,
`alignkit generate` and `chat`, the Constitutional AI stages, iterative DPO, the online methods' sampler).

`generate` renders every prompt with `data.render_prompt` (the ids the model is trained on), orders the prompts
longest first so that similar lengths share a batch (less padding decoded), cuts them into batches of at most
`batch_size` rows, decodes each with the decode loop of `rollouts/sampler.py` (a KV cache written in place, finished
rows dropped, greedy without a vocabulary-wide softmax) in the run's precision (`utils/precision.py`), and returns the
responses in input order with the batches' rollouts. Under a launcher, `shard` gives each process its block of the
batches and every process all of the results (`processes.batch_map`).

Sampled responses draw from one random stream per prompt, seeded from `settings.seed` and the prompt's position in
the input (or from `settings.prompt_seeds` when the caller gives them): a prompt gets the same samples whichever
batch, process or order it is decoded in.
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass, replace

import torch

from alignkit.data import Turns, render_prompt
from alignkit.rollouts.sampler import DecodeLoopBackend, Rollout, SamplingSettings, on_cpu, sample
from alignkit.utils import processes
from alignkit.utils import sampling_defaults as defaults
from alignkit.utils.precision import autocast, resolve_precision
from alignkit.utils.seeds import derived_seed

# The bf16 copy of a model's weights, kept while the model lives and remade only when its weights change (each
# parameter's storage and version counter are the key): `chat` decodes a reply per turn and an evaluation asks twice
# per model, which would otherwise copy the weights every time.
_BF16_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class Generation:
    """`texts`: n responses per prompt, prompt-major, in input order. `rollouts`: the batches as decoded, with
    `prompts[k]` the input index of each prompt of `rollouts[k]` (its `prompt_index` counts into that list)."""

    texts: list[str]
    rollouts: list[Rollout]
    prompts: list[list[int]]


def prompt_order(tokenizer, prompts: list[Turns]) -> list[int]:
    """Input indices, longest rendered prompt first (ties in input order)."""
    lengths = [len(render_prompt(tokenizer, p)) for p in prompts]
    return sorted(range(len(prompts)), key=lambda i: (-lengths[i], i))


def bf16_copy(model):
    """A copy of `model` in bf16, made without a second fp32 copy (each fp32 parameter is copied straight to bf16;
    tied weights stay tied); the original is untouched. Its floating-point buffers are cast too: left in fp32, the
    rotary embedding's frequencies made a forward pass 6x slower on the CPU (measured: 21.2 s vs 3.6 s). The copies
    keep requires_grad (generation runs without gradients anyway): bf16 parameters without it made the same forward
    pass 4x slower on a CPU with AMX (21.0 s vs 5.0 s, torch 2.13; another matrix-product path is taken)."""
    memo = {id(p): torch.nn.Parameter(p.detach().to(torch.bfloat16)) for p in model.parameters()
            if p.dtype == torch.float32}
    return copy.deepcopy(model, memo).to(torch.bfloat16).eval()


def bf16_weights(model):
    """`bf16_copy(model)`, made once for the model's current weights (see `_BF16_COPIES`)."""
    key = tuple((p.data_ptr(), p._version) for p in model.parameters())
    held = _BF16_COPIES.get(model)
    if held is None or held[0] != key:
        held = (key, bf16_copy(model))
        _BF16_COPIES[model] = held
    return held[1]


@torch.no_grad()
def generate(model, tokenizer, prompts: list[Turns], settings: SamplingSettings, *, precision: str = "auto",
             batch_size: int | None = defaults.BATCH_ROWS, sort: bool = True, shard: bool = False,
             desc: str | None = "generating", on_step=None, as_update: bool = False) -> Generation:
    """`settings.n` responses to each of `prompts` (see the module docstring).

    batch_size: rows (prompts x n) per decode loop; None decodes all prompts in one batch. sort: longest prompts
    first (False keeps the input order, as the online sampler's one batch does). precision: auto / fp32 / bf16.
    desc: the progress bar's label on a terminal (None: no bar).
    on_step(rows, tokens): called at each decode step (one batch only; `alignkit chat` streams through it).
    as_update: decode exactly as a trainer's update computes: the model as it is, under autocast in bf16, each prompt
    prefilled whole (the online sampler, whose log-probs must be the update's). Otherwise, in bf16, a bf16 copy of
    fp32 weights decodes (measured 1.5x faster than autocast on a CPU with AMX: no casts at every matrix product,
    half the bytes in every elementwise op), and prompt parts several prompts share are prefilled once (last-bit
    differences from a whole-prompt prefill, which a bf16 update would not reproduce)."""
    if not prompts:
        return Generation([], [], [])
    device = next(model.parameters()).device
    precision = resolve_precision(precision, device)
    if precision == "bf16" and not as_update and any(p.dtype == torch.float32 for p in model.parameters()):
        model, precision = bf16_weights(model), "fp32"  # bf16 weights: nothing left for autocast to do
    sampling = settings.temperature > 0
    seeds = settings.prompt_seeds
    if sampling and seeds is None:
        seeds = tuple(derived_seed(settings.seed, i) for i in range(len(prompts)))
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"prompt_seeds: expected one seed per prompt ({len(prompts)}), got {len(seeds)}")
    order = prompt_order(tokenizer, prompts) if sort else list(range(len(prompts)))
    per_batch = len(prompts) if batch_size is None else max(1, batch_size // settings.n)
    if on_step is not None and per_batch < len(prompts):
        raise ValueError("on_step streams one batch: give batch_size=None or at least n x the prompts")

    def decode(start: int) -> list[tuple[list[int], Rollout]]:
        chunk = order[start : start + per_batch]
        batch_settings = settings if seeds is None else replace(settings, prompt_seeds=tuple(seeds[i] for i in chunk))
        with autocast(precision, device):
            rollout = sample(model, tokenizer, [prompts[i] for i in chunk], batch_settings,
                             backend=DecodeLoopBackend(share_prefixes=not as_update), on_step=on_step)
        return [(chunk, on_cpu(rollout) if shard else rollout)]

    texts = [""] * (len(prompts) * settings.n)
    rollouts, batches = [], []
    for chunk, rollout in processes.batch_map(decode, len(order), per_batch, desc, shard=shard):
        for row, text in enumerate(rollout.texts):
            texts[chunk[row // settings.n] * settings.n + row % settings.n] = text
        rollouts.append(rollout)
        batches.append(chunk)
    return Generation(texts, rollouts, batches)


@dataclass
class Reply:
    """A streamed response: its text, and whether it was cut at `max_new_tokens` rather than ended by the model."""

    text: str
    cut: bool


def stream(model, tokenizer, prompt: Turns, on_text, settings: SamplingSettings, *, precision: str = "auto") -> Reply:
    """One response to `prompt`, handed to `on_text` piece by piece as it is decoded (whole characters only); the
    text as `generate` gives it. A KeyboardInterrupt raised in `on_text` or the decode stops it (the caller keeps
    what was shown)."""
    tokens: list[int] = []
    shown = [""]

    def on_step(rows: torch.Tensor, step_tokens: torch.Tensor) -> None:
        if rows.numel() == 0:
            return
        token = int(step_tokens[0])
        if token == tokenizer.eos_token_id:
            return
        tokens.append(token)
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        if not text.endswith("\ufffd") and len(text) > len(shown[0]):
            on_text(text[len(shown[0]):])
            shown[0] = text

    made = generate(model, tokenizer, [prompt], replace(settings, n=1), precision=precision, batch_size=None,
                    on_step=on_step)
    return Reply(made.texts[0], not bool(made.rollouts[0].eos[0]))
