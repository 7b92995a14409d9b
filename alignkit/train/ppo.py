"""PPO-RLHF (Ziegler et al. 2019; Ouyang et al. 2022): policy, frozen reference, judge (reward model or any other
scorer) and critic.

Reward per token: -kl_coef * KL estimate to the reference, plus the judge's score on the token where the response
actually ends (its EOS, or its last token when cut at max_new_tokens, which may also cost `missing_eos_penalty`).
Advantages by GAE, whitened over the batch; clipped policy and value losses over `ppo_epochs` passes of minibatches.
The KL coefficient is fixed, or adapted towards `kl_target` (Ziegler et al.'s controller).
"""

from __future__ import annotations

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
from alignkit.train.config import PPOConfig
from alignkit.train.loop import TrainResult
from alignkit.train.online import Algorithm, OnlineTrainer, row_sum


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

    return Algorithm("ppo", advantages, loss, critic=cfg.critic)


def train_ppo(cfg: PPOConfig) -> TrainResult:
    return OnlineTrainer(cfg, ppo_algorithm(cfg)).train()


__all__ = ["ppo_algorithm", "train_ppo"]
