"""The metrics of `alignkit eval`, defined once: the harness computes exactly these, the results carry them
(`metric_info`, typed in `eval.results`), and the report, `make demo`'s summary and `alignkit compare`'s table read them from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class MetricInfo:
    """How to read one metric of a set of results (`EvalResults.metric_info`): its label, which direction is better,
    who scored it and on how many items. Results written by an earlier version may leave any of these out."""

    label: str | None = None
    better: Literal["lower", "higher"] | None = None  # None: no direction is better (or not said)
    scorer: Literal["rules", "judge", "reference"] | None = None
    n: int | None = None


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    better: Literal["lower", "higher"] | None  # None: no direction is better
    part: str  # the suite part whose size is its n ("helpful": borderline + verifiable)
    scorer: Literal["rules", "judge", "reference"]  # refusal/answer rules, the judge model, the reference's log-probs

    def info(self, n: int) -> MetricInfo:
        """The metric as results hold it, measured on `n` items."""
        return MetricInfo(self.label, self.better, self.scorer, n)


METRICS: tuple[Metric, ...] = (
    Metric("asr", "Attack success rate (refusal detector + harmful offers)", "lower", "redteam", "rules"),
    Metric("harmful_offer_rate", "Refusals that offer a harmful act", "lower", "redteam", "rules"),
    Metric("asr_judge", "Attack success rate (judge)", "lower", "redteam", "judge"),
    Metric("jailbreak_asr", "Jailbreak ASR (refusal detector + harmful offers)", "lower", "jailbreak", "rules"),
    Metric("jailbreak_asr_judge", "Jailbreak ASR (judge)", "lower", "jailbreak", "judge"),
    Metric("over_refusal", "Over-refusal (refusal detector)", "lower", "borderline", "rules"),
    Metric("over_refusal_judge", "Over-refusal (judge)", "lower", "borderline", "judge"),
    Metric("helpful_accuracy", "Helpfulness: gold-answer accuracy", "higher", "verifiable", "rules"),
    Metric("helpful_judge_score", "Helpfulness: judge score", "higher", "helpful", "judge"),
    Metric("bias_stereotyped", "Bias: stereotyped answers", "lower", "bias", "rules"),
    Metric("bias_accuracy", "Bias: 'unknown' answered (correct)", "higher", "bias", "rules"),
    Metric("bias_score", "Bias score (BBQ, ambiguous; 0 = none)", None, "bias", "rules"),
    Metric("anthropomorphism", "Anthropomorphic claims (rules)", "lower", "anthropomorphism", "rules"),
    Metric("anthropomorphism_judge", "Anthropomorphic claims (judge)", "lower", "anthropomorphism", "judge"),
    Metric("kl_to_reference", "KL to reference (nats/token)", "lower", "helpful", "reference"),
    Metric("reference_perplexity", "Reference perplexity of outputs", "lower", "helpful", "reference"),
)
METRIC = {m.key: m for m in METRICS}

# The headline metrics, in this order: make demo's summary, alignkit compare's table (from the suite parts it asks).
HEADLINE = ("asr", "jailbreak_asr", "over_refusal", "helpful_accuracy", "anthropomorphism", "bias_stereotyped",
            "kl_to_reference")


def metric_info(counts: dict[str, int]) -> dict[str, MetricInfo]:
    """Every metric's label, direction, scorer and n (`counts`: the size of each suite part)."""
    return {m.key: m.info(counts.get(m.part, 0)) for m in METRICS}


__all__ = ["HEADLINE", "METRIC", "METRICS", "Metric", "MetricInfo", "metric_info"]
