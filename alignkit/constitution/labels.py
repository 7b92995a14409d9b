"""AI preference labels from a feedback model's option log-probs (Bai et al. 2022, sec. 4.1).

The feedback model sees a prompt, two responses labelled (A) and (B) and a principle's comparison question. The
probability it gives each option, normalised over the two, is a *soft* label. Two corrections, both here:

- position bias: each pair is asked in both orders (a as (A), then a as (B)) and the two P(a) are averaged;
- principle noise: the label is averaged over k principles drawn at random (an ensemble).

With chain-of-thought answers the probabilities come out nearly 0 or 1; the paper clamps them to [0.4, 0.6] so that
one confident sample does not dominate. Here the clamp applies to each judgement (one principle, one order) before
averaging, so the final label also lies in [0.4, 0.6].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

COT_CLAMP = (0.4, 0.6)


def option_probability(logp_first: float, logp_second: float) -> float:
    """P(first option) = exp(lp1) / (exp(lp1) + exp(lp2)): the two options' probabilities renormalised."""
    return 1.0 / (1.0 + math.exp(logp_second - logp_first))


def soft_label(forward: Sequence[tuple[float, float]], backward: Sequence[tuple[float, float]], *,
               cot: bool = False) -> float:
    """P(response a is better), averaged over both orders and the k principles.

    forward[i] = (log p("A"), log p("B")) under principle i with a shown as (A);
    backward[i] = the same with a shown as (B). Both have length k >= 1.
    """
    if len(forward) != len(backward) or not forward:
        raise ValueError(f"soft_label: need k >= 1 judgements in each order, got {len(forward)} and {len(backward)}")
    low, high = COT_CLAMP
    total = 0.0
    for (fa, fb), (ba, bb) in zip(forward, backward):
        judgements = (option_probability(fa, fb), option_probability(bb, ba))  # P(a) in each order
        if cot:
            judgements = tuple(min(max(p, low), high) for p in judgements)
        total += sum(judgements) / 2
    return total / len(forward)
