"""Generate answers to held-out prompts and score them with a judge: the before/after measure of online methods.

Decoding is greedy by default, so the figure is deterministic for a given model. With a verifier judge (scores 1 for
a correct final answer, 0 otherwise) the mean score is the accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

from alignkit.data import PromptOnly
from alignkit.judges import Judge
from alignkit.rollouts import SamplingSettings, generate
from alignkit.utils import processes


@dataclass
class JudgedGeneration:
    responses: list[str]
    scores: list[float]
    metrics: dict[str, float]


def judged_generation(model, tokenizer, prompts: list[PromptOnly], judge: Judge, *,
                      settings: SamplingSettings = SamplingSettings(temperature=0.0), batch_size: int = 16,
                      precision: str = "auto", shard: bool = False) -> JudgedGeneration:
    """Responses to `prompts` (`rollouts.engine.generate`), the judge's score of each, and their summary: score
    (mean), response_tokens (mean).

    With `shard` (every process of the command calls it), each process answers its block of the batches and every
    process gets all of them, the same as one process's; each process scores its block of the responses."""
    out = generate(model, tokenizer, [p.prompt for p in prompts], settings, precision=precision,
                   batch_size=batch_size, shard=shard, desc="answering")
    lengths = [0] * len(prompts)
    for chunk, rollout in zip(out.prompts, out.rollouts):
        for i, length in zip(chunk, rollout.response_lengths.tolist()):
            lengths[i] = length
    mine = processes.my_share(range(len(prompts))) if shard else range(len(prompts))
    scores = judge.score([prompts[i].prompt for i in mine], [out.texts[i] for i in mine],
                         [prompts[i].reference for i in mine])
    scores = processes.gathered(scores) if shard else scores
    metrics = {"score": sum(scores) / len(scores), "response_tokens": sum(lengths) / len(lengths)}
    return JudgedGeneration(out.texts, scores, metrics)
