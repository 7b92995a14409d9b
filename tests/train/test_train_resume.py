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


def slowed(env: dict, tmp_path: Path, seconds: float = 0.5, after: int = 0) -> dict:
    """`env` with a sleep of `seconds` after each optimizer step past the first `after` (a tiny sitecustomize), so
    that a test can act between a run's checkpoint and its end whatever the machine's speed."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(
        "import time, torch\n"
        "_step, _done = torch.optim.AdamW.step, [0]\n"
        "def step(self, *a, **k):\n"
        "    out = _step(self, *a, **k)\n"
        "    _done[0] += 1\n"
        f"    if _done[0] > {after}:\n"
        f"        time.sleep({seconds})\n"
        "    return out\n"
        "torch.optim.AdamW.step = step\n"
    )
    return {**env, "PYTHONPATH": f"{hook}{os.pathsep}{env.get('PYTHONPATH', '')}"}


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert path.exists(), f"{path} did not appear (process exit code {proc.poll()})"


def test_kill9_then_resume_gives_identical_weights(tiny_dir, sft_file, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    whole = tmp_path / "whole"
    subprocess.run(sft_cmd(tiny_dir, sft_file, whole), check=True, env=env, capture_output=True)

    broken = tmp_path / "broken"
    slow_env = slowed(env, tmp_path)
    proc = subprocess.Popen(sft_cmd(tiny_dir, sft_file, broken), env=slow_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = broken / "checkpoints" / "step-00000003" / "trainer_state.json"
    wait_for(marker, proc)
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


def test_a_second_process_on_a_running_run_is_refused_and_a_killed_run_leaves_no_lock(tiny_dir, sft_file, tmp_path):
    """Two processes on one run folder: the second is refused at once, before it reads or writes anything there (it
    used to resume from the first's checkpoint beside it); once the first is SIGKILLed the folder is free again."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "run"
    # 10 s per step after step 3 and its checkpoint: the second process starts well within the first's last steps.
    first = subprocess.Popen(sft_cmd(tiny_dir, sft_file, out), env=slowed(env, tmp_path, 10.0, after=3),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(out / "checkpoints" / "step-00000003" / "trainer_state.json", first)
        second = subprocess.run(sft_cmd(tiny_dir, sft_file, out, "resume=auto"), env=env, capture_output=True,
                                text=True)
        assert first.poll() is None, "the first run ended before the second was refused: slow it down more"
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 2
    assert f"{out} is in use by another running alignkit process (pid {first.pid} " in second.stderr
    assert "resuming" not in second.stdout and not (out / "final").exists()

    resumed = subprocess.run(sft_cmd(tiny_dir, sft_file, out, "resume=auto"), env=env, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout and (out / "final" / "model.safetensors").is_file()


def test_pipelines_refuse_a_folder_another_process_holds(tiny_dir, tmp_path):
    from alignkit.methods.iterative_dpo import IterativeDPOConfig, train_iterative_dpo
    from alignkit.pipelines.cai import run_cai
    from alignkit.pipelines.cai_config import CAIConfig
    from alignkit.pipelines.compare import CompareConfig, run_compare
    from alignkit.pipelines.demo import run_demo
    from alignkit.utils.io import FolderInUse

    out = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom alignkit.utils.io import lock_folder\n"
                               "lock_folder(sys.argv[1]); print('held', flush=True); time.sleep(600)", str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (out / "theirs.txt").write_text("another run's file")
        runs = {
            "cai": lambda: run_cai(CAIConfig(model=tiny_dir, output_dir=str(out))),
            "compare": lambda: run_compare(CompareConfig(model=tiny_dir, output_dir=str(out))),
            "iterative-dpo": lambda: train_iterative_dpo(IterativeDPOConfig(
                model=tiny_dir, data={"train": "builtin:sft"}, output_dir=str(out), overwrite=True)),
            "demo --fresh": lambda: run_demo(str(out), model=tiny_dir, fresh=True),
        }
        for name, start in runs.items():
            with pytest.raises(FolderInUse, match=f"pid {holder.pid} "):
                start()
            assert (out / "theirs.txt").read_text() == "another run's file", name
    finally:
        holder.kill()
        holder.wait()


def test_claims_nest_within_a_process_and_the_lock_file_is_not_a_foreign_run(tmp_path):
    from alignkit.utils.io import LOCK_FILE, _held, claim_config_dir, lock_folder, unlock_folder

    out = tmp_path / "run"
    lock_folder(out)
    lock_folder(out)  # a pipeline and a run it starts in the same folder
    unlock_folder(out)
    assert str(out.resolve()) in _held
    assert claim_config_dir(out, {"a": 1}) is None  # only the lock file is there: not another run's folder
    unlock_folder(out)
    assert str(out.resolve()) not in _held and (out / LOCK_FILE).is_file()


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
