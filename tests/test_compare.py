"""`alignkit compare` on the tiny model: every recipe, shared stages trained once, the evaluation, the table with
seed-to-seed spread and the plot; more seeds train only what is new, a rerun resumes, other settings are refused."""

from __future__ import annotations

import json
import socket

import pytest

from alignkit.cli import main
from alignkit.pipelines.compare import (
    RECIPES,
    CompareConfig,
    CompareError,
    Comparison,
    TrainedStage,
    comparison_markdown,
    comparison_table,
    run_compare,
)
from alignkit.pipelines.demo import demo_config
from alignkit.train.config import ConfigError
from alignkit.train.config_loading import load_config
from alignkit.utils import processes
from alignkit.utils.stages import read_finished

# The CAI recipe is the demo's settings with only step counts and lengths cut (a random tiny model cannot pass the
# feedback audit, so it is overridden).
CAI_TINY = ["cai.feedback.override_audit=true", "cai.feedback.sft.max_steps=2", "cai.feedback.judge_sft.max_steps=2",
            "cai.critique.critique_tokens=8", "cai.critique.revision_tokens=8", "cai.critique.max_new_tokens=8",
            "cai.rl.max_new_tokens=8"]


def tiny_compare(model: str, out, *extra: str) -> CompareConfig:
    return load_config(CompareConfig, None, [
        f"model={model}", f"output_dir={out}", "seeds=[0, 1]", "steps=2", "batch_size=4", "max_length=256",
        "stages={ppo: {max_new_tokens: 8, prompts_per_step: 4, minibatch_size: 4, batch_size: 4}, "
        "hbat: {fisher_samples: 2, segments: 1}}",
        "eval.max_new_tokens=8", "eval.parts=[redteam, borderline, verifiable]",
        "cai.critique.prompts=[{source: 'suite:redteam?split=train', limit: 3}]",
        "cai.rl.prompts=[{source: 'suite:redteam?split=train', limit: 2}]",
        "cai.sl.helpful=[{source: 'builtin:sft', categories: [benign], limit: 8}]",
        "cai.rl.helpful_preferences=[{source: 'builtin:preference', categories: [benign], limit: 8}]",
        "cai.feedback.sft.batch_size=4", "cai.sl.sft.batch_size=4", "cai.rl.dpo.batch_size=4", *CAI_TINY, *extra])


