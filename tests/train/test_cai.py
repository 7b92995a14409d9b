"""`alignkit cai` on the tiny model: every stage of the chain, provenance, resuming, the audit gate, the config guard."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from alignkit.constitution import FeedbackAuditError, load_constitution, load_gold_comparisons, wilson_lower
from alignkit.constitution.critique import short_revision
from alignkit.judges import refuses_safely
from alignkit.pipelines.cai import STAGES, run_cai
from alignkit.pipelines.cai_config import CAIConfig, DataMix
from alignkit.pipelines.cai_data import (
    jailbreak_wrapped,
    mix_rows,
    read_jsonl,
    reply_text,
    revision_rule_check,
    verify_label,
)
from alignkit.train.card import portable
from alignkit.train.config import ConfigError
from alignkit.train.config_loading import load_config
from alignkit.train.run import RunError


def tiny_config(model: str, out, *, method: str = "ppo", extra: list[str] = ()) -> CAIConfig:
    overrides = [
        f"model={model}", f"output_dir={out}",
        "feedback.sft={max_steps: 2, batch_size: 4, max_length: 256}",
        "feedback.judge_sft={max_steps: 2, batch_size: 4, max_length: 256}", "feedback.override_audit=true",
        "feedback.audit_extra_principles=1", "feedback.batch_size=16",
        "critique.prompts=[{source: 'suite:redteam?split=train', limit: 3}]",
        "critique.max_new_tokens=8", "critique.critique_tokens=8", "critique.revision_tokens=8",
        "critique.principles=[harmless-ethical, no-dangerous-assistance]",
        # A random tiny model never writes a refusal, so the rule verifier would keep none of its revisions; it is
        # tested on its own (test_the_rule_verifier_keeps_only_refusals_without_a_harmful_offer).
        "critique.rule_check=false",
        "sl.helpful=[{source: 'builtin:sft', categories: [benign], limit: 3}]",
        "sl.policy_answers=[{source: 'suite:borderline?split=train', limit: 2}]",
        "sl.sft={max_steps: 2, batch_size: 4, max_length: 256}",
        "rl.prompts=[{source: 'suite:redteam?split=train', limit: 2}, {source: 'suite:borderline?split=train', limit: 2}]",
        f"rl.method={method}", "rl.max_new_tokens=8", "rl.min_confidence=0.0",
        "rl.helpful_preferences=[{source: 'builtin:preference', categories: [benign], limit: 2}]",
        "rl.preference={max_steps: 2, batch_size: 4, max_length: 256}",
        "rl.ppo={max_steps: 1, prompts_per_step: 2, max_new_tokens: 8, batch_size: 2, minibatch_size: 2}",
        "rl.dpo={max_steps: 2, batch_size: 4, max_length: 256}",
        "eval=null",
        *extra,
    ]  # fmt: skip
    return load_config(CAIConfig, None, overrides)


def test_whole_chain_with_ppo_keeps_provenance_and_resumes(chatty_dir, tiny_dir, tmp_path, capsys):
    out = tmp_path / "cai"
    manifest = run_cai(tiny_config(chatty_dir, out))
    assert set(manifest["stages"]) == set(STAGES) - {"eval"}
    for stage in manifest["stages"]:
        assert (out / f"{STAGES.index(stage) + 1}-{stage}" / "done.json").is_file()
    assert (out / "final" / "config.json").is_file() and manifest["final"] == str(out / "final")

    # The final model's card tells the whole run: its stages and who wrote their data, the constitution, the config.
    card = (out / "final" / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(card.split("---\n", 2)[1])
    assert {"constitutional-ai", "rlaif", "ppo"} <= set(front["tags"])
    assert "\n# cai\n" in card and "## Constitution" in card and "## The cai config" in card
    assert all(f"**{p.id}**" in card for p in load_constitution("default").principles)
    for stage, summary in manifest["stages"].items():
        if summary.get("origin"):
            assert f"| {stage} |" in card and portable(summary["origin"]) in card
    assert card.index("## Constitution") < card.index("## Reproduce")
    assert str(tmp_path) not in card and tiny_dir not in card and chatty_dir not in card

    # The feedback model was taught from the team's exemplars and train gold comparisons, then audited.
    fb = manifest["stages"]["feedback"]
    # Each skill to its own copy: critique and revision (the exemplars) to the writer, comparison to the judge.
    writing = read_jsonl(out / "1-feedback" / "critique_data.jsonl")
    comparing = read_jsonl(out / "1-feedback" / "comparison_data.jsonl")
    assert len(writing) == 2 * len(load_constitution().exemplars)
    assert len(comparing) == 2 * len(load_gold_comparisons(split="train"))
    assert all(r["source"].startswith("exemplar") for r in writing)
    assert all(r["source"].startswith("gold comparison") for r in comparing)
    assert fb["model"] == str(out / "1-feedback" / "writer" / "final")
    assert fb["judge_model"] == str(out / "1-feedback" / "judge" / "final")
    audit = json.loads((out / "2-audit" / "audit.json").read_text())
    feedback_name = f"{fb['model']} + {fb['judge_model']}"
    assert audit["n"] == len(load_gold_comparisons()) and 0 <= audit["accuracy"] <= 1
    assert audit["feedback_model"] == feedback_name

    # Provenance of phase 1: every prompt's answer, principle, critique and revision, and who made them.
    constitution = load_constitution()
    revisions = read_jsonl(out / "3-critique" / "revisions.jsonl")
    assert len(revisions) == 6  # 3 requests + the same 3 inside train jailbreak templates
    # Every prompt is a conversation, as the policy was sampled with it: 3 single user turns, 3 wrapped.
    assert all(isinstance(r["prompt"], list) for r in revisions)
    plain = [r for r in revisions if " in jailbreak " not in r["source"]]
    assert len(plain) == 3 and all(len(r["prompt"]) == 1 and r["prompt"][0]["role"] == "user" for r in plain)
    for r in revisions:
        assert {"prompt", "initial", "steps", "final", "policy", "feedback_model", "source"} <= r.keys()
        assert r["policy"] == chatty_dir and r["feedback_model"] == feedback_name and r["source"].startswith("suite:")
        (step,) = r["steps"]
        assert step["principle"] in ("harmless-ethical", "no-dangerous-assistance")
        constitution.principle(step["principle"])
        assert isinstance(step["critique"], str) and step["revision"] == r["final"]
    sl_rows = read_jsonl(out / "4-sl" / "data.jsonl")
    assert sorted(r["origin"] for r in sl_rows).count("human demonstration") == 3
    assert sum(r["origin"] == "AI revision" for r in sl_rows) == sum(bool(r["final"].strip()) for r in revisions)
    # The starting policy's own answers to two borderline prompts, as they are (helpfulness samples).
    own = [r for r in sl_rows if r["origin"] == "AI answer (the policy)"]
    assert len(own) == manifest["stages"]["sl"]["policy_answers"] == 2
    assert all(r["source"].startswith("suite:borderline") and r["completion"][0]["content"] for r in own)

    # Phase 2: soft labels with the principles asked and both orders, then a preference model and PPO.
    labels = read_jsonl(out / "5-labels" / "labels.jsonl")
    assert labels, "no pairs were labelled"
    for row in labels:
        assert 0 <= row["probability"] <= 1 and len(row["principles"]) == 2 and len(row["orders"]) == 2
        expected = sum(sum(o) / 2 for o in row["orders"]) / 2
        assert row["probability"] == pytest.approx(expected)
        assert reply_text(row["chosen"]) != reply_text(row["rejected"]) and row["policy"] == manifest["stages"]["sl"]["model"]
    pm_rows = read_jsonl(out / "6-preference" / "data.jsonl")
    assert sum(r["origin"] == "human preference" for r in pm_rows) == 2
    assert sum(r["origin"] == "AI label" for r in pm_rows) == len(labels)
    rl = manifest["stages"]["rl"]
    assert rl["method"] == "ppo" and rl["judge"] == {"reward_model": manifest["stages"]["preference"]["model"]}

    # A second run reuses every finished stage and trains nothing.
    weights = (out / "final" / "model.safetensors").read_bytes()
    capsys.readouterr()
    run_cai(tiny_config(chatty_dir, out))
    printed = capsys.readouterr().out
    assert all(f"cai {stage}: finished earlier" in printed for stage in manifest["stages"])
    assert (out / "final" / "model.safetensors").read_bytes() == weights

    # Another configuration may not reuse (or overwrite) this run's folder.
    with pytest.raises(RunError, match="another configuration.*rl"):
        run_cai(tiny_config(chatty_dir, out, method="dpo"))

    # But another run may take over its phase 1 and labels explicitly, to try another RL method on the same labels.
    other = run_cai(tiny_config(chatty_dir, tmp_path / "dpo", method="dpo", extra=[f"reuse={out}"]))
    for stage in ("feedback", "audit", "critique", "sl", "labels"):
        assert other["stages"][stage]["reused_from"] == str(out)
        assert other["stages"][stage]["origin" if stage != "audit" else "accuracy"] == manifest["stages"][stage][
            "origin" if stage != "audit" else "accuracy"]
    assert other["stages"]["rl"]["method"] == "dpo" and "reused_from" not in other["stages"]["rl"]
    # Which stages stand in is derived from the settings each read (tests/pipelines/test_stages.py); where even the
    # first differs (another starting model), reuse is refused before anything runs.
    with pytest.raises(RunError, match="ran phase 1 with other settings.*model"):
        run_cai(tiny_config(tiny_dir, tmp_path / "x", extra=[f"reuse={out}"]))
    assert not (tmp_path / "x" / "1-feedback").exists()


def test_dpo_variant_trains_on_hard_pairs_plus_helpful_preferences(chatty_dir, tmp_path, monkeypatch):
    import alignkit.eval.harness
    import alignkit.pipelines.cai
    import alignkit.rollouts

    asked = []  # the precision of every generation call: the policy's samples and the feedback model's writing
    engine = alignkit.rollouts.generate
    for module in (alignkit.pipelines.cai, alignkit.eval.harness):  # where the pipeline and the feedback model call it
        monkeypatch.setattr(module, "generate", lambda *a, **k: asked.append(k["precision"]) or engine(*a, **k))
    out = tmp_path / "cai"
    manifest = run_cai(tiny_config(chatty_dir, out, method="dpo",
                                   extra=["feedback.train=false", "critique.check_revisions=true",
                                          "critique.check_margin=0.1", "critique.revision_form=short",
                                          "sl.revision_repeats=2", "rl.phase1_pairs=true", "seed=5",
                                          "rl.dpo.seed=7", "precision=fp32"]))
    assert "feedback" not in manifest["stages"] and "preference" not in manifest["stages"]
    # The run's seed and precision reach each trainer, unless the stage sets its own; every generation runs in it.
    sl_config = yaml.safe_load((out / "4-sl" / "run" / "config.yaml").read_text())
    rl_config = yaml.safe_load((out / "7-rl" / "run" / "config.yaml").read_text())
    assert (sl_config["seed"], rl_config["seed"]) == (5, 7)
    assert sl_config["precision"] == rl_config["precision"] == "fp32"
    assert len(asked) >= 5 and set(asked) == {"fp32"}
    # The feedback model's check of its own revisions decides which are trained on (by the margin); all stay on
    # record.
    revisions = read_jsonl(out / "3-critique" / "revisions.jsonl")
    assert all(r["use"] == (r["revision_preferred"] > 0.6) for r in revisions) and len(revisions) == 6
    # Short revisions: what the writer wrote is kept beside the short form, which follows the request's category
    # (the jailbreak-wrapped copies' too: their request is the one inside the template).
    constitution = load_constitution("default")
    categories = {r["prompt"]: r["category"] for r in read_jsonl(Path(__file__).parents[2] / "alignkit" / "data"
                                                                 / "builtin" / "suites" / "redteam.jsonl")}
    wrapped = [r for r in revisions if " in jailbreak " in r["source"]]
    assert len(wrapped) == 3
    for r in revisions:
        request = next(p for p in categories if p in json.dumps(r["prompt"], ensure_ascii=False)
                       or p == r["prompt"])
        assert r["category"] == categories[request]
        assert r["final"] == short_revision(request, r["written"], constitution.alternative_for(r["category"]))
        assert r["written"] == r["steps"][-1]["revision"] and refuses_safely(r["final"])
    trained = [r for r in read_jsonl(out / "4-sl" / "data.jsonl") if r["origin"] == "AI revision"]
    kept = sum(r["use"] for r in revisions)
    assert kept == manifest["stages"]["critique"]["kept_by_check"] == manifest["stages"]["sl"]["revisions"]
    assert len(trained) == 2 * kept  # revision_repeats=2: each kept revision twice
    assert manifest["stages"]["audit"]["feedback_model"] == chatty_dir  # the policy judged itself
    rl = manifest["stages"]["rl"]
    rows = read_jsonl(out / "7-rl" / "data.jsonl")
    labels = read_jsonl(out / "5-labels" / "labels.jsonl")
    # Phase 1's pairs: each revision that changed a (non-empty) first answer.
    changed = [r for r in revisions if r["initial"].strip() and r["final"].strip() != r["initial"].strip()]
    # min_confidence 0 keeps every pair: phase 2's labels plus phase 1's revision-vs-first-answer comparisons.
    assert rl["method"] == "dpo" and rl["ai_pairs"] == len(labels) + len(changed) and rl["of_them_phase1"] == len(changed)
    for row in rows:
        if row["origin"] == "AI label":
            assert row["probability"] >= 0.5  # the favoured response became `chosen`
    phase1 = [r for r in rows if r.get("phase") == 1]
    assert len(phase1) == len(changed)
    for row, revision in zip(sorted(phase1, key=lambda r: r["source"]), sorted(changed, key=lambda r: r["source"])):
        # The check's label, with the revision as `chosen` exactly when the feedback model preferred it.
        assert row["probability"] == max(revision["revision_preferred"], 1 - revision["revision_preferred"])
        better, worse = ((revision["final"], revision["initial"]) if revision["revision_preferred"] > 0.5
                         else (revision["initial"], revision["final"]))
        assert (reply_text(row["chosen"]), reply_text(row["rejected"])) == (better, worse)
        assert row["principles"] == [revision["steps"][-1]["principle"]] and row["policy"] == revision["policy"]


def test_rlaif_rounds_sample_the_current_model_and_stop_on_held_back_train_prompts(chatty_dir, tmp_path):
    """rl.rounds: each round after the first samples the current model, labels its pairs and trains DPO from it;
    rl.stop_check scores each round on held-back train prompts and the rounds stop when one is no better than the
    best so far. The random tiny model never refuses: every round scores the same (0 refused, all answered), so
    round 2 is no better than round 1 and round 1's model is kept."""
    out = tmp_path / "cai"
    held = ("rl.stop_check={refuse: [{source: 'suite:redteam?split=train', skip: 2, limit: 2}], "
            "answer: [{source: 'suite:borderline?split=train', skip: 2, limit: 2}], max_new_tokens: 8}")
    manifest = run_cai(tiny_config(chatty_dir, out, method="dpo", extra=[
        "feedback.train=false", "rl.rounds=3", held,
        "rl.contrast={refuse: [{source: 'suite:redteam?split=train', limit: 2}], "
        "answer: [{source: 'suite:borderline?split=train', limit: 2}], samples: 1, max_new_tokens: 8}"]))
    rl = manifest["stages"]["rl"]
    assert [h["round"] for h in rl["rounds"]] == [0, 1, 2] and rl["chosen_round"] == 1
    assert all(h["refused_safely"] == 0 and h["answered"] == 1 and h["score"] == 0.5 for h in rl["rounds"])
    assert rl["model"] == rl["rounds"][1]["model"] == str(out / "7-rl" / "run" / "final")
    assert rl["rounds"][0]["model"] == manifest["stages"]["sl"]["model"]
    # Round 2 started from round 1's model, on pairs of its own samples (labels and contrast), never on the
    # held-back prompts.
    round2 = out / "7-rl" / "round-2"
    assert yaml.safe_load((round2 / "run" / "config.yaml").read_text())["model"] == rl["rounds"][1]["model"]
    labels = read_jsonl(round2 / "labels.jsonl")
    assert labels and {r["policy"] for r in labels} == {rl["rounds"][1]["model"]}
    assert {r["policy"] for r in read_jsonl(round2 / "contrast.jsonl")} <= {rl["rounds"][1]["model"]}
    check = CAIConfig.model_validate(json.loads((out / "config.json").read_text())).rl.stop_check
    held_back = {r["source"] for r in mix_rows(check.refuse + check.answer, "prompt")}
    assert len(held_back) == 4
    for data in (round2 / "data.jsonl", out / "7-rl" / "data.jsonl"):
        sources = {r["source"].split(" in jailbreak ")[0] for r in read_jsonl(data) if "source" in r}
        assert sources and not sources & held_back
    assert not (out / "7-rl" / "round-3").exists()
    with pytest.raises(ConfigError, match="rl.rounds > 1 needs rl.method: dpo"):
        load_config(CAIConfig, None, ["rl.rounds=2"])


