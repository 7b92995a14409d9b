"""Checkpoints: trainable weights, optimizer, scheduler, RNG state and data position, each written atomically.

A checkpoint directory `checkpoints/step-00000012/` appears only once everything in it is on disk, so a run killed at
any moment leaves either the previous complete checkpoint or the new one — never a half-written one. The data
position needs no file of its own: the sample order is a pure function of (seed, epoch), so the step count fixes it.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from alignkit.train import sharding
from alignkit.utils import processes
from alignkit.utils.io import atomic_dir, safe_torch_load, torch_save

STATE_FILE = "trainer_state.json"


def checkpoint_dir(output_dir: Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: Path) -> list[Path]:
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step-*") if (p / STATE_FILE).is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor] | None:
    """The trainable parameters, whole, on the main process; None on the others (every process calls it for a
    sharded module: `sharding.full`)."""
    # named_parameters yields a tied weight once, which safetensors requires (it refuses shared storage).
    state = {n: sharding.full(p) for n, p in module.named_parameters() if p.requires_grad}
    return {n: p.contiguous() for n, p in state.items()} if processes.is_main() else None


def rng_state() -> dict:
    """Every generator's state as tensors and plain values, so that it loads as weights only (`safe_torch_load`)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal.tolist()), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


METHOD_STATE_FILE = "method.pt"


def save_checkpoint(output_dir: Path, step: int, weights: dict[str, torch.Tensor], optimizer_state: dict, scheduler,
                    extra: dict, keep: int, method_state: dict | None = None) -> Path:
    """`weights`: `trainable_state(module)`; `optimizer_state`: the optimizer's state dict with whole tensors
    (`sharding.full_optimizer_state`); `method_state`: what a method keeps besides the weights and optimizer (e.g.
    EWC anchors and Fisher)."""
    path = checkpoint_dir(output_dir) / f"step-{step:08d}"
    with atomic_dir(path, replace=True) as tmp:
        save_file(weights, str(tmp / "trainable.safetensors"))
        if method_state is not None:
            torch_save(method_state, tmp / METHOD_STATE_FILE)
        torch_save(optimizer_state, tmp / "optimizer.pt")
        torch_save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch_save(rng_state(), tmp / "rng.pt")
        # Written last: its presence marks the checkpoint complete even on filesystems without atomic rename.
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **extra}, indent=2) + "\n")
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(path: Path, module: nn.Module, optimizer, scheduler) -> dict:
    weights = load_file(str(path / "trainable.safetensors"))
    expected = {n for n, p in module.named_parameters() if p.requires_grad}
    if set(weights) != expected:
        missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise RuntimeError(
            f"checkpoint {path} does not match this model: missing {missing[:5]}, unexpected {extra[:5]} "
            "(was the run started with a different model or LoRA setting?)"
        )
    params = dict(module.named_parameters())
    for name, value in weights.items():
        sharding.load_into(params[name], value)
    sharding.load_optimizer_state(optimizer, safe_torch_load(path / "optimizer.pt"))
    scheduler.load_state_dict(safe_torch_load(path / "scheduler.pt"))
    set_rng_state(safe_torch_load(path / "rng.pt"))
    state = json.loads((path / STATE_FILE).read_text())
    if (path / METHOD_STATE_FILE).is_file():
        state["method_state"] = safe_torch_load(path / METHOD_STATE_FILE)
    return state
