"""Metrics go to metrics.jsonl always, and to tensorboard when asked; summary.json records the run."""

from __future__ import annotations

import json

from alignkit.methods.sft import SFTConfig, train_sft
from alignkit.train.config import DataConfig


def test_metrics_jsonl_tensorboard_and_summary(tiny_dir, sft_file, tmp_path):
    out = tmp_path / "run"
    cfg = SFTConfig(model=tiny_dir, data=DataConfig(train=sft_file, eval=sft_file), output_dir=str(out), max_steps=4,
                    batch_size=4, precision="fp32", progress=False, max_length=64, eval_every=2,
                    report_to=["tensorboard"])
    train_sft(cfg)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in lines if "train/loss" in r]
    eval_steps = [r["step"] for r in lines if "eval/loss" in r]
    assert train_steps == [1, 2, 3, 4] and eval_steps == [2, 4]
    assert all(r["train/tokens_per_s"] > 0 and r["train/lr"] > 0 for r in lines if "train/loss" in r)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["precision"] == "fp32" and summary["eval"]["loss"] > 0
    assert json.loads(json.dumps(summary))["peak_rss_gb"] > 0
