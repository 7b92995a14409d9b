"""Ctrl-C in training: a real SIGINT to a real `alignkit sft` stops it at a step boundary with a checkpoint (even with
save_every 0), says how to resume, and the same command resumes from it; a second Ctrl-C quits at once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path


def _command(tiny_dir: str, data: Path, out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "alignkit.cli", "sft", f"model={tiny_dir}", f"data.train={data}",
            f"output_dir={out}", f"max_steps={steps}", "precision=fp32", "progress=false", "batch_size=2"]


def _started(tiny_dir, tmp_path, steps: int):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"question {i}", "completion": f"answer {i}"}) + "\n"
                            for i in range(16)))
    out = tmp_path / "run"
    command = _command(tiny_dir, data, out, steps)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):  # training has started
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)
    return proc, command, out


def test_ctrl_c_checkpoints_at_the_step_boundary_and_the_same_command_resumes(tiny_dir, tmp_path):
    proc, command, out = _started(tiny_dir, tmp_path, 3000)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "Ctrl-C again to quit at once" in stderr
    assert "run the same command again to resume" in stderr
    checkpoints = sorted((out / "checkpoints").iterdir())
    assert len(checkpoints) == 1, "save_every is 0: the interrupt's checkpoint is the only one"
    stopped = int(stderr.split("interrupted at step ")[1].split()[0])
    assert 3 <= stopped < 3000 and str(stopped) in checkpoints[0].name
    assert not (out / "final").exists()

    # The same command again resumes there (the rest of the steps are cut short by a second interrupt, as a
    # user would; what is tested is that it continued, not from 0).
    again = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    resumed = ""
    while "resuming from" not in resumed:
        line = again.stdout.readline()
        assert line, again.communicate()[1][-2000:]
        resumed += line
    assert f"(step {stopped} of 3000)" in resumed
    metrics = out / "metrics.jsonl"
    while json.loads(metrics.read_text().splitlines()[-1])["step"] <= stopped + 1:  # it trains on from there
        assert again.poll() is None, again.communicate()[1][-2000:]
        time.sleep(0.05)
    again.send_signal(signal.SIGINT)
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 130, stderr[-2000:]
    assert int(stderr.split("interrupted at step ")[1].split()[0]) > stopped


def test_a_second_ctrl_c_quits_at_once_without_a_traceback(tiny_dir, tmp_path):
    proc, _, _ = _started(tiny_dir, tmp_path, 3000)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "interrupted" in stderr
