"""One output folder's life, the same for every command that writes one: a training run (`Run`), iterative DPO's
rounds, and the pipelines (`alignkit cai`, `compare`).

A `RunFolder` is held by the main process from the moment it is opened until the command ends (a second command on
the same folder is refused at once, naming the holder), and what a killed run was writing there (`.NAME.HEX.tmp`) is
removed before anything in it is read. Then one of two ways on:

- a **pipeline** claims the folder for its settings (`claim`): a folder holding another configuration's results, or
  anything but the pipeline's own, is refused, so runs never mix; finished stages resume from their records;
- a **run** finds what the folder holds (`open`): nothing (a new run), its own unfinished work (resumed with
  `resume: auto`, refused with `resume: never` unless `overwrite`), a finished run (`final/` and `summary.json`:
  refused unless `overwrite`), or a run killed after `final/` was saved but before its summary (finished again).
  Nothing is removed until the run `begin`s writing — a run that fails before (bad data, a model that does not load)
  leaves the folder as it found it. The final model replaces an earlier one only once the new one is whole
  (`final_set_aside` / `finish`), and `summary.json`, written last by `finish`, marks the run finished.

Every method is called by every process; the main one alone touches the disk.
"""

from __future__ import annotations

import enum
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import yaml

from alignkit.utils import processes
from alignkit.utils.io import (atomic_write_json, atomic_write_text, claim_config_dir, lock_folder, remove_leftovers,
                               unlock_folder)

SUMMARY = "summary.json"
FINAL = "final"
_ASIDE = ".final.replaced"  # an earlier final/ while the new one is written (a run finished again)


class Opening(enum.Enum):
    """What a run does with the folder it opens."""

    NEW = "new"  # nothing of a run there: start
    RESUME = "resume"  # its unfinished work: continue from it
    REFINISH = "refinish"  # final/ without summary.json (killed in between): finish again from its last work
    REPLACE = "replace"  # overwrite: start; the old outputs go when the run begins


class RunFolder:
    """The output folder `path` of one command. `what` names its kind in messages ("run", "comparison"); `error` is
    the exception a refusal raises. `work`: the names (globs) of what an unfinished run of this kind leaves
    besides final/ and the summary (a training run's `checkpoints`, iterative DPO's `round-*`)."""

    def __init__(self, path: str | Path, what: str, error: type[Exception], work: tuple[str, ...] = ()):
        self.path, self.what, self.error, self.work = Path(path), what, error, work
        self.opening = Opening.NEW
        self._held = False

    # ----------------------------------------------------------------- holding

    def hold(self) -> RunFolder:
        """Claim the folder (the main process) and remove what a killed run was writing in it and its `work`
        folders; `release` (or the end of a `with` block) gives it back."""
        if processes.is_main() and not self._held:
            lock_folder(self.path)
            self._held = True
            for folder in (self.path, *self._existing_work()):
                if folder.is_dir():
                    remove_leftovers(folder)
        return self

    def release(self) -> None:
        if self._held:
            self._held = False
            unlock_folder(self.path)

    def __enter__(self) -> RunFolder:
        return self.hold()

    def __exit__(self, *exc) -> None:
        self.release()

    # ----------------------------------------------------------------- pipelines

    def claim(self, settings: dict, may_change: tuple[str, ...] = ()) -> None:
        """Claim the held folder for a pipeline's `settings` (recorded as config.json when new). Refused where it
        holds another configuration's results or anything but this kind's; `may_change`: keys that choose what to
        run, not how (`claim_config_dir`)."""
        conflict = processes.from_main(claim_config_dir, self.path, settings, may_change=may_change)
        if conflict == "foreign":
            raise self.error(f"{self.path} is not empty and holds no {self.what}; use another output_dir")
        if conflict:
            raise self.error(f"{self.path} holds a {self.what} with other settings (another configuration: "
                             f"{', '.join(conflict)} differ); use another output_dir, or delete that folder to start "
                             "over")

    # ----------------------------------------------------------------- runs

    @property
    def final(self) -> Path:
        return self.path / FINAL

    def _existing_work(self) -> list[Path]:
        return sorted(p for pattern in self.work for p in self.path.glob(pattern))

    def open(self, *, resume: str, overwrite: bool) -> Opening:
        """Decide, from what the held folder holds and the run's `resume` ("auto"/"never") and `overwrite`, what the
        run does with it (see the module docstring); a refusal raises `error` saying what to do instead."""
        final, finished = self.final.exists(), (self.path / SUMMARY).exists()
        started = self._existing_work()
        if final and not finished and resume == "auto" and not overwrite:
            self.opening = Opening.REFINISH
        elif final and not overwrite:
            raise self.error(f"{self.path} already holds a finished {self.what} (final/ exists). Choose another "
                             "output_dir, or pass overwrite=true to replace it.")
        elif final or (started and overwrite and resume != "auto"):
            self.opening = Opening.REPLACE
        elif started and resume == "auto":
            self.opening = Opening.RESUME
        elif started:
            raise self.error(f"{self.path} holds an unfinished {self.what} ({started[0].name}"
                             f"{', ...' if len(started) > 1 else ''}). Use resume=auto to continue it, overwrite=true "
                             "to start over, or another output_dir.")
        else:
            self.opening = Opening.NEW
        return self.opening

    def begin(self, config: dict[str, Any]) -> None:
        """The run starts writing: a replaced run's outputs are removed (overwrite), and `config` written as
        config.yaml."""
        def write() -> None:
            if self.opening is Opening.REPLACE:
                for target in (self.final, self.path / SUMMARY, self.path / "metrics.jsonl", self.path / "cache",
                               *self._existing_work()):
                    shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
                self.opening = Opening.NEW
            atomic_write_text(self.path / "config.yaml", yaml.safe_dump(config))

        processes.on_main(write)

    def final_set_aside(self) -> None:
        """Before a run finished again writes its final model: the earlier final/ is moved aside (`finish` removes
        it), so a new one can take its place whole."""
        def aside() -> None:
            if self.opening is Opening.REFINISH and self.final.exists():
                shutil.rmtree(self.path / _ASIDE, ignore_errors=True)
                os.replace(self.final, self.path / _ASIDE)

        processes.on_main(aside)

    def finish(self, summary: dict, after: Callable[[], None] | None = None) -> None:
        """The run is finished: `summary` written as summary.json (last, so that its presence means a whole
        final/), the set-aside final/ removed, then `after` (the main process)."""
        def write() -> None:
            shutil.rmtree(self.path / _ASIDE, ignore_errors=True)
            atomic_write_json(self.path / SUMMARY, summary)
            if after is not None:
                after()

        processes.on_main(write)


__all__ = ["FINAL", "Opening", "RunFolder", "SUMMARY"]
