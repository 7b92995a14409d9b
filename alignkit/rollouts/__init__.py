"""Generation: prompts -> responses (batched, left-padded, KV-cached), and rollouts with masks and log-probs.
`generate` (rollouts/engine.py) is the one entry point every caller uses."""

from alignkit.rollouts.engine import Generation, Reply, generate, stream
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
    "Generation",
    "Reply",
    "HFGenerateBackend",
    "Rollout",
    "RolloutBackend",
    "SamplingSettings",
    "generate",
    "response_masks",
    "sample",
    "stream",
]
