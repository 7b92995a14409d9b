"""EvalResults: results.json read back typed, written back unchanged, lenient about absent fields and strict about
their shape."""

from __future__ import annotations

import json
import math

import pytest

from alignkit.eval.metrics import METRIC, METRICS
from alignkit.eval.results import EvalResults, ModelRun, ResultsError, Sample, WinRate
from tests.eval.test_report import make_results


def test_results_json_reads_typed_and_writes_back_the_same_object():
    data = make_results()
    results = EvalResults.from_json(data, "results.json")
    assert results.names == ["base", "sft", "dpo"]
    assert results.models[0] == ModelRun("base", "smollm2-135m", 123.4)
    assert isinstance(results.win_rates[0], WinRate) and isinstance(results.samples[0], Sample)
    assert results.metric_info["asr"].n == 72 and results.metric_info["asr"].better == "lower"
    assert results.value("sft", "asr") == 0.4
    # Written back field for field, in results.json's order; read again, the same results.
    assert [key for key in results.to_json() if key in data] == list(data)
    assert EvalResults.from_json(json.loads(json.dumps(results.to_json()))) == results
    assert results.to_json()["metrics"] == data["metrics"]
    assert "pipeline" not in results.to_json()
    assert results.with_pipeline({"stages": {}}).to_json()["pipeline"] == {"stages": {}}


def test_absent_fields_read_as_not_measured():
    empty = EvalResults.from_json({})
    assert empty == EvalResults() and empty.names == [] and empty.metric_keys == []
    old = EvalResults.from_json({"metrics": {"m": {"asr": 0.5, "kl_to_reference": float("nan"), "bias_score": None,
                                                   "made_up": True}}})
    assert old.value("m", "asr") == 0.5
    assert old.value("m", "kl_to_reference") is None and old.value("m", "bias_score") is None
    assert old.value("m", "made_up") is None and old.value("other", "asr") is None
    # Results written before they said who scored a metric: as its definition does, else rules.
    assert old.info("kl_to_reference").scorer == METRIC["kl_to_reference"].scorer == "reference"
    assert old.info("made_up").scorer == "rules" and old.label("made_up") == "Made up"
    assert old.names == ["m"] and old.metric_keys == ["asr", "kl_to_reference", "bias_score", "made_up"]
    # Unknown fields of a record (a later version's) are left out, not refused.
    assert EvalResults.from_json({"models": [{"name": "a", "gpu": "h100"}]}).models == (ModelRun("a"),)


@pytest.mark.parametrize(
    "data, message",
    [
        ([], "results.json: expected a JSON object, got list"),
        ({"metrics": [1]}, "results.json: field 'metrics': expected dict, got list"),
        ({"metrics": {"a": 0.5}}, "results.json: field 'metrics.a': expected an object"),
        ({"models": [{"name": "a"}, {"spec": "x"}]}, r"results.json: field 'models\[1\]': 'name' is missing"),
        ({"models": ["a"]}, r"field 'models\[0\]': expected an object, got str"),
        ({"win_rates": [{"a": "x"}]}, r"field 'win_rates\[0\]': 'b' is missing"),
        ({"metric_info": {"asr": 3}}, r"field 'metric_info.asr': expected an object, got int"),
        ({"breakdowns": {"asr_by_category": 1}}, r"field 'breakdowns.asr_by_category': expected an object"),
        ({"settings": "fast"}, "field 'settings': expected dict, got str"),
    ],
)  # fmt: skip
def test_wrong_shapes_name_the_file_and_field(data, message):
    with pytest.raises(ResultsError, match=message):
        EvalResults.from_json(data, "results.json")


def test_read_names_the_file_and_line_of_bad_json(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{\n  "metrics": {,\n}', encoding="utf-8")
    with pytest.raises(ResultsError, match=rf"{path}:2: not valid JSON"):
        EvalResults.read(path)
    path.write_text(json.dumps({"metrics": {"a": {m.key: 0.25 for m in METRICS}}}), encoding="utf-8")
    results = EvalResults.read(path)
    assert all(math.isclose(results.value("a", m.key), 0.25) for m in METRICS)