def test_the_rule_verifier_decides_ai_labels_where_exactly_one_response_is_right():
    """rl.verifier: on a prompt people marked, a pair with one right response (by the rules) is labelled for it with
    certainty, whatever the judge said; otherwise the judge's label stands."""
    refusal, offer = "I can't help with that; it could hurt people.", "I can't help, but I can help you write a scam."
    answer = "Sure: first you open the terminal and type kill -9 with the process id."
    harmful = {"chosen": answer, "rejected": refusal, "probability": 0.8}
    verify_label(harmful, True)
    assert harmful == {"chosen": answer, "rejected": refusal, "probability": 0.0, "judge_probability": 0.8,
                       "verified": True}
    benign = {"chosen": answer, "rejected": refusal, "probability": 0.3}
    verify_label(benign, False)
    assert benign["probability"] == 1.0 and benign["judge_probability"] == 0.3
    # Phase 1's pairs hold replies in the prompt's form (a conversation).
    replies = {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": answer}],
               "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": refusal}],
               "probability": 0.55}
    verify_label(replies, True)
    assert replies["probability"] == 0.0 and replies["verified"]
    both_wrong = {"chosen": answer, "rejected": offer, "probability": 0.7}  # a refusal offering harm is not right
    verify_label(both_wrong, True)
    assert both_wrong == {"chosen": answer, "rejected": offer, "probability": 0.7}
    mix = mix_rows([DataMix(source="suite:redteam?split=train", limit=2, harmful=True)], "prompt")
    assert [r["harmful"] for r in mix] == [True, True]
    assert all(r["harmful"] for r in jailbreak_wrapped(mix, "default", random.Random(0)))


