"""Audit a feedback model on gold comparisons before its labels are used (the guide measured the 135M model at chance).

Gold comparisons (`builtin/constitution/comparisons.jsonl`, written by the alignkit team) each cite a principle and
say which of two replies is better under it. The audit asks the feedback model every comparison under the cited
principle's question and reports:

- accuracy: the fraction where P(the gold-better reply) > 0.5 (both orders averaged);
- position bias: the mean probability given to whichever reply is shown first, minus 0.5 (0 = none; +0.5 = always
  picks (A)); only for judges that expose both orders (`compare_orders`), else None;
- agreement across principles: the fraction of comparisons on which the verdicts under the cited principle and
  under `extra_principles` other randomly drawn principles all agree. Many gold pairs are better under most
  principles (a refusal of a harmful request is also more ethical, more lawful ...), so low agreement signals a
  judge that reads the question rather than the replies — or principles that pull apart, which the per-principle
  accuracies show;
- accuracy per principle.

`check_audit` stops a pipeline below a minimum accuracy unless explicitly overridden, and records which principles
the feedback model may label with: those asked at least `min_principle_comparisons` held-out comparisons whose
accuracy's Wilson 90% lower bound reaches `min_principle_accuracy` (a principle without held-out gold comparisons is
unaudited, so never allowed). A pipeline asks the feedback model to judge only
under those, so one weak principle does not spoil every label that happens to draw it.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from alignkit.constitution.labels import judge_orders
from alignkit.constitution.principles import Constitution, ConstitutionError, constitution_path
from alignkit.judges import Judge


@dataclass(frozen=True)
class GoldComparison:
    id: str
    principle: str
    prompt: str
    a: str
    b: str
    better: str  # "a" or "b"
    where: str


@dataclass
class AuditReport:
    n: int
    accuracy: float
    position_bias: float | None
    principle_agreement: float | None
    accuracy_by_principle: dict[str, float] = field(default_factory=dict)
    n_by_principle: dict[str, int] = field(default_factory=dict)  # comparisons asked under each principle
    min_accuracy: float | None = None
    passed: bool | None = None
    min_principle_accuracy: float | None = None
    allowed_principles: list[str] | None = None  # those it may label with (check_audit), best first
    min_principle_comparisons: int | None = None
    lower_bound_by_principle: dict[str, float] | None = None  # Wilson 90% lower bound of each principle's accuracy

    def as_dict(self) -> dict:
        return asdict(self)


class FeedbackAuditError(RuntimeError):
    """The feedback model's labels are not good enough to train on."""


def load_gold_comparisons(path: str | Path | None = None, *, split: str = "heldout") -> list[GoldComparison]:
    """The gold comparisons of `split` ("train", "heldout" or "all") from a JSONL file (default: the built-in one)."""
    path = Path(path) if path is not None else constitution_path("default").with_name("comparisons.jsonl")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConstitutionError(f"{where}: not valid JSON ({e.msg})") from None
        for name in ("id", "principle", "prompt", "a", "b", "better"):
            if not isinstance(row.get(name), str) or not row[name].strip():
                raise ConstitutionError(f"{where}: field '{name}': missing or empty")
        if row["better"] not in ("a", "b"):
            raise ConstitutionError(f"{where}: field 'better': expected 'a' or 'b', got {row['better']!r}")
        if split == "all" or row.get("split", split) == split:
            items.append(GoldComparison(row["id"], row["principle"], row["prompt"], row["a"], row["b"], row["better"],
                                        where))
    if not items:
        raise ConstitutionError(f"{path}: no gold comparisons in split {split!r}")
    return items


def first_per_principle(gold: list[GoldComparison], limit: int | None) -> list[GoldComparison]:
    """The first `limit` comparisons of each principle, in file order (None: all of them)."""
    if limit is None:
        return list(gold)
    seen: dict[str, int] = {}
    kept = []
    for item in gold:
        seen[item.principle] = seen.get(item.principle, 0) + 1
        if seen[item.principle] <= limit:
            kept.append(item)
    return kept


