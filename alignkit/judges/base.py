"""The one interface for every source of reward or preference: a ``Judge``.

A judge answers two questions about completions of a prompt:

- ``score``: one number per completion (a reward). Verifiers read per-item gold data from
  ``references`` (for a math task, the correct answer).
- ``compare``: the probability that completion ``a`` is better than completion ``b``.

Rule-based judges only have scores, so they derive ``compare`` from them with
``compare_from_scores``; model judges (pairwise LLM judges, reward models) can implement
``compare`` directly.

This module imports nothing heavy (no torch) so that judges can run in data-only tools.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    # Imported for annotations only: alignkit.data pulls in torch, which judges do not need.
    from alignkit.data.records import Turns


class JudgeError(RuntimeError):
    """A judge could not produce a score; the message names the judge and the item."""


@runtime_checkable
class Judge(Protocol):
    """Anything that scores completions and compares pairs of them."""

    def score(self, prompts: list[Turns], completions: list[str], references: list | None = None) -> list[float]:
        """One score per completion (higher is better); ``references[i]`` is item i's gold data."""
        ...

    def compare(self, prompt: Turns, a: str, b: str, principle: str | None = None, reference: Any = None) -> float:
        """P(``a`` is better than ``b``) in [0, 1]; ``principle`` says what "better" means, if the judge can use it."""
        ...


def check_batch(name: str, prompts: list, completions: list, references: list | None) -> None:
    """Raise ValueError unless prompts, completions and references (if any) have one entry per item."""
    if len(prompts) != len(completions):
        raise ValueError(f"{name}: got {len(prompts)} prompts but {len(completions)} completions")
    if references is not None and len(references) != len(completions):
        raise ValueError(f"{name}: got {len(references)} references for {len(completions)} completions")


def compare_from_scores(
    judge: Judge, prompt: Turns, a: str, b: str, reference: Any = None, temperature: float = 0.0
) -> float:
    """P(a better than b) from the judge's two scores.

    With ``temperature == 0`` the comparison is hard: 1.0 if ``a`` scores higher, 0.0 if lower,
    0.5 on a tie. With ``temperature > 0`` it is the Bradley-Terry probability
    ``sigmoid((s_a - s_b) / temperature)``, so that a small score gap gives a soft preference.
    """
    if temperature < 0 or math.isnan(temperature):
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    references = None if reference is None else [reference, reference]
    s_a, s_b = judge.score([prompt, prompt], [a, b], references)
    if temperature == 0:
        if s_a > s_b:
            return 1.0
        return 0.0 if s_a < s_b else 0.5
    z = (s_a - s_b) / temperature
    # Two branches so that exp never overflows for a large gap of either sign.
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class ScoreJudge(ABC):
    """Base for judges defined by their scores alone: ``compare`` is ``compare_from_scores``.

    ``temperature`` is the one ``compare`` uses (0 = hard preference). ``principle`` is
    accepted for interface compatibility and ignored, since a rule measures one fixed thing.
    """

    def __init__(self, temperature: float = 0.0):
        if temperature < 0 or math.isnan(temperature):
            raise ValueError(f"{type(self).__name__}: temperature must be >= 0, got {temperature}")
        self.temperature = float(temperature)

    @abstractmethod
    def score(self, prompts: list[Turns], completions: list[str], references: list | None = None) -> list[float]:
        """One score per completion."""

    def compare(self, prompt: Turns, a: str, b: str, principle: str | None = None, reference: Any = None) -> float:
        return compare_from_scores(self, prompt, a, b, reference=reference, temperature=self.temperature)
