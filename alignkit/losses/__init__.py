"""Loss functions: pure functions of tensors returning ``(per-example losses, metrics)``."""

from alignkit.losses.dpo import DPO_LOSSES, dpo_hinge_loss, dpo_robust_loss, dpo_sigmoid_loss, ipo_loss
from alignkit.losses.ewc import ewc_penalty, fisher_diagonal_update
from alignkit.losses.group import group_relative_advantages, rloo_advantages
from alignkit.losses.kto import kto_kl_estimate, kto_loss
from alignkit.losses.logprobs import entropy_from_logits, shift_labels, token_logprobs
from alignkit.losses.orpo import log_odds, orpo_loss
from alignkit.losses.ppo import (
    KL_ESTIMATORS,
    adaptive_kl_coef,
    explained_variance,
    gae,
    kl_estimate,
    kl_k1,
    kl_k2,
    kl_k3,
    masked_mean_per_row,
    per_token_rewards,
    ppo_policy_loss,
    ppo_value_loss,
    whiten,
)
from alignkit.losses.reward import (
    all_pairs_ranking_loss,
    bradley_terry_loss,
    plackett_luce_loss,
    rating_regression_loss,
    reward_centering_penalty,
    soft_bradley_terry_loss,
)

__all__ = [
    "DPO_LOSSES",
    "KL_ESTIMATORS",
    "adaptive_kl_coef",
    "all_pairs_ranking_loss",
    "bradley_terry_loss",
    "dpo_hinge_loss",
    "dpo_robust_loss",
    "dpo_sigmoid_loss",
    "entropy_from_logits",
    "ewc_penalty",
    "explained_variance",
    "fisher_diagonal_update",
    "gae",
    "group_relative_advantages",
    "ipo_loss",
    "kl_estimate",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "kto_kl_estimate",
    "kto_loss",
    "log_odds",
    "masked_mean_per_row",
    "orpo_loss",
    "per_token_rewards",
    "plackett_luce_loss",
    "ppo_policy_loss",
    "ppo_value_loss",
    "rating_regression_loss",
    "reward_centering_penalty",
    "soft_bradley_terry_loss",
    "rloo_advantages",
    "shift_labels",
    "token_logprobs",
    "whiten",
]
