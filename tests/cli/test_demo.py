"""`make demo`'s pipeline with the demo's own settings on a tiny model: every stage, the report and the final model,
and finished stages reused on a second run. Only step counts are cut (and the audit gate is overridden: a random
tiny model cannot pass it)."""

from __future__ import annotations

import json

from alignkit.cli import main
from alignkit.pipelines.cai import STAGES
from alignkit.pipelines.demo import demo_config

TINY = ["feedback.override_audit=true", "feedback.sft.max_steps=3", "feedback.judge_sft.max_steps=3",
        "sl.sft.max_steps=3", "rl.dpo.max_steps=2",
        "critique.critique_tokens=8", "critique.revision_tokens=16", "critique.max_new_tokens=16",
        "rl.max_new_tokens=16", "rl.contrast.max_new_tokens=16", "eval.max_new_tokens=16"]


def test_demo_settings_are_the_dpo_variant_of_the_recipe():
    cfg = demo_config("runs/demo", "smollm2-135m")
    assert cfg.rl.method == "dpo" and cfg.feedback.train and cfg.feedback.min_accuracy == 0.7
    assert not cfg.feedback.override_audit and cfg.eval is not None
    # Overrides merge into the demo's stage settings rather than replacing them.
    tiny = demo_config("x", "m", ["feedback.sft.max_steps=3"])
    assert tiny.feedback.sft.max_steps == 3 and tiny.feedback.sft.lr == cfg.feedback.sft.lr
    # The judge is taught on its own and gated per principle.
    assert cfg.feedback.judge_sft and cfg.feedback.min_principle_accuracy == 0.5
    assert cfg.feedback.min_principle_comparisons == 15  # the Wilson bound above chance on at least 15
    # Its train-side prompts are the set it was tuned on, the first rows of each built-in train source; the
    # demonstrations are all the benign and borderline ones.
    assert [m.limit for m in cfg.critique.prompts + cfg.rl.prompts + cfg.sl.helpful] == [72, 72, 40, None]
    assert cfg.critique.rule_check and cfg.critique.revision_form == "short" and cfg.critique.check_margin == 0.1
    # The rule verifier labels beside the judge, on prompts people marked harmful or benign.
    assert cfg.rl.verifier and [m.harmful for m in cfg.rl.prompts] == [True, False]
    # Phase 2 also learns from the policy's own failures on prompts people marked harmful or benign.
    assert cfg.rl.contrast is not None and cfg.rl.contrast.sampled_failures == ["refuse"]


def test_demo_runs_every_stage_writes_the_report_and_the_final_model(tiny_dir, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--model", tiny_dir, *TINY]) == 0
    manifest = json.loads((out / "cai.json").read_text())
    assert set(manifest["stages"]) == set(STAGES) - {"preference"}  # DPO needs no preference model
    assert (out / "final" / "model.safetensors").is_file() and (out / "final" / "tokenizer.json").is_file()
    results = json.loads((out / "8-eval" / "results.json").read_text())
    assert [m["name"] for m in results["models"]] == ["base", "sl-cai", "rl-cai"] and len(results["metrics"]) == 3
    assert results["pipeline"]["rl_method"] == "dpo" and "audit" in results["pipeline"]["stages"]
    html = (out / "report.html").read_text(encoding="utf-8")
    for needle in ('id="stages-table"', 'id="effects-table"', "Feedback-model audit", "Written by people",
                   "Produced by AI during this run", 'data-stage="critique"', "labels with it"):
        assert needle in html, needle
    printed = capsys.readouterr().out
    assert "Feedback model audit: accuracy" in printed and "rl-cai" in printed
    # The final model's card carries the held-out results the eval stage measured, for every model.
    card = (out / "final" / "README.md").read_text(encoding="utf-8")
    assert "## Held-out evaluation" in card and "| metric | base | sl-cai | rl-cai |" in card
    asr = [results["metrics"][name]["asr"] for name in ("base", "sl-cai", "rl-cai")]
    assert "| asr | " + " | ".join(f"{v:.3f}" for v in asr) + " |" in card
    assert "| asr_judge |" not in card  # not measured (no judge): no row
    assert "alignkit demo --out" in card and str(tmp_path) not in card

    weights = (out / "final" / "model.safetensors").read_bytes()
    assert main(["demo", "--out", str(out), "--model", tiny_dir, *TINY]) == 0
    printed = capsys.readouterr().out
    assert all(f"cai {stage}: finished earlier" in printed for stage in manifest["stages"])
    assert (out / "final" / "model.safetensors").read_bytes() == weights
