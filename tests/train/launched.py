"""The CLI in one process or under `accelerate launch` on several CPU processes (gloo), for the tests that compare
the two, and the comparisons they make."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.conftest import free_port

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}


FSDP_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "accelerate" / "fsdp.yaml"


def command(args: list[str], processes: int, fsdp: bool = False) -> list[str]:
    """`python -m alignkit.cli ...` (`args` start with `-m`), behind the launcher when `processes` > 1: data-parallel,
    or sharded with the project's FSDP config (`fsdp`)."""
    if processes == 1:
        return [sys.executable, *args]
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    how = ["--config_file", str(FSDP_CONFIG)] if fsdp else ["--multi_gpu"]
    return [accelerate, "launch", *how, "--num_processes", str(processes), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()), *args]


def run(args: list[str], processes: int, fsdp: bool = False) -> None:
    done = subprocess.run(command(args, processes, fsdp), env=ENV, capture_output=True, text=True)
    # What alignkit reported (from its first "error:" line: a failed compare stage's message carries that stage's
    # output) comes first; the launcher's and the other processes' tracebacks bury it at the end.
    said = done.stderr[done.stderr.find(": error: "):][:4000] if ": error: " in done.stderr else ""
    assert done.returncode == 0, said + "\n...\n" + done.stderr[-3000:]


def kill_after_checkpoint(cmd: list[str], env: dict, out: Path, step: int) -> None:
    """Start `cmd` (a run into `out`) and SIGKILL it and all its processes once a checkpoint of `step` or later is
    there; the run must not have finished by then."""
    from alignkit.train.checkpoint import list_checkpoints

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, late = time.monotonic() + 300, f"the run ended before its step-{step} checkpoint"
        while not any(int(c.name.split("-")[1]) >= step for c in list_checkpoints(out)):
            assert proc.poll() is None and time.monotonic() < deadline, late
            time.sleep(0.05)
    finally:
        _kill_every_process_of(out)
        proc.wait()
    assert not (out / "final").exists()


def _kill_every_process_of(out: Path) -> None:
    """SIGKILL the launcher and its workers (torch's launcher starts each worker in a session of its own, so killing
    the launcher's process group would leave them running): every process whose command line names `out`."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(out).encode() in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass  # gone already


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same_weights(one: Path, two: Path, adam_moves: float = 0.0) -> None:
    """The two final models agree within 1e-5 (+1e-4 of the value).

    `adam_moves` (lr x steps of an Adam stage that may disagree): Adam divides each entry's gradient by its own running
    size, so an entry whose gradient is round-off-sized at a step moves by up to lr in a way its last bits decide.
    One process summing two micro-batches and two processes all-reducing them round differently, so such entries (a
    few in 10,000: one embedding entry of 16,576 in the CAI chain's PPO stage on an avx512_bf16 CPU, none on an AMX
    one) may then differ by up to `adam_moves`; every other entry must agree."""
    w1, w2 = load_file(str(one / "final" / "model.safetensors")), load_file(str(two / "final" / "model.safetensors"))
    assert w1.keys() == w2.keys()
    for key in w1:
        if adam_moves:
            off = ~torch.isclose(w1[key], w2[key], atol=1e-5, rtol=1e-4)
            assert off.float().mean().item() <= 1e-3, (key, int(off.sum()), off.numel())
            gap = (w1[key] - w2[key]).abs().max().item()
            assert gap <= adam_moves, (key, gap, adam_moves)
        else:
            torch.testing.assert_close(w1[key], w2[key], atol=1e-5, rtol=1e-4,
                                       msg=lambda said, key=key: f"{key}: {said}")


def assert_moved(base_dir: str, out: Path) -> None:
    """Training changed the weights: a comparison of two runs is not one between two untouched models."""
    base = load_file(str(Path(base_dir) / "model.safetensors"))
    final = load_file(str(out / "final" / "model.safetensors"))
    assert any(not torch.equal(base[k], final[k]) for k in base)


def assert_same_metrics(one: Path, two: Path, atol: float = 1e-5, rtol: float = 1e-5) -> None:
    """Every logged training metric agrees step by step, within `atol` plus `rtol` of its size (fp32 rounding
    grows with the value: a PPO grad norm of 23.6 differs by 6e-5 between the two), all but the timed ones
    (throughput, seconds)."""
    a, b = metrics(one), metrics(two)
    assert [row["step"] for row in a] == [row["step"] for row in b]

    def compared(row: dict) -> set[str]:
        return {k for k in row if k.startswith("train/") and not k.endswith(("per_s", "_seconds"))}

    for row_a, row_b in zip(a, b):
        keys = compared(row_a)
        assert keys == compared(row_b)
        for key in sorted(keys):
            assert abs(row_a[key] - row_b[key]) < atol + rtol * abs(row_a[key]), (key, row_a["step"], row_a[key],
                                                                                 row_b[key])
