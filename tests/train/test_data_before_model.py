"""Every method reads and checks its data before it loads a model: a bad row is reported at once, naming its file
and line, not after the weights have loaded (the model here does not even exist, so loading it would fail)."""

from __future__ import annotations

import json

import pytest

from alignkit.data import DataError
from alignkit.methods import METHODS
from alignkit.train.config_loading import load_config


@pytest.mark.parametrize("name", list(METHODS))
def test_a_bad_row_is_reported_before_any_model_loads(name, tmp_path):
    bad = tmp_path / "bad.jsonl"
    # Valid JSON, but no method can use it: each kind of data needs other fields.
    bad.write_text(json.dumps({"note": "no usable fields"}) + "\n", encoding="utf-8")
    extra = [f"sft_data.train={bad}"] if name == "hbat" else []
    spec = METHODS[name]
    cfg = load_config(spec.config, None, [f"model={tmp_path / 'no-such-model'}", f"data.train={bad}",
                                          f"output_dir={tmp_path / 'run'}", "progress=false", *extra])
    with pytest.raises(DataError, match=rf"{bad}:1"):
        spec.train(cfg)


def _snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("state", ["unfinished", "finished, overwrite=true"])
def test_bad_data_leaves_an_earlier_run_in_the_folder_untouched(name, state, tmp_path):
    """A run that stops on bad data has written nothing: an unfinished run's checkpoint, metrics and config are
    as they were (resume=auto would have continued it), and a finished run that overwrite=true would replace is
    still whole."""
    out = tmp_path / "run"
    (out / "checkpoints" / "step-00000002").mkdir(parents=True)
    (out / "checkpoints" / "step-00000002" / "trainer_state.json").write_text('{"step": 2}')
    (out / "config.yaml").write_text("method: earlier\n")
    (out / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    if state.startswith("finished"):
        (out / "final").mkdir()
        (out / "final" / "model.safetensors").write_bytes(b"weights")
        (out / "summary.json").write_text("{}")
        (out / "round-01").mkdir()  # iterative DPO's rounds
        (out / "round-01" / "samples.jsonl").write_text("{}\n")
    before = _snapshot(out)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"note": "no usable fields"}) + "\n", encoding="utf-8")
    extra = [f"sft_data.train={bad}"] if name == "hbat" else []
    overwrite = ["overwrite=true"] if state.startswith("finished") else []
    spec = METHODS[name]
    cfg = load_config(spec.config, None, [f"model={tmp_path / 'no-such-model'}", f"data.train={bad}",
                                          f"output_dir={out}", "progress=false", *overwrite, *extra])
    with pytest.raises(DataError, match=rf"{bad}:1"):
        spec.train(cfg)
    after = _snapshot(out)
    after.pop(".alignkit.lock", None)
    assert after == before
