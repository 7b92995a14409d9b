"""LoRA adapters through PEFT.

With LoRA the reference policy of preference methods is the same network with its adapters switched off, so no
second copy of the base model is kept in memory.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

from torch import nn

from alignkit.utils import processes


@contextlib.contextmanager
def peft_quietly() -> Iterator[None]:
    """PEFT wrapping a model without transformers' FutureWarning about `is_gradient_checkpointing` (renamed in
    transformers 5; PEFT still reads the old name as it wraps a model): a warning a user of alignkit can do nothing
    about, printed into every LoRA run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


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
    with peft_quietly():
        adapted = get_peft_model(model, config)
    trainable, total = trainable_counts(adapted)

    if processes.is_main():
        print(f"LoRA r={r}: {trainable:,} trainable parameters of {total:,} ({100 * trainable / max(total, 1):.2f}%)",
              flush=True)
    return adapted


def trainable_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, all) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def merged_state_dict(model: nn.Module, state: dict) -> dict:
    """What `model.merge_and_unload().state_dict()` holds, computed from `state`, a LoRA model's whole state dict
    (`model` gives the adapter settings): each adapted weight plus scale x B @ A, a trained copy of a module
    (`modules_to_save`) in place of the original, and the names of the base model. For a model whose own weights are
    sharded, where merging in place would mean merging shards."""
    config = model.peft_config[model.active_adapter]
    if getattr(config, "fan_in_fan_out", False):
        raise ValueError("merged_state_dict: fan_in_fan_out LoRA (Conv1D layers) is not supported")
    name = model.active_adapter
    prefix = "base_model.model."
    merged: dict = {}
    for key, value in state.items():
        key = key[len(prefix):] if key.startswith(prefix) else key
        if ".lora_" in key or ".original_module." in key:
            continue
        if f".modules_to_save.{name}." in key:
            merged[key.replace(f".modules_to_save.{name}.", ".")] = value
        elif ".base_layer." in key:
            module, kind = key.split(".base_layer.")
            merged[f"{module}.{kind}"] = value
            if kind == "weight":
                a, b = state[f"{prefix}{module}.lora_A.{name}.weight"], state[f"{prefix}{module}.lora_B.{name}.weight"]
                r = a.shape[0]
                scale = config.lora_alpha / (r ** 0.5 if config.use_rslora else r)
                merged[f"{module}.weight"] = (value.float() + scale * (b.float() @ a.float())).to(value.dtype)
        else:
            merged[key] = value
    return merged


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` as its base model (the reference policy under LoRA)."""
    if not is_peft(model):
        raise ValueError("adapters_disabled needs a PEFT (LoRA) model")
    with model.disable_adapter():
        yield model
