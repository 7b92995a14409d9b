"""Direct Preference Optimization (and IPO, hinge, robust/conservative variants) on (prompt, chosen, rejected) pairs."""

from __future__ import annotations

import functools
from typing import Callable, Literal

from pydantic import Field, model_validator

from alignkit.losses import DPO_LOSSES
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
    reference_logps,
    render_pairs,
    require_items,
)
from alignkit.train.config import Strict, TrainConfig
from alignkit.train.loop import Method, offline_loop
from alignkit.train.run import Run, TrainResult, configure_threads


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


class DPOConfig(TrainConfig, DPOKeys):
    """`alignkit dpo`: (prompt, chosen, rejected) pairs."""

    lr: float = 5e-6


def dpo_loss_fn(cfg: DPOConfig):
    fn = DPO_LOSSES[cfg.loss]
    if cfg.loss in ("sigmoid", "robust"):
        fn = functools.partial(fn, label_smoothing=cfg.label_smoothing)
    return functools.partial(fn, beta=cfg.beta)


def prepare_pairs(run: Run, cfg: DPOConfig, model, tokenizer, records: tuple[list, list]
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


def pair_losses_fn(cfg: DPOConfig) -> Callable:
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
