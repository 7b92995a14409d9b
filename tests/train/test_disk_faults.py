"""The output disk fills up or turns read-only during a checkpoint: the run stops with a clear error, the previous
checkpoint is intact, nothing half-written is left, and the same command resumes from it once the disk is fixed,
ending with the weights of a run that never failed.

On a machine where the tests may mount a small tmpfs (root in a container, as in CI) a full disk is real: the tmpfs is
filled to the last byte between two checkpoints. Both faults are also injected into the checkpoint writer, so the
behaviour is tested on every machine.
"""

from __future__ import annotations

import errno
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import alignkit.train.checkpoint as checkpoint_module
from alignkit.methods.sft import SFTConfig, train_sft
from alignkit.train.config import DataConfig
from alignkit.train.run import RunError
from alignkit.utils.io import torch_save


def _cfg(tiny_dir, sft_file, out: Path) -> SFTConfig:
    return SFTConfig(model=tiny_dir, data=DataConfig(train=sft_file), output_dir=str(out), max_steps=6, batch_size=4,
                     lr=1e-3, precision="fp32", progress=False, max_length=64, save_every=2, keep_checkpoints=5)


def _after_step(monkeypatch, n: int, action) -> None:
    """Run `action()` once, right after optimizer step n (between the checkpoints of steps 2 and 4)."""
    real, done = torch.optim.AdamW.step, [0]

    def step(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        done[0] += 1
        if done[0] == n:
            action()
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step)


def _check_stopped_then_resumed(tiny_dir, sft_file, out: Path, reference: Path, message: str, fix) -> None:
    checkpoints = out / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-00000002"], "a partial checkpoint was left"
    assert f"step 4: the checkpoint could not be written into {checkpoints} ({message})" in fix.error
    assert f"{checkpoints / 'step-00000002'} is intact" in fix.error
    fix()
    resumed = train_sft(_cfg(tiny_dir, sft_file, out))
    assert resumed.resumed_from == 2
    a = load_file(str(reference / "final" / "model.safetensors"))
    b = load_file(str(out / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs, or a skip where this machine does not let the tests mount one."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}); "
                    "test_an_injected_disk_fault_... covers the same behaviour")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_disk_that_fills_up_during_a_checkpoint(small_disk, tiny_dir, sft_file, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    train_sft(_cfg(tiny_dir, sft_file, reference))
    out = small_disk / "run"
    filler = small_disk / "filler"

    def fill_disk():  # to the last byte
        with open(filler, "wb") as handle:
            try:
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
            except OSError as err:
                assert err.errno == errno.ENOSPC

    _after_step(monkeypatch, 3, fill_disk)
    with pytest.raises(RunError) as err:
        train_sft(_cfg(tiny_dir, sft_file, out))
    monkeypatch.undo()

    def fix():
        filler.unlink()

    fix.error = str(err.value)
    _check_stopped_then_resumed(tiny_dir, sft_file, out, reference, "No space left on device", fix)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_an_injected_disk_fault_during_a_checkpoint_keeps_the_previous_one(code, tiny_dir, sft_file, tmp_path,
                                                                          monkeypatch):
    """A full disk, or one that turned read-only (a tmpfs cannot be remounted read-only while the run holds files
    open on it, so that fault is raised by hand). The full disk is real: the second checkpoint's optimizer state is
    written by torch into /dev/full, whose every write fails with ENOSPC (given a path, torch's own writer once
    reported that as "unexpected pos ..." and the run died with a traceback; the soak of the real cai found it)."""
    reference = tmp_path / "reference"
    train_sft(_cfg(tiny_dir, sft_file, reference))
    out = tmp_path / "run"
    real_save, calls = checkpoint_module.torch_save, [0]

    def save(obj, path):
        calls[0] += 1
        if calls[0] == 4:  # the second checkpoint's first torch file: the weights are on disk when the fault comes
            Path(path).write_bytes(b"partial")
            if code == errno.ENOSPC:
                real_save(obj, "/dev/full")
            raise OSError(code, os.strerror(code))
        return real_save(obj, path)

    monkeypatch.setattr(checkpoint_module, "torch_save", save)
    with pytest.raises(RunError) as err:
        train_sft(_cfg(tiny_dir, sft_file, out))
    monkeypatch.undo()

    def fix():
        pass

    fix.error = str(err.value)
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    _check_stopped_then_resumed(tiny_dir, sft_file, out, reference, os.strerror(code), fix)


def test_torch_files_on_a_full_disk_fail_with_the_reason():
    """Given a path, torch.save reports a full disk as "unexpected pos ..."; through a Python file it is ENOSPC."""
    with pytest.raises(OSError) as err:
        torch_save({"w": torch.zeros(100_000)}, "/dev/full")
    assert err.value.errno == errno.ENOSPC
