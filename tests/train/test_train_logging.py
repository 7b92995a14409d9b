"""Metrics go to metrics.jsonl always, and to tensorboard when asked; summary.json records the run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

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


def _wandb_history(run_dir) -> dict[int, dict[str, float]]:
    """The metrics an offline wandb run recorded, read from its transaction log (`run-*.wandb`): a 7-byte header,
    then 32 KiB blocks of records (4-byte checksum, 2-byte length, 1-byte type: 1 whole, 2 first, 3 middle, 4 last),
    each a `Record` protobuf of wandb's own schema."""
    from wandb.proto import wandb_internal_pb2

    data = next(run_dir.glob("wandb/offline-run-*/run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, history = 32768, 7, b"", {}
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room left in the block for a header: padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                items = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item}
                step = items.get("_step", record.history.step.num)
                history.setdefault(step, {}).update({k: v for k, v in items.items() if not k.startswith("_")})
    return history


def test_wandb_offline_and_trackio_get_the_metrics_jsonl_has(tiny_dir, sft_file, tmp_path, monkeypatch):
    # Before the imports: trackio reads TRACKIO_DIR when it is imported.
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    pytest.importorskip("wandb")
    pytest.importorskip("trackio")
    import sqlite3

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from trackio.utils import TRACKIO_DIR  # where it writes (tmp_path, unless trackio was imported earlier)
    out = tmp_path / f"logged-run-{os.getpid()}-{time.time_ns()}"
    cfg = SFTConfig(model=tiny_dir, data=DataConfig(train=sft_file, eval=sft_file), output_dir=str(out), max_steps=3,
                    batch_size=4, precision="fp32", progress=False, max_length=64, eval_every=2,
                    report_to=["tensorboard", "wandb", "trackio"])
    train_sft(cfg)

    truth: dict[int, dict[str, float]] = {}  # metrics.jsonl, merged per step
    for line in (out / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        step = row.pop("step")
        row.pop("time")
        truth.setdefault(step, {}).update(row)
    assert set(truth) == {1, 2, 3} and "eval/loss" in truth[2] and "train/loss" in truth[3]

    wandb_steps = _wandb_history(out)
    db = sqlite3.connect(Path(TRACKIO_DIR) / "alignkit.db")
    trackio_steps: dict[int, dict[str, float]] = {}
    query = "select step, metrics from metrics where run_name = ? order by id"
    for step, metrics in db.execute(query, (out.name,)):
        trackio_steps.setdefault(step, {}).update(json.loads(metrics))
    db.close()
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tb_steps: dict[int, dict[str, float]] = {}
    for tag in events.Tags()["scalars"]:
        for event in events.Scalars(tag):
            tb_steps.setdefault(event.step, {})[tag] = event.value
    for name, got in (("wandb", wandb_steps), ("trackio", trackio_steps), ("tensorboard", tb_steps)):
        assert set(got) == set(truth), name
        for step, metrics in truth.items():
            assert set(got[step]) == set(metrics), (name, step)
            assert got[step] == pytest.approx(metrics, rel=1e-6), (name, step)  # tensorboard stores float32
