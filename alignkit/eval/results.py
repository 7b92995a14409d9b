"""What `alignkit eval` measured, typed: the harness returns an `EvalResults`, results.json holds its `to_json()`, and
the report, `alignkit report`, `alignkit compare` and `alignkit cai` read it back with `EvalResults.read`.

Reading is lenient about what is absent (results written by an earlier version, a suite part skipped, no judge): a
missing field takes its empty default and a missing or non-finite metric reads as not measured. It is strict about
shape: a field of the wrong type is an error naming the file and the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from alignkit.eval.metrics import METRIC, MetricInfo


class ResultsError(ValueError):
    """A results file or dict that is not the shape `alignkit eval` writes."""


@dataclass(frozen=True)
class ModelRun:
    """One evaluated model: its display name, what it was loaded from and the time its evaluation took."""

    name: str
    spec: str | None = None
    seconds: float | None = None
    generation_seconds: float | None = None
    drift_response_tokens: int | None = None


@dataclass(frozen=True)
class WinRate:
    """Mean P(a's response better than b's) under the judge, over n helpful prompts."""

    a: str
    b: str
    win_rate: float | None = None
    n: int | None = None


@dataclass(frozen=True)
class Sample:
    """One prompt of a suite part (`metric`) with every model's response and verdict."""

    metric: str | None = None
    id: str | None = None
    prompt: Any = None  # a string or a list of chat messages
    responses: dict[str, str] = field(default_factory=dict)
    verdicts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalResults:
    """One evaluation of one or more models on a suite.

    metrics       model name -> metric key -> value (None: not measured)
    metric_info   metric key -> its `MetricInfo`, in the eval's order
    breakdowns    breakdown key (e.g. asr_by_category) -> model name -> group -> a value or a dict of values
    pipeline      what a pipeline that ran this eval (e.g. `alignkit cai`) keeps about itself, with its part of the
                  report under "report"; None for a plain `alignkit eval`
    """

    alignkit_version: str | None = None
    created: str | None = None
    suite: str | None = None
    split: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    models: tuple[ModelRun, ...] = ()
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    metric_info: dict[str, MetricInfo] = field(default_factory=dict)
    breakdowns: dict[str, dict[str, Any]] = field(default_factory=dict)
    win_rates: tuple[WinRate, ...] = ()
    samples: tuple[Sample, ...] = ()
    peak_rss_gb: float | None = None
    pipeline: dict[str, Any] | None = None

    # ---------------------------------------------------------------- reading
    @property
    def names(self) -> list[str]:
        """Models in the order the results list them, then any that only appear in the metrics."""
        return list(dict.fromkeys([m.name for m in self.models] + list(self.metrics)))

    @property
    def metric_keys(self) -> list[str]:
        """metric_info's order (the eval's own), then metrics only some model reports."""
        keys = list(self.metric_info)
        for values in self.metrics.values():
            keys += list(values)
        return list(dict.fromkeys(keys))

    def value(self, model: str, key: str) -> float | None:
        """A finite metric value, or None (not measured, null, or NaN/inf, which json writes for failed metrics)."""
        value = self.metrics.get(model, {}).get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value) if math.isfinite(value) else None

    def info(self, key: str) -> MetricInfo:
        """How to read `key`, as these results say; who scored it, when they do not say (written before they did),
        as its definition does, else rules."""
        given = self.metric_info.get(key, MetricInfo())
        if given.scorer:
            return given
        return replace(given, scorer=METRIC[key].scorer if key in METRIC else "rules")

    def label(self, key: str) -> str:
        return self.info(key).label or key.replace("_", " ").capitalize()

    def with_pipeline(self, pipeline: dict[str, Any]) -> EvalResults:
        return replace(self, pipeline=pipeline)

    # ---------------------------------------------------------------- JSON
    def to_json(self) -> dict[str, Any]:
        """The results.json object (field order as written since results.json existed; `pipeline` only when set)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "pipeline" and value is None:
                continue
            if f.name in ("models", "win_rates", "samples"):
                value = [_plain(item) for item in value]
            elif f.name == "metric_info":
                value = {key: _plain(info) for key, info in value.items()}
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "results") -> EvalResults:
        """Typed results from a results.json object; `where` names the source in errors."""
        if not isinstance(data, Mapping):
            raise ResultsError(f"{where}: expected a JSON object, got {type(data).__name__}")

        def get(name: str, kind: type, default):
            value = data.get(name)
            if value is None:
                return default
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ResultsError(f"{where}: field '{name}': expected {kind.__name__}, got {type(value).__name__}")
            return value

        metrics = get("metrics", dict, {})
        for model, values in metrics.items():
            if values is not None and not isinstance(values, Mapping):
                raise ResultsError(f"{where}: field 'metrics.{model}': expected an object of metric values")
        breakdowns = get("breakdowns", dict, {})
        for key, per_model in breakdowns.items():
            if not isinstance(per_model, Mapping):
                raise ResultsError(f"{where}: field 'breakdowns.{key}': expected an object (model -> groups)")
        return cls(
            alignkit_version=_text(data.get("alignkit_version")),
            created=_text(data.get("created")),
            suite=_text(data.get("suite")),
            split=_text(data.get("split")),
            settings=dict(get("settings", dict, {})),
            models=tuple(_record(ModelRun, m, f"{where}: field 'models[{i}]'")
                         for i, m in enumerate(get("models", list, []))),
            metrics={str(model): dict(values or {}) for model, values in metrics.items()},
            metric_info={str(key): _record(MetricInfo, info or {}, f"{where}: field 'metric_info.{key}'")
                         for key, info in get("metric_info", dict, {}).items()},
            breakdowns={str(key): {str(m): v or {} for m, v in per_model.items()}
                        for key, per_model in breakdowns.items()},
            win_rates=tuple(_record(WinRate, w, f"{where}: field 'win_rates[{i}]'")
                            for i, w in enumerate(get("win_rates", list, []))),
            samples=tuple(_record(Sample, s, f"{where}: field 'samples[{i}]'")
                          for i, s in enumerate(get("samples", list, []))),
            peak_rss_gb=data.get("peak_rss_gb") if isinstance(data.get("peak_rss_gb"), int | float) else None,
            pipeline=get("pipeline", dict, None),
        )

    @classmethod
    def read(cls, path: str | Path) -> EvalResults:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ResultsError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        return cls.from_json(data, str(path))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _plain(record) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in fields(record)}


def _record(kind: type, data: Any, where: str):
    """A `kind` from a JSON object: unknown keys are left out (a later version may add some), a missing required
    key is an error."""
    if not isinstance(data, Mapping):
        raise ResultsError(f"{where}: expected an object, got {type(data).__name__}")
    known = {f.name for f in fields(kind)}
    required = [f.name for f in fields(kind) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if data.get(name) is None]
    if missing:
        raise ResultsError(f"{where}: '{missing[0]}' is missing")
    return kind(**{k: v for k, v in data.items() if k in known and v is not None})


__all__ = ["EvalResults", "MetricInfo", "ModelRun", "ResultsError", "Sample", "WinRate"]
