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
import random
from collections.abc import Sequence
from dataclasses import dataclass

from alignkit.constitution.principles import Constitution

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
    if len(forward) != len(backward):
        raise ValueError(f"soft_label: need k >= 1 judgements in each order, got {len(forward)} and {len(backward)}")
    # P(a) in each order: option (A) in the first, option (B) in the second.
    return label_from_orders([(option_probability(fa, fb), option_probability(bb, ba))
                              for (fa, fb), (ba, bb) in zip(forward, backward)], cot=cot)


def label_from_orders(orders: Sequence[tuple[float, float]], *, cot: bool = False) -> float:
    """The soft label from k judgements given as (P(a) with a shown first, P(a) with a shown second)."""
    if not orders:
        raise ValueError("soft_label: need k >= 1 judgements in each order, got 0 and 0")
    low, high = COT_CLAMP
    total = 0.0
    for judgements in orders:
        if cot:
            judgements = tuple(min(max(p, low), high) for p in judgements)
        total += sum(judgements) / 2
    return total / len(orders)


@dataclass(frozen=True)
class AILabel:
    """A soft label with its provenance: which principles were asked and what each order answered."""

    probability: float  # P(a better)
    principles: tuple[str, ...]
    orders: tuple[tuple[float, float], ...]


def judge_orders(judge, items: list[tuple]) -> list[tuple[float, float]]:
    """(P(a) with a shown first, P(a) with a shown second) for each (prompt, a, b, question), batched when the judge
    can. A judge without the two orders apart (a reward model, a rule: order-invariant by construction) gives its
    `compare` for both."""
    if hasattr(judge, "compare_orders_many"):
        return [tuple(o) for o in judge.compare_orders_many(items)]
    if hasattr(judge, "compare_orders"):
        return [tuple(judge.compare_orders(*item)) for item in items]
    return [(p, p) for p in (judge.compare(*item) for item in items)]


def ai_labels(judge, prompts: list, pairs: list[tuple[str, str]], constitution: Constitution, rng: random.Random, *,
              k: int = 1, cot: bool = False) -> list[AILabel]:
    """Label pairs with a feedback model: for each pair k principles drawn at random, each asked in both orders
    (averaging the orders cancels position bias); all questions go to the judge in one batch."""
    if len(prompts) != len(pairs):
        raise ValueError(f"ai_labels: {len(prompts)} prompts but {len(pairs)} pairs")
    drawn = [constitution.draw(rng, k) for _ in pairs]
    items = [(prompt, a, b, p.comparison) for prompt, (a, b), principles in zip(prompts, pairs, drawn)
             for p in principles]
    orders = judge_orders(judge, items)
    labels = []
    for i, principles in enumerate(drawn):
        mine = tuple(orders[i * k : (i + 1) * k])
        labels.append(AILabel(label_from_orders(mine, cot=cot), tuple(p.id for p in principles), mine))
    return labels


def ai_label(judge, prompt, a: str, b: str, constitution: Constitution, rng: random.Random, *, k: int = 1,
             cot: bool = False) -> AILabel:
    """One pair's label (see `ai_labels`)."""
    return ai_labels(judge, [prompt], [(a, b)], constitution, rng, k=k, cot=cot)[0]


def rlaif_rows(prompts: list, pairs: list[tuple[str, str]], judge, constitution: Constitution,
               rng: random.Random, *, k: int = 1, cot: bool = False, feedback_model: str = "") -> list[dict]:
    """Preference rows for a preference model from AI feedback: chosen = the first response of each pair, rejected
    = the second, `probability` = the soft label P(chosen better) (it may be below 0.5), plus provenance."""
    labels = ai_labels(judge, prompts, pairs, constitution, rng, k=k, cot=cot)
    return [{"prompt": prompt, "chosen": a, "rejected": b, "probability": label.probability,
             "principles": list(label.principles), "orders": [list(o) for o in label.orders],
             "feedback_model": feedback_model}
            for prompt, (a, b), label in zip(prompts, pairs, labels)]


def hard_pairs(rows: list[dict], *, min_confidence: float = 0.1) -> list[dict]:
    """Soft-labelled rows as hard pairs for DPO: the side the label favours becomes `chosen`; rows whose label is
    within `min_confidence` of 0.5 are dropped (a coin flip is no preference)."""
    out = []
    for row in rows:
        p = row["probability"]
        if abs(p - 0.5) < min_confidence:
            continue
        chosen, rejected = (row["chosen"], row["rejected"]) if p > 0.5 else (row["rejected"], row["chosen"])
        out.append({**row, "chosen": chosen, "rejected": rejected, "probability": max(p, 1 - p)})
    return out
