"""The processes of one command under `accelerate launch` (or torchrun): which one this is, the share of a list
of work each one does, and the whole list again once every one has done its share.

A pipeline stage that samples, judges or labels splits its work into the chunks it would run in one process (same
chunks, same seeds), gives each process a consecutive block of them and gathers the results in chunk order, so that
N processes produce exactly what one does. Files are written by the main process, and the others wait for it
(`on_main`) before anything reads them. Without a launcher every function here is the one-process one.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist

from alignkit.utils.progress import batches

T = TypeVar("T")


def join() -> None:
    """Join the launcher's process group, when there is one and it is not joined yet (accelerate's shared state, so
    that every later `Accelerator` of the command uses the same group)."""
    if launched() > 1 and not dist.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for a process group's (or a server's) rendezvous.

    Chosen below the system's ephemeral range: a port in it may be handed to an outgoing connection between this
    choice and the listener's bind, and a client that polls a not-yet-listening port of that range can connect to
    itself (same source and destination port) and hold it — either way the listener fails to bind, now and then."""
    low = _ephemeral_low()
    if low > 11024:
        for port in random.Random().sample(range(10000, low - 1000), 64):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # no room below it: any port the system gives
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):  # not Linux: the IANA dynamic range
        return 49152


def launched() -> int:
    """How many processes the launcher started for this command (1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _grouped() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if _grouped() else 0


def world() -> int:
    return dist.get_world_size() if _grouped() else 1


def is_main() -> bool:
    return rank() == 0


def device() -> torch.device:
    """Where this process computes: its own GPU (the launcher's LOCAL_RANK) when there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


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


def batch_map(work: Callable[[int], list[T]], total: int, size: int, desc: str | None, *, shard: bool = False) -> list[T]:
    """`work(start)` for the start of each batch of `size` over `total` items, the results concatenated in batch
    order. With `shard` (every process of the command calls it alike), each process works its block of the batches
    and every process gets all the results: the batches, and whatever `work` seeds from `start`, are one process's,
    so the results are too. `work` must not itself wait on the other processes."""
    mine = set(my_share(range(0, total, size))) if shard else None
    out: list[T] = []
    for start in batches(total, size, desc):
        if mine is None or start in mine:
            out += work(start)
    return gathered(out) if shard else out


def from_main(compute: Callable[..., T], *args, **kwargs) -> T:
    """`compute(*args, **kwargs)` on the main process (a decision that reads or claims a folder, say), its result
    on every process."""
    box = [compute(*args, **kwargs) if is_main() else None]
    if _grouped():
        dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(write: Callable[..., object], *args) -> None:
    """`write(*args)` on the main process only; no process goes on until it is done. A failure there ends the main
    process, and the launcher then ends the others."""
    if is_main():
        write(*args)
    barrier()
