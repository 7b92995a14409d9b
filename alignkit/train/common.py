"""Plain functions every trainer uses: load the policy, load and render data, batch, and score sequences."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from alignkit.data import LMRecord, load_records, pad_batch, render_messages, render_prompt_completion
from alignkit.models import apply_lora, load_causal_lm, load_tokenizer, per_row_sum, save_pretrained
from alignkit.train import sharding
from alignkit.train.config import TrainConfig
from alignkit.train.run import RunError
from alignkit.utils import processes


def load_policy(cfg: TrainConfig):
    """The model to train (fp32 master weights; bf16 comes from autocast) and its tokenizer; LoRA if configured."""
    tokenizer = load_tokenizer(cfg.model)
    model = load_causal_lm(cfg.model)
    if cfg.lora is not None:
        model = apply_lora(
            model, r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout, target_modules=cfg.lora.target_modules
        )
    if cfg.gradient_checkpointing:
        # Non-reentrant: works with frozen inputs (LoRA) and under DDP; active in training mode only, so sampling
        # (eval mode, KV cache) is unchanged.
        enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.24 calls it so
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, tokenizer


def load_splits(cfg: TrainConfig, kind: str) -> tuple[list, list]:
    """Training and eval records of `kind`; reports skipped records (with skip_invalid) instead of hiding them."""
    splits = []
    for source, limit, split in ((cfg.data.train, cfg.data.limit, "train"), (cfg.data.eval, cfg.data.eval_limit, None)):
        if source is None:
            splits.append([])
            continue
        result = load_records(source, kind, skip_invalid=cfg.data.skip_invalid, limit=limit, split=split,
                              transcripts=cfg.data.transcripts)
        if result.skipped:
            print(f"{source}: skipped {result.skipped} invalid record(s); first: {result.errors[0]}", flush=True)
        splits.append(result.records)
    return splits[0], splits[1]


def report_truncation(name: str, truncated: int, total: int, max_length: int) -> None:
    if truncated:
        print(f"{name}: {truncated} of {total} example(s) truncated to max_length={max_length}", flush=True)


def batches(items: list, size: int, collate: Callable[[list], dict], device) -> Iterator[dict]:
    for start in range(0, len(items), size):
        batch = collate(items[start : start + size])
        yield {k: v.to(device) for k, v in batch.items()}


def pad_sequences(rendered: Iterable, pad_id: int) -> dict[str, torch.Tensor]:
    return pad_batch(list(rendered), pad_id=pad_id, side="right")


def sequence_logps(module: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-prob of the trained tokens of each row, and the number of those tokens: ([B], [B])."""
    logps, rows = module(batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    return row_sums(logps, rows, batch["input_ids"].shape[0])


def row_sums(logps: torch.Tensor, rows: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return per_row_sum(logps.float(), rows, n), per_row_sum(torch.ones_like(logps, dtype=torch.float32), rows, n)


def require_items(name: str, items: list) -> None:
    if not items:
        raise RunError(f"{name}: no usable examples after loading and rendering")


def final_saver(model: nn.Module, tokenizer, cfg: TrainConfig) -> Callable[[Path, dict[str, str]], None]:
    """Saves the final model with the files `Run.fit` gives it (the model card). Called on every process: a sharded
    model's weights are gathered by all of them, and the main process writes."""
    def save(path: Path, files: dict[str, str]) -> None:
        state = sharding.full_state_dict(model) if sharding.is_sharded(model) else None
        if processes.is_main():
            save_pretrained(model, tokenizer, path, merge_lora=cfg.save_merged, replace=cfg.overwrite, files=files,
                            state_dict=state)

    return save


def mean_over(module: nn.Module, items: list, batch_size: int, collate: Callable[[list], dict], device,
              example_losses: Callable[[nn.Module, dict], tuple[torch.Tensor, dict]]) -> dict[str, float]:
    """Mean per-example loss and statistics over `items`: the evaluation of every per-example method."""
    sums: dict[str, float] = {}
    n = 0
    for batch in batches(items, batch_size, collate, device):
        losses, metrics = example_losses(module, batch)
        for key, value in {"loss": losses, **metrics}.items():
            sums[key] = sums.get(key, 0.0) + float(value.sum())
        n += losses.shape[0]
    return {k: v / n for k, v in sums.items()}


def render_sft(tokenizer, records: list, max_length: int, name: str) -> list:
    items = []
    for rec in records:
        if isinstance(rec, LMRecord):
            items.append(render_messages(tokenizer, rec.text, max_length=max_length))
        else:
            items.append(render_prompt_completion(tokenizer, rec.prompt, rec.completion, max_length=max_length))
    report_truncation(name, sum(it.truncated for it in items), len(items), max_length)
    # An example whose trained tokens were all cut away would contribute nothing but padding.
    return [it for it in items if any(it.loss_mask[1:])]
