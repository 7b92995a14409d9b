"""Typed records: one validated training example each, independent of the file it came from.

A "turn" side (prompt, completion, chosen, ...) is either plain text (standard form) or a
list of ``{"role", "content"}`` messages (conversational form). Within one record all sides
use the same form; ``formats.parse_record`` guarantees that.

Every record carries ``where`` ("data.jsonl:12") so that later stages (rendering, training)
can point back at the offending line. ``where`` is left out of equality so that records
compare by content.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# A message is a {"role": ..., "content": ...} dict; see formats.ROLES for the roles.
Turns = str | list[dict]


def _where() -> str:
    return field(default="", compare=False)


@dataclass(frozen=True)
class LMRecord:
    """Language modelling: plain text, or a conversation whose assistant turns are trained."""

    text: Turns
    where: str = _where()


@dataclass(frozen=True)
class PromptCompletion:
    """Supervised fine-tuning pair: only the completion is trained."""

    prompt: Turns
    completion: Turns
    where: str = _where()


@dataclass(frozen=True)
class Preference:
    """Paired preference; ``margin`` (optional) says how much better ``chosen`` is; ``probability`` (optional) is a
    soft label, P(chosen is better) in [0, 1], as AI feedback produces (Bai et al. 2022)."""

    prompt: Turns
    chosen: Turns
    rejected: Turns
    margin: float | None = None
    probability: float | None = None
    where: str = _where()


@dataclass(frozen=True)
class Unpaired:
    """KTO-style example: one completion labelled desirable (True) or undesirable (False)."""

    prompt: Turns
    completion: Turns
    label: bool
    where: str = _where()


@dataclass(frozen=True)
class Ranked:
    """K >= 2 responses to one prompt with one score each; a higher score is better.

    Rankings in the input are converted to scores: the best of K responses scores K - 1,
    the worst 0.
    """

    prompt: Turns
    responses: list[Turns]
    scores: list[float]
    where: str = _where()


@dataclass(frozen=True)
class Rating:
    """One completion with an absolute quality rating (reward-model regression)."""

    prompt: Turns
    completion: Turns
    rating: float
    where: str = _where()


@dataclass(frozen=True)
class PromptOnly:
    """A prompt for online methods (the model writes the response); ``reference`` is optional gold data for a verifier,
    e.g. the correct final answer of a math problem."""

    prompt: Turns
    reference: object = None
    where: str = _where()


Record = PromptOnly | LMRecord | PromptCompletion | Preference | Unpaired | Ranked | Rating
