"""ORPO: SFT on the chosen response plus an odds-ratio preference term, with no reference model (Hong et al. 2024)."""

from __future__ import annotations

from pydantic import Field

from alignkit.losses import orpo_loss
from alignkit.methods.spec import MethodSpec
from alignkit.train.pairs import train_reference_free_pairs
from alignkit.train.config import TrainConfig
from alignkit.train.run import TrainResult


class ORPOConfig(TrainConfig):
    """`alignkit orpo`: (prompt, chosen, rejected) pairs; no reference model."""

    beta: float = Field(default=0.1, gt=0, description="weight of the odds-ratio term (lambda in the paper)")
    lr: float = 8e-6


def train_orpo(cfg: ORPOConfig) -> TrainResult:
    # The odds are defined on the per-token average log-prob (paper eq. 4); the NLL term is the chosen one's.
    def pair_losses(total, tokens):
        n = total.shape[0] // 2
        avg = total / tokens
        return orpo_loss(-avg[:n], avg[:n], avg[n:], cfg.beta)

    return train_reference_free_pairs(cfg, "orpo", pair_losses)


METHOD = MethodSpec("orpo", ORPOConfig, train_orpo, "ORPO: SFT plus an odds-ratio preference term, no reference "
                    "model", "preferences", recipes={"orpo": ("orpo",)})
