"""A NaN or infinite loss or gradient: the run stops at that step, naming it and its batch, before the update is
applied, and the last checkpoint stays the last good one; `skip_nonfinite` skips and counts such updates instead."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import load_file

import alignkit.methods.sft as sft_module
from alignkit.methods.sft import SFTConfig, train_sft
from alignkit.train.config import DataConfig
from alignkit.train.run import NonFiniteError


def poison(monkeypatch, steps: set[int], kind: str = "loss") -> None:
    """Make SFT's loss NaN (kind "loss") or its gradient infinite with a finite loss ("grad") at the given 1-based
    steps (one micro-batch per step)."""
    real = sft_module.offline_loop

    def offline_loop(run, module, items, collate, method, save_final, schedule=None):
        calls = [0]

        def loss(model, batch):
            calls[0] += 1
            value, stats = method.loss(model, batch)
            if calls[0] in steps:
                # sqrt at 0: adds nothing to the value, an infinite derivative to the gradient
                value = value * math.nan if kind == "loss" else value + torch.sqrt(value - value.detach())
            return value, stats

        return real(run, module, items, collate, dataclasses.replace(method, loss=loss), save_final, schedule)

    monkeypatch.setattr(sft_module, "offline_loop", offline_loop)


def _cfg(tiny_dir, sft_file, out, **kw):
    return SFTConfig(model=tiny_dir, data=DataConfig(train=sft_file), output_dir=str(out), max_steps=6, batch_size=4,
                     lr=1e-3, precision="fp32", progress=False, max_length=64, save_every=3, keep_checkpoints=5, **kw)


@pytest.mark.parametrize("kind, what", [("loss", "the loss is nan"), ("grad", "the gradient norm is ")])
def test_a_nonfinite_step_stops_the_run_there_and_keeps_the_last_good_checkpoint(kind, what, tiny_dir, sft_file,
                                                                                  tmp_path, monkeypatch):
    whole = train_sft(_cfg(tiny_dir, sft_file, tmp_path / "whole"))
    out = tmp_path / "broken"
    poison(monkeypatch, {5}, kind)
    with pytest.raises(NonFiniteError) as err:
        train_sft(_cfg(tiny_dir, sft_file, out))
    message = str(err.value)
    assert message.startswith(f"step 5: {what}") and "training examples " in message, message
    assert f"the last good checkpoint is {out / 'checkpoints' / 'step-00000003'}" in message
    assert "skip_nonfinite=true" in message
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000003"]
    assert not (out / "final").exists()
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # the step that failed logged nothing

    monkeypatch.undo()  # the cause is gone: resume from the good checkpoint, end as if nothing had happened
    resumed = train_sft(_cfg(tiny_dir, sft_file, out))
    assert resumed.resumed_from == 3
    a, b = load_file(str(whole.final_dir / "model.safetensors")), load_file(str(out / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_skip_nonfinite_skips_and_counts_such_updates(tiny_dir, sft_file, tmp_path, monkeypatch, capsys):
    poison(monkeypatch, {2, 4}, "loss")
    result = train_sft(_cfg(tiny_dir, sft_file, tmp_path / "run", skip_nonfinite=True))
    assert "step 2: the loss is nan (training examples " in capsys.readouterr().out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped_nonfinite"] == 2 and summary["steps"] == 6
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["train/skipped_nonfinite"] for m in logged] == [0, 1, 1, 2, 2, 2]
    weights = load_file(str(result.final_dir / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_an_online_update_with_a_nan_loss_stops_at_its_iteration(tiny_dir, tmp_path, monkeypatch):
    import alignkit.methods.grpo as grpo_module
    from alignkit.methods.grpo import GRPOConfig, train_grpo

    real, calls = grpo_module.ppo_policy_loss, [0]

    def policy_loss(*args, **kwargs):
        calls[0] += 1
        losses, metrics = real(*args, **kwargs)
        return (losses * math.nan if calls[0] == 3 else losses), metrics

    monkeypatch.setattr(grpo_module, "ppo_policy_loss", policy_loss)
    cfg = GRPOConfig(model=tiny_dir, data={"train": "task:arithmetic?difficulty=1&split=train"}, judge="final_answer",
                     output_dir=str(tmp_path / "grpo"), max_steps=3, prompts_per_step=2, samples_per_prompt=2,
                     batch_size=4, max_new_tokens=8, precision="fp32", progress=False, save_every=1)
    with pytest.raises(NonFiniteError, match=r"^step 3: the loss is nan \(update epoch 1, minibatch of rollout rows "):
        train_grpo(cfg)
    assert not (tmp_path / "grpo" / "final").exists()
    assert (tmp_path / "grpo" / "checkpoints" / "step-00000002").is_dir()
