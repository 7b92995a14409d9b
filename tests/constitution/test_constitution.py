"""The constitution file (parsing, lint) and AI soft labels against hand-worked log-probs."""

from __future__ import annotations

import json
import math
import random

import pytest
import yaml

from alignkit.cli import main
from alignkit.constitution import (
    ConstitutionError,
    lint,
    load_constitution,
    option_probability,
    soft_label,
)
from alignkit.constitution.principles import SOURCES, constitution_path


def test_the_default_constitution_is_complete():
    c = load_constitution()
    assert c.name == "alignkit-default" and len(c.principles) == 16
    assert len({p.id for p in c.principles}) == 16
    assert {p.source for p in c.principles} == set(SOURCES)
    assert {p.kind for p in c.principles} == {"broad", "rule"}
    assert all(c.exemplars_for(p.id) for p in c.principles)
    assert lint()[1] == []  # no errors and no warnings
    # A concrete rule against claiming a human identity, as the issue asks.
    assert "no-human-identity" in {p.id for p in c.principles}


def test_draw_is_seeded_and_without_replacement():
    c = load_constitution()
    first = [p.id for p in c.draw(random.Random(3), 4)]
    assert first == [p.id for p in c.draw(random.Random(3), 4)]
    assert len(set(first)) == 4
    with pytest.raises(ValueError, match="k must be in 1..16"):
        c.draw(random.Random(0), 17)


def _write(tmp_path, document) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False) if not isinstance(document, str) else document)
    return str(path)


def _principle(pid, **over):
    return {"id": pid, "source": "honesty", "kind": "rule", "critique": "c?", "revision": "r.", "comparison": "q?",
            **over}


def _exemplar(eid, principle, **over):
    return {"id": eid, "principle": principle, "prompt": "p", "response": "x", "critique": "c", "revision": "r",
            **over}


def test_lint_reports_every_problem_with_its_place(tmp_path):
    path = _write(tmp_path, {
        "name": "mine",
        "principles": [
            _principle("a"),
            _principle("b", critique=""),            # empty field
            _principle("a"),                          # duplicate id
            _principle("c", source="folklore"),       # unknown source
            _principle("d", kind="vague"),            # unknown kind
            _principle("e"),                          # no exemplar: a warning only
        ],
        "exemplars": [_exemplar("x1", "a"), _exemplar("x2", "nope"), _exemplar("x3", "c"), _exemplar("x4", "d")],
    })
    constitution, issues = lint(path)
    assert constitution is None
    text = [str(i) for i in issues]
    assert any("principles[1] (b): error: field 'critique': missing or empty" in t for t in text)
    assert any("principles[2] (a): error: duplicate id 'a' (first at principles[0])" in t for t in text)
    assert any("principles[3] (c): error: field 'source': 'folklore'" in t for t in text)
    assert any("principles[4] (d): error: field 'kind': 'vague'" in t for t in text)
    assert any("exemplars[1] (x2): error: unused exemplar" in t and "'nope'" in t for t in text)
    assert any("principles[5] (e): warning: no exemplar cites this principle" in t for t in text)
    with pytest.raises(ConstitutionError, match="duplicate id"):
        load_constitution(path)


def test_warnings_alone_do_not_stop_loading(tmp_path):
    path = _write(tmp_path, {"name": "mine", "principles": [_principle("a"), _principle("b")],
                             "exemplars": [_exemplar("x", "a")]})
    constitution, issues = lint(path)
    assert [p.id for p in constitution.principles] == ["a", "b"]
    assert [(i.level, i.message) for i in issues] == [("warning", "no exemplar cites this principle")]


def test_lint_reports_invalid_yaml_with_its_line(tmp_path):
    path = _write(tmp_path, "name: x\nprinciples:\n  - id: a\n    source: [unclosed\n")
    constitution, issues = lint(path)
    assert constitution is None and len(issues) == 1
    assert issues[0].where.endswith("c.yaml:5") or issues[0].where.endswith("c.yaml:4")
    assert "not valid YAML" in issues[0].message