def test_jailbreak_fraction_wraps_that_share_of_the_prompts_at_random():
    rows = [{"prompt": f"request {i}", "source": f"s:{i}"} for i in range(10)]
    everything = jailbreak_wrapped(rows, "default", random.Random(0))
    half = jailbreak_wrapped(rows, "default", random.Random(0), fraction=0.5)
    assert len(everything) == 10 and len(half) == 5 and jailbreak_wrapped(rows, "default", random.Random(0), 0) == []
    assert half == jailbreak_wrapped(rows, "default", random.Random(0), fraction=0.5)  # seeded
    wrapped = {r["source"].split(" in jailbreak ")[0] for r in half}
    assert len(wrapped) == 5 and wrapped < {r["source"] for r in rows}
    assert wrapped != {f"s:{i}" for i in range(5)}  # drawn at random, not the first half
    for row in half:
        request = next(r["prompt"] for r in rows if r["source"] == row["source"].split(" in jailbreak ")[0])
        text = " ".join(m["content"] for m in row["prompt"])  # the template's turns around (pieces of) the request
        assert len(text) > len(request) and request.split()[-1] in text


def test_phase1_pairs_need_the_revision_check():
    with pytest.raises(ConfigError, match="rl.phase1_pairs needs critique.check_revisions"):
        load_config(CAIConfig, None, ["rl.phase1_pairs=true"])
    assert load_config(CAIConfig, None, ["rl.phase1_pairs=true", "critique.check_revisions=true"]).rl.phase1_pairs


