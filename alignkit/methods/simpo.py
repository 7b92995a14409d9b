"""SimPO (Meng et al. 2024) on (prompt, chosen, rejected) pairs: the length-normalised margin loss, no reference."""

from __future__ import annotations

from pydantic import Field

from alignkit.losses.simpo import simpo_loss
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


class SimPOConfig(TrainConfig):
    """`alignkit simpo`: (prompt, chosen, rejected) pairs; no reference model."""

    beta: float = Field(default=2.0, gt=0, description="reward scale: beta / |y| log pi(y|x) (paper: 2.0 - 2.5)")
    gamma: float = Field(default=1.0, ge=0, description="target reward margin (paper: 0.5 - 1.6)")
    lr: float = 5e-6


def train_simpo(cfg: SimPOConfig) -> TrainResult:
    configure_threads()
    # 1. Run directory, policy and pairs (chosen and rejected share the prompt's ids).
    run = Run(cfg, "simpo")
    model, tokenizer = load_policy(cfg)
    train_records, eval_records = load_splits(cfg, "preference")
    train_items = render_pairs(tokenizer, train_records, cfg.max_length, cfg.data.train)
    eval_items = render_pairs(tokenizer, eval_records, cfg.max_length, cfg.data.eval) if eval_records else []
    require_items(cfg.data.train, train_items)
    collate = pair_collate(tokenizer.pad_token_id)

    # 2. Per-pair loss from the summed log-probs and trained-token counts of chosen and rejected.
    def pair_losses(module, batch):
        total, tokens = pair_sequence_logps(module, batch)
        n = total.shape[0] // 2
        return simpo_loss(total[:n], total[n:], tokens[:n], tokens[n:], cfg.beta, cfg.gamma)

    def loss(module, batch):
        losses, metrics = pair_losses(module, batch)
        return losses.sum(), metrics

    def evaluate(module):
        return mean_over(module, eval_items, cfg.eval_batch_size or cfg.batch_size, collate, run.device, pair_losses)

    method = Method(count=pair_examples, loss=loss, evaluate=evaluate if eval_items else None, examples=pair_examples)
    # 3. Train; the loop divides the summed loss by the step's pairs.
    return run.train(SharedPromptLogps(model), train_items, collate, method, final_saver(model, tokenizer, cfg))


METHOD = MethodSpec("simpo", SimPOConfig, train_simpo, "SimPO: a length-normalised margin loss, no reference model",
                    "preferences", recipes={"sft-simpo": ("sft", "simpo")})
