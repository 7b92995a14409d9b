"""Every alignment method: one module each (its typed config and its `train`), one row each in `METHODS`.

The CLI (`alignkit NAME`), config loading, `alignkit compare` and the docs read this table. To add a method, write
its module (a config composed from `alignkit.train.config`'s parts, a `train` function, a `METHOD` spec) and add the
module below; docs/architecture.md shows the whole change for SimPO.
"""

from __future__ import annotations

from alignkit.methods import dpo, grpo, hbat, iterative_dpo, kto, orpo, ppo, reward, rloo, sft, simpo
from alignkit.methods.spec import MethodSpec

METHODS: dict[str, MethodSpec] = {m.METHOD.name: m.METHOD for m in (
    sft, reward, dpo, simpo, orpo, kto, ppo, grpo, rloo, iterative_dpo, hbat,
)}


def method(name: str) -> MethodSpec:
    """The row of `name`; a clear error naming the methods there are."""
    if name not in METHODS:
        raise KeyError(f"no method {name!r}; methods are {', '.join(METHODS)}")
    return METHODS[name]


__all__ = ["METHODS", "MethodSpec", "method"]