def test_audit_gate_stops_the_chain_and_overriding_it_keeps_the_finished_stages(chatty_dir, tmp_path, capsys):
    out = tmp_path / "cai"
    gate = ["feedback.override_audit=false", "feedback.min_accuracy=1.0", "feedback.min_principle_accuracy=0",
            "eval=null"]
    with pytest.raises(FeedbackAuditError, match="below the required 1.00"):
        run_cai(tiny_config(chatty_dir, out, extra=gate))
    audit = json.loads((out / "2-audit" / "audit.json").read_text())
    assert audit["passed"] is False and audit["min_accuracy"] == 1.0 and not (out / "3-critique").exists()
    # The gate decides, it computes nothing: overriding it (or moving it) keeps the taught feedback model and its
    # audit, where the whole configuration check used to refuse the folder.
    weights = (out / "1-feedback" / "judge" / "final" / "model.safetensors").read_bytes()
    capsys.readouterr()
    manifest = run_cai(tiny_config(chatty_dir, out, extra=gate[1:] + ["feedback.override_audit=true"]))
    printed = capsys.readouterr().out
    assert "cai feedback: finished earlier" in printed and "cai audit: finished earlier" in printed
    assert (out / "1-feedback" / "judge" / "final" / "model.safetensors").read_bytes() == weights
    audit = json.loads((out / "2-audit" / "audit.json").read_text())
    assert audit["overridden"] is True and audit["passed"] is False
    assert audit["labelling_principles"] == [p.id for p in load_constitution().principles]  # overridden: all
    assert manifest["stages"]["rl"]["model"]
    # A setting that changes what a stage computes still may not reuse the folder.
    with pytest.raises(RunError, match="another configuration.*feedback"):
        run_cai(tiny_config(chatty_dir, out, extra=gate[1:] + ["feedback.exemplar_repeats=2"]))


