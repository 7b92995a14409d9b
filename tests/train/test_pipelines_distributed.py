"""Pipelines on two CPU processes (accelerate launch, gloo) produce what one process does.

Iterative DPO: each process samples and scores its block of a round's generation batches (the batches and seeds of
one process) and of the evaluation's, the rows are gathered, the main process writes the round's files, and both
processes train the round's DPO run together. The samples, pairs, evaluations and round records are the same as
one process's, and so, within 1e-5, are the final weights.
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


def test_cai_and_compare_under_a_launcher_say_they_run_in_one_process(tiny_dir, tmp_path, monkeypatch):
    """Not split over processes yet: started as two, each says so before it claims its folder (not a confusing
    'folder in use' from the second process)."""
    from alignkit.pipelines.cai import run_cai
    from alignkit.pipelines.compare import CompareError, run_compare
    from alignkit.train.run import RunError
    from tests.test_compare import tiny_compare
    from tests.train.test_cai import tiny_config

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RunError, match="alignkit cai runs in one process for now.*2 processes"):
        run_cai(tiny_config(tiny_dir, tmp_path / "cai"))
    assert not (tmp_path / "cai").exists()
    with pytest.raises(CompareError, match="alignkit compare runs in one process for now"):
        run_compare(tiny_compare(tiny_dir, tmp_path / "compare"))
    assert not (tmp_path / "compare").exists()