def test_every_recipe_trains_and_a_second_seed_gives_the_spread(tiny_dir, tmp_path, capsys):
    """Every recipe for one seed (each trains, is evaluated and gets its row), then two recipes that share their SFT
    stage for seeds 0 and 1 in the same folder: only seed 1 is trained, its SFT stage once for both, and the table
    gives the seed-to-seed spread. (Every recipe for two seeds costs twice the processes and tests nothing more.)"""
    out = tmp_path / "compare"
    summary = run_compare(tiny_compare(tiny_dir, out, "seeds=[0]"))
    first = summary["runs"]
    assert {(r["recipe"], r["seed"]) for r in first} == {(k, 0) for k in RECIPES}
    # A stage shared by recipes (the SFT of sft, sft-ppo, sft-dpo and sft-kto) is trained once and counted in each.
    assert sorted(p.name for p in (out / "stages").iterdir()) == sorted(
        {"+".join(chain[: i + 1]) for chain in RECIPES.values() for i in range(len(chain))})
    assert len({r["stages"][0]["seconds"] for r in first if r["stages"][0]["stage"] == "sft"}) == 1
    for r in first:
        assert r["seconds"] == pytest.approx(sum(s["seconds"] for s in r["stages"]), abs=0.2)
        assert r["peak_rss_gb"] == max(s["peak_rss_gb"] for s in r["stages"]) > 0
        stage_cfg = json.loads((out / "stages" / "+".join(RECIPES[r["recipe"]]) / "seed-0" / "stage.json").read_text())
        if stage_cfg["kind"] not in ("cai", "hbat"):
            assert stage_cfg["config"]["max_steps"] == 2 and stage_cfg["config"]["seed"] == 0
    hbat = json.loads((out / "stages" / "hbat" / "seed-0" / "run" / "schedule.json").read_text())
    assert hbat["total_steps"] == 4  # sft-dpo's budget: 2 SFT steps and 2 DPO steps
    # Every model was evaluated against the start model; the start model's drift from itself is zero.
    results = json.loads((out / "eval" / "results.json").read_text())
    assert set(results["metrics"]) == {"start"} | {f"{k}/seed-0" for k in RECIPES}
    assert results["metrics"]["start"]["kl_to_reference"] == pytest.approx(0.0, abs=1e-6)
    assert list(summary["table"]) == list(RECIPES)
    text = (out / "comparison.md").read_text()
    assert all(f"| {recipe} |" in text for recipe in RECIPES)
    assert (out / "pareto.png").stat().st_size > 1000 and (out / "eval" / "report.html").is_file()

    # Two seeds: seed 0 is not trained again; seed 1's SFT stage is trained once for both recipes.
    two = ["recipes=[sft-dpo, sft-kto]", "seeds=[0, 1]"]
    summary = run_compare(tiny_compare(tiny_dir, out, *two))
    runs = summary["runs"]
    assert [r for r in runs if r["seed"] == 0] == [r for r in first if r["recipe"] in ("sft-dpo", "sft-kto")]
    assert sorted(p.name for p in (out / "stages" / "sft").iterdir()) == ["seed-0", "seed-1"]
    for seed in (0, 1):
        assert len({r["stages"][0]["seconds"] for r in runs if r["seed"] == seed}) == 1
    results = json.loads((out / "eval" / "results.json").read_text())
    assert set(results["metrics"]) == {"start"} | {f"{k}/seed-{s}" for k in ("sft-dpo", "sft-kto") for s in (0, 1)}
    table = summary["table"]
    assert list(table) == ["sft-dpo", "sft-kto"]
    for recipe, row in table.items():
        values = [results["metrics"][f"{recipe}/seed-{s}"]["asr"] for s in (0, 1)]
        assert row["asr"]["mean"] == pytest.approx(sum(values) / 2)
        assert row["asr"]["std"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
        assert row["seconds"]["mean"] > 0 and row["peak_rss_gb"]["mean"] > 0
    assert " ± " in (out / "comparison.md").read_text()

    # A rerun resumes (nothing is trained again); other settings in the same folder are refused.
    assert main(["compare", f"model={tiny_dir}", f"output_dir={out}"]) == 2
    assert "holds a comparison with other settings" in capsys.readouterr().err
    again = run_compare(tiny_compare(tiny_dir, out, *two))
    assert again["runs"] == runs
    # Fewer recipes and seeds in the same folder: nothing is trained again, only what is asked is shown.
    fewer = run_compare(tiny_compare(tiny_dir, out, "recipes=[sft-dpo]", "seeds=[1]"))
    assert fewer["runs"] == [r for r in runs if r["recipe"] == "sft-dpo" and r["seed"] == 1]
    assert list(fewer["table"]) == ["sft-dpo"]
    assert json.loads((out / "config.json").read_text())["recipes"] == ["sft-dpo"]


def test_table_spread_by_hand():
    runs = [{"recipe": "sft", "seed": s, "seconds": t, "peak_rss_gb": 1.0} for s, t in ((0, 10.0), (1, 14.0))]
    metrics = {"sft/seed-0": {"asr": 0.2, "helpful_accuracy": 0.5}, "sft/seed-1": {"asr": 0.4, "helpful_accuracy": None}}
    row = comparison_table(runs, metrics, [0, 1])["sft"]
    assert row["asr"]["mean"] == pytest.approx(0.3) and row["asr"]["std"] == pytest.approx(0.1414213, rel=1e-5)
    assert row["helpful_accuracy"] == {"mean": 0.5, "std": None}  # one seed measured: no spread
    assert row["seconds"]["mean"] == 12.0 and row["seconds"]["std"] == pytest.approx(2.828427, rel=1e-5)


def test_a_failed_seed_is_left_out_of_the_metrics_but_counted():
    runs = [{"recipe": "cai", "seed": 0, "seconds": 10.0, "peak_rss_gb": 2.0},
            {"recipe": "cai", "seed": 1, "seconds": 6.0, "peak_rss_gb": 1.0, "failed": "cai: feedback audit: low"}]
    metrics = {"cai/seed-0": {"asr": 0.2}}
    row = comparison_table(runs, metrics, [0, 1])["cai"]
    assert row["asr"] == {"mean": 0.2, "std": None} and row["failed"] == {1: "cai: feedback audit: low"}
    assert row["seconds"]["mean"] == 8.0  # its cost is still counted
    text = comparison_markdown({"cai": row}, CompareConfig())
    assert "- cai, seed 1: cai: feedback audit: low" in text


def test_a_recipe_stopped_by_its_own_gate_is_reported_not_raised(tiny_dir, tmp_path):
    """CAI's feedback audit refusing the feedback model is an outcome of that seed: the comparison goes on."""
    out = tmp_path / "gated"
    gate = ["cai.feedback.override_audit=false", "cai.feedback.min_accuracy=1.0", "cai.feedback.min_principle_accuracy=0"]
    summary = run_compare(tiny_compare(tiny_dir, out, "recipes=[cai]", "seeds=[0]", *gate))
    (run,) = summary["runs"]
    assert run["failed"].startswith("cai: feedback audit: the feedback model's accuracy") and run["model"] is None
    assert read_finished(out / "stages" / "cai" / "seed-0", TrainedStage).record.failed  # the stage's record, typed
    assert set(json.loads((out / "eval" / "results.json").read_text())["metrics"]) == {"start"}
    assert "Runs stopped by their own gate" in (out / "comparison.md").read_text()
    assert run_compare(tiny_compare(tiny_dir, out, "recipes=[cai]", "seeds=[0]", *gate))["runs"] == [run]  # not retried


def test_what_a_stage_trains_comes_from_its_method_row(tmp_path):
    """No method is branched on by name: the stage after a scorer (the reward model) is judged by it, and a row's
    own compare keys (HBAT's) join the matched budget."""
    cfg = load_config(CompareConfig, None, [f"output_dir={tmp_path / 'cmp'}", "steps=3"])
    comparison = Comparison(cfg, lambda message: None)
    ppo = comparison.stage_spec(("sft", "reward", "ppo"), 0, "start")["config"]
    assert ppo["judge"] == {"reward_model": str(tmp_path / "cmp" / "stages" / "sft+reward" / "seed-0" / "run" /
                                                "final")}
    assert "judge" not in comparison.stage_spec(("sft", "dpo"), 0, "start")["config"]
    hbat = comparison.stage_spec(("hbat",), 0, "start")["config"]
    assert (hbat["sft_steps"], hbat["preference_steps"], hbat["max_steps"]) == (3, 3, -1)
    assert hbat["sft_data"] == {"train": cfg.sft_data}
    assert "sft_steps" not in comparison.stage_spec(("sft", "dpo"), 0, "start")["config"]


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match="unknown key 'stages.dpo.betta'.*beta"):
        load_config(CompareConfig, None, ["stages={dpo: {betta: 1}}"])
    with pytest.raises(ConfigError, match="unknown key 'stages.rlhf'. Valid keys under stages: .*dpo"):
        load_config(CompareConfig, None, ["stages={rlhf: {}}"])
    with pytest.raises(ConfigError, match="seeds: each may appear once"):
        load_config(CompareConfig, None, ["seeds=[1, 1]"])
    with pytest.raises(ConfigError, match="recipes"):
        load_config(CompareConfig, None, ["recipes=[rlhf]"])


