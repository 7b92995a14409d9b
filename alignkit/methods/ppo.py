"""PPO-RLHF (Ziegler et al. 2019; Ouyang et al. 2022): policy, frozen reference, judge (reward model or any other
scorer) and critic.

Reward per token: -kl_coef * KL estimate to the reference, plus the judge's score on the token where the response
actually ends (its EOS, or its last token when cut at max_new_tokens, which may also cost `missing_eos_penalty`).
Advantages by GAE, whitened over the batch; clipped policy and value losses over `ppo_epochs` passes of minibatches.
The KL coefficient is fixed, or adapted towards `kl_target` (Ziegler et al.'s controller).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alignkit.losses import (
    adaptive_kl_coef,
    explained_variance,
    gae,
    kl_estimate,
    per_token_rewards,
    ppo_policy_loss,
    ppo_value_loss,
    whiten,
)
from alignkit.methods.spec import MethodSpec
from alignkit.train.config import OnlineConfig
from alignkit.train.experience import row_sum
from alignkit.train.online import Algorithm, OnlineTrainer
from alignkit.train.run import TrainResult


class PPOConfig(OnlineConfig):
    """`alignkit ppo`: prompts; the judge (a reward model, a verifier, ...) scores the samples."""

    critic: Literal["shared", "separate"] = Field(
        default="separate", description="value head on the policy's backbone (shared) or on its own transformer"
    )
    critic_model: str | None = Field(default=None, description="separate critic's starting weights; default: model")
    kl_target: float | None = Field(default=None, gt=0, description="adaptive KL: steer the per-sequence KL to this value")
    kl_horizon: int = Field(default=10000, ge=1, description="adaptive KL horizon, in sequences")
    vf_coef: float = Field(default=0.1, ge=0, description="weight of the value loss")
    critic_lr: float | None = Field(default=None, gt=0, description="learning rate of the value head / critic; default: lr")
    clip_range_value: float = Field(default=0.2, gt=0, description="clip range of the value function's update")
    gamma: float = Field(default=1.0, ge=0, le=1, description="discount factor of GAE")
    lam: float = Field(default=0.95, ge=0, le=1, description="GAE's lambda: bias/variance trade-off of the advantages")
    whiten_advantages: bool = Field(default=True, description="normalise advantages over the batch (all processes)")
    missing_eos_penalty: float | None = Field(default=None, ge=0, description="subtracted from the score of a response cut at max_new_tokens")
    ppo_epochs: int = Field(default=4, description="passes over each rollout batch")
    minibatch_size: int | None = Field(default=8, description="sequences per optimizer step (default: the whole batch)")
    lr: float = 1e-6


def ppo_algorithm(cfg: PPOConfig) -> Algorithm:
    def advantages(exp, ctx):
        state = ctx["state"]
        mask = exp["response_mask"]
        if "ref_logps" in exp:
            kl = kl_estimate(exp["old_logps"], exp["ref_logps"], cfg.kl_estimator)
        else:
            kl = exp["old_logps"].new_zeros(exp["old_logps"].shape)
        rewards = per_token_rewards(exp["scores"], kl, mask, state.kl_coef, eos_missing=~exp["eos"].bool(),
                                    missing_eos_penalty=cfg.missing_eos_penalty)
        adv, returns = gae(rewards, exp["values"], mask, cfg.gamma, cfg.lam)
        exp["advantages"] = whiten(adv, mask) if cfg.whiten_advantages else adv
        exp["returns"] = returns
        kl_seq = row_sum(kl, mask)
        metrics = {
            "kl": float(kl_seq.mean()),
            "rlhf_reward": float(row_sum(rewards, mask).mean()),
            "explained_variance": explained_variance(exp["values"], returns, mask),
            "value_mean": float(exp["values"][mask.bool()].mean()),
        }
        if cfg.kl_target is not None:
            state.kl_coef = adaptive_kl_coef(state.kl_coef, float(kl_seq.mean()), cfg.kl_target, cfg.kl_horizon,
                                             int(mask.shape[0]))
        return metrics

    def loss(out, mb):
        mask = mb["response_mask"]
        pg, pg_metrics = ppo_policy_loss(out["logps"], mb["old_logps"], mb["advantages"], mask, cfg.clip_range)
        vf, vf_metrics = ppo_value_loss(out["values"], mb["values"], mb["returns"], mask, cfg.clip_range_value)
        return pg + cfg.vf_coef * vf, {"policy_loss": pg.detach(), "value_loss": vf.detach(), **pg_metrics, **vf_metrics}

    return Algorithm("ppo", advantages, loss, critic=cfg.critic, adapts_kl=cfg.kl_target is not None)


def train_ppo(cfg: PPOConfig) -> TrainResult:
    return OnlineTrainer(cfg, ppo_algorithm(cfg)).train()


METHOD = MethodSpec("ppo", PPOConfig, train_ppo, "PPO against a judge or reward model, with a KL penalty to the "
                    "reference and a critic", "prompts", recipes={"sft-ppo": ("sft", "reward", "ppo")})