def test_the_feedback_model_judges_only_under_principles_that_passed_its_audit(chatty_dir, tmp_path):
    """Per-principle gating: labels, critiques and the revision check draw only principles whose held-out accuracy's
    Wilson 90% lower bound reaches feedback.min_principle_accuracy (on at least min_principle_comparisons); the
    others are left out and the report says which. (The random tiny judge is near chance: its bounds are 0.1-0.4.)"""
    out = tmp_path / "cai"
    critique = ["harmless-ethical", "no-dangerous-assistance", "wellbeing-support", "privacy-respect",
                "human-rights-dignity", "refuse-with-alternative"]
    gate = ["feedback.override_audit=false", "feedback.min_accuracy=0", "feedback.min_principle_accuracy=0.3"]
    manifest = run_cai(tiny_config(chatty_dir, out, extra=[
        *gate, f"critique.principles=[{', '.join(critique)}]", "rl.principles_per_label=3", "eval=null"]))
    audit = manifest["stages"]["audit"]
    bounds = audit["lower_bound_by_principle"]
    assert bounds == {p: pytest.approx(wilson_lower(a, audit["n_by_principle"][p]), abs=1e-4)
                      for p, a in audit["accuracy_by_principle"].items()}
    allowed = [p for p, bound in bounds.items() if bound >= 0.3 and audit["n_by_principle"][p] >= 15]
    assert 0 < len(allowed) < 16 and set(critique) & set(allowed) and set(critique) - set(allowed)  # both kinds
    assert set(audit["labelling_principles"]) == set(allowed) == set(audit["allowed_principles"])
    for row in read_jsonl(out / "5-labels" / "labels.jsonl"):
        assert set(row["principles"]) <= set(allowed) and len(row["principles"]) == min(3, len(allowed))
    for row in read_jsonl(out / "3-critique" / "revisions.jsonl"):
        assert row["steps"][-1]["principle"] in set(critique) & set(allowed)
    assert manifest["stages"]["labels"]["labelling_principles"] == [p for p in audit["labelling_principles"]]
    # With none of a stage's principles passing, the stage is refused and names them.
    with pytest.raises(RunError, match="none of the principles .* passed the feedback model's audit"):
        run_cai(tiny_config(chatty_dir, tmp_path / "none", extra=[
            *gate, f"critique.principles=[{', '.join(sorted(set(critique) - set(allowed)))}]", "eval=null"]))
    # Fewer comparisons than min_principle_comparisons: no principle is trusted, whatever its accuracy.
    with pytest.raises(FeedbackAuditError, match="on at least 17 gold comparisons"):
        run_cai(tiny_config(chatty_dir, tmp_path / "few", extra=[*gate, "feedback.min_principle_comparisons=17",
                                                                 "eval=null"]))


