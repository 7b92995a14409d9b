"""Generation: prompts -> responses (batched, left-padded, KV-cached), and rollouts with masks and log-probs."""

from alignkit.rollouts.generate import generate_responses
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
    "generate_responses",
    "response_masks",
    "sample",
]
