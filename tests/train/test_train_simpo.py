"""SimPO on the tiny model: its first loss is the closed form on the starting model's log-probs, and training raises
the length-normalised margin it is for."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from alignkit.data import load_records, pad_batch
from alignkit.methods import METHODS
from alignkit.methods.simpo import SimPOConfig, train_simpo
from alignkit.models import TokenLogps, load_causal_lm, load_tokenizer, per_row_sum
from alignkit.train.common import render_pairs
from alignkit.train.config import DataConfig
from alignkit.train.loop import epoch_order
from alignkit.utils.seeds import derived_seed

COMMON = dict(precision="fp32", progress=False, max_length=64, scheduler="constant")


def average_logps(model_spec: str, data: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token average log-prob of every pair's chosen and rejected completion, computed apart from the trainer."""
    tokenizer = load_tokenizer(model_spec)
    module = TokenLogps(load_causal_lm(model_spec)).eval()
    items = render_pairs(tokenizer, load_records(data, "preference").records, 64, data)
    seqs = [it["chosen"] for it in items] + [it["rejected"] for it in items]
    batch = pad_batch(seqs, pad_id=tokenizer.pad_token_id)
    with torch.no_grad():
        logps, rows = module(batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    average = per_row_sum(logps, rows, len(seqs)) / per_row_sum(torch.ones_like(logps), rows, len(seqs))
    return average[: len(items)], average[len(items) :]


def test_simpo_starts_at_its_closed_form_and_raises_the_normalised_margin(tiny_dir, pref_file, tmp_path):
    beta, gamma = 2.0, 0.5
    c0, r0 = average_logps(tiny_dir, pref_file)
    cfg = SimPOConfig(model=tiny_dir, data=DataConfig(train=pref_file, eval=pref_file), output_dir=str(tmp_path / "run"),
                      max_steps=12, batch_size=4, lr=2e-3, beta=beta, gamma=gamma, **COMMON)
    result = train_simpo(cfg)
    # The first step's loss, before any update: the closed form on the starting model, over that step's pairs.
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    batch = epoch_order(derived_seed(cfg.seed, 0), len(c0), cfg.batch_size)[: cfg.batch_size]
    expected = -F.logsigmoid(beta * (c0[batch] - r0[batch]) - gamma)
    assert first["train/loss"] == pytest.approx(float(expected.mean()), abs=1e-5)
    # What SimPO is for: the chosen completion's average log-prob pulls ahead of the rejected one's.
    c1, r1 = average_logps(str(result.final_dir), pref_file)
    assert float((c1 - r1).mean()) > float((c0 - r0).mean()) + 0.1
    assert result.eval_metrics["reward_accuracy"] >= 0.9
    # The trainer's eval loss agrees with the closed form on the saved model.
    assert result.eval_metrics["loss"] == pytest.approx(float((-F.logsigmoid(beta * (c1 - r1) - gamma)).mean()), rel=1e-3)


def test_simpo_is_a_row_of_the_table():
    row = METHODS["simpo"]
    assert row.config is SimPOConfig and row.train is train_simpo and row.data == "preferences"
    assert row.recipes == {"sft-simpo": ("sft", "simpo")}