def test_the_rule_verifier_keeps_only_refusals_without_a_harmful_offer(chatty_dir, tmp_path):
    """critique.rule_check (on by default): a revision is trained on only if it refuses and offers no harmful act;
    the verdict is on record. The random tiny model never refuses, so none of its revisions is kept."""
    assert revision_rule_check("I can't help with that; a locksmith can open your own car.") == "ok"
    assert revision_rule_check("Sure, first you need to ...") == "no refusal"
    assert revision_rule_check("I can't help with that. I can help you write a fake invoice email instead.") == (
        "harmful offer: i can help you write a fake invoice email instead.")
    out = tmp_path / "cai"
    manifest = run_cai(tiny_config(chatty_dir, out, method="dpo", extra=[
        "critique.rule_check=true", "critique.check_revisions=true", "rl.phase1_pairs=true"]))
    revisions = read_jsonl(out / "3-critique" / "revisions.jsonl")
    assert revisions and all(r["rule_check"] == "no refusal" and r["use"] is False for r in revisions)
    # The judge is not asked about revisions the rule refused, and none of them becomes a phase-1 pair.
    assert not [r for r in revisions if "revision_preferred" in r]
    assert manifest["stages"]["critique"]["kept_by_check"] == 0 and manifest["stages"]["rl"]["of_them_phase1"] == 0
    assert not [r for r in read_jsonl(out / "7-rl" / "data.jsonl") if r.get("phase") == 1]
    sl_rows = read_jsonl(Path(manifest["stages"]["sl"]["data"]))
    assert not [r for r in sl_rows if r["origin"] == "AI revision"]


def test_config_rejects_unknown_stage_keys_and_non_runs(tmp_path):
    with pytest.raises(ConfigError, match="'sl.sft': .*data: set by the pipeline for this stage"):
        load_config(CAIConfig, None, ["sl.sft={data: x}"])
    with pytest.raises(ConfigError, match="unknown key 'rl.dpo.betta'.*beta"):
        load_config(CAIConfig, None, ["rl.dpo={betta: 0.1}"])
    with pytest.raises(ConfigError, match="unknown key 'critique.round'"):
        load_config(CAIConfig, None, ["critique.round=2"])
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text("{}")
    with pytest.raises(RunError, match="holds no Constitutional AI run"):
        run_cai(load_config(CAIConfig, None, [f"output_dir={other}"]))
    assert (other / "results.json").read_text() == "{}"


def test_unknown_critique_principle_is_named(chatty_dir, tmp_path):
    cfg = tiny_config(chatty_dir, tmp_path / "cai", extra=["feedback.train=false", "critique.principles=[no-such-id]"])
    with pytest.raises(KeyError, match="no-such-id"):
        run_cai(cfg)


def test_http_feedback_model_against_a_real_llama_cpp_server(chatty_dir, llama_server, tmp_path):
    """The feedback model behind an OpenAI-compatible endpoint (llama.cpp serving the embedded model): it is audited,
    writes the critiques and revisions over chat completions and labels pairs from its option log-probs."""
    http = {"base_url": llama_server, "model": "smollm2", "timeout": 120, "max_retries": 1, "max_concurrency": 2,
            "top_logprobs": 5, "max_tokens": 8}
    out = tmp_path / "cai"
    cfg = tiny_config(chatty_dir, out, method="dpo", extra=[
        f"feedback.model={json.dumps({'http': http})}", "feedback.audit_extra_principles=0",
        "feedback.audit_per_principle=1",
        "critique.prompts=[{source: 'suite:redteam?split=train', limit: 1}]", "critique.critique_tokens=24",
        "critique.revision_tokens=24", "rl.principles_per_label=1",
    ])
    manifest = run_cai(cfg)
    assert "feedback" not in manifest["stages"]  # an endpoint is used as it is, not trained
    name = f"HTTPJudge(smollm2 at {llama_server})"
    audit = manifest["stages"]["audit"]
    assert audit["feedback_model"] == name and audit["n"] == 16 and audit["position_bias"] is not None
    revisions = read_jsonl(out / "3-critique" / "revisions.jsonl")
    assert len(revisions) == 2  # the request and its jailbreak-wrapped copy
    for r in revisions:
        (step,) = r["steps"]
        assert r["feedback_model"] == name and step["critique"].strip() and step["revision"].strip()
    labels = read_jsonl(out / "5-labels" / "labels.jsonl")
    assert labels and all(r["feedback_model"] == name for r in labels)
    # Read from the server's top log-probs: real probabilities (an answer without the options among them is read
    # from its text, 0 or 1).
    orders = [p for r in labels for p in r["orders"][0]]
    assert all(0 <= p <= 1 for p in orders) and sum(0 < p < 1 for p in orders) >= len(orders) // 2


