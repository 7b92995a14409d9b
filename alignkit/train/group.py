"""Critic-free online RL with group baselines: GRPO (Shao et al. 2024) and RLOO (Ahmadian et al. 2024).

Both sample `samples_per_prompt` responses per prompt and compare each with its siblings instead of a learned
value. GRPO: advantage (r - mean) / std of the group (no std with scale_rewards=false, "Dr. GRPO"), KL to the
reference as a per-token loss term (k3 by default). RLOO: the KL is part of the reward, r = score - beta * KL(seq),
and the baseline is the mean reward of the other samples. Both use the clipped surrogate, so `ppo_epochs` > 1 works.
"""

from __future__ import annotations

from alignkit.losses import (
    group_relative_advantages,
    kl_estimate,
    kl_k1,
    masked_mean_per_row,
    ppo_policy_loss,
    rloo_advantages,
)
from alignkit.train.config import GRPOConfig, RLOOConfig
from alignkit.train.loop import TrainResult
from alignkit.train.online import Algorithm, OnlineTrainer, row_sum


def _spread_metrics(scores, group_size: int) -> dict[str, float]:
    groups = scores.view(-1, group_size)
    return {"groups_without_spread": float((groups.max(-1).values == groups.min(-1).values).float().mean())}


def _sampled_kl(exp) -> dict[str, float]:
    if "ref_logps" not in exp:
        return {}
    return {"kl": float(row_sum(kl_k1(exp["sample_logps"], exp["ref_logps"]), exp["response_mask"]).mean())}


def grpo_algorithm(cfg: GRPOConfig) -> Algorithm:
    def advantages(exp, ctx):
        adv = group_relative_advantages(exp["scores"], cfg.samples_per_prompt, scale=cfg.scale_rewards)
        exp["advantages"] = adv[:, None] * exp["response_mask"]
        return {**_spread_metrics(exp["scores"], cfg.samples_per_prompt), **_sampled_kl(exp)}

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


def rloo_algorithm(cfg: RLOOConfig) -> Algorithm:
    def advantages(exp, ctx):
        rewards = exp["scores"]
        metrics = _sampled_kl(exp)
        if "ref_logps" in exp:
            kl = row_sum(kl_k1(exp["sample_logps"], exp["ref_logps"]), exp["response_mask"])
            rewards = rewards - ctx["state"].kl_coef * kl
        exp["advantages"] = rloo_advantages(rewards, cfg.samples_per_prompt)[:, None] * exp["response_mask"]
        return {**_spread_metrics(exp["scores"], cfg.samples_per_prompt), **metrics,
                "rlhf_reward": float(rewards.mean())}

    def loss(out, mb):
        losses, metrics = ppo_policy_loss(out["logps"], mb["old_logps"], mb["advantages"], mb["response_mask"],
                                          cfg.clip_range)
        metrics["policy_loss"] = losses.detach()
        return losses, metrics

    return Algorithm("rloo", advantages, loss)


def train_grpo(cfg: GRPOConfig) -> TrainResult:
    return OnlineTrainer(cfg, grpo_algorithm(cfg)).train()


def train_rloo(cfg: RLOOConfig) -> TrainResult:
    return OnlineTrainer(cfg, rloo_algorithm(cfg)).train()


__all__ = ["grpo_algorithm", "rloo_algorithm", "train_grpo", "train_rloo"]
