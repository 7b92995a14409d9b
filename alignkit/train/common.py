"""Plain functions every trainer uses: load the policy, load and render data, batch, and score sequences."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from alignkit.data import load_records, pad_batch
from alignkit.models import (
    SharedPromptLogps,
    adapters_disabled,
    apply_lora,
    is_peft,
    load_causal_lm,
    load_tokenizer,
    per_row_sum,
    split_prompt,
)
from alignkit.train import sharding
from alignkit.train.config import TrainConfig
from alignkit.train.loop import Method, offline_loop
from alignkit.train.run import Run, RunError, TrainResult, configure_threads
from alignkit.utils.io import atomic_torch_save, safe_torch_load


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
    return _row_sums(logps, rows, batch["input_ids"].shape[0])


def _row_sums(logps: torch.Tensor, rows: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return per_row_sum(logps.float(), rows, n), per_row_sum(torch.ones_like(logps, dtype=torch.float32), rows, n)


def fingerprint(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def cached_reference_logps(run: Run, name: str, reference: nn.Module, items: list[dict], collate) -> torch.Tensor:
    """Reference log-probs of both completions of each item, computed once and cached in the run directory.

    Preference methods compare the policy to a frozen reference whose log-probs never change, so they are computed in
    one no-grad pass before training (and kept on disk for resume) instead of running the reference every step; the
    caller then frees the reference model. `reference` is a `SharedPromptLogps` and `collate` a `pair_collate`.
    Returns [len(items), 4]: (first sum, second sum, first token count, second token count) per item.
    """
    path = run.cache_path(f"{name}.pt")
    stamp = fingerprint(
        name, run.cfg.model, getattr(run.cfg, "ref_model", None), run.precision,
        [[getattr(v, "input_ids", None) for v in it.values()] for it in items],
    )
    if path.is_file():
        cached = safe_torch_load(path)
        if cached.get("stamp") == stamp:
            return cached["values"]
    # Longest first keeps padding low within each batch; results are put back in the original order.
    order = sorted(range(len(items)), key=lambda i: -sum(len(getattr(v, "input_ids", ())) for v in items[i].values()))
    values = torch.zeros(len(items), 4)
    size = run.cfg.eval_batch_size or 2 * run.cfg.batch_size
    reference.eval()
    with torch.no_grad(), run.autocast():
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            batch = {k: v.to(run.device) for k, v in collate([items[i] for i in idx]).items()}
            total, count = pair_sequence_logps(reference, batch)
            n = len(idx)
            values[idx] = torch.stack([total[:n], total[n:], count[:n], count[n:]], dim=-1).cpu()
    if run.is_main:
        atomic_torch_save({"stamp": stamp, "values": values}, path)
    return values


def reference_logps(run: Run, cfg, model: nn.Module, collate, splits: dict[str, list]) -> dict[str, torch.Tensor]:
    """Cached reference log-probs ([n, 4], see `cached_reference_logps`) for each non-empty split of pair items.

    The reference is `cfg.ref_model` when given (loaded once for all splits, then freed); with LoRA, the policy with
    its adapters disabled; otherwise the policy itself before its first update — so no second copy is kept.
    """
    splits = {name: items for name, items in splits.items() if items}
    if getattr(cfg, "ref_model", None) is not None:
        reference = SharedPromptLogps(load_causal_lm(cfg.ref_model).to(run.device))
        values = {name: cached_reference_logps(run, name, reference, items, collate) for name, items in splits.items()}
        del reference
        return values
    module = SharedPromptLogps(model).to(run.device)
    with adapters_disabled(model) if is_peft(model) else contextlib.nullcontext():
        return {name: cached_reference_logps(run, name, module, items, collate) for name, items in splits.items()}


def require_items(name: str, items: list) -> None:
    if not items:
        raise RunError(f"{name}: no usable examples after loading and rendering")


def final_saver(model: nn.Module, tokenizer, cfg: TrainConfig) -> Callable[[Path, dict[str, str]], None]:
    """Saves the final model with the files `Run.fit` gives it (the model card). Called on every process: a sharded
    model's weights are gathered by all of them, and the main process writes."""
    from alignkit.models import save_pretrained
    from alignkit.utils import processes

    def save(path: Path, files: dict[str, str]) -> None:
        state = sharding.full_state_dict(model) if sharding.is_sharded(model) else None
        if processes.is_main():
            save_pretrained(model, tokenizer, path, merge_lora=cfg.save_merged, replace=cfg.overwrite, files=files,
                            state_dict=state)

    return save


