"""Checkpoints and resume: a run killed with SIGKILL and resumed ends with exactly the weights of an unbroken run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignkit.methods.sft import SFTConfig, train_sft
from alignkit.train.config import DataConfig
from alignkit.train.run import RunError


def sft_cmd(model: str, data: str, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "alignkit.cli", "sft", f"model={model}", f"data.train={data}", f"output_dir={out}",
        "max_steps=6", "batch_size=4", "lr=1e-3", "precision=fp32", "max_length=64", "progress=false",
        "save_every=3", "keep_checkpoints=5", *extra,
    ]


def test_kill9_then_resume_gives_identical_weights(tiny_dir, sft_file, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    whole = tmp_path / "whole"
    subprocess.run(sft_cmd(tiny_dir, sft_file, whole), check=True, env=env, capture_output=True)

    broken = tmp_path / "broken"
    # Slow the run down just enough (a sleep after each step, via a tiny sitecustomize) that the kill lands
    # between checkpoint 3 and the end, whatever the machine's speed.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import time, torch\n"
        "_step = torch.optim.AdamW.step\n"
        "def step(self, *a, **k):\n"
        "    out = _step(self, *a, **k)\n"
        "    time.sleep(0.5)\n"
        "    return out\n"
        "torch.optim.AdamW.step = step\n"
    )
    slow_env = {**env, "PYTHONPATH": f"{hook}{os.pathsep}{env.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(sft_cmd(tiny_dir, sft_file, broken), env=slow_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = broken / "checkpoints" / "step-00000003" / "trainer_state.json"
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert marker.exists() and not (broken / "final").exists()

    resumed = subprocess.run(sft_cmd(tiny_dir, sft_file, broken, "resume=auto"), check=True, env=env,
                             capture_output=True, text=True)
    assert "resuming from" in resumed.stdout and "step 3" in resumed.stdout

    a = load_file(str(whole / "final" / "model.safetensors"))
    b = load_file(str(broken / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # Metrics of the redone steps were replaced, not duplicated.
    steps = [line.split('"step": ')[1].split(",")[0] for line in (broken / "metrics.jsonl").read_text().splitlines()]
    assert steps == [str(i) for i in range(1, 7)]


def _cfg(tiny_dir, sft_file, out, **kw):
    return SFTConfig(model=tiny_dir, data=DataConfig(train=sft_file), output_dir=str(out), max_steps=2, batch_size=4,
                     precision="fp32", progress=False, max_length=64, **kw)


def test_a_finished_run_is_never_silently_overwritten(tiny_dir, sft_file, tmp_path):
    out = tmp_path / "run"
    train_sft(_cfg(tiny_dir, sft_file, out))
    before = (out / "final" / "model.safetensors").read_bytes()
    with pytest.raises(RunError, match="already holds a finished run"):
        train_sft(_cfg(tiny_dir, sft_file, out, lr=1e-2))
    assert (out / "final" / "model.safetensors").read_bytes() == before
    train_sft(_cfg(tiny_dir, sft_file, out, lr=1e-2, overwrite=True))
    assert (out / "final" / "model.safetensors").read_bytes() != before


def test_unfinished_run_needs_resume_or_overwrite(tiny_dir, sft_file, tmp_path):
    out = tmp_path / "run"
    ckpt = out / "checkpoints" / "step-00000001"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text('{"step": 1}')
    with pytest.raises(RunError, match="unfinished run"):
        train_sft(_cfg(tiny_dir, sft_file, out, resume="never"))


def test_half_written_checkpoint_is_ignored(tiny_dir, sft_file, tmp_path):
    out = tmp_path / "run"
    # A temp dir left by a crash mid-write has no trainer_state.json and must not be resumed from.
    (out / "checkpoints" / ".step-00000001.abc.tmp").mkdir(parents=True)
    (out / "checkpoints" / "step-00000002").mkdir()
    result = train_sft(_cfg(tiny_dir, sft_file, out))
    assert result.resumed_from == 0 and (out / "final").exists()
