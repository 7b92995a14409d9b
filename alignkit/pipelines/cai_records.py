"""What each stage of `alignkit cai` hands on (a frozen record per stage, written as its done.json and read back
typed), and the pipeline's part of the evaluation report, built from those records."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

HUMAN = "human (written by the alignkit team)"


@dataclass(frozen=True)
class FeedbackRecord:
    model: str  # the writer: taught critique and revision
    judge_model: str  # the judge: taught comparison, a copy of its own
    started_from: str
    data: dict[str, str]
    rows: dict[str, Any]
    origin: str


@dataclass(frozen=True)
class AuditRecord:
    """The audit as measured; the gate's outcome (`AuditGate`) is decided from it on every run."""

    feedback_model: str
    n: int
    accuracy: float
    position_bias: float | None
    principle_agreement: float | None
    accuracy_by_principle: dict[str, float]
    n_by_principle: dict[str, int]


@dataclass(frozen=True)
class AuditGate:
    """The audit gate's outcome under this run's gate settings."""

    min_accuracy: float
    passed: bool
    overridden: bool
    min_principle_accuracy: float
    min_principle_comparisons: int
    lower_bound_by_principle: dict[str, float]
    allowed_principles: list[str]
    labelling_principles: list[str]


@dataclass(frozen=True)
class CritiqueRecord:
    revisions: str
    prompts: int
    plain: int
    jailbreak_wrapped: int
    rounds: int
    changed: int
    kept_by_check: int
    origin: str


@dataclass(frozen=True)
class SLRecord:
    model: str
    data: str
    revisions: int
    revision_repeats: int
    policy_answers: int
    helpful_demonstrations: int
    origin: str


@dataclass(frozen=True)
class LabelsRecord:
    labels: str
    prompts: int
    pairs: int
    labelling_principles: list[str]
    dropped_identical_or_empty: int
    principles_per_label: int
    cot_clamp: bool
    mean_abs_label_minus_half: float
    origin: str
    contrast: str | None = None  # rl.contrast: the on-policy contrast pairs, and below their counts
    contrast_prompts: int | None = None
    contrast_pairs_refuse: int | None = None
    contrast_pairs_answer: int | None = None
    contrast_greedy_wrong: int | None = None


@dataclass(frozen=True)
class PreferenceRecord:
    model: str
    data: str
    ai_soft_labels: int
    of_them_phase1: int
    contrast_pairs: int
    human_preferences: int
    origin: str


@dataclass(frozen=True)
class RLRecord:
    model: str
    method: str
    data: str
    reference: str
    origin: str
    prompts: int | None = None  # ppo
    judge: dict | None = None  # ppo: the preference model
    ai_pairs: int | None = None  # dpo, and below
    of_them_phase1: int | None = None
    ai_pairs_dropped_as_unsure: int | None = None
    contrast_pairs: int | None = None
    human_preferences: int | None = None
    rounds: list[dict] | None = None  # rl.rounds > 1: each round's model, pairs and stop-check figures (round 0: SL)
    chosen_round: int | None = None


@dataclass(frozen=True)
class EvalRecord:
    results: str
    report: str
    metrics: dict[str, dict]


# What each stage did, for the report's stage table.
STAGE_TEXT = {
    "feedback": "Feedback model taught critique/revision (worked exemplars) and comparison (train gold pairs) by SFT",
    "audit": "Feedback model audited on held-out gold comparisons before its output is used",
    "critique": "Policy answers red-team prompts; feedback model critiques and revises under random principles",
    "sl": "SL-CAI: SFT of the policy on the revisions, mixed with helpfulness demonstrations",
    "labels": "SL-CAI policy samples two responses per prompt; feedback model labels them (soft, both orders); "
              "with rl.contrast, also the policy's own right response against its own wrong one",
    "preference": "Preference model trained on the soft AI labels plus human helpfulness preferences",
    "rl": "RL-CAI: the SL-CAI policy trained against the AI preferences",
}


def _counts(name: str, record) -> str:
    """A stage's row counts: its integer fields (the taught rows for the feedback stage), in the record's order."""
    if isinstance(record, FeedbackRecord):
        return ", ".join(f"{k}: {v}" for k, v in record.rows.items())
    values = dataclasses.asdict(record)
    counts = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in values.items()
                       if isinstance(v, int) and not isinstance(v, bool))
    return f"method {record.method}; {counts}" if isinstance(record, RLRecord) else counts


def report_part(constitution: str, principles: int, rl_method: str, stages: dict[str, tuple[Any, float]],
                audit: tuple[AuditRecord, AuditGate | None] | None) -> dict:
    """The pipeline's part of report.html, as the report's generic sections (`alignkit.eval.report`): what each
    stage did with which data from whom, the feedback model's audit, and each stage's effect. `stages`: name ->
    (record, seconds), in the order they ran."""
    rows = [{"key": name, "cells": [name, STAGE_TEXT.get(name, ""), _counts(name, record) or None,
                                    getattr(record, "origin", None), {"seconds": seconds}]}
            for name, (record, seconds) in stages.items()]
    text = (f"Constitution: {constitution} ({principles} principles). Reinforcement stage: **{rl_method}**. "
            "**Written by people** (the alignkit team): the constitution and its exemplars, the gold comparisons, the "
            "red-team, jailbreak and evaluation prompts, the helpfulness demonstrations and preferences. **Produced by "
            "AI during this run**: the policy's answers, the critiques and revisions, the sampled pairs and their "
            "preference labels.")
    sections = [{"anchor": "pipeline", "title": "Constitutional AI run", "text": text,
                 "table": {"id": "stages-table", "row_key": "stage",
                           "head": ["stage", "what it did", "data", "who wrote the data", "time"], "rows": rows}}]
    if audit is not None:
        record, gate = audit
        facts = [["feedback model", record.feedback_model], ["held-out gold comparisons", record.n],
                 ["accuracy", {"number": record.accuracy}],
                 ["position bias (P(first shown) - 0.5)", {"number": record.position_bias}],
                 ["agreement across principles", {"number": record.principle_agreement}]]
        head = ["principle", "accuracy", "comparisons"]
        if gate is not None:
            facts += [["required accuracy", {"number": gate.min_accuracy}],
                      ["passed", "yes" if gate.passed else "no" + (" (overridden)" if gate.overridden else "")],
                      ["required per principle to label with (90% lower bound)",
                       {"number": gate.min_principle_accuracy}],
                      ["held-out comparisons required per principle", gate.min_principle_comparisons],
                      ["principles it labels with",
                       f"{len(gate.labelling_principles)} of {len(record.accuracy_by_principle)}"]]
            head += ["90% lower bound", "labels with it"]
        table = [{"cells": [k, {"number": v}, record.n_by_principle.get(k, 0)]
                  + ([] if gate is None else [{"number": gate.lower_bound_by_principle.get(k)},
                                              "yes" if k in gate.labelling_principles else "no (left out)"])}
                 for k, v in sorted(record.accuracy_by_principle.items())]
        sections.append({"anchor": "audit", "title": "Feedback-model audit", "facts": facts,
                         "table": {"id": "audit-by-principle", "head": head, "rows": table} if table else None})
    sections.append({"anchor": "effects", "title": "Effect of each stage", "effects": True})
    return {"sections": sections}


__all__ = ["AuditGate", "AuditRecord", "CritiqueRecord", "EvalRecord", "FeedbackRecord", "HUMAN",
           "LabelsRecord", "PreferenceRecord", "RLRecord", "SLRecord", "report_part"]
