"""Pipelines on two CPU processes (accelerate launch, gloo) produce what one process does.

Iterative DPO: each process samples and scores its block of a round's generation batches (the batches and seeds of
one process) and of the evaluation's, the rows are gathered, the main process writes the round's files, and both
processes train the round's DPO run together. The samples, pairs, evaluations and round records are the same as
one process's, and so, within 1e-5, are the final weights.

Constitutional AI and compare: the same, stage by stage (below), down to the held-out evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignkit.data import user_turn
from tests.train import launched


@pytest.fixture(scope="module")
def prompt_files(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("pipeline-prompts")
    train, held_out = folder / "train.jsonl", folder / "eval.jsonl"
    train.write_text("".join(json.dumps({"prompt": user_turn(f"question number {i}")}) + "\n" for i in range(8)))
    held_out.write_text("".join(json.dumps({"prompt": user_turn(f"another question {i}")}) + "\n" for i in range(6)))
    return str(train), str(held_out)


def _iterative_dpo(model: str, prompts: tuple[str, str], out: Path, grad_accum: int) -> list[str]:
    # 8 prompts a round, one per generation batch (4 sequences): each of two processes samples 4 of them; the 6
    # evaluation prompts are 2 batches of 4 and 2, one a process. DPO's global batch is 4 pairs either way.
    return ["-m", "alignkit.cli", "iterative-dpo", f"model={model}", f"data.train={prompts[0]}",
            f"data.eval={prompts[1]}", f"output_dir={out}", "rounds=2", "prompts_per_round=8",
            "samples_per_prompt=4", "generation_batch_size=4", "max_new_tokens=6", "max_length=64", "batch_size=2",
            f"grad_accum={grad_accum}", "epochs=1", "lr=5e-3", "beta=0.1", "precision=fp32", "progress=false",
            "judge={regex: '[a-m]'}"]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_iterative_dpo_on_two_processes_matches_one(tiny_dir, prompt_files, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    launched.run(_iterative_dpo(tiny_dir, prompt_files, one, grad_accum=2), 1)
    launched.run(_iterative_dpo(tiny_dir, prompt_files, two, grad_accum=1), 2)
    assert json.loads((two / "summary.json").read_text())["processes"] == 2
    assert json.loads((one / "initial_eval.json").read_text()) == json.loads((two / "initial_eval.json").read_text())
    for r in ("round-01", "round-02"):
        assert _lines(one / r / "samples.jsonl") == _lines(two / r / "samples.jsonl"), r
        assert _lines(one / r / "pairs.jsonl") == _lines(two / r / "pairs.jsonl"), r
        a, b = (json.loads((run / r / "done.json").read_text())["record"] for run in (one, two))
        for key in ("sample_score", "pairs", "prompts_without_spread", "generated_tokens", "dpo_steps"):
            assert a[key] == b[key], (r, key)
        for key, value in a["eval"].items():
            assert abs(value - b["eval"][key]) < 1e-6, (r, key)
        launched.assert_same_metrics(one / r / "dpo", two / r / "dpo")
    # Not a comparison of two idle runs: the rounds had pairs to train on and moved the weights.
    assert all(len(_lines(one / r / "pairs.jsonl")) >= 4 for r in ("round-01", "round-02"))
    launched.assert_moved(tiny_dir, one)
    launched.assert_same_weights(one, two)


def _cai(model: str, out: Path, grad_accum: int) -> list[str]:
    """test_cai.py's tiny chain with evaluation on, every stage in fp32; each training stage's global batch is 4
    (2 a micro-batch, `grad_accum` of them a step on each process). PPO's batch is global already (its prompts a step
    are split over the processes)."""
    train = f"max_steps: 2, batch_size: 2, grad_accum: {grad_accum}, max_length: 256, precision: fp32, lr: 1e-3"
    return ["-m", "alignkit.cli", "cai", f"model={model}", f"output_dir={out}",
            f"feedback.sft={{{train}}}", f"feedback.judge_sft={{{train}}}", "feedback.override_audit=true",
            "feedback.audit_extra_principles=1", "feedback.batch_size=16",
            "critique.prompts=[{source: 'suite:redteam?split=train', limit: 3}]",
            "critique.max_new_tokens=8", "critique.critique_tokens=8", "critique.revision_tokens=8",
            "critique.principles=[harmless-ethical, no-dangerous-assistance]", "critique.rule_check=false",
            "sl.helpful=[{source: 'builtin:sft', categories: [benign], limit: 3}]",
            "sl.policy_answers=[{source: 'suite:borderline?split=train', limit: 2}]", f"sl.sft={{{train}}}",
            "rl.prompts=[{source: 'suite:redteam?split=train', limit: 2}, "
            "{source: 'suite:borderline?split=train', limit: 2}]",
            "rl.method=ppo", "rl.max_new_tokens=8", "rl.min_confidence=0.0",
            "rl.helpful_preferences=[{source: 'builtin:preference', categories: [benign], limit: 2}]",
            f"rl.preference={{{train}}}",
            "rl.ppo={max_steps: 2, prompts_per_step: 2, max_new_tokens: 8, batch_size: 2, minibatch_size: 2, "
            "precision: fp32, lr: 1e-3}",
            "eval={max_new_tokens: 4, batch_size: 32}"]


# Each training stage's run folder under the run.
CAI_RUNS = ("1-feedback/writer", "1-feedback/judge", "4-sl/run", "6-preference/run", "7-rl/run")
CAI_FILES = ("1-feedback/critique_data.jsonl", "1-feedback/comparison_data.jsonl", "3-critique/revisions.jsonl",
             "4-sl/data.jsonl", "5-labels/labels.jsonl", "6-preference/data.jsonl", "7-rl/data.jsonl")


def test_cai_on_two_processes_matches_one(chatty_dir, tmp_path):
    """Every stage splits its sampling, critiques, revisions and judgements over the processes and trains as one
    data-parallel run; the main process writes. Each stage's output is what one process writes."""
    one, two = tmp_path / "one", tmp_path / "two"
    launched.run(_cai(chatty_dir, one, grad_accum=2), 1)
    launched.run(_cai(chatty_dir, two, grad_accum=1), 2)
    def read(run: Path, name: str) -> list[dict]:  # paths in the rows named as from one run folder
        text = (run / name).read_text().replace(str(run), "RUN")
        return [json.loads(line) for line in text.splitlines()] if name.endswith(".jsonl") else [json.loads(text)]

    for name in CAI_FILES:
        assert read(one, name) == read(two, name), name
        assert read(one, name), name  # not a comparison of two empty stages
    assert read(one, "2-audit/audit.json") == read(two, "2-audit/audit.json")
    for name in CAI_RUNS:
        launched.assert_same_metrics(one / name, two / name)
    results = [json.loads((run / "8-eval" / "results.json").read_text()) for run in (one, two)]
    for model, metrics in results[0]["metrics"].items():
        for key, value in metrics.items():
            other = results[1]["metrics"][model][key]
            assert (value is None and other is None) or abs(value - other) < 1e-6, (model, key, value, other)
    assert {"base", "sl-cai", "rl-cai"} <= set(results[0]["metrics"])
    assert (two / "report.html").is_file() and json.loads((two / "cai.json").read_text())["final"]
    launched.assert_moved(chatty_dir, one)
    for stage in ("1-feedback/writer", "1-feedback/judge", "4-sl/run", "6-preference/run"):
        launched.assert_same_weights(one / stage, two / stage)
    launched.assert_same_weights(one, two, adam_moves=2 * 1e-3)  # the PPO stage: Adam, 2 steps at lr 1e-3


