"""Two CPU processes (accelerate launch, gloo) compute the same training as one process with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def _args(model: str, data: str, out: Path, batch: int, accum: int) -> list[str]:
    return [
        "-m", "alignkit.cli", "sft", f"model={model}", f"data.train={data}", f"output_dir={out}", "max_steps=4",
        f"batch_size={batch}", f"grad_accum={accum}", "lr=1e-3", "precision=fp32", "max_length=64", "progress=false",
        "scheduler=constant",
    ]


def test_two_processes_match_one_process(tiny_dir, sft_file, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    one = tmp_path / "one"
    subprocess.run([sys.executable, *_args(tiny_dir, sft_file, one, batch=2, accum=2)], check=True, env=env,
                   capture_output=True)

    two = tmp_path / "two"
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    launched = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "--main_process_port", "29533", *_args(tiny_dir, sft_file, two, batch=2, accum=1)],
        env=env, capture_output=True, text=True,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    summary = json.loads((two / "summary.json").read_text())
    assert summary["processes"] == 2

    # Same global batch (4 examples) split differently: the token-normalised loss and the weights agree.
    loss_one = [json.loads(line)["train/loss"] for line in (one / "metrics.jsonl").read_text().splitlines()]
    loss_two = [json.loads(line)["train/loss"] for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert len(loss_one) == len(loss_two) == 4
    for a, b in zip(loss_one, loss_two):
        assert abs(a - b) < 1e-5, (loss_one, loss_two)
    w1 = load_file(str(one / "final" / "model.safetensors"))
    w2 = load_file(str(two / "final" / "model.safetensors"))
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], atol=1e-5, rtol=1e-4, msg=key)
    # And training moved the weights at all (the comparison is not trivially between two untouched models).
    base = load_file(str(Path(tiny_dir) / "model.safetensors"))
    assert any(not torch.equal(base[k], w1[k]) for k in base)