def audit_feedback_model(judge: Judge, gold: list[GoldComparison], constitution: Constitution, *,
                         extra_principles: int = 2, seed: int = 0) -> AuditReport:
    """Ask the judge every gold comparison under its own principle (both orders apart, when the judge gives them:
    that is what measures position bias) and under `extra_principles` other random ones (agreement); one batch."""
    rng = random.Random(seed)
    for item in gold:
        constitution.principle(item.principle)  # KeyError names the unknown principle and the file
    two_orders = hasattr(judge, "compare_orders") or hasattr(judge, "compare_orders_many")
    questions, extra = [], []
    for item in gold:
        questions.append((item.prompt, item.a, item.b, constitution.principle(item.principle).comparison))
        others = [p for p in constitution.principles if p.id != item.principle]
        drawn = rng.sample(others, min(extra_principles, len(others))) if extra_principles > 0 else []
        extra.append(len(drawn))
        questions += [(item.prompt, item.a, item.b, p.comparison) for p in drawn]
    answers = iter(judge_orders(judge, questions))
    correct, first_shown, agree = [], [], []
    by_principle: dict[str, list[bool]] = {}
    for item, n_extra in zip(gold, extra):
        p_first, p_second = next(answers)
        p_a = 0.5 * (p_first + p_second)
        if two_orders:
            # Shown first: a in the first order (P(a) = p_first), b in the second (P(b) = 1 - p_second).
            first_shown += [p_first, 1.0 - p_second]
        verdict = p_a > 0.5 if item.better == "a" else p_a < 0.5
        correct.append(verdict)
        by_principle.setdefault(item.principle, []).append(verdict)
        if n_extra:
            votes = {p_a > 0.5} | {0.5 * sum(next(answers)) > 0.5 for _ in range(n_extra)}
            agree.append(len(votes) == 1)
    return AuditReport(
        n=len(gold),
        accuracy=sum(correct) / len(correct),
        position_bias=sum(first_shown) / len(first_shown) - 0.5 if first_shown else None,
        principle_agreement=sum(agree) / len(agree) if agree else None,
        accuracy_by_principle={k: sum(v) / len(v) for k, v in by_principle.items()},
        n_by_principle={k: len(v) for k, v in by_principle.items()},
    )


# z of a one-sided 95% bound: the two-sided 90% Wilson interval's lower end.
WILSON_Z = 1.6449


def wilson_lower(accuracy: float, n: int, z: float = WILSON_Z) -> float:
    """The lower end of the Wilson score interval for a proportion `accuracy` measured on `n` trials (0 for n = 0):
    on 15 comparisons, 14 right gives 0.75 and 13 right 0.67."""
    if n <= 0:
        return 0.0
    z2 = z * z
    centre = accuracy + z2 / (2 * n)
    spread = z * math.sqrt(accuracy * (1 - accuracy) / n + z2 / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z2 / n))


def check_audit(report: AuditReport, min_accuracy: float, *, override: bool = False,
                min_principle_accuracy: float = 0.0, min_principle_comparisons: int = 0) -> AuditReport:
    """Record the gate's outcome in `report` and the principles the feedback model may label with: those audited on
    at least `min_principle_comparisons` held-out comparisons whose accuracy's Wilson 90% lower bound
    (`wilson_lower`) reaches `min_principle_accuracy` — a principle is trusted on evidence, not on 3 lucky answers.
    Raise FeedbackAuditError below `min_accuracy` overall, or when no principle passes, unless `override`."""
    report.min_accuracy = min_accuracy
    report.min_principle_accuracy = min_principle_accuracy
    report.min_principle_comparisons = min_principle_comparisons
    counts = report.n_by_principle
    report.lower_bound_by_principle = {k: round(wilson_lower(v, counts.get(k, 0)), 4)
                                       for k, v in report.accuracy_by_principle.items()}
    ranked = sorted(report.lower_bound_by_principle.items(), key=lambda kv: (-kv[1], kv[0]))
    report.allowed_principles = [k for k, v in ranked
                                 if v >= min_principle_accuracy and counts.get(k, 0) >= min_principle_comparisons]
    report.passed = report.accuracy >= min_accuracy and bool(report.allowed_principles)
    if not report.allowed_principles and not override:
        raise FeedbackAuditError(
            f"no principle's held-out accuracy has a 90% lower bound of at least {min_principle_accuracy:.2f} on at "
            f"least {min_principle_comparisons} gold comparisons (" + ", ".join(
                f"{k} {report.accuracy_by_principle[k]:.2f} on {counts.get(k, 0)}, bound {v:.2f}" for k, v in ranked)
            + "); there is nothing it may label with")
    if report.accuracy < min_accuracy and not override:
        raise FeedbackAuditError(
            f"the feedback model's accuracy on {report.n} held-out gold comparisons is {report.accuracy:.2f}, below "
            f"the required {min_accuracy:.2f} (position bias {report.position_bias}); its labels would not be "
            f"trustworthy. Use a better feedback model, or override the check explicitly to proceed anyway."
        )
    return report