def _compare(model: str, out: Path, grad_accum: int) -> list[str]:
    """Three recipes, one seed, on the tiny model, in fp32: each offline stage's global batch is 4 (2 a micro-batch,
    `grad_accum` of them a step on each process); PPO's 2 prompts a step are global already."""
    own = f"grad_accum: {grad_accum}, batch_size: 2, precision: fp32"
    cai = [f"cai.{stage}={{batch_size: 2, grad_accum: {grad_accum}, precision: fp32, max_steps: 2}}"
           for stage in ("feedback.sft", "feedback.judge_sft", "sl.sft", "rl.dpo")]
    return ["-m", "alignkit.cli", "compare", f"model={model}", f"output_dir={out}", "recipes=[sft-dpo, sft-ppo, cai]",
            "seeds=[0]", "steps=2", "batch_size=2", "max_length=256",
            f"stages={{sft: {{{own}}}, dpo: {{{own}}}, reward: {{{own}}}, "
            "ppo: {max_new_tokens: 8, batch_size: 2, precision: fp32}}",
            "eval.max_new_tokens=8", "eval.batch_size=16", "eval.parts=[redteam, borderline, verifiable]",
            "cai.critique.prompts=[{source: 'suite:redteam?split=train', limit: 3}]",
            "cai.rl.prompts=[{source: 'suite:redteam?split=train', limit: 2}]",
            "cai.sl.helpful=[{source: 'builtin:sft', categories: [benign], limit: 4}]",
            "cai.rl.helpful_preferences=[{source: 'builtin:preference', categories: [benign], limit: 4}]",
            "cai.feedback.override_audit=true", "cai.critique.critique_tokens=8", "cai.critique.revision_tokens=8",
            "cai.critique.max_new_tokens=8", "cai.rl.max_new_tokens=8", *cai]


