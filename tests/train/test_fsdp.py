"""Sharded training (FSDP2, `accelerate launch --config_file configs/accelerate/fsdp.yaml`) on two CPU processes over
gloo computes the same training as one unsharded process with the same global batch: full fine-tuning with gradient
accumulation, evaluation and checkpoints (which hold whole tensors, in the unsharded layout, so a sharded run resumes
on one process); LoRA with gradient checkpointing, saved merged; and online methods (GRPO, PPO with a separate
critic), whose sampling gathers the whole policy on each process. HBAT, whose EWC penalty reads the parameters
itself, refuses to run sharded."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignkit.train.checkpoint import list_checkpoints
from tests.train import launched
from tests.train.test_online_distributed import (
    RUNS,
    _assert_same_training,
    prompt_file,  # noqa: F401 (the fixture)
)
from tests.train.test_online_distributed import _args as online_args
from tests.train.test_train_resume import slowed


def _args(method: str, model: str, data: str, out: Path, batch: int, accum: int, *extra: str) -> list[str]:
    return [
        "-m", "alignkit.cli", method, f"model={model}", f"data.train={data}", f"output_dir={out}", "max_steps=4",
        f"batch_size={batch}", f"grad_accum={accum}", "lr=1e-3", "precision=fp32", "max_length=64", "progress=false",
        "scheduler=constant", *extra,
    ]


def _share(out: Path) -> float:
    """The share of the parameters the main process held: about a half when the model was sharded over two."""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2
    return summary["sharded"]["parameter_share"]


def _evals(out: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k.startswith("eval/") or k == "step"}
            for row in launched.metrics(out) if any(k.startswith("eval/") for k in row)]


def test_sharded_fine_tuning_matches_one_process(tiny_dir, sft_file, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    extra = (f"data.eval={sft_file}", "eval_every=2", "save_every=2", "keep_checkpoints=5")
    launched.run(_args("sft", tiny_dir, sft_file, one, 2, 2, *extra), 1)
    # Per process 1 example x 2 micro-batches: the first micro-batch's gradients stay local (no reduce-scatter).
    launched.run(_args("sft", tiny_dir, sft_file, two, 1, 2, *extra), 2, fsdp=True)
    assert 0.4 < _share(two) < 0.6

    launched.assert_same_metrics(one, two)
    launched.assert_same_weights(one, two)
    launched.assert_moved(tiny_dir, one)
    # The main process evaluated with the whole model, between the steps and after them.
    evals_one, evals_two = _evals(one), _evals(two)
    assert [row["step"] for row in evals_one] == [row["step"] for row in evals_two] and len(evals_one) >= 2
    for row_one, row_two in zip(evals_one, evals_two):
        for key in row_one:
            assert abs(row_one[key] - row_two[key]) < 1e-5 * (1 + abs(row_one[key])), (key, row_one, row_two)

    # The checkpoint is the one an unsharded process writes: the same files, whole tensors, the same optimizer state.
    (ck_one,), (ck_two,) = list_checkpoints(one), list_checkpoints(two)
    assert ck_one.name == ck_two.name == "step-00000002"
    assert sorted(p.name for p in ck_one.iterdir()) == sorted(p.name for p in ck_two.iterdir())
    w1, w2 = load_file(str(ck_one / "trainable.safetensors")), load_file(str(ck_two / "trainable.safetensors"))
    assert w1.keys() == w2.keys()
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], atol=1e-5, rtol=1e-4, msg=key)
    o1, o2 = (torch.load(ck / "optimizer.pt", weights_only=True) for ck in (ck_one, ck_two))
    assert o1["param_groups"] == o2["param_groups"] and o1["state"].keys() == o2["state"].keys()
    for key, entry in o1["state"].items():
        for name, value in entry.items():
            torch.testing.assert_close(value, o2["state"][key][name], atol=1e-5, rtol=1e-4, msg=f"{key}.{name}")


def test_lora_sharded_and_merged_matches_one_process(tiny_dir, pref_file, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    extra = ("lora.r=4", "lora.alpha=8", "lora.target_modules=[q_proj,v_proj,up_proj]", "save_merged=true",
             "gradient_checkpointing=true")
    launched.run(_args("dpo", tiny_dir, pref_file, one, 4, 1, *extra), 1)
    launched.run(_args("dpo", tiny_dir, pref_file, two, 2, 1, *extra), 2, fsdp=True)
    assert 0.4 < _share(two) < 0.6
    launched.assert_same_metrics(one, two)
    # final/ is a plain model (adapters merged into the weights they adapt), as one process saves it.
    assert not (two / "final" / "adapter_config.json").exists()
    launched.assert_same_weights(one, two)
    launched.assert_moved(tiny_dir, one)


@pytest.mark.parametrize("name", ["grpo", "ppo-separate"])  # a critic model of its own: its layers are sharded too
def test_online_method_sharded_matches_one_process(name, tiny_dir, tmp_path, prompt_file):  # noqa: F811
    command, keys = RUNS[name]
    one, two = tmp_path / "one", tmp_path / "two"
    launched.run(online_args(command, keys, tiny_dir, prompt_file, one), 1)
    launched.run(online_args(command, keys, tiny_dir, prompt_file, two), 2, fsdp=True)
    assert 0.4 < _share(two) < 0.6
    _assert_same_training(one, two)
    launched.assert_moved(tiny_dir, one)


def test_a_killed_sharded_run_resumes_on_one_process(tiny_dir, sft_file, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    extra = ("max_steps=6", "save_every=2", "keep_checkpoints=5")
    launched.run(_args("sft", tiny_dir, sft_file, whole, 2, 1, *extra), 2, fsdp=True)

    args = _args("sft", tiny_dir, sft_file, killed, 2, 1, *extra)
    env = slowed(launched.ENV, tmp_path, seconds=1.0, after=2)  # time to act after the step-2 checkpoint
    launched.kill_after_checkpoint(launched.command(args, 2, fsdp=True), env, killed, step=2)
    # Resumed on one unsharded process, with the same global batch (2 micro-batches of 2 instead of 2 processes x 2).
    launched.run(_args("sft", tiny_dir, sft_file, killed, 2, 2, *extra), 1)
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["resumed_from_step"] >= 2 and summary["processes"] == 1
    launched.assert_same_metrics(whole, killed)
    launched.assert_same_weights(whole, killed)


def test_hbat_refuses_to_run_sharded(tiny_dir, sft_file, pref_file, tmp_path):
    args = ["-m", "alignkit.cli", "hbat", f"model={tiny_dir}", f"sft_data.train={sft_file}", f"data.train={pref_file}",
            f"output_dir={tmp_path / 'out'}", "max_steps=2", "precision=fp32", "progress=false"]
    done = subprocess.run(launched.command(args, 2, fsdp=True), env=launched.ENV, capture_output=True, text=True)
    assert done.returncode != 0
    assert "hbat does not run sharded" in done.stderr
