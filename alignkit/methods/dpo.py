"""Direct Preference Optimization (and IPO, hinge, robust/conservative variants) on (prompt, chosen, rejected) pairs."""

from __future__ import annotations

from alignkit.methods.spec import MethodSpec
from alignkit.models import SharedPromptLogps
from alignkit.train.common import final_saver, load_policy, load_splits, mean_over
from alignkit.train.config import TrainConfig
from alignkit.train.pairs import DPOKeys, pair_examples, pair_losses_fn, prepare_pairs
from alignkit.train.loop import Method, offline_loop
from alignkit.train.run import Run, TrainResult, configure_threads


class DPOConfig(TrainConfig, DPOKeys):
    """`alignkit dpo`: (prompt, chosen, rejected) pairs."""

    lr: float = 5e-6


def train_dpo(cfg: DPOConfig) -> TrainResult:
    configure_threads()
    # 1. Run directory, policy, pairs with their reference log-probs.
    run = Run(cfg, "dpo")
    records = load_splits(cfg, "preference")  # checked before the model loads
    model, tokenizer = load_policy(cfg)
    train_items, eval_items, collate = prepare_pairs(run, cfg, model, tokenizer, records)
    pair_losses = pair_losses_fn(cfg)

    # 3. Loss: summed over pairs; the loop divides by the global number of pairs in the step.
    def loss(module, batch):
        losses, metrics = pair_losses(module, batch)
        return losses.sum(), metrics

    def evaluate(module):
        return mean_over(module, eval_items, cfg.eval_batch_size or cfg.batch_size, collate, run.device, pair_losses)

    method = Method(
        count=pair_examples, loss=loss, evaluate=evaluate if eval_items else None, examples=pair_examples
    )
    return offline_loop(run, SharedPromptLogps(model), train_items, collate, method, final_saver(model, tokenizer, cfg))


METHOD = MethodSpec("dpo", DPOConfig, train_dpo, "Direct Preference Optimization and its IPO, hinge and robust "
                    "variants", "preferences", recipes={"sft-dpo": ("sft", "dpo")})
