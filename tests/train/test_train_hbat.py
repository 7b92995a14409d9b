"""HBAT: the alternation schedule, the Fisher estimate by hand, EWC holding parameters, both objectives learned,
the joint objective, and exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from test_train_methods import pair_logps, sft_nll  # same folder (pytest puts it on sys.path)

from alignkit.methods.hbat import HBATConfig, HBATPlan, estimate_fisher, hbat_blocks, train_hbat
from alignkit.train.config import ConfigError, DataConfig
from alignkit.train.config_loading import load_config


def margin(model: str, pref_file: str) -> float:
    chosen, rejected = pair_logps(model, pref_file)
    return float((chosen - rejected).mean())


def test_blocks_split_each_objective_and_alternate_starting_with_sft():
    # 10 SFT steps in 3 blocks: 4, 3, 3; 6 preference steps: 2, 2, 2.
    assert hbat_blocks(10, 6, 3) == [("sft", 4), ("preference", 2), ("sft", 3), ("preference", 2), ("sft", 3),
                                     ("preference", 2)]
    # Fewer steps than segments: empty blocks are left out.
    assert hbat_blocks(5, 2, 3) == [("sft", 2), ("preference", 1), ("sft", 2), ("preference", 1), ("sft", 1)]
    assert hbat_blocks(3, 3, 1) == [("sft", 3), ("preference", 3)]


def _plan(mode: str = "alternate", **extra) -> HBATPlan:
    cfg = HBATConfig(model="x", data=DataConfig(train="p"), sft_data=DataConfig(train="s"), output_dir="o",
                     batch_size=2, mode=mode, **extra)
    return HBATPlan(cfg, n_sft=8, n_pref=6, world=1, process_index=0, lengths=None)


def test_plan_switch_points_and_the_examples_each_step_uses():
    plan = _plan(segments=2)  # SFT: 4 steps of 2 -> blocks 2, 2; preference: 3 steps -> 2, 1
    assert [o for o, _, _ in plan.steps] == ["sft", "sft", "preference", "preference", "sft", "sft", "preference"]
    assert [plan.switch_at(s) for s in range(7)] == [None, None, "sft", None, "preference", None, "sft"]
    for step, (objective, _, _) in enumerate(plan.steps):
        (batch,) = plan.micro_batches(step)
        assert len(batch) == 2 and all((i < 8) == (objective == "sft") for i in batch)
    # One epoch of SFT sees each demonstration once; pairs are items 8..13.
    sft_seen = [i for s in (0, 1, 4, 5) for i in plan.micro_batches(s)[0]]
    assert sorted(sft_seen) == list(range(8))
    # The Fisher at step 2 comes from what SFT just trained on (steps 0-1), latest first.
    assert plan.last_examples(2, "sft", 3) == (plan.micro_batches(1)[0] + plan.micro_batches(0)[0])[:3]
    assert set(plan.last_examples(4, "preference", 10)) <= set(range(8, 14))


def test_plan_with_explicit_step_counts():
    plan = _plan(segments=2, sft_steps=6, preference_steps=2)  # SFT cycles into its second epoch
    assert [(o, n) for o, n in plan.blocks] == [("sft", 3), ("preference", 1), ("sft", 3), ("preference", 1)]
    sft_batches = [plan.micro_batches(s)[0] for s, (o, _, _) in enumerate(plan.steps) if o == "sft"]
    assert sorted(i for b in sft_batches[:4] for i in b) == list(range(8))  # epoch 1: each demonstration once


def test_joint_plan_takes_a_batch_of_each_every_step():
    plan = _plan(mode="joint")
    assert len(plan.steps) == 4  # max(4 SFT steps, 3 preference steps); the shorter one starts its next epoch
    for step in range(4):
        sft, pref = plan.micro_batches(step)
        assert all(i < 8 for i in sft) and all(8 <= i < 14 for i in pref)
    assert all(plan.switch_at(s) is None for s in range(4))


def test_fisher_estimate_by_hand():
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    xs = [torch.tensor([1.0, 0.0]), torch.tensor([2.0, 1.0])]
    # Loss_i = (w . x_i)^2 / 2, gradient (w . x_i) x_i: x1 -> 1 * [1, 0] = [1, 0]; x2 -> 0 * [2, 1] = [0, 0].
    # Take loss_i = (w . x_i + 1)^2 / 2 instead so both count: x1 -> 2 * [1, 0]; x2 -> 1 * [2, 1] = [2, 1].
    losses = [lambda x=x: 0.5 * (w @ x + 1) ** 2 for x in xs]
    fisher = estimate_fisher(losses, {"w": w}, normalize=False)
    torch.testing.assert_close(fisher["w"], torch.tensor([(4 + 4) / 2, (0 + 1) / 2]))
    normalized = estimate_fisher(losses, {"w": w}, normalize=True)  # mean of [4, 0.5] is 2.25
    torch.testing.assert_close(normalized["w"], torch.tensor([4 / 2.25, 0.5 / 2.25]))
    assert w.grad is None  # autograd.grad: the training gradients are left alone


def _cfg(tiny_dir, sft_file, pref_file, out, **extra) -> HBATConfig:
    settings = dict(model=tiny_dir, data=DataConfig(train=pref_file), sft_data=DataConfig(train=sft_file),
                    output_dir=str(out), batch_size=4, epochs=2, segments=2, lr=3e-3, beta=0.1, precision="fp32",
                    max_length=64, progress=False, fisher_samples=4)
    return HBATConfig(**{**settings, **extra})


def _metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_alternating_training_learns_both_objectives_with_ewc_after_each_switch(tiny_dir, sft_file, pref_file,
                                                                                   tmp_path):
    before_nll = sft_nll(tiny_dir, sft_file)
    result = train_hbat(_cfg(tiny_dir, sft_file, pref_file, tmp_path / "run"))
    schedule = json.loads((tmp_path / "run" / "schedule.json").read_text())
    # 16 demonstrations and 16 pairs, batch 4, 2 epochs: 8 steps each, in blocks of 4.
    assert schedule["blocks"] == [{"objective": "sft", "steps": 4}, {"objective": "preference", "steps": 4},
                                  {"objective": "sft", "steps": 4}, {"objective": "preference", "steps": 4}]
    assert result.steps == 16
    rows = _metrics(tmp_path / "run")
    assert all("train/ewc_penalty" not in r for r in rows[:4])  # nothing to hold before the first switch
    assert all("train/ewc_penalty" in r for r in rows[4:]) and max(r["train/ewc_penalty"] for r in rows[5:]) > 0
    after = str(result.final_dir)
    assert sft_nll(after, sft_file) < before_nll - 0.5  # instruction following learned...
    assert margin(after, pref_file) > margin(tiny_dir, pref_file) + 1.0  # ...and the preference too


def test_ewc_keeps_the_parameters_that_mattered_for_the_objective_just_left(tiny_dir, sft_file, pref_file, tmp_path):
    """Over the first preference block, a strong EWC penalty keeps the SFT-important weights nearer their anchor."""
    def run(strength: float, out):
        # Steps 1-4 SFT (identical in both runs), the switch at step 5, steps 5-8 preference.
        return train_hbat(_cfg(tiny_dir, sft_file, pref_file, out, max_steps=8, ewc_strength=strength,
                               save_every=6, keep_checkpoints=5))

    held, free = run(1e3, tmp_path / "held"), run(0.0, tmp_path / "free")
    state = torch.load(tmp_path / "held" / "checkpoints" / "step-00000006" / "method.pt")
    assert state["left"] == "sft" and state["at"] == 4
    assert "method.pt" not in {p.name for p in (tmp_path / "free" / "checkpoints" / "step-00000006").iterdir()} or \
        torch.load(tmp_path / "free" / "checkpoints" / "step-00000006" / "method.pt")["fisher"] is None

    def weighted_drift(result) -> float:
        final = load_file(str(result.final_dir / "model.safetensors"))
        return sum(float((state["fisher"][n] * (final[n] - state["anchors"][n]) ** 2).sum())
                   for n in state["fisher"] if n in final)

    assert weighted_drift(held) < 0.5 * weighted_drift(free), (weighted_drift(held), weighted_drift(free))


def test_joint_objective_learns_both(tiny_dir, sft_file, pref_file, tmp_path):
    before_nll = sft_nll(tiny_dir, sft_file)
    result = train_hbat(_cfg(tiny_dir, sft_file, pref_file, tmp_path / "joint", mode="joint", epochs=3))
    assert json.loads((tmp_path / "joint" / "schedule.json").read_text())["blocks"] == [
        {"objective": "joint", "steps": 12}]
    assert all("train/ewc_penalty" not in r for r in _metrics(tmp_path / "joint"))
    assert sft_nll(str(result.final_dir), sft_file) < before_nll - 0.5
    assert margin(str(result.final_dir), pref_file) > margin(tiny_dir, pref_file) + 1.0


def test_resumed_run_ends_with_the_weights_of_an_unbroken_one(tiny_dir, sft_file, pref_file, tmp_path):
    # A constant learning rate, so that a run cut short by max_steps follows the same path as the whole one.
    common = dict(save_every=3, keep_checkpoints=10, scheduler="constant")
    whole = train_hbat(_cfg(tiny_dir, sft_file, pref_file, tmp_path / "whole", **common))
    broken = tmp_path / "broken"
    # A run stopped after step 6 (inside the first preference block, EWC active): keep its checkpoint at step 6 only.
    train_hbat(_cfg(tiny_dir, sft_file, pref_file, broken, max_steps=7, **common))
    import shutil

    shutil.rmtree(broken / "final")
    (broken / "summary.json").unlink()
    for extra in (broken / "checkpoints").iterdir():
        if extra.name != "step-00000006":
            shutil.rmtree(extra)
    assert torch.load(broken / "checkpoints" / "step-00000006" / "method.pt")["at"] == 4  # the switch's anchors
    resumed = train_hbat(_cfg(tiny_dir, sft_file, pref_file, broken, **common))
    assert resumed.resumed_from == 6
    a, b = load_file(str(whole.final_dir / "model.safetensors")), load_file(str(resumed.final_dir / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)


def test_hbat_config_needs_both_datasets_and_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="sft_data"):
        load_config(HBATConfig, None, ["data.train=p", "output_dir=o"])
    with pytest.raises(ConfigError, match="unknown key 'ewc'"):
        load_config(HBATConfig, None, ["data.train=p", "sft_data.train=s", "output_dir=o", "ewc=1"])
