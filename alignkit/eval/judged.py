"""Generate answers to held-out prompts and score them with a judge: the before/after measure of online methods.

Decoding is greedy by default, so the figure is deterministic for a given model. With a verifier judge (scores 1 for
a correct final answer, 0 otherwise) the mean score is the accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

from alignkit.data import PromptOnly
from alignkit.judges import Judge
from alignkit.rollouts import generate_responses


@dataclass
class JudgedGeneration:
    responses: list[str]
    scores: list[float]
    metrics: dict[str, float]


def judged_generation(model, tokenizer, prompts: list[PromptOnly], judge: Judge, *, max_new_tokens: int = 64,
                      batch_size: int = 16, temperature: float = 0.0, seed: int = 0,
                      precision: str = "fp32") -> JudgedGeneration:
    """Responses to `prompts`, the judge's score of each, and their summary: score (mean), response_tokens (mean)."""
    responses = generate_responses(model, tokenizer, [p.prompt for p in prompts], max_new_tokens=max_new_tokens,
                                   temperature=temperature, batch_size=batch_size, seed=seed,
                                   precision=precision)
    scores = judge.score([p.prompt for p in prompts], responses, [p.reference for p in prompts])
    lengths = [len(tokenizer(r, add_special_tokens=False).input_ids) for r in responses]
    metrics = {"score": sum(scores) / len(scores), "response_tokens": sum(lengths) / len(lengths)}
    return JudgedGeneration(responses, scores, metrics)
