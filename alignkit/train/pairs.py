"""The pair machinery every preference method shares: (prompt, chosen, rejected) rendered with identical prompt ids,
batched with the prompt once per pair, scored in one forward; the DPO objective's keys and its per-pair losses
(DPO, HBAT's preference objective, iterative DPO's rounds), and the loop of reference-free pair methods (ORPO,
SimPO)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from typing import Callable, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from alignkit.data import render_preference
from alignkit.losses import DPO_LOSSES
from alignkit.models import SharedPromptLogps, adapters_disabled, is_peft, load_causal_lm, split_prompt
from alignkit.train.common import (
    final_saver,
    load_policy,
    load_splits,
    mean_over,
    report_truncation,
    require_items,
    row_sums,
)
from alignkit.train.config import Strict, TrainConfig
from alignkit.train.loop import Method, offline_loop
from alignkit.train.run import Run, TrainResult, configure_threads
from alignkit.utils.io import atomic_torch_save, safe_torch_load


class DPOKeys(Strict):
    """The DPO objective's keys, shared by DPO, HBAT's preference objective and iterative DPO's rounds."""

    beta: float = Field(default=0.1, gt=0,
                        description="strength of the KL constraint to the reference (larger: stay closer)")
    loss: Literal["sigmoid", "robust", "ipo", "hinge"] = Field(default="sigmoid",
                                                               description="sigmoid (DPO), robust (label noise), "
                                                                           "ipo (squared), hinge (SLiC)")
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5,
                                   description="assumed rate of flipped labels (conservative DPO; robust needs > 0)")
    ref_model: str | None = Field(default=None, description="reference policy; default: the starting model")

    @model_validator(mode="after")
    def _robust_needs_smoothing(self):
        if self.loss == "robust" and self.label_smoothing == 0:
            raise ValueError("loss=robust needs label_smoothing > 0 (the assumed label-noise rate)")
        return self


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


def render_pairs(tokenizer, records: list, max_length: int, name: str) -> list[dict]:
    """Preference records -> [{"chosen": Rendered, "rejected": Rendered}] with identical prompt tokens."""
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
    return row_sums(logps, rows, batch["completion_ids"].shape[0])


def dpo_loss_fn(cfg):
    fn = DPO_LOSSES[cfg.loss]
    if cfg.loss in ("sigmoid", "robust"):
        fn = functools.partial(fn, label_smoothing=cfg.label_smoothing)
    return functools.partial(fn, beta=cfg.beta)


def prepare_pairs(run: Run, cfg, model, tokenizer, records: tuple[list, list]
                  ) -> tuple[list[dict], list[dict], Callable]:
    """Train and eval pairs (`records`, from `load_splits(cfg, "preference")`) rendered with identical prompt tokens
    for chosen and rejected, each with its reference log-probs (computed once, before any update, and cached on disk
    for resume); and their collate."""
    pad_id = tokenizer.pad_token_id
    train_records, eval_records = records
    train_items = render_pairs(tokenizer, train_records, cfg.max_length, cfg.data.train)
    eval_items = render_pairs(tokenizer, eval_records, cfg.max_length, cfg.data.eval) if eval_records else []
    require_items(cfg.data.train, train_items)
    splits = {"ref_train": train_items, "ref_eval": eval_items}
    for name, values in reference_logps(run, cfg, model, pair_collate(pad_id), splits).items():
        for it, (rc, rr, tc, tr) in zip(splits[name], values.tolist()):
            it.update(ref_chosen=rc, ref_rejected=rr, chosen_tokens=tc, rejected_tokens=tr)
    return train_items, eval_items, pair_collate(pad_id, ("ref_chosen", "ref_rejected", "chosen_tokens",
                                                          "rejected_tokens"))


def pair_losses_fn(cfg) -> Callable:
    """(module, batch) -> (per-pair losses, metrics) for a `prepare_pairs` batch under cfg's loss."""
    loss_fn = dpo_loss_fn(cfg)
    # IPO's regression target assumes length-normalised log-ratios (Azar et al. 2023; TRL does the same).
    average = cfg.loss == "ipo"

    def pair_losses(module, batch):
        total, _ = pair_sequence_logps(module, batch)
        n = total.shape[0] // 2
        ref_c, ref_r = batch["ref_chosen"], batch["ref_rejected"]
        pc, pr = total[:n], total[n:]
        if average:
            tc, tr = batch["chosen_tokens"], batch["rejected_tokens"]
            pc, pr, ref_c, ref_r = pc / tc, pr / tr, ref_c / tc, ref_r / tr
        losses, metrics = loss_fn(pc, pr, ref_c, ref_r)
        metrics["logps_chosen"] = pc.detach()
        metrics["logps_rejected"] = pr.detach()
        return losses, metrics

    return pair_losses


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
