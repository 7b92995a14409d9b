"""One stage runner for every pipeline: `alignkit cai` (and `make demo`, its settings), `alignkit compare` and
iterative DPO's rounds.

A pipeline is an explicit tuple of `Stage`s. A stage runs into its own folder and returns a frozen record (a dataclass
of plain values), or None where it does not apply to the configuration. The runner writes the record atomically as
the folder's `done.json`, with the seconds the stage took, the settings it read and the stages whose records it
used, and reads it back typed; a rerun takes a finished stage from there instead of running it again.

Which settings a stage depends on is derived, not listed: while a stage runs, the pipeline reads its settings
through `StageRunner.settings`, a view that notes every setting read (a whole section when a method of it is called),
and other stages' records through `StageRunner.record`. Another run's finished stage (`take_over`) stands in for
this run's only where every setting it read has the same value here and every stage it used was taken over too (or
did not apply in either run), so a new setting that changes a stage is counted the moment the stage reads it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from alignkit.utils import processes
from alignkit.utils.io import atomic_write_json, remove_leftovers

RECORD_FILE = "done.json"
R = TypeVar("R")


class StageError(RuntimeError):
    """A stage record cannot be read, or a stage cannot run as configured."""


@dataclass(frozen=True)
class Stage(Generic[R]):
    """`run(folder)` returns a `record` (a frozen dataclass), or None where the stage does not apply. `gate`, if
    given, is applied to the record whether the stage ran now or earlier: it decides whether the run goes on and
    computes nothing the stage's record holds."""

    name: str
    folder: Path
    record: type[R]
    run: Callable[[Path], R | None]
    gate: Callable[[R], None] | None = None


@dataclass(frozen=True)
class Finished(Generic[R]):
    """A finished stage: its record, the seconds it took, what it read, and the run it was taken over from."""

    record: R
    seconds: float
    reads: dict[str, Any] = field(default_factory=dict)  # dotted setting -> its value (JSON) when the stage read it
    inputs: tuple[str, ...] = ()  # stages whose records it used
    reused_from: str | None = None

    def summary(self) -> dict:
        """The record as JSON, with its seconds (and where it was taken over from): what a manifest shows."""
        out = {**to_jsonable_python(dataclasses.asdict(self.record)), "seconds": self.seconds}
        return out if self.reused_from is None else {**out, "reused_from": self.reused_from}


def write_finished(folder: Path, finished: Finished) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / RECORD_FILE, {
        "record": to_jsonable_python(dataclasses.asdict(finished.record)), "seconds": finished.seconds,
        "reads": finished.reads, "inputs": list(finished.inputs), "reused_from": finished.reused_from})


