"""The stage runner every pipeline uses: typed records written atomically and read back, finished stages reused,
and another run's stages taken over exactly where the settings they read (derived while they ran) are the same."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from pydantic import BaseModel

from alignkit.utils.stages import RECORD_FILE, Stage, StageError, StageRunner, read_finished, setting_at


class Section(BaseModel):
    x: int = 1
    y: int = 2

    def total(self) -> int:
        return self.x + self.y


class Settings(BaseModel):
    a: Section = Section()
    b: Section = Section()
    name: str = "run"


@dataclass(frozen=True)
class Count:
    value: int
    where: list[str]


class Pipeline:
    """Three stages: `first` reads a.x; `second` reads b (through a method: all of b) and first's record; `third`
    does not apply when name == "short"."""

    def __init__(self, out, settings: Settings):
        self.runner = StageRunner(out, settings, log=lambda message: None)
        self.out, self.calls = out, []

    def first(self, folder):
        self.calls.append("first")
        return Count(self.runner.settings.a.x * 10, [str(folder)])

    def second(self, folder):
        self.calls.append("second")
        return Count(self.runner.record("first").value + self.runner.settings.b.total(), [])

    def third(self, folder):
        self.calls.append("third")
        return None if self.runner.settings.name == "short" else Count(0, [])

    def run(self, take_over=None, required=False):
        for name in ("first", "second", "third"):
            self.runner.run(Stage(name, self.out / name, Count, getattr(self, name)), take_over,
                            required=required and not self.runner.finished)
        return {k: v.record for k, v in self.runner.finished.items()}


def test_records_are_written_once_read_back_typed_and_reused(tmp_path):
    out = tmp_path / "run"
    first = Pipeline(out, Settings())
    records = first.run()
    assert records["first"] == Count(10, [str(out / "first")]) and records["second"] == Count(13, [])
    stored = json.loads((out / "second" / RECORD_FILE).read_text())
    # What the stage read, derived while it ran: its own settings (all of b, through a method) and first's record.
    assert stored["reads"] == {"b": {"x": 1, "y": 2}} and stored["inputs"] == ["first"]
    assert json.loads((out / "first" / RECORD_FILE).read_text())["reads"] == {"a.x": 1}
    again = Pipeline(out, Settings())
    assert again.run() == records and again.calls == []  # every stage reused, read back as the same records
    assert isinstance(read_finished(out / "first", Count).record, Count)
    assert read_finished(tmp_path / "nothing", Count) is None


def test_a_stage_that_does_not_apply_leaves_nothing(tmp_path):
    pipeline = Pipeline(tmp_path / "run", Settings(name="short"))
    assert set(pipeline.run()) == {"first", "second"} and not (tmp_path / "run" / "third").exists()


def test_another_run_stands_in_only_where_what_a_stage_read_is_the_same(tmp_path):
    theirs = tmp_path / "theirs"
    Pipeline(theirs, Settings()).run()

    # a.y and name are read by no stage that ran there: every finished stage stands in.
    same = Pipeline(tmp_path / "same", Settings(a=Section(y=5), name="other"))
    records = same.run(take_over=theirs)
    assert same.calls == ["third"]  # third read `name`, which differs
    assert {k: v.reused_from for k, v in same.runner.finished.items()} == {
        "first": str(theirs), "second": str(theirs), "third": None}
    assert records["first"].where == [str(theirs / "first")]  # the record as it was

    # b.y is read by second (through b.total()): first stands in, second runs here.
    later = Pipeline(tmp_path / "later", Settings(b=Section(y=7)))
    assert later.run(take_over=theirs)["second"] == Count(18, []) and later.calls == ["second"]

    # a.x changes first, so second runs too: it used first's record, which was not taken over.
    early = Pipeline(tmp_path / "early", Settings(a=Section(x=3)))
    assert early.run(take_over=theirs)["second"] == Count(33, []) and early.calls == ["first", "second"]

    # Required: where even the first stage cannot stand in, nothing runs and the error says why.
    refused = Pipeline(tmp_path / "refused", Settings(a=Section(x=3)))
    with pytest.raises(StageError, match=r"stage first: a\.x: 1 there, 3 here"):
        refused.run(take_over=theirs, required=True)
    assert refused.calls == [] and not (tmp_path / "refused").exists()


def test_a_stage_sees_its_settings_read_only_and_a_record_of_other_fields_is_refused(tmp_path):
    runner = StageRunner(tmp_path, Settings())

    def writes(folder):
        runner.settings.a.x = 5

    with pytest.raises(AttributeError, match="read-only"):
        runner.run(Stage("writes", tmp_path / "w", Count, writes))
    assert setting_at(Settings(), "a.x") == 1 and setting_at(Settings(), "") == Settings().model_dump(mode="json")
    with pytest.raises(KeyError):
        setting_at(Settings(), "a.z")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / RECORD_FILE).write_text(json.dumps({"value": 1}))  # an older, untyped marker
    with pytest.raises(StageError, match="not a stage record"):
        read_finished(tmp_path / "old", Count)

    @dataclass(frozen=True)
    class Other:
        value: int

    runner.run(Stage("counted", tmp_path / "c", Count, lambda folder: Count(1, [])))
    with pytest.raises(StageError, match="fields"):
        read_finished(tmp_path / "c", Other)

    # A record written before a version added an optional field reads as its default; a new required one refuses.
    @dataclass(frozen=True)
    class Grown:
        value: int
        where: list[str]
        rounds: list | None = None

    @dataclass(frozen=True)
    class Demanding:
        value: int
        where: list[str]
        rounds: list

    assert read_finished(tmp_path / "c", Grown).record == Grown(1, [], None)
    with pytest.raises(StageError, match="fields"):
        read_finished(tmp_path / "c", Demanding)
