"""The demo pipeline end to end on a tiny model: results file, and finished stages reused on a second run."""

from __future__ import annotations

import json

from alignkit.demo import run_demo


def test_demo_runs_sft_then_dpo_and_reuses_finished_stages(tiny_dir, tmp_path, capsys):
    out = tmp_path / "demo"
    results = run_demo(str(out), model=tiny_dir)
    saved = json.loads((out / "demo_results.json").read_text())
    assert saved["vs_base"].keys() == {"base", "sft", "dpo"}
    base = saved["vs_base"]["base"]
    assert base["reward_margin"] == 0 and base["kl_to_reference"] < 1e-6 and base["pairs"] == 40
    assert saved["vs_base"]["sft"]["kl_to_reference"] > 0  # training moved the model away from the base
    assert len(saved["samples"]) == 6 and all({"base", "sft", "dpo"} <= s.keys() for s in saved["samples"])
    assert results["vs_base"] == saved["vs_base"]
    weights = (out / "dpo" / "final" / "model.safetensors").read_bytes()
    capsys.readouterr()

    run_demo(str(out), model=tiny_dir)
    printed = capsys.readouterr().out
    assert "SFT: reusing the finished run" in printed and "DPO: reusing the finished run" in printed
    assert (out / "dpo" / "final" / "model.safetensors").read_bytes() == weights
