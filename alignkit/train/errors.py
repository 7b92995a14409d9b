"""Why a run stopped, as the command line reports it: the errors every part of `train/` raises."""

from __future__ import annotations


class RunError(RuntimeError):
    """The run cannot start as configured (output directory conflicts, data too small...)."""


class NonFiniteError(RunError):
    """A step's loss or gradient is NaN or infinite: the run stopped there, before applying it."""


class Interrupted(RunError):
    """Ctrl-C: the run stopped at a step boundary with a checkpoint the same command resumes from."""
