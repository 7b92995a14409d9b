"""SimPO (Meng et al. 2024) on (prompt, chosen, rejected) pairs: the length-normalised margin loss, no reference."""

from __future__ import annotations

from pydantic import Field

from alignkit.losses.simpo import simpo_loss
from alignkit.methods.spec import MethodSpec
from alignkit.train.pairs import train_reference_free_pairs
from alignkit.train.config import TrainConfig
from alignkit.train.run import TrainResult


class SimPOConfig(TrainConfig):
    """`alignkit simpo`: (prompt, chosen, rejected) pairs; no reference model."""

    beta: float = Field(default=2.0, gt=0, description="reward scale: beta / |y| log pi(y|x) (paper: 2.0 - 2.5)")
    gamma: float = Field(default=1.0, ge=0, description="target reward margin (paper: 0.5 - 1.6)")
    lr: float = 5e-6


def train_simpo(cfg: SimPOConfig) -> TrainResult:
    def pair_losses(total, tokens):
        n = total.shape[0] // 2
        return simpo_loss(total[:n], total[n:], tokens[:n], tokens[n:], cfg.beta, cfg.gamma)

    return train_reference_free_pairs(cfg, "simpo", pair_losses)


METHOD = MethodSpec("simpo", SimPOConfig, train_simpo, "SimPO: a length-normalised margin loss, no reference model",
                    "preferences", recipes={"sft-simpo": ("sft", "simpo")})