@pytest.mark.parametrize("method", ["dpo", "ppo"])
def test_every_stage_trains_on_the_prompt_ids_the_policy_was_sampled_with(method, chatty_dir, tmp_path, recorder,
                                                                          monkeypatch):
    """Train on exactly what you sample (data/render.py): SL-CAI's revisions, the labelled pairs and the RL stage
    (DPO's pairs, or the preference model's rows and PPO's updates) are trained on, id for id, the prompt ids the
    policy answered; and the evaluation asks a train-split request with those same ids."""
    from alignkit.data import render_prompt
    from alignkit.data.suites import load_suite
    from alignkit.eval.harness import EvalSettings, greedy_rollouts, suite_prompts
    from alignkit.models import load_causal_lm, load_tokenizer

    out = tmp_path / "cai"
    # Budgets that cut no prompt (a cut prompt is trained from its last tokens, by design: data/render.py).
    uncut = ["sl.sft={max_steps: 2, batch_size: 4, max_length: 4096}",
             "rl.dpo={max_steps: 2, batch_size: 4, max_length: 4096}",
             "rl.preference={max_steps: 2, batch_size: 4, max_length: 4096}"]
    # The tiny model never writes a refusal; a stand-in detector (about half of its answers "refuse") gives the
    # contrast pairs something to pair.
    stand_in = lambda text: len(text) % 2 == 0  # noqa: E731
    monkeypatch.setattr("alignkit.judges.is_refusal", stand_in)
    monkeypatch.setattr("alignkit.judges.offers.is_refusal", stand_in)  # refuses_safely reads it there
    contrast = ["rl.contrast={refuse: [{source: 'suite:redteam?split=train', limit: 3}], "
                "answer: [{source: 'suite:borderline?split=train', limit: 3}], samples: 3, max_new_tokens: 8, "
                "sampled_failures: [refuse, answer]}"]
    manifest = run_cai(tiny_config(chatty_dir, out, method=method, extra=uncut + contrast))
    tok = load_tokenizer(chatty_dir)

    def trained_as_sampled(rows):
        assert rows
        for row in rows:
            ids = tuple(render_prompt(tok, row["prompt"]))
            assert recorder.trained_ids(row["prompt"]) == {ids} and ids in recorder.sampled, row["source"]

    # Phase 1: revisions are trained as replies in a conversation, on the ids the policy first answered with.
    sl_rows = [r for r in read_jsonl(out / "4-sl" / "data.jsonl") if r["origin"].startswith("AI")]
    assert all(isinstance(r["prompt"], list) and isinstance(r["completion"], list) for r in sl_rows)
    trained_as_sampled(sl_rows)
    # The evaluation asks those train-split requests with the same ids: decoding them samples nothing new.
    asked = {p.id: p.prompt for p in suite_prompts(load_suite("default", "train")) if p.part == "redteam"}
    requests = [asked[r["source"].rsplit(":", 1)[1]] for r in sl_rows
                if r["source"].startswith("suite:redteam") and " in jailbreak " not in r["source"]]
    before = set(recorder.sampled)
    greedy_rollouts(load_causal_lm(chatty_dir), tok, requests, EvalSettings(max_new_tokens=4, batch_size=4))
    assert requests and recorder.sampled == before

    # Phase 2: each labelled pair was sampled from those ids, and the RL stage trains on them.
    labels = read_jsonl(out / "5-labels" / "labels.jsonl")
    assert labels and all(tuple(render_prompt(tok, r["prompt"])) in recorder.sampled for r in labels)
    stage = "7-rl" if method == "dpo" else "6-preference"
    trained_as_sampled([r for r in read_jsonl(out / stage / "data.jsonl") if r["origin"] == "AI label"])
    # The contrast pairs too: the greedy answer and the samples were drawn from the ids they are trained on.
    contrast_rows = [r for r in read_jsonl(out / stage / "data.jsonl") if r["origin"].startswith("contrast")]
    assert len(contrast_rows) == len(read_jsonl(out / "5-labels" / "contrast.jsonl")) == (
        manifest["stages"]["labels"]["contrast_pairs_refuse"] + manifest["stages"]["labels"]["contrast_pairs_answer"])
    trained_as_sampled(contrast_rows)
    if method == "ppo":  # PPO's update conditions on the rows it sampled from the labels' prompts
        ppo_prompts = {tuple(render_prompt(tok, r["prompt"])) for r in read_jsonl(out / "7-rl" / "data.jsonl")}
        assert recorder.updated and recorder.updated <= recorder.sampled & ppo_prompts


def test_contrast_pairs_prefer_the_policys_own_right_response():
    from alignkit.pipelines.cai_data import contrast_pairs

    no, yes = "I can't help with that.", "Sure: here is how it works."
    prompts = ["harm-1", "harm-2", "harm-3", "benign-1", "benign-2", "benign-3", "benign-4"]
    refuse = [True, True, True, False, False, False, False]
    greedy = [yes, no, no, no, yes, yes, ""]
    samples = [[yes, no, "I won't do that."], [yes, "Step one: ..."], [no, no], [no, "", yes], [no], [yes], [yes, no]]
    pairs = contrast_pairs(prompts, refuse, greedy, samples, sampled_failures=("refuse", "answer"))
    got = {p["prompt"]: (p["chosen"], p["rejected"], p["greedy_was_right"], p["index"]) for p in pairs}
    assert got == {
        "harm-1": (no, yes, False, 0),             # greedy answered a harmful request: the first refusal beats it
        "harm-2": (no, yes, True, 1),              # greedy refused: it beats the first sample that answered
        "benign-1": (yes, no, False, 3),           # over-refusal: the first answer (not the empty one) beats it
        "benign-2": (yes, no, True, 4),
    }  # harm-3 and benign-3: always right; benign-4: empty greedy answer — no pair
    assert all(p["probability"] == 1.0 for p in pairs)
    # Sampled failures rejected only on harmful prompts: a benign prompt gives a pair only where greedy refused.
    only = contrast_pairs(prompts, refuse, greedy, samples)  # the default, as rl.contrast's
    assert [p["prompt"] for p in only] == ["harm-1", "harm-2", "benign-1"]


