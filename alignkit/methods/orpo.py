"""ORPO: SFT on the chosen response plus an odds-ratio preference term, with no reference model (Hong et al. 2024)."""

from __future__ import annotations

from pydantic import Field

from alignkit.losses import orpo_loss
from alignkit.methods.spec import MethodSpec
from alignkit.models import SharedPromptLogps
from alignkit.train.common import (
    final_saver,
    load_policy,
    load_splits,
    mean_over,
    pair_collate,
    pair_examples,
    pair_sequence_logps,
    render_pairs,
    require_items,
)
from alignkit.train.config import TrainConfig
from alignkit.train.loop import Method, Run, TrainResult, configure_threads


class ORPOConfig(TrainConfig):
    """`alignkit orpo`: (prompt, chosen, rejected) pairs; no reference model."""

    beta: float = Field(default=0.1, gt=0, description="weight of the odds-ratio term (lambda in the paper)")
    lr: float = 8e-6


def train_orpo(cfg: ORPOConfig) -> TrainResult:
    configure_threads()
    # 1. Run directory, policy and pairs.
    run = Run(cfg, "orpo")
    model, tokenizer = load_policy(cfg)
    train_records, eval_records = load_splits(cfg, "preference")
    train_items = render_pairs(tokenizer, train_records, cfg.max_length, cfg.data.train)
    eval_items = render_pairs(tokenizer, eval_records, cfg.max_length, cfg.data.eval) if eval_records else []
    require_items(cfg.data.train, train_items)
    collate = pair_collate(tokenizer.pad_token_id)

    # 2. Per-pair loss from length-averaged log-probs (the odds are defined on the per-token average, paper eq. 4).
    def pair_losses(module, batch):
        total, tokens = pair_sequence_logps(module, batch)
        n = total.shape[0] // 2
        avg = total / tokens
        return orpo_loss(-avg[:n], avg[:n], avg[n:], cfg.beta)

    def loss(module, batch):
        losses, metrics = pair_losses(module, batch)
        return losses.sum(), metrics

    def evaluate(module):
        return mean_over(module, eval_items, cfg.eval_batch_size or cfg.batch_size, collate, run.device, pair_losses)

    method = Method(count=pair_examples, loss=loss, evaluate=evaluate if eval_items else None, examples=pair_examples)
    # 3. Train and save.
    return run.train(SharedPromptLogps(model), train_items, collate, method, final_saver(model, tokenizer, cfg))


METHOD = MethodSpec("orpo", ORPOConfig, train_orpo, "ORPO: SFT plus an odds-ratio preference term, no reference "
                    "model", "preferences", recipes={"orpo": ("orpo",)})
