"""Generate answers to held-out prompts and score them with a judge: the before/after measure of online methods.

Decoding is greedy by default, so the figure is deterministic for a given model. With a verifier judge (scores 1 for
a correct final answer, 0 otherwise) the mean score is the accuracy.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from alignkit.data import PromptOnly
from alignkit.judges import Judge
from alignkit.rollouts import SamplingSettings, sample
from alignkit.utils import processes
from alignkit.utils.progress import batches


@dataclass
class JudgedGeneration:
    responses: list[str]
    scores: list[float]
    metrics: dict[str, float]


def judged_generation(model, tokenizer, prompts: list[PromptOnly], judge: Judge, *, max_new_tokens: int = 64,
                      batch_size: int = 16, temperature: float = 0.0, seed: int = 0,
                      precision: str = "fp32", shard: bool = False) -> JudgedGeneration:
    """Responses to `prompts`, the judge's score of each, and their summary: score (mean), response_tokens (mean).

    With `shard` (every process of the command calls it), each process answers and scores its block of the batches
    and every process gets all of them: the batches and their seeds are those of one process, so are the results."""
    device = next(model.parameters()).device
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext())
    mine = set(processes.my_share(range(0, len(prompts), batch_size))) if shard else None
    own: list[PromptOnly] = []
    responses: list[str] = []
    lengths: list[int] = []
    for start in batches(len(prompts), batch_size, "answering"):
        if mine is not None and start not in mine:
            continue
        chunk = prompts[start : start + batch_size]
        with autocast:
            rollout = sample(model, tokenizer, [p.prompt for p in chunk],
                             SamplingSettings(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + start))
        own += chunk
        responses += rollout.texts
        lengths += rollout.response_lengths.tolist()
    scores = judge.score([p.prompt for p in own], responses, [p.reference for p in own]) if own else []
    if shard:
        every = processes.gathered(list(zip(responses, lengths, scores)))
        responses, lengths, scores = [r[0] for r in every], [r[1] for r in every], [r[2] for r in every]
    metrics = {"score": sum(scores) / len(scores), "response_tokens": sum(lengths) / len(lengths)}
    return JudgedGeneration(responses, scores, metrics)
