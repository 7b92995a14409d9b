"""Every method reads and checks its data before it loads a model: a bad row is reported at once, naming its file
and line, not after the weights have loaded (the model here does not even exist, so loading it would fail)."""

from __future__ import annotations

import json

import pytest

from alignkit.data import DataError
from alignkit.methods import METHODS
from alignkit.train.config import load_config


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
