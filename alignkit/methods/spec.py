"""What a method module declares about itself: one `MethodSpec`, its row in `alignkit.methods.METHODS`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from pydantic import BaseModel


@dataclass(frozen=True)
class MethodSpec:
    """One alignment method, as the CLI, config loading, `alignkit compare` and the docs see it.

    name      the command (`alignkit NAME CONFIG.yaml`) and the stage name in recipes
    config    its typed config (composed from `alignkit.train.config`'s parts plus the method's own keys)
    train     config -> `TrainResult`
    summary   one line for `alignkit --help` and docs/methods.md
    data      what `data.train` holds: demonstrations (SFT rows), preferences (pairs, rankings, ratings, or
              unpaired labels) or prompts (the online methods sample their own responses)
    recipes   its recipes in `alignkit compare`: name -> chain of stages from the starting model
    presets   named variants of this method for recipes: stage name -> keys it fixes (HBAT's `joint` mode)
    owned     keys a pipeline sets for a stage of this method (never a stage's own setting)
    scorer    its model scores responses (a reward model) rather than answering them: runs are told to train
              against it, and `alignkit compare` judges an online stage right after it with it
    compare   the keys `alignkit compare` sets for a stage of this method besides the matched budget, from the
              comparison's config (HBAT: its SFT data and each objective's steps)
    """

    name: str
    config: type[BaseModel]
    train: Callable[[Any], Any]
    summary: str
    data: Literal["demonstrations", "preferences", "prompts"]
    recipes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    owned: tuple[str, ...] = ("model", "data", "output_dir")
    scorer: bool = False
    compare: Callable[[Any], dict[str, Any]] | None = None

    @property
    def online(self) -> bool:
        return self.data == "prompts"
