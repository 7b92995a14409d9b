"""Online methods on two CPU processes (accelerate launch, gloo) compute the same training as one process with the
same global batch: PPO (shared and separate critic), GRPO and RLOO; and a SIGKILLed two-process run resumes to the
same end as an uninterrupted one.

Each process samples and scores its half of a step's prompts; the experience is gathered, so advantages, whitening,
the adaptive KL coefficient and the logged statistics are computed over the whole batch; each minibatch is split over
the processes and DDP sums the gradients. Each prompt samples from its own seeded stream, so both runs draw the same
responses: the losses, scores and KL coefficients agree step by step and the weights at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignkit.data import user_turn
from alignkit.train.checkpoint import list_checkpoints

PROMPTS = [f"question number {i}" for i in range(8)]
PORTS = iter(range(29541, 29600))

RUNS = {
    # name: (command, its keys); each runs 3 iterations of 4 prompts x 2 samples, minibatches of 4 sequences.
    "ppo-shared": ("ppo", ["critic=shared", "minibatch_size=4", "ppo_epochs=2", "kl_target=0.5", "kl_coef=0.1"]),
    "ppo-separate": ("ppo", ["critic=separate", "minibatch_size=4", "ppo_epochs=2", "kl_coef=0.05"]),
    "grpo": ("grpo", ["kl_coef=0.05", "ppo_epochs=2", "minibatch_size=4"]),
    "rloo": ("rloo", ["kl_coef=0.05"]),
}


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("online-prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": user_turn(p)}) + "\n" for p in PROMPTS))
    return str(path)


def _args(command: str, keys: list[str], model: str, prompts: str, out: Path, steps: int = 3) -> list[str]:
    return ["-m", "alignkit.cli", command, f"model={model}", f"data.train={prompts}", f"output_dir={out}",
            f"max_steps={steps}", "prompts_per_step=4", "samples_per_prompt=2", "batch_size=2", "max_new_tokens=8",
            "lr=1e-3", "precision=fp32", "progress=false", "scheduler=constant", "judge={regex: '[a-m0-9]'}",
            "save_every=1", *keys]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}


def _launch(args: list[str], processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable, *args]
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    return [accelerate, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(next(PORTS)), *args]


def _run(args: list[str], processes: int) -> None:
    done = subprocess.run(_launch(args, processes), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _assert_same_training(one: Path, two: Path, keys=("train/loss", "train/score", "train/kl_coef", "train/grad_norm", "train/kl")) -> None:
    a, b = _metrics(one), _metrics(two)
    assert [m["step"] for m in a] == [m["step"] for m in b]
    for row_a, row_b in zip(a, b):
        for key in keys:
            if key in row_a:
                assert abs(row_a[key] - row_b[key]) < 1e-5, (key, row_a["step"], row_a[key], row_b[key])
    w1, w2 = load_file(str(one / "final" / "model.safetensors")), load_file(str(two / "final" / "model.safetensors"))
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], atol=1e-5, rtol=1e-4, msg=key)


@pytest.mark.parametrize("name", list(RUNS))
def test_two_processes_match_one_process(name, tiny_dir, prompt_file, tmp_path):
    command, keys = RUNS[name]
    one, two = tmp_path / "one", tmp_path / "two"
    _run(_args(command, keys, tiny_dir, prompt_file, one), 1)
    _run(_args(command, keys, tiny_dir, prompt_file, two), 2)
    assert json.loads((two / "summary.json").read_text())["processes"] == 2
    _assert_same_training(one, two)
    rows = _metrics(one)
    # Not a comparison of two idle runs: the samples were scored differently and training moved the weights.
    assert len({round(m["train/score"], 6) for m in rows}) > 1 or 0 < rows[0]["train/score"] < 1
    base = load_file(str(Path(tiny_dir) / "model.safetensors"))
    final = load_file(str(one / "final" / "model.safetensors"))
    assert any(not torch.equal(base[k], final[k]) for k in base)
    if name == "ppo-shared":  # the adaptive coefficient moved, from the KL of the whole batch
        assert rows[-1]["train/kl_coef"] != 0.1


def _kill_every_process_of(out: Path) -> None:
    """SIGKILL the launcher and its workers (torch's launcher starts each worker in a session of its own, so killing
    the launcher's process group would leave them running): every process whose command line names `out`."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(out).encode() in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass  # gone already


def test_a_killed_two_process_run_resumes_to_the_uninterrupted_end(tiny_dir, prompt_file, tmp_path):
    command, keys = RUNS["grpo"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _run(_args(command, keys, tiny_dir, prompt_file, whole, steps=4), 2)

    args = _args(command, keys, tiny_dir, prompt_file, killed, steps=4)
    proc = subprocess.Popen(_launch(args, 2), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not any(int(c.name.split("-")[1]) >= 2 for c in list_checkpoints(killed)):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its step-2 checkpoint"
            time.sleep(0.05)
    finally:
        _kill_every_process_of(killed)
        proc.wait()
    assert not (killed / "final").exists()
    _run(args, 2)  # the same command resumes
    assert json.loads((killed / "summary.json").read_text())["resumed_from_step"] >= 2
    _assert_same_training(whole, killed)
