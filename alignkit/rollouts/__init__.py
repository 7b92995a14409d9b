"""Generation: prompts -> responses (batched, left-padded, KV-cached HF generate)."""

from alignkit.rollouts.generate import chat_prompt_ids, generate_responses

__all__ = ["chat_prompt_ids", "generate_responses"]
