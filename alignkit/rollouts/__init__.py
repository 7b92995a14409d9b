"""Generation: prompts -> responses (batched, left-padded, KV-cached), and rollouts with masks and log-probs."""

from alignkit.rollouts.generate import chat_prompt_ids, generate_responses
from alignkit.rollouts.sampler import (
    DecodeLoopBackend,
    HFGenerateBackend,
    Rollout,
    RolloutBackend,
    SamplingSettings,
    response_masks,
    sample,
)

__all__ = [
    "DecodeLoopBackend",
    "HFGenerateBackend",
    "Rollout",
    "RolloutBackend",
    "SamplingSettings",
    "chat_prompt_ids",
    "generate_responses",
    "response_masks",
    "sample",
]