def test_compare_on_two_processes_matches_one(chatty_dir, tmp_path):
    """Each stage's process is started by both processes and the two train it as one data-parallel run (a cai
    stage as the cai pipeline above); the evaluation's answers are split; the main process writes. Every stage's
    logged metrics, every model's held-out metrics and the table are one process's."""
    one, two = tmp_path / "one", tmp_path / "two"
    launched.run(_compare(chatty_dir, one, grad_accum=2), 1)
    launched.run(_compare(chatty_dir, two, grad_accum=1), 2)
    stages = sorted(p.relative_to(one) for p in (one / "stages").glob("*/seed-0/run")
                    if (p / "metrics.jsonl").is_file())
    assert len(stages) == 4, stages  # sft, sft+dpo, sft+reward, sft+reward+ppo (cai's are in its own folders)
    for stage in stages:
        launched.assert_same_metrics(one / stage, two / stage)
    for name in ("4-sl/run", "7-rl/run"):
        launched.assert_same_metrics(one / "stages/cai/seed-0/run" / name, two / "stages/cai/seed-0/run" / name)
    results = [json.loads((run / "eval" / "results.json").read_text())["metrics"] for run in (one, two)]
    assert set(results[0]) == {"start", "sft-dpo/seed-0", "sft-ppo/seed-0", "cai/seed-0"} == set(results[1])
    for model, metrics in results[0].items():
        for key, value in metrics.items():
            other = results[1][model][key]
            assert (value is None and other is None) or abs(value - other) < 1e-6, (model, key, value, other)
    tables = [json.loads((run / "comparison.json").read_text())["table"] for run in (one, two)]
    for recipe, row in tables[0].items():  # the same metrics as results.json's, to the same tolerance
        for key, entry in row.items():
            if key not in ("seconds", "peak_rss_gb", "seeds", "failed"):
                other = tables[1][recipe][key]
                assert (entry["mean"] is None) == (other["mean"] is None), (recipe, key)
                assert entry["mean"] is None or abs(entry["mean"] - other["mean"]) < 1e-6, (recipe, key, entry, other)
    for recipe in ("sft-dpo", "sft-ppo"):
        folder = "stages/" + {"sft-dpo": "sft+dpo", "sft-ppo": "sft+reward+ppo"}[recipe] + "/seed-0/run"
        launched.assert_moved(chatty_dir, one / folder)
        launched.assert_same_weights(one / folder, two / folder)
