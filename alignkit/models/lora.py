"""LoRA adapters through PEFT.

With LoRA the reference policy of preference methods is the same network with its adapters switched off, so no
second copy of the base model is kept in memory.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn


def apply_lora(model: nn.Module, *, r: int, alpha: float, dropout: float, target_modules, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        task_type=task_type,
        # The reward model's new score head must be trained in full, not only adapted.
        modules_to_save=["score"] if task_type == "SEQ_CLS" else None,
    )
    return get_peft_model(model, config)


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` as its base model (the reference policy under LoRA)."""
    if not is_peft(model):
        raise ValueError("adapters_disabled needs a PEFT (LoRA) model")
    with model.disable_adapter():
        yield model
