"""Feedback-model audit on gold comparisons: accuracy, position bias, agreement across principles, the gate."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from alignkit.constitution import load_constitution
from alignkit.constitution.audit import (
    FeedbackAuditError,
    GoldComparison,
    audit_feedback_model,
    check_audit,
    first_per_principle,
    load_gold_comparisons,
    wilson_lower,
)
from alignkit.constitution.principles import ConstitutionError


class FirstBiasedJudge:
    """Gives the reply shown first P = `first`, and knows the right answer only when the reply contains "GOOD"."""

    def __init__(self, first: float = 0.7):
        self.first = first
        self.asked = []

    def compare_orders(self, prompt, a, b, principle=None):
        self.asked.append(principle)
        if "GOOD" in a:
            return 0.9, 0.8
        if "GOOD" in b:
            return 0.2, 0.1
        return self.first, 1.0 - self.first  # a first: P(a) = first; a second: P(a) = 1 - first

    def compare(self, prompt, a, b, principle=None, reference=None):
        return sum(self.compare_orders(prompt, a, b, principle)) / 2

    def score(self, prompts, completions, references=None):
        return [0.0] * len(completions)


def _gold(better_by_id: dict[str, tuple[str, str, str]]):
    return [GoldComparison(i, "harmless-ethical", "p", a, b, better, "t") for i, (a, b, better) in better_by_id.items()]


def test_audit_per_principle_keeps_the_first_of_each_principle_in_file_order():
    gold = [GoldComparison(str(i), principle, "p", "a", "b", "a", "t")
            for i, principle in enumerate(["x", "y", "x", "x", "z", "y"])]
    assert [g.id for g in first_per_principle(gold, 2)] == ["0", "1", "2", "4", "5"]
    assert [g.id for g in first_per_principle(gold, 1)] == ["0", "1", "4"]
    assert first_per_principle(gold, None) == gold
    builtin = load_gold_comparisons(split="heldout")
    one_each = first_per_principle(builtin, 1)
    assert len(one_each) == len({g.principle for g in builtin}) < len(builtin)


def test_accuracy_position_bias_and_agreement_by_hand():
    c = load_constitution()
    gold = _gold({
        "1": ("GOOD reply", "bad", "a"),     # P(a) = 0.85: right
        "2": ("bad", "GOOD reply", "b"),     # P(a) = 0.15: right
        "3": ("x", "y", "a"),                # P(a) = (0.7 + 0.3) / 2 = 0.5: not > 0.5, wrong
        "4": ("GOOD", "bad", "b"),           # P(a) = 0.85 but gold says b: wrong
    })
    report = audit_feedback_model(FirstBiasedJudge(0.7), gold, c, extra_principles=2)
    assert report.n == 4 and report.accuracy == 0.5
    # First-shown probabilities: item 1: 0.9, 1 - 0.8 = 0.2; item 2: 0.2, 0.9; item 3: 0.7, 0.7; item 4: 0.9, 0.2.
    assert report.position_bias == pytest.approx((0.9 + 0.2 + 0.2 + 0.9 + 0.7 + 0.7 + 0.9 + 0.2) / 8 - 0.5)
    # This judge ignores the principle, so its verdicts agree across principles everywhere.
    assert report.principle_agreement == 1.0
    assert report.accuracy_by_principle == {"harmless-ethical": 0.5}


def test_agreement_falls_when_verdicts_depend_on_the_question():
    c = load_constitution()
    harmless = c.principle("harmless-ethical").comparison

    class Fickle(FirstBiasedJudge):
        def compare_orders(self, prompt, a, b, principle=None):
            return (0.9, 0.9) if principle == harmless else (0.1, 0.1)

    report = audit_feedback_model(Fickle(), _gold({"1": ("a", "b", "a"), "2": ("c", "d", "a")}), c)
    assert report.accuracy == 1.0 and report.principle_agreement == 0.0


def test_the_gate_refuses_a_weak_judge_unless_overridden():
    c = load_constitution()
    report = audit_feedback_model(FirstBiasedJudge(), _gold({"1": ("x", "y", "a"), "2": ("GOOD", "z", "a")}), c)
    with pytest.raises(FeedbackAuditError, match="accuracy on 2 held-out gold comparisons is 0.50, below the "
                                                 "required 0.70"):
        check_audit(report, 0.7)
    assert check_audit(report, 0.7, override=True).passed is False
    assert check_audit(report, 0.5).passed is True


def test_wilson_lower_bound_by_hand():
    assert wilson_lower(0.5, 100, z=1.96) == pytest.approx(0.40383, abs=1e-5)  # the textbook interval's lower end
    assert wilson_lower(1.0, 15) == pytest.approx(15 / (15 + 1.6449 ** 2), abs=1e-6)
    assert wilson_lower(14 / 15, 15) == pytest.approx(0.749, abs=1e-3)
    assert wilson_lower(13 / 15, 15) == pytest.approx(0.666, abs=1e-3)
    assert wilson_lower(0.0, 10) == 0.0 and wilson_lower(1.0, 0) == 0.0


def test_the_gate_trusts_a_principle_on_the_lower_bound_of_its_accuracy_and_enough_comparisons():
    from alignkit.constitution import AuditReport

    report = AuditReport(n=54, accuracy=0.8, position_bias=0.0, principle_agreement=None,
                         accuracy_by_principle={"a": 1.0, "b": 14 / 15, "c": 13 / 15, "d": 1.0},
                         n_by_principle={"a": 20, "b": 15, "c": 15, "d": 4})
    check_audit(report, 0.7, min_principle_accuracy=0.7, min_principle_comparisons=15)
    # a: 20 of 20 (bound 0.88), b: 14 of 15 (0.75) pass, best bound first; c: 13 of 15 (bound 0.67) does not; d: 4
    # of 4 is too few to trust (and its bound is 0.60 anyway).
    assert report.passed is True and report.allowed_principles == ["a", "b"]
    assert report.lower_bound_by_principle["d"] == pytest.approx(4 / (4 + 1.6449 ** 2), abs=1e-4)
    check_audit(report, 0.7, min_principle_accuracy=0.55, min_principle_comparisons=0)
    assert report.allowed_principles == ["a", "b", "c", "d"]
    check_audit(report, 0.7, min_principle_accuracy=0.55, min_principle_comparisons=15)
    assert report.allowed_principles == ["a", "b", "c"]
    with pytest.raises(FeedbackAuditError, match="no principle's held-out accuracy has a 90% lower bound of at least "
                                                 "0.90 on at least 15 gold comparisons"):
        check_audit(report, 0.7, min_principle_accuracy=0.9, min_principle_comparisons=15)
    assert report.passed is False and check_audit(report, 0.7, override=True, min_principle_accuracy=1.5).passed is False


def test_the_audit_counts_the_comparisons_of_each_principle():
    gold = [GoldComparison(str(i), p, "q", "GOOD reply", "bad", "a", "t")
            for i, p in enumerate(["harmless-ethical", "harmless-ethical", "privacy-respect"])]
    report = audit_feedback_model(FirstBiasedJudge(), gold, load_constitution(), extra_principles=0)
    assert report.n_by_principle == {"harmless-ethical": 2, "privacy-respect": 1}


def test_built_in_gold_comparisons_and_bad_rows(tmp_path):
    heldout, train = load_gold_comparisons(), load_gold_comparisons(split="train")
    # At least 40 comparisons for every principle: at least 15 held out (what the per-principle gate asks for a
    # lower bound with meaning) and at least 24 to teach it.
    assert len(heldout) == 252 and len(train) == 409
    for split, least in ((heldout, 15), (train, 24)):
        counts = Counter(item.principle for item in split)
        assert len(counts) == 16 and min(counts.values()) >= least
    both = Counter(item.principle for item in heldout + train)
    assert min(both.values()) >= 40
    assert {g.better for g in heldout} == {"a", "b"}
    assert not {g.prompt for g in heldout} & {g.prompt for g in train}
    c = load_constitution()
    assert {g.principle for g in heldout} == {p.id for p in c.principles}
    bad = tmp_path / "gold.jsonl"
    bad.write_text(json.dumps({"id": "g", "principle": "x", "prompt": "p", "a": "1", "b": "2", "better": "c"}) + "\n")
    with pytest.raises(ConstitutionError, match=r"gold.jsonl:1: field 'better'"):
        load_gold_comparisons(bad)
    bad.write_text("{oops\n")
    with pytest.raises(ConstitutionError, match=r"gold.jsonl:1: not valid JSON"):
        load_gold_comparisons(bad)


def test_lm_judge_orders_average_to_its_compare(tiny_tok):
    from alignkit.judges.model import LMJudge
    from alignkit.models.tiny import tiny_model

    judge = LMJudge(tiny_model(tiny_tok, tie_embeddings=False), tiny_tok)
    first, second = judge.compare_orders("Is water wet?", "Yes.", "No, never.", "Which is true?")
    assert 0 < first < 1 and 0 < second < 1
    assert judge.compare("Is water wet?", "Yes.", "No, never.", "Which is true?") == pytest.approx((first + second) / 2)


def test_audit_through_the_http_judge_on_a_real_llama_cpp_server(llama_server):
    from alignkit.judges import HTTPJudge

    judge = HTTPJudge(llama_server, "smollm2", timeout=60, max_retries=1, max_concurrency=2, top_logprobs=5)
    gold = load_gold_comparisons()[:4]
    report = audit_feedback_model(judge, gold, load_constitution(), extra_principles=1)
    assert report.n == 4 and report.accuracy in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert -0.5 <= report.position_bias <= 0.5
    assert report.principle_agreement in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert judge.stats["requests"] == 4 * 2 + 4 * 2  # both orders, cited principle + one more