def test_cai_settings_are_typed_and_keep_only_what_was_written(tmp_path):
    """`cai` holds keys of `alignkit cai`, checked where they are written; what nobody wrote keeps the demo's value."""
    cfg = load_config(CompareConfig, None, [f"output_dir={tmp_path}", "cai.rl.dpo.beta=0.3", "cai.critique.rounds=2"])
    assert cfg.cai.written() == {"critique": {"rounds": 2}, "rl": {"dpo": {"beta": 0.3}}}
    # Written back and read again (comparison.json, the folder's claimed settings), still only those keys.
    assert CompareConfig.model_validate(cfg.model_dump(mode="json")).cai.written() == cfg.cai.written()
    spec = Comparison(cfg).stage_spec(("cai",), 0, "smollm2-135m")["config"]
    demo = demo_config("x", "smollm2-135m")
    assert spec["rl"]["dpo"]["beta"] == 0.3 and spec["critique"]["rounds"] == 2
    assert spec["critique"]["check_revisions"] is demo.critique.check_revisions is True  # the demo's, not the default
    assert spec["rl"]["dpo"]["lr"] == demo.rl.dpo.lr and spec["rl"]["dpo"]["max_steps"] == cfg.steps
    with pytest.raises(ConfigError, match="unknown key 'cai.rl.dpo.betta'"):
        load_config(CompareConfig, None, ["cai.rl.dpo.betta=1"])
    with pytest.raises(ConfigError, match="cai.critique.rounds"):
        load_config(CompareConfig, None, ["cai.critique.rounds=0"])
    with pytest.raises(ConfigError, match="seed: set by the pipeline"):
        load_config(CompareConfig, None, ["cai.seed=3"])


def test_a_folder_that_is_not_a_comparison_is_refused(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text("{}")
    with pytest.raises(CompareError, match="not empty and holds no comparison"):
        run_compare(load_config(CompareConfig, None, [f"output_dir={other}"]))
    assert (other / "results.json").read_text() == "{}"


def test_a_stage_group_meets_on_a_port_outside_the_range_given_to_outgoing_connections(monkeypatch):
    """A port of the ephemeral range can be taken by an outgoing connection (or a polling client connected to
    itself) before the stage's main process listens on it: the stage then failed now and then on two processes."""
    low = processes._ephemeral_low()
    ports = {processes.free_port() for _ in range(20)}
    assert len(ports) > 1  # drawn, not one fixed port two concurrent comparisons would share
    for port in ports:
        assert (port < low) if low > 11024 else port > 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))  # free to listen on
    monkeypatch.setattr(processes, "_ephemeral_low", lambda: 2000)  # no room below the range: any free port
    port = processes.free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
