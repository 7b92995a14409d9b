"""RLOO (Ahmadian et al. 2024): REINFORCE with a leave-one-out baseline.

Each prompt gets `samples_per_prompt` responses; the KL is part of the reward, r = score - beta * KL(seq), and a
response's baseline is the mean reward of its siblings. The clipped surrogate makes `ppo_epochs` > 1 work.
"""

from __future__ import annotations

from pydantic import Field

from alignkit.losses import kl_k1, ppo_policy_loss, rloo_advantages
from alignkit.methods.spec import MethodSpec
from alignkit.train.config import OnlineConfig
from alignkit.train.experience import group_spread, row_sum, sampled_kl
from alignkit.train.online import Algorithm, OnlineTrainer
from alignkit.train.run import TrainResult


class RLOOConfig(OnlineConfig):
    """`alignkit rloo`: prompts, each sampled `samples_per_prompt` times and scored by the judge."""

    samples_per_prompt: int = Field(default=4, ge=2, description="responses per prompt: each is baselined on the others' mean")
    kl_coef: float = Field(default=0.05, ge=0, description="beta of the sequence KL subtracted from the reward")
    lr: float = 1e-6


def rloo_algorithm(cfg: RLOOConfig) -> Algorithm:
    def advantages(exp, ctx):
        rewards = exp["scores"]
        metrics = sampled_kl(exp)
        if "ref_logps" in exp:
            kl = row_sum(kl_k1(exp["sample_logps"], exp["ref_logps"]), exp["response_mask"])
            rewards = rewards - ctx["state"].kl_coef * kl
        exp["advantages"] = rloo_advantages(rewards, cfg.samples_per_prompt)[:, None] * exp["response_mask"]
        return {**group_spread(exp["scores"], cfg.samples_per_prompt), **metrics,
                "rlhf_reward": float(rewards.mean())}

    def loss(out, mb):
        losses, metrics = ppo_policy_loss(out["logps"], mb["old_logps"], mb["advantages"], mb["response_mask"],
                                          cfg.clip_range)
        metrics["policy_loss"] = losses.detach()
        return losses, metrics

    return Algorithm("rloo", advantages, loss)


def train_rloo(cfg: RLOOConfig) -> TrainResult:
    return OnlineTrainer(cfg, rloo_algorithm(cfg)).train()


METHOD = MethodSpec("rloo", RLOOConfig, train_rloo, "RLOO: REINFORCE with a leave-one-out baseline, no critic", "prompts")
