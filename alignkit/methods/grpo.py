"""GRPO (Shao et al. 2024): critic-free online RL with a group baseline.

Each prompt gets `samples_per_prompt` responses; a response's advantage is (r - mean) / std of its group (no std
with scale_rewards=false, "Dr. GRPO"), and the KL to the reference is a per-token term of the loss (k3 by
default). The clipped surrogate makes `ppo_epochs` > 1 work.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alignkit.losses import group_relative_advantages, kl_estimate, masked_mean_per_row, ppo_policy_loss
from alignkit.methods.spec import MethodSpec
from alignkit.train.config import OnlineConfig
from alignkit.train.experience import group_spread, sampled_kl
from alignkit.train.online import Algorithm, OnlineTrainer
from alignkit.train.run import TrainResult


class GRPOConfig(OnlineConfig):
    """`alignkit grpo`: prompts, each sampled `samples_per_prompt` times and scored by the judge."""

    samples_per_prompt: int = Field(default=8, ge=2,
                                    description="responses per prompt: the group its advantages are relative to")
    kl_coef: float = Field(default=0.0, ge=0, description="beta of the per-token KL term in the loss")
    kl_estimator: Literal["k1", "k2", "k3"] = Field(default="k3",
                                                    description="estimator of the KL to the reference: k1, k2 or k3 "
                                                                "(unbiased, non-negative)")
    scale_rewards: bool = Field(default=True, description="divide by the group's std (False: Dr. GRPO)")
    lr: float = 1e-6


def grpo_algorithm(cfg: GRPOConfig) -> Algorithm:
    def advantages(exp, ctx):
        adv = group_relative_advantages(exp["scores"], cfg.samples_per_prompt, scale=cfg.scale_rewards)
        exp["advantages"] = adv[:, None] * exp["response_mask"]
        return {**group_spread(exp["scores"], cfg.samples_per_prompt), **sampled_kl(exp)}

    def loss(out, mb):
        mask = mb["response_mask"]
        losses, metrics = ppo_policy_loss(out["logps"], mb["old_logps"], mb["advantages"], mask, cfg.clip_range)
        metrics["policy_loss"] = losses.detach()
        if "ref_logps" in mb:
            kl = masked_mean_per_row(kl_estimate(out["logps"], mb["ref_logps"], cfg.kl_estimator), mask)
            losses = losses + cfg.kl_coef * kl
            metrics["kl_per_token"] = kl.detach()
        return losses, metrics

    return Algorithm("grpo", advantages, loss)


def train_grpo(cfg: GRPOConfig) -> TrainResult:
    return OnlineTrainer(cfg, grpo_algorithm(cfg)).train()


METHOD = MethodSpec("grpo", GRPOConfig, train_grpo, "GRPO: group-relative advantages, no critic", "prompts")
