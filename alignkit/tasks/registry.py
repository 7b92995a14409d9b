"""Tasks addressable as data sources: ``task:NAME?key=value&...`` -> rows ``{"prompt", "reference"}``.

``task:arithmetic?difficulty=1&split=train`` draws ``n`` problems (default 2000) with ``seed`` (default 0) and
splits them with ``held_out`` (default 0.2) into ``train`` and ``eval`` parts that never share a prompt, so a
config can train on one split and measure on the other.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from .arithmetic import arithmetic_problems, split_problems

_ARITHMETIC_OPTIONS = {"difficulty": int, "n": int, "seed": int, "held_out": float, "split": str}


def _arithmetic(options: dict[str, str]) -> list[dict]:
    unknown = sorted(set(options) - set(_ARITHMETIC_OPTIONS))
    if unknown:
        raise ValueError(f"arithmetic: unknown option(s) {unknown}; valid: {sorted(_ARITHMETIC_OPTIONS)}")
    try:
        values = {k: _ARITHMETIC_OPTIONS[k](v) for k, v in options.items()}
    except ValueError as e:
        raise ValueError(f"arithmetic: bad option value ({e})") from None
    split = values.get("split", "train")
    if split not in ("train", "eval", "all"):
        raise ValueError(f"arithmetic: split must be train, eval or all, got {split!r}")
    problems = arithmetic_problems(values.get("n", 2000), difficulty=values.get("difficulty", 1), seed=values.get("seed", 0))
    if split != "all":
        train, held_out = split_problems(problems, values.get("held_out", 0.2), seed=values.get("seed", 0))
        problems = train if split == "train" else held_out
    return [{"prompt": p.prompt, "reference": p.answer} for p in problems]


TASKS = {"arithmetic": _arithmetic}


def task_rows(spec: str) -> list[dict]:
    """Rows of ``NAME?key=value&...``; ValueError for an unknown task or option."""
    name, _, query = spec.partition("?")
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; built-in tasks: {sorted(TASKS)}")
    pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    return TASKS[name](dict(pairs))
