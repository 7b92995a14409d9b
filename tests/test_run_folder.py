"""One output folder's life (`RunFolder`), the same for a training run, iterative DPO and the pipelines: what a run
does with what it finds, what it removes and when, and that a second holder is refused."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from alignkit.utils.io import FolderInUse
from alignkit.utils.run_folder import Opening, RunFolder


class Refused(RuntimeError):
    pass


def _folder(path, **kw) -> RunFolder:
    return RunFolder(path, "run", Refused, ("checkpoints", "round-*"), **kw)


def _make(path, *names):
    for name in names:
        target = path / name
        if "." in name:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("{}")
        else:
            target.mkdir(parents=True)


@pytest.mark.parametrize("found, resume, overwrite, expected", [
    ((), "auto", False, Opening.NEW),
    (("checkpoints/step-00000002",), "auto", False, Opening.RESUME),
    (("round-01",), "auto", False, Opening.RESUME),
    (("checkpoints/step-00000002",), "never", True, Opening.REPLACE),
    (("final", "summary.json"), "auto", True, Opening.REPLACE),
    (("final", "checkpoints/step-00000002"), "auto", False, Opening.REFINISH),  # killed between final/ and summary
])
def test_what_a_run_does_with_what_it_finds(tmp_path, found, resume, overwrite, expected):
    _make(tmp_path, *found)
    with _folder(tmp_path) as folder:
        assert folder.open(resume=resume, overwrite=overwrite) is expected


@pytest.mark.parametrize("found, resume, says", [
    (("final", "summary.json"), "auto", "already holds a finished run (final/ exists)"),
    (("round-01", "round-02"), "never", "holds an unfinished run (round-01, ...). Use resume=auto"),
])
def test_a_run_is_refused_where_it_would_mix_with_or_lose_another(tmp_path, found, resume, says):
    _make(tmp_path, *found)
    with _folder(tmp_path) as folder, pytest.raises(Refused, match=f"{tmp_path}.*" + says.replace("(", r"\(")
                                                    .replace(")", r"\)").replace(".", r"\.")):
        folder.open(resume=resume, overwrite=False)


def test_nothing_is_removed_before_the_run_begins_and_a_replaced_run_goes_whole(tmp_path):
    _make(tmp_path, "final/model.bin", "summary.json", "metrics.jsonl", "checkpoints/step-00000004", "round-01",
          "notes.txt")
    (tmp_path / ".summary.json.0123456789ab.tmp").write_text("half")  # what a killed write left
    with _folder(tmp_path) as folder:
        assert not (tmp_path / ".summary.json.0123456789ab.tmp").exists()
        assert folder.open(resume="auto", overwrite=True) is Opening.REPLACE
        assert (tmp_path / "final" / "model.bin").exists() and (tmp_path / "round-01").exists()
        folder.begin({"method": "sft", "lr": 1e-5})
        left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".alignkit.lock", "config.yaml", "notes.txt"]  # not its own: kept


def test_a_run_finished_again_replaces_its_final_model_only_once_the_new_one_is_whole(tmp_path):
    _make(tmp_path, "final/old.bin", "checkpoints/step-00000004")
    with _folder(tmp_path) as folder:
        assert folder.open(resume="auto", overwrite=False) is Opening.REFINISH
        folder.final_set_aside()
        assert not folder.final.exists() and (tmp_path / ".final.replaced" / "old.bin").exists()
        _make(tmp_path, "final/new.bin")
        folder.finish({"steps": 4})
    assert sorted(p.name for p in (tmp_path / "final").iterdir()) == ["new.bin"]
    assert not (tmp_path / ".final.replaced").exists()
    assert json.loads((tmp_path / "summary.json").read_text()) == {"steps": 4}


def test_a_pipeline_claims_its_folder_for_one_configuration(tmp_path):
    pipeline = RunFolder(tmp_path / "p", "comparison", Refused)
    with pipeline:
        pipeline.claim({"recipes": ["a"], "lr": 1})
    with pipeline:
        pipeline.claim({"recipes": ["a", "b"], "lr": 1}, may_change=("recipes",))  # what to run, not how
        with pytest.raises(Refused, match=r"holds a comparison with other settings \(another configuration: lr differ\)"):
            pipeline.claim({"recipes": ["a"], "lr": 2}, may_change=("recipes",))
    _make(tmp_path / "other", "something.txt")
    with RunFolder(tmp_path / "other", "comparison", Refused) as other, \
            pytest.raises(Refused, match="is not empty and holds no comparison"):
        other.claim({"lr": 1})


def test_a_second_process_on_a_held_folder_is_refused_at_once(tmp_path):
    with _folder(tmp_path):
        probe = subprocess.run([sys.executable, "-c", "import sys; from alignkit.utils.run_folder import RunFolder; "
                                f"RunFolder({str(tmp_path)!r}, 'run', RuntimeError).hold()"],
                               capture_output=True, text=True, timeout=120)
    assert probe.returncode != 0 and FolderInUse.__name__ in probe.stderr and "in use by another" in probe.stderr
