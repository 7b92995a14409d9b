"""Ctrl-C during training: the first one asks the run to stop at the next step boundary (where a checkpoint can be
written and the run resumed from it); a second one quits at once."""

from __future__ import annotations

import signal
import sys
import threading

import torch

from alignkit.utils import processes


class StopAtStepBoundary:
    """While entered (in the main thread), SIGINT sets `requested` instead of raising; the second SIGINT restores
    Python's handler and raises KeyboardInterrupt. `agreed()` is the same answer on every process of a launch."""

    def __init__(self, message: str):
        self.message = message
        self.requested = False
        self._previous = None

    def __enter__(self) -> StopAtStepBoundary:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            self.__exit__()
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{self.message} (Ctrl-C again to quit at once)", file=sys.stderr, flush=True)

    def agreed(self) -> bool:
        """Whether any process was asked to stop: a checkpoint needs every process of a sharded run."""
        if processes.world() == 1:
            return self.requested
        flag = torch.tensor([float(self.requested)], device=processes.device())
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())
