"""Load any causal LM (HF directory, hub id, .gguf file, embedded alias), LoRA, scoring heads, and saving."""

from alignkit.models.forward import (
    SequenceScores,
    SharedPromptLogps,
    TokenLogps,
    full_token_logps,
    per_row_sum,
    selected_logits,
    split_prompt,
    unwrap_peft,
)
from alignkit.models.loading import (
    DEFAULT_MODEL,
    EMBEDDED,
    ModelSpecError,
    alignkit_home,
    load_causal_lm,
    load_score_model,
    load_tokenizer,
    prepare,
)
from alignkit.models.lora import adapters_disabled, apply_lora, is_peft
from alignkit.models.saving import save_pretrained

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED",
    "ModelSpecError",
    "SequenceScores",
    "SharedPromptLogps",
    "TokenLogps",
    "adapters_disabled",
    "alignkit_home",
    "apply_lora",
    "full_token_logps",
    "is_peft",
    "load_causal_lm",
    "load_score_model",
    "load_tokenizer",
    "per_row_sum",
    "prepare",
    "save_pretrained",
    "selected_logits",
    "split_prompt",
    "unwrap_peft",
]