def read_finished(folder: Path, record: type[R]) -> Finished[R] | None:
    """The finished stage in `folder`, its record typed; None when the stage has not finished there."""
    path = folder / RECORD_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("record"), dict):
        raise StageError(f"{path}: not a stage record of this alignkit version (no 'record'); finish that run with "
                         "the version that started it, or use another output_dir")
    names = {f.name for f in dataclasses.fields(record)}
    # A field added since the record was written, with a default, reads as that default: a finished run stays usable
    # (resumed, or reused by another) across a version that only adds optional fields.
    required = {f.name for f in dataclasses.fields(record)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    if not required <= set(data["record"]) <= names:
        raise StageError(f"{path}: a {record.__name__} has the fields {sorted(names)}, this record "
                         f"{sorted(data['record'])}; use another output_dir")
    return Finished(record(**data["record"]), data["seconds"], data.get("reads", {}), tuple(data.get("inputs", ())),
                    data.get("reused_from"))


class _Reads:
    def __init__(self):
        self.settings: dict[str, Any] = {}
        self.inputs: list[str] = []

    def note(self, path: str, value: Any) -> None:
        self.settings.setdefault(path, to_jsonable_python(value))


class Tracked:
    """A read-only view of a settings model that notes, in `reads`, each setting read through it: a field's value,
    or the whole model where one of its methods (`model_dump`, `written`, ...) is used. Sections come back tracked."""

    __slots__ = ("_model", "_path", "_reads")

    def __init__(self, model: BaseModel, path: str, reads: _Reads):
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_reads", reads)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._model, name)
        if name not in type(self._model).model_fields:  # a method or property: it may read anything
            self._reads.note(self._path, self._model)
            return value
        path = f"{self._path}.{name}" if self._path else name
        if isinstance(value, BaseModel):
            return Tracked(value, path, self._reads)
        self._reads.note(path, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a stage's settings are read-only")


def setting_at(settings: BaseModel, path: str) -> Any:
    """The JSON value of the dotted setting `path` ("" for all of them) in `settings`; a KeyError when it has none."""
    value: Any = settings
    for part in path.split(".") if path else ():
        if not isinstance(value, BaseModel) or part not in type(value).model_fields:
            raise KeyError(path)
        value = getattr(value, part)
    return to_jsonable_python(value)


class StageRunner:
    """Runs a pipeline's stages in order under one run folder `out`, for one `settings` model."""

    def __init__(self, out: Path, settings: BaseModel, log: Callable[[str], None] = print, label: str = "stage"):
        self.out, self._settings, self.log, self.label = Path(out), settings, log, label
        self.finished: dict[str, Finished] = {}
        self.skipped: set[str] = set()
        self._reads: _Reads | None = None

    @property
    def settings(self):
        """The settings; inside a running stage, a view that notes what the stage reads."""
        return self._settings if self._reads is None else Tracked(self._settings, "", self._reads)

    def record(self, stage: str):
        """The record of a finished stage (None when it did not apply), noted as an input of the running stage."""
        if self._reads is not None and stage not in self._reads.inputs:
            self._reads.inputs.append(stage)
        finished = self.finished.get(stage)
        return None if finished is None else finished.record

    def run(self, stage: Stage, take_over: Path | None = None, *, required: bool = False) -> Finished | None:
        """The stage's result: its own earlier one, else the same stage of the run `take_over` where it stands in
        (see the module docstring), else a fresh run. None when the stage does not apply. With `required`, a
        finished stage of `take_over` that cannot stand in is a StageError saying why, before anything runs."""
        name = f"{self.label} {stage.name}"
        finished = read_finished(stage.folder, stage.record)
        theirs = None if finished is not None or take_over is None else read_finished(
            take_over / stage.folder.relative_to(self.out), stage.record)
        why = [] if theirs is None else self.differences(theirs, str(take_over))
        if why and required:
            raise StageError(f"stage {stage.name}: " + "; ".join(why[:3]))
        if finished is not None:
            self.log(f"== {name}: finished earlier, reusing {stage.folder}")
        elif theirs is not None and not why:
            finished = dataclasses.replace(theirs, reused_from=str(take_over))
            processes.on_main(write_finished, stage.folder, finished)
            self.log(f"== {name}: reusing the identical stage of {take_over}")
        else:
            if why:
                self.log(f"== {name}: {take_over}'s differs ({'; '.join(why[:3])}), so it runs here")
            self.log(f"== {name}: running into {stage.folder}")
            processes.on_main(remove_leftovers, stage.folder)  # what a killed attempt of this stage was writing
            started, self._reads = time.perf_counter(), _Reads()
            try:
                record = stage.run(stage.folder)
            finally:
                reads, self._reads = self._reads, None
            if record is None:
                self.skipped.add(stage.name)
                self.log(f"== {name}: skipped")
                return None
            if not isinstance(record, stage.record):
                raise TypeError(f"stage {stage.name} returned {type(record).__name__}, not {stage.record.__name__}")
            finished = Finished(record, round(time.perf_counter() - started, 1), reads.settings, tuple(reads.inputs))
            processes.on_main(write_finished, stage.folder, finished)  # every process ran the stage; one writes
            self.log(f"== {name}: done in {finished.seconds:.0f} s")
        self.finished[stage.name] = finished
        if stage.gate is not None:
            stage.gate(finished.record)
        return finished

    def differences(self, theirs: Finished, other: str) -> list[str]:
        """What keeps the run `other`'s finished stage from standing in for this run's: settings it read that
        differ here, and stages it used that were not taken over from `other` (nor skipped here)."""
        why = []
        for path, value in theirs.reads.items():
            try:
                mine = setting_at(self._settings, path)
            except KeyError:
                mine = "(no such setting)"
            if mine != value:
                why.append(f"{path or 'the settings'}: {_short(value)} there, {_short(mine)} here")
        for stage in theirs.inputs:
            finished = self.finished.get(stage)
            if stage in self.skipped or (finished is not None and finished.reused_from == other):
                continue
            why.append(f"it used stage {stage}, which " + ("ran here" if finished else "did not run here"))
        return why


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = ["Finished", "RECORD_FILE", "Stage", "StageError", "StageRunner", "Tracked", "read_finished",
           "setting_at", "write_finished"]