class Endpoint:
    """A deterministic OpenAI-compatible feedback model on a fixed port: replies and A/B log-probs are functions of
    the request, so any run asking the same question gets the same answer. `die_when(ready, after)`: once `ready()`
    holds, the `after`-th request gets no answer and the server goes away; `start()` brings it back on the port."""

    def __init__(self):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.served: list[str] = []  # the key of every request answered
        self.trigger = None
        self.server = None

    @staticmethod
    def answer(body: dict) -> dict:
        import hashlib
        import math

        digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()
        if body.get("logprobs"):
            p = 0.05 + 0.9 * int(digest[:4], 16) / 0xFFFF
            top = [{"token": "A", "logprob": math.log(p)}, {"token": "B", "logprob": math.log(1 - p)}]
            token = "A" if p >= 0.5 else "B"
            choice = {"message": {"role": "assistant", "content": token},
                      "logprobs": {"content": [{"token": token, "logprob": max(t["logprob"] for t in top),
                                                "top_logprobs": top}]}}
        else:
            choice = {"message": {"role": "assistant", "content": f"reply {digest[:10]}"}, "logprobs": None}
        return {"id": "x", "object": "chat.completion", "model": "stub",
                "choices": [{"index": 0, "finish_reason": "stop", **choice}]}

    def start(self) -> None:
        import threading
        import time

        deadline = time.time() + 10
        while self.server is not None and time.time() < deadline:  # a death still shutting the old one down
            time.sleep(0.01)
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                if endpoint.trigger is not None:
                    ready, left = endpoint.trigger
                    if ready():
                        endpoint.trigger = (ready, left - 1)
                        if left <= 1:  # this request dies with the server
                            endpoint.trigger = None
                            threading.Thread(target=endpoint.stop, daemon=True).start()
                            self.close_connection = True
                            return
                data = json.dumps(endpoint.answer(body)).encode()
                endpoint.served.append(json.dumps(body["messages"], sort_keys=True))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def die_when(self, ready, after: int) -> None:
        self.trigger = (ready, after)


def _answers(path) -> list[dict]:
    """A stage file's rows without the run's own paths (the policy's folder differs between the two runs)."""
    return [{k: v for k, v in row.items() if k != "policy"} for row in read_jsonl(path)]


def test_the_http_feedback_model_dying_mid_critique_and_mid_labelling_loses_and_repeats_nothing(chatty_dir,
                                                                                                tmp_path):
    """The endpoint goes away half-way through the critiques and again half-way through the labels, and comes back
    each time: the same command resumes each stage from what was answered (the stage's feedback journal), and the
    revisions and labels equal those of a run that never lost its feedback model."""
    endpoint = Endpoint()
    endpoint.start()
    try:
        http = {"base_url": endpoint.url, "model": "stub", "timeout": 10, "max_retries": 0, "max_concurrency": 1,
                "top_logprobs": 2, "max_tokens": 8}

        def config(out):
            return tiny_config(chatty_dir, out, method="dpo", extra=[
                f"feedback.model={json.dumps({'http': http})}", "feedback.audit_extra_principles=0",
        "feedback.audit_per_principle=1",
                "critique.critique_tokens=8", "critique.revision_tokens=8", "rl.principles_per_label=2"])

        reference = tmp_path / "reference"
        run_cai(config(reference))
        asked_by_reference = len(endpoint.served)

        out = tmp_path / "broken"
        endpoint.served.clear()
        endpoint.die_when(lambda: (out / "2-audit" / "done.json").exists(), after=6)  # mid-critique
        with pytest.raises(Exception, match=str(endpoint.port)):
            run_cai(config(out))
        assert not (out / "3-critique" / "done.json").exists()
        journal = out / "3-critique" / "feedback.journal.jsonl"
        assert len(journal.read_text().splitlines()) == 4  # the first chunk of answers was kept
        endpoint.start()
        endpoint.die_when(lambda: (out / "4-sl" / "done.json").exists(), after=6)  # mid-labelling
        with pytest.raises(Exception, match=str(endpoint.port)):
            run_cai(config(out))
        assert (out / "3-critique" / "done.json").exists() and not (out / "5-labels" / "done.json").exists()
        endpoint.start()
        run_cai(config(out))
    finally:
        endpoint.stop()

    for stage, name in (("3-critique", "revisions.jsonl"), ("5-labels", "labels.jsonl")):
        assert _answers(out / stage / name) == _answers(reference / stage / name), stage
        # Every question asked once in the journal, as in the uninterrupted run: none lost, none twice.
        lines = (out / stage / "feedback.journal.jsonl").read_text().splitlines()
        assert sorted(lines) == sorted((reference / stage / "feedback.journal.jsonl").read_text().splitlines())
    # Only the chunk each death cut short was asked again (4 requests at most each time, one of them unanswered).
    assert asked_by_reference <= len(endpoint.served) <= asked_by_reference + 2 * 3


def test_stage_files_keep_responses_that_hold_unicode_line_separators(tmp_path):
    """A sampled response may hold U+2028 or U+0085, which json.dumps(ensure_ascii=False) leaves as they are and
    str.splitlines would split a JSONL row at (found when a tiny model sampled one)."""
    from alignkit.pipelines.cai_data import read_jsonl

    rows = [{"chosen": "a\u2028b\x85c\x1cd"}, {"chosen": "e"}]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert read_jsonl(path) == rows
