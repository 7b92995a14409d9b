"""The processes of one command under `accelerate launch` (or torchrun): which one this is, the share of a list
of work each one does, and the whole list again once every one has done its share.

A pipeline stage that samples, judges or labels splits its work into the chunks it would run in one process (same
chunks, same seeds), gives each process a consecutive block of them and gathers the results in chunk order, so that
N processes produce exactly what one does. Files are written by the main process, and the others wait for it
(`on_main`) before anything reads them. Without a launcher every function here is the one-process one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def join() -> None:
    """Join the launcher's process group, when there is one and it is not joined yet (accelerate's shared state, so
    that every later `Accelerator` of the command uses the same group)."""
    if launched() > 1 and not dist.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())


def launched() -> int:
    """How many processes the launcher started for this command (1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def one_process_only(command: str) -> str | None:
    """What to tell a user who ran `command`, which runs in one process for now, under a launcher (None: no
    launcher)."""
    if launched() <= 1:
        return None
    return (f"{command} runs in one process for now: run it without `accelerate launch` (it was started as "
            f"{launched()} processes). Its trainers run under a launcher one by one (alignkit sft/dpo/reward/ppo/"
            "grpo ...), and so does alignkit iterative-dpo; docs/scaling.md says what runs where")


def _grouped() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if _grouped() else 0


def world() -> int:
    return dist.get_world_size() if _grouped() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if _grouped():
        dist.barrier()


def my_share(items: Sequence[T]) -> Sequence[T]:
    """This process's consecutive block of `items` (the first `len % world` processes take one more)."""
    base, extra = divmod(len(items), world())
    r = rank()
    start = r * base + min(r, extra)
    return items[start : start + base + (1 if r < extra else 0)]


def gathered(part: list[T]) -> list[T]:
    """Every process's `part`, concatenated in process order (so, with `my_share`, in the original order), on
    every process."""
    if not _grouped():
        return part
    parts: list = [None] * world()
    dist.all_gather_object(parts, part)
    return [item for p in parts for item in p]


def on_main(write: Callable[..., object], *args) -> None:
    """`write(*args)` on the main process only; no process goes on until it is done. A failure there ends the main
    process, and the launcher then ends the others."""
    if is_main():
        write(*args)
    barrier()