def test_unknown_fields_and_missing_lists_are_errors(tmp_path):
    _, issues = lint(_write(tmp_path, {"name": "x", "principles": [], "rules": 3}))
    text = [str(i) for i in issues]
    assert any("unknown top-level keys ['rules']" in t for t in text)
    assert any("field 'principles': expected a non-empty list" in t for t in text)
    _, issues = lint(_write(tmp_path, {"name": "x", "principles": [_principle("a", weight=2)]}))
    assert any("unknown fields ['weight']" in str(i) for i in issues)
    with pytest.raises(ConstitutionError, match="not a built-in constitution"):
        constitution_path("no-such-constitution")


def test_cli_lint_and_show(tmp_path, capsys):
    assert main(["constitution", "lint"]) == 0
    assert capsys.readouterr().out.strip().endswith("0 errors, 0 warnings")
    bad = _write(tmp_path, {"name": "x", "principles": [_principle("a"), _principle("a")]})
    assert main(["constitution", "lint", bad]) == 1
    assert "duplicate id 'a'" in capsys.readouterr().out
    assert main(["constitution", "show"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("alignkit-default (version 1): 16 principles, 71 exemplars")
    assert "[no-human-identity]" in out


def test_option_probability_by_hand():
    # log p(A) = log 0.3, log p(B) = log 0.1 (the rest of the vocabulary took 0.6): renormalised, P(A) = 0.75.
    assert option_probability(math.log(0.3), math.log(0.1)) == pytest.approx(0.75)
    assert option_probability(-2.0, -2.0) == 0.5


def test_soft_label_averages_both_orders_and_the_principles():
    lg = math.log
    # Principle 1: a shown as (A) gets P(A) = 0.8; shown as (B) it gets P(B) = 0.4 (a position bias towards (A)).
    # Principle 2: 0.9 and 0.7.
    forward = [(lg(0.8), lg(0.2)), (lg(0.45), lg(0.05))]   # renormalised: 0.8, 0.9
    backward = [(lg(0.6), lg(0.4)), (lg(0.15), lg(0.35))]  # P(a) as (B): 0.4, 0.7
    # (0.8 + 0.4) / 2 = 0.6 ; (0.9 + 0.7) / 2 = 0.8 ; mean 0.7
    assert soft_label(forward, backward) == pytest.approx(0.7)
    # A judge that always answers (A) with 0.9 in both orders says nothing about a vs b: the label is 0.5.
    assert soft_label([(lg(0.9), lg(0.1))], [(lg(0.9), lg(0.1))]) == pytest.approx(0.5)


def test_cot_clamp_keeps_every_judgement_within_forty_to_sixty_percent():
    lg = math.log
    forward = [(lg(0.99), lg(0.01)), (lg(0.55), lg(0.45))]
    backward = [(lg(0.02), lg(0.98)), (lg(0.7), lg(0.3))]
    # Judgements 0.99, 0.98 -> clamped 0.6, 0.6; 0.55 stays, 0.3 -> 0.4: ((0.6 + 0.6) / 2 + (0.55 + 0.4) / 2) / 2
    assert soft_label(forward, backward, cot=True) == pytest.approx((0.6 + 0.475) / 2)
    assert soft_label(forward, backward) == pytest.approx(((0.99 + 0.98) / 2 + (0.55 + 0.3) / 2) / 2)
    with pytest.raises(ValueError, match="k >= 1"):
        soft_label([], [])


def test_held_out_gold_comparisons_cannot_be_trained_on(tmp_path):
    import json

    from alignkit.data import DataError, load_records

    rows = [json.loads(line) for line in constitution_path().with_name("comparisons.jsonl").read_text().splitlines()]
    heldout = next(r for r in rows if r["split"] == "heldout")
    train = next(r for r in rows if r["split"] == "train")
    path = tmp_path / "pairs.jsonl"
    for row, allowed in ((train, True), (heldout, False)):
        path.write_text(json.dumps({"prompt": row["prompt"], "chosen": row["a"], "rejected": row["b"]}) + "\n")
        if allowed:
            assert len(load_records(path, "preference").records) == 1
        else:
            with pytest.raises(DataError, match=f"constitution comparison {heldout['id']}"):
                load_records(path, "preference")


def test_ai_label_draws_k_principles_and_averages_their_orders():
    from alignkit.constitution import ai_label

    c = load_constitution()
    answers = {p.comparison: (0.2 + 0.05 * i, 0.6) for i, p in enumerate(c.principles)}

    class Judge:
        def compare_orders(self, prompt, a, b, principle=None):
            return answers[principle]

    label = ai_label(Judge(), "p", "a", "b", c, random.Random(7), k=3)
    drawn = [p.id for p in c.draw(random.Random(7), 3)]
    assert list(label.principles) == drawn  # the same seeded draw
    expected = [answers[c.principle(pid).comparison] for pid in drawn]
    assert label.orders == tuple(expected)
    assert label.probability == pytest.approx(sum((f + s) / 2 for f, s in expected) / 3)
    clamped = ai_label(Judge(), "p", "a", "b", c, random.Random(7), k=3, cot=True)
    assert clamped.probability == pytest.approx(sum((min(max(f, 0.4), 0.6) + 0.6) / 2 for f, _ in expected) / 3)

    class ScoreOnly:  # e.g. a reward model: order-invariant, so its compare stands for both orders
        def compare(self, prompt, a, b, principle=None, reference=None):
            return 0.7

    scored = ai_label(ScoreOnly(), "p", "a", "b", c, random.Random(0), k=2)
    assert scored.orders == ((0.7, 0.7), (0.7, 0.7)) and scored.probability == pytest.approx(0.7)


def test_rlaif_rows_and_hard_pairs():
    from alignkit.constitution.labels import hard_pairs, rlaif_rows

    c = load_constitution()

    class Judge:
        def compare_orders(self, prompt, a, b, principle=None):
            return {"x": (0.9, 0.7), "y": (0.45, 0.5), "z": (0.1, 0.3)}[prompt]

    rows = rlaif_rows(["x", "y", "z"], [("a1", "b1"), ("a2", "b2"), ("a3", "b3")], Judge(), c, random.Random(0), k=2,
                      feedback_model="fb")
    assert [r["probability"] for r in rows] == pytest.approx([0.8, 0.475, 0.2])
    assert all(len(r["principles"]) == 2 and r["feedback_model"] == "fb" for r in rows)
    pairs = hard_pairs(rows, min_confidence=0.1)
    # "y" is within 0.1 of a coin flip and dropped; "z" favours the second response, which becomes chosen.
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [("x", "a1", "b1"), ("z", "b3", "a3")]
    assert [p["probability"] for p in pairs] == pytest.approx([0.8, 0.8])


def test_alternatives_are_checked_and_default_is_the_fallback(tmp_path):
    from alignkit.constitution.principles import lint

    document = yaml.safe_load(constitution_path("default").read_text(encoding="utf-8"))
    categories = {json.loads(line)["category"] for line in
                  (constitution_path("default").parent.parent / "suites" / "redteam.jsonl").read_text().splitlines()}
    assert categories | {"default"} == {a["id"] for a in document["alternatives"]}  # one per harm category
    document["alternatives"] = [{"id": "weapons", "reason": "Dangerous.", "offer": ""},
                                {"id": "theft", "reason": "A crime.", "offer": "A locksmith.", "extra": 1}]
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(document), encoding="utf-8")
    constitution, issues = lint(broken)
    text = "\n".join(map(str, issues))
    assert constitution is None
    assert "alternatives[0] (weapons): error: field 'offer': missing or empty" in text
    assert "alternatives[1] (theft): error: unknown fields ['extra']" in text
    document["alternatives"] = [{"id": "theft", "reason": "A crime.", "offer": "A locksmith."}]
    broken.write_text(yaml.safe_dump(document), encoding="utf-8")
    constitution, issues = lint(broken)
    assert [i.message for i in issues if "alternatives" in i.where] == [
        "no 'default' entry: a request of a category without its own entry gets no alternative"]
    assert constitution.alternative_for("theft").offer == "A locksmith." and constitution.alternative_for("x") is None
