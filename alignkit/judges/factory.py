"""Judges from config values: `judge_from_spec("refusal")`, `{"reward_model": PATH}`, `{"http": {...}}`, ...

Model-backed kinds are imported only when named, so building a rule judge needs no torch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from alignkit.utils.secrets import redact

from .base import Judge
from .rules import CallableJudge, FinalAnswerVerifier, RefusalDetector, RegexJudge

# kind -> (a function returning the class, name of the argument the spec's value fills, or None for option-only
# judges). Model-backed kinds are imported only when named, so this module stays free of torch.


def _http_judge() -> type:
    from .http import HTTPJudge

    return HTTPJudge


def _reward_model_judge() -> type:
    from .model import RewardModelJudge

    return RewardModelJudge


def _lm_judge() -> type:
    from .model import LMJudge

    return LMJudge


_KINDS: dict[str, tuple[Callable[[], type], str | None]] = {
    "final_answer": (lambda: FinalAnswerVerifier, None),
    "refusal": (lambda: RefusalDetector, None),
    "regex": (lambda: RegexJudge, "pattern"),
    "callable": (lambda: CallableJudge, "target"),
    "http": (_http_judge, "base_url"),
    "reward_model": (_reward_model_judge, "model"),
    "lm": (_lm_judge, "model"),
}


def judge_from_spec(spec: str | dict | Judge) -> Judge:
    """Build a judge from a config value.

    - ``"final_answer"`` or ``"refusal"``;
    - ``{"regex": PATTERN}`` or ``{"callable": "pkg.mod:fn"}``;
    - ``{"reward_model": PATH}`` (``RewardModelJudge``) or ``{"lm": MODEL}`` (``LMJudge``), loaded on demand;
    - ``{"http": {"base_url": "http://127.0.0.1:8080/v1", "model": "m", "api_key_env": "MY_KEY", "timeout": 30}}``
      (``HTTPJudge``), or ``{"http": URL, "model": "m", ...}``;
    - extra keys are keyword options: ``{"regex": "\\\\d", "match_score": 2.0}``,
      ``{"final_answer": {"wrong_score": -1.0}}`` (options may also sit beside the kind key; a kind that takes a
      value may also get it inside its dict of options, under the argument's name).

    A Judge instance is returned unchanged. Unknown kinds or options, and missing required ones, raise ValueError.
    """
    valid = ", ".join(sorted(_KINDS))
    if isinstance(spec, str):
        if spec in _KINDS and _KINDS[spec][1] is None:
            return _KINDS[spec][0]()()
        if spec in _KINDS:
            raise ValueError(f"judge spec {redact(spec)!r} needs a value: {{{redact(spec)!r}: ...}}")
        raise ValueError(f"unknown judge spec {redact(spec)!r}; valid kinds: {valid}")
    if isinstance(spec, dict):
        kinds = [key for key in spec if key in _KINDS]
        if len(kinds) != 1:
            raise ValueError(f"judge spec {redact(spec)!r} must name exactly one kind; valid kinds: {valid}")
        kind = kinds[0]
        load, main_argument = _KINDS[kind]
        options = {key: value for key, value in spec.items() if key != kind}
        value = spec[kind]
        if isinstance(value, dict):
            options = {**value, **options}
        elif main_argument is not None:
            options[main_argument] = value
        elif value not in (None, True):
            raise ValueError(f"judge spec {redact(spec)!r}: {kind!r} takes a dict of options, got {redact(value)!r}")
        cls = load()
        parameters = inspect.signature(cls.__init__).parameters
        accepted = set(parameters) - {"self"}
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise ValueError(f"judge spec {redact(spec)!r}: unknown options {unknown}; {kind!r} accepts {sorted(accepted)}")
        required = [
            name
            for name, parameter in parameters.items()
            if name != "self"
            and parameter.default is inspect.Parameter.empty
            and parameter.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        ]
        missing = [name for name in required if name not in options]
        if missing:
            raise ValueError(f"judge spec {redact(spec)!r}: {kind!r} needs {missing}")
        return cls(**options)
    if isinstance(spec, Judge):
        return spec
    raise ValueError(f"judge spec must be a str or dict, got {type(spec).__name__}; valid kinds: {valid}")
