"""Save models in Hugging Face format (safetensors + config + tokenizer + chat template), atomically."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from alignkit.models.lora import is_peft, merged_state_dict
from alignkit.utils.io import atomic_dir, plain_modes


def save_pretrained(model: nn.Module, tokenizer, out_dir: str | Path, *, merge_lora: bool = True, replace: bool = False,
                    files: dict[str, str] | None = None, state_dict: dict | None = None):
    """Write `model` and `tokenizer` to `out_dir`, with `files` (name -> text, e.g. the model card) in the same
    atomic step.

    A LoRA model is saved merged into a plain model by default (loadable without PEFT); with merge_lora=False only the
    adapter is written (PEFT format, `adapter_config.json` naming the base model). Merging modifies `model` in place,
    so call it last. `state_dict`: the model's weights, whole, when the model itself holds only shards of them
    (FSDP); they are written instead of the model's own.
    """
    if is_peft(model) and merge_lora:
        if state_dict is not None:
            state_dict, model = merged_state_dict(model, state_dict), model.get_base_model()
        else:
            model = model.merge_and_unload()
    with atomic_dir(out_dir, replace=replace) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        for name, text in (files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        plain_modes(tmp)
    return Path(out_dir)
