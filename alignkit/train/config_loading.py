"""Reading a config: a YAML file and `key=value` overrides merged (the command line wins, under our key names or
TRL's), an unknown key answered with the nearest valid one, a bad value named with where it came from; and the keys
of a config with their defaults and meanings for `--help`."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from alignkit.train.config import ConfigError, StageSettings

C = TypeVar("C", bound=BaseModel)


def valid_keys(model: type[BaseModel]) -> list[str]:
    return sorted(set(model.model_fields) - set(getattr(model, "owned", ())))


def config_keys(model: type[BaseModel], prefix: str = "",
                instance: BaseModel | None = None) -> list[tuple[str, str, str]]:
    """(dotted key, default, meaning) of every key of a config, for `--help`. Sections are expanded (with the
    section's own default values, where it has one); a pipeline stage's settings (a trainer's keys) are one line
    that names the trainer whose keys they take."""
    rows = []
    for name in valid_keys(model):
        field, key = model.model_fields[name], f"{prefix}{name}"
        sub = _submodel(field.annotation)
        if instance is not None:
            default, required = getattr(instance, name), False
        else:
            required = field.is_required()
            default = None if required else field.get_default(call_default_factory=True)
        if sub is not None and issubclass(sub, StageSettings):
            trainer = sub.__name__.removesuffix("Stage").lower()
            rows.append((f"{key}.KEY", "", f"{field.description or 'this stage'}: any key of `alignkit {trainer} "
                                           f"--help` but {', '.join(sub.owned)}"))
        elif sub is not None and (default is None or isinstance(default, sub)):
            # A section that is off by default (`lora: null`) lists the keys it takes when it is given.
            rows.extend(config_keys(sub, prefix=f"{key}.", instance=default))
        else:
            rows.append((key, "(required)" if required else _shown(default), _description(model, name)))
    return rows


def _shown(value: Any) -> str:
    """A default as it is written in YAML or on the command line."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, (list, dict, BaseModel)):
        from pydantic_core import to_jsonable_python

        return json.dumps(to_jsonable_python(value))
    return str(value) if str(value) else "''"


def _description(model: type[BaseModel], name: str) -> str:
    """A key's meaning; a config that only changes a default (`lr: float = 5e-6`) keeps its parent's."""
    for cls in model.__mro__:
        fields = getattr(cls, "model_fields", None) if isinstance(cls, type) and issubclass(cls, BaseModel) else None
        if fields and name in fields and fields[name].description:
            return fields[name].description
    return ""


# TRL's (transformers') names for keys that mean the same here: read as ours, so a TRL config's keys carry over.
TRL_NAMES = {"learning_rate": "lr", "num_train_epochs": "epochs", "per_device_train_batch_size": "batch_size",
             "per_device_eval_batch_size": "eval_batch_size", "gradient_accumulation_steps": "grad_accum",
             "lr_scheduler_type": "scheduler", "logging_steps": "log_every", "save_steps": "save_every",
             "eval_steps": "eval_every", "save_total_limit": "keep_checkpoints", "model_name_or_path": "model",
             "max_completion_length": "max_new_tokens", "num_generations": "samples_per_prompt"}


def _check_keys(raw: dict, model: type[BaseModel], where: str, prefix: str = "") -> dict:
    """`raw` with TRL's names read as ours; an unknown key is refused with the nearest valid one and the list of
    valid ones (pydantic's own message names neither)."""
    fields, checked = model.model_fields, {}
    for key, value in raw.items():
        ours = TRL_NAMES.get(key) if key not in fields and TRL_NAMES.get(key) in valid_keys(model) else key
        dotted = f"{prefix}{ours}"
        if ours != key and ours in raw:
            raise ConfigError(f"{where}: both '{prefix}{key}' (TRL's name) and '{dotted}' given for one key: keep one")
        if ours not in fields:
            reason = getattr(model, "absent_keys", {}).get(key)
            # TRL's names are candidates too: `lerning_rate` is nearest to `learning_rate`, read as `lr`.
            valid = valid_keys(model)
            candidates = valid + [k for k, v in TRL_NAMES.items() if v in valid]
            near = difflib.get_close_matches(key, candidates, n=1, cutoff=0.75)
            hint = f" ({reason})." if reason else f"; did you mean '{prefix}{near[0]}'?" if near else "."
            raise ConfigError(
                f"{where}: unknown key '{dotted}'{hint} "
                f"Valid keys{' under ' + prefix[:-1] if prefix else ''}: " + ", ".join(valid_keys(model))
            )
        sub = _submodel(fields[ours].annotation)
        checked[ours] = (_check_keys(value, sub, where, prefix=f"{dotted}.")
                         if sub is not None and isinstance(value, dict) else value)
    return checked


def _submodel(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def parse_overrides(pairs: list[str]) -> dict:
    """`["a.b=1", "c=x"]` -> `{"a": {"b": 1}, "c": "x"}`; values are parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override '{pair}': expected key=value")
        key, value = pair.split("=", 1)
        node = out
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override '{pair}': empty key")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{pair}': '{part}' is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(value) if value != "" else None
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"override '{pair}': its value is not valid YAML ({problem}; quote a value with spaces "
                              "as one argument: 'key={a: 1, b: 2}')") from None
    return out


def merge_config(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    raw: dict = {}
    where = "command line"
    if path is not None:
        where = str(path)
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    # Names are read in each source apart: a command-line key overrides the file's, whichever name either uses.
    given = _check_keys(parse_overrides(overrides or []), cls, "command line")
    raw = merge_config(_check_keys(raw, cls, where), given)
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        raise ConfigError("; ".join(
            f"{_source(err['loc'], given, where)}: '{'.'.join(str(p) for p in err['loc']) or '(top level)'}': "
            f"{err['msg']}" for err in e.errors())) from None


def _source(loc: tuple, given: dict, where: str) -> str:
    """Where the value at `loc` came from: the command line, where it set that key or a whole section above it."""
    node: Any = given
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return where
        node = node[part]
        if not isinstance(node, dict):
            return "command line"
    return "command line" if loc else where