def render_pairs(tokenizer, records: list, max_length: int, name: str) -> list[dict]:
    """Preference records -> [{"chosen": Rendered, "rejected": Rendered}] with identical prompt tokens."""
    from alignkit.data import render_preference

    items = []
    for rec in records:
        chosen, rejected = render_preference(tokenizer, rec, max_length=max_length)
        items.append({"chosen": chosen, "rejected": rejected})
    report_truncation(name, sum(it["chosen"].truncated or it["rejected"].truncated for it in items), len(items), max_length)
    return [it for it in items if any(it["chosen"].loss_mask[1:]) and any(it["rejected"].loss_mask[1:])]


def pair_collate(pad_id: int, extra_keys: tuple[str, ...] = (), first: str = "chosen", second: str = "rejected"):
    """Each example's prompt once, then its two completions (all first ones, then all second ones).

    The layout of `SharedPromptLogps`: the shared prompt goes through the model once per pair, not twice.
    """

    def collate(items: list[dict]) -> dict:
        batch = split_prompt([it[first] for it in items] + [it[second] for it in items], 2, pad_id)
        for key in extra_keys:
            batch[key] = torch.tensor([it[key] for it in items], dtype=torch.float32)
        return batch

    return collate


def pair_examples(batch: dict) -> int:
    return batch["prompt_ids"].shape[0]


def pair_sequence_logps(module: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-prob and count of the trained tokens of each completion ([2B], [2B]) for a `pair_collate` batch."""
    logps, rows = module(batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"], batch["completion_mask"],
                         batch["completion_loss_mask"])
    return _row_sums(logps, rows, batch["completion_ids"].shape[0])


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


def train_reference_free_pairs(cfg: TrainConfig, name: str, pair_losses: Callable) -> TrainResult:
    """Train a preference method that needs no reference model (ORPO, SimPO) on cfg's pairs.

    `pair_losses(summed_logps [2B], tokens [2B])` -> (per-pair losses [B], metrics), given the summed log-prob and
    number of trained tokens of each completion, chosen first then rejected. The loop divides the summed loss by
    the step's global number of pairs.
    """
    configure_threads()
    # 1. Run directory, policy and pairs (chosen and rejected share the prompt's ids).
    run = Run(cfg, name)
    train_records, eval_records = load_splits(cfg, "preference")  # checked before the model loads
    model, tokenizer = load_policy(cfg)
    train_items = render_pairs(tokenizer, train_records, cfg.max_length, cfg.data.train)
    eval_items = render_pairs(tokenizer, eval_records, cfg.max_length, cfg.data.eval) if eval_records else []
    require_items(cfg.data.train, train_items)
    collate = pair_collate(tokenizer.pad_token_id)

    # 2. Per-pair losses from one forward over both completions.
    def example_losses(module, batch):
        return pair_losses(*pair_sequence_logps(module, batch))

    def loss(module, batch):
        losses, metrics = example_losses(module, batch)
        return losses.sum(), metrics

    def evaluate(module):
        return mean_over(module, eval_items, cfg.eval_batch_size or cfg.batch_size, collate, run.device, example_losses)

    method = Method(count=pair_examples, loss=loss, evaluate=evaluate if eval_items else None, examples=pair_examples)
    # 3. Train and save.
    return offline_loop(run, SharedPromptLogps(model), train_items, collate, method, final_saver(model, tokenizer, cfg))
