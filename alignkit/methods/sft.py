"""Supervised fine-tuning on demonstrations: minimise the NLL of the trained (assistant / completion) tokens."""

from __future__ import annotations

import math

from alignkit.methods.spec import MethodSpec
from alignkit.models import TokenLogps
from alignkit.train.common import (
    batches,
    final_saver,
    load_policy,
    load_splits,
    pad_sequences,
    render_sft,
    require_items,
    sequence_logps,
)
from alignkit.train.config import TrainConfig
from alignkit.train.loop import Method, offline_loop
from alignkit.train.run import Run, TrainResult, configure_threads


class SFTConfig(TrainConfig):
    """`alignkit sft`: demonstrations (conversations, prompt/completion pairs or plain text)."""

    lr: float = 2e-5


def train_sft(cfg: SFTConfig) -> TrainResult:
    configure_threads()
    # 1. Run directory (refuses to clobber a finished run; finds a checkpoint to resume).
    run = Run(cfg, "sft")
    # 2. Data (checked before the model loads), model, tokenizer; the data rendered to ids + assistant-only masks.
    train_records, eval_records = load_splits(cfg, "sft")
    model, tokenizer = load_policy(cfg)
    train_items = render_sft(tokenizer, train_records, cfg.max_length, cfg.data.train)
    eval_items = render_sft(tokenizer, eval_records, cfg.max_length, cfg.data.eval) if eval_records else []
    require_items(cfg.data.train, train_items)
    pad_id = tokenizer.pad_token_id

    def collate(items):
        return pad_sequences(items, pad_id)

    # 3. Loss: summed NLL of trained tokens; the loop divides by the step's global token count.
    def count(batch):
        return int(batch["loss_mask"][:, 1:].sum())

    def loss(module, batch):
        total, tokens = sequence_logps(module, batch)
        return -total.sum(), {"tokens": tokens}

    def evaluate(module):
        nll, tokens = 0.0, 0.0
        for batch in batches(eval_items, cfg.eval_batch_size or cfg.batch_size, collate, run.device):
            total, count_ = sequence_logps(module, batch)
            nll -= float(total.sum())
            tokens += float(count_.sum())
        return {"loss": nll / tokens, "perplexity": math.exp(min(50.0, nll / tokens))}


    module = TokenLogps(model)
    method = Method(count=count, loss=loss, evaluate=evaluate if eval_items else None)
    # 4. Train; the final model goes to <output_dir>/final in HF format.
    return offline_loop(run, module, train_items, collate, method, final_saver(model, tokenizer, cfg))


METHOD = MethodSpec("sft", SFTConfig, train_sft, "supervised fine-tuning on demonstrations", "demonstrations",
                    recipes={"sft": ("sft",)})
