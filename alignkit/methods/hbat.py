"""HBAT, Hybrid Alignment Training (Wang et al. 2024): instruction following and preference alignment in turn, not in
sequence, with elastic weight consolidation at every switch; and the joint objective for comparison.

`mode: alternate` (HBAT). Each objective's steps (epochs x examples / batch) are cut into `segments` blocks, trained
as SFT block 1, preference block 1, SFT block 2, ... When training switches from one objective to the other, the
diagonal Fisher of the objective just left is estimated at the current parameters theta* from the squared gradients
of `fisher_samples` of its examples (each on its own: the empirical Fisher of Kirkpatrick et al. 2017), and until the
next switch every step adds the EWC penalty (lambda / 2) sum_i F_i (theta_i - theta*_i)^2, so the parameters that
mattered for the objective just left stay near where it left them. With `fisher_normalize` the Fisher is scaled to
mean 1 first: raw squared gradients of a 100M-parameter model are ~1e-8 each, and a lambda that means something
should not depend on the model's size.

`mode: joint`. Every step trains on one batch of each and minimises the mean of sft_weight x (SFT NLL per token)
and pref_weight x (preference loss per pair).

The preference objective is DPO (or a DPO variant via `loss`), with the starting model as the fixed reference.
Anchors and Fisher are part of every checkpoint, so a resumed run continues exactly.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from alignkit.losses import ewc_penalty, fisher_diagonal_update
from alignkit.methods.spec import MethodSpec
from alignkit.models import SharedPromptLogps, TokenLogps
from alignkit.train import sharding
from alignkit.train.common import (
    final_saver,
    load_policy,
    load_splits,
    pad_sequences,
    render_sft,
    require_items,
    sequence_logps,
)
from alignkit.train.pairs import DPOKeys, pair_examples, pair_losses_fn, prepare_pairs
from alignkit.train.config import DataConfig, TrainConfig
from alignkit.train.loop import Method, Schedule, epoch_order, item_length, offline_loop
from alignkit.train.run import Run, RunError, TrainResult, configure_threads
from alignkit.utils.io import atomic_write_json
from alignkit.utils.seeds import derived_seed


class HBATConfig(TrainConfig, DPOKeys):
    """`alignkit hbat`: Hybrid Alignment Training (Wang et al. 2024). `data` holds the preference pairs, `sft_data`
    the demonstrations; `epochs` passes over each."""

    sft_data: DataConfig = Field(description="demonstrations for the instruction-following (SFT) objective")
    mode: Literal["alternate", "joint"] = Field(
        default="alternate", description="alternate: HBAT, blocks of SFT and preference steps in turn, EWC at each "
                                         "switch; joint: every step the weighted sum of both objectives")
    segments: int = Field(default=4, ge=1, description="alternate: each objective's steps split into this many blocks "
                                                      "(SFT block 1, preference block 1, SFT block 2, ...)")
    sft_steps: int | None = Field(default=None, ge=1, description="SFT steps in all; default: epochs over sft_data")
    preference_steps: int | None = Field(default=None, ge=1,
                                         description="preference steps in all; default: epochs over data")
    ewc_strength: float = Field(default=1.0, ge=0, description="alternate: lambda of the EWC penalty after a switch "
                                                               "(0: plain alternation)")
    fisher_samples: int = Field(default=16, ge=1, description="examples of the objective just left whose squared "
                                                              "gradients estimate its diagonal Fisher")
    fisher_normalize: bool = Field(default=True, description="scale the Fisher to mean 1, so ewc_strength is on the "
                                                             "scale of the losses whatever the model size")
    sft_weight: float = Field(default=1.0, ge=0, description="joint: weight of the SFT loss (mean NLL per token)")
    pref_weight: float = Field(default=1.0, ge=0, description="joint: weight of the preference loss (mean per pair)")
    lr: float = 1e-5

SFT, PREF = "sft", "preference"


def hbat_blocks(sft_steps: int, pref_steps: int, segments: int) -> list[tuple[str, int]]:
    """The alternation: [(objective, steps)], each objective's steps split into `segments` near-equal blocks, SFT
    first. An objective with fewer steps than segments simply has fewer blocks."""
    def split(n: int) -> list[int]:
        return [n // segments + (1 if i < n % segments else 0) for i in range(segments)]

    blocks = []
    for sft, pref in zip(split(sft_steps), split(pref_steps)):
        blocks += [(SFT, sft)] if sft else []
        blocks += [(PREF, pref)] if pref else []
    return blocks


class _Stream:
    """One objective's global batches, epoch after epoch: a seeded order per epoch (length-grouped if asked)."""

    def __init__(self, indices: list[int], global_batch: int, seed: int, lengths: list[int] | None):
        self.indices, self.global_batch, self.seed, self.lengths = indices, global_batch, seed, lengths
        self.steps_per_epoch = len(indices) // global_batch
        self._epoch: tuple[int, list[int]] | None = None

    def batch(self, k: int) -> list[int]:
        epoch, j = divmod(k, self.steps_per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            order = epoch_order(derived_seed(self.seed, epoch), len(self.indices), self.global_batch, self.lengths)
            self._epoch = (epoch, [self.indices[i] for i in order])
        return self._epoch[1][j * self.global_batch : (j + 1) * self.global_batch]


class HBATPlan:
    """Which objective and which examples each step trains on."""

    def __init__(self, cfg: HBATConfig, n_sft: int, n_pref: int, world: int, process_index: int,
                 lengths: list[int] | None):
        self.cfg, self.world, self.process_index = cfg, world, process_index
        global_batch = cfg.batch_size * cfg.grad_accum * world
        for name, n in (("sft_data", n_sft), ("data", n_pref)):
            if n < global_batch:
                raise RunError(f"{name}: {n} examples, fewer than one optimizer step needs ({global_batch})")
        sft_lengths = lengths[:n_sft] if lengths else None
        pref_lengths = lengths[n_sft:] if lengths else None
        self.sft = _Stream(list(range(n_sft)), global_batch, cfg.seed, sft_lengths)
        self.pref = _Stream(list(range(n_sft, n_sft + n_pref)), global_batch, cfg.seed + 1, pref_lengths)
        sft_steps = cfg.sft_steps or math.ceil(round(cfg.epochs * self.sft.steps_per_epoch, 6))
        pref_steps = cfg.preference_steps or math.ceil(round(cfg.epochs * self.pref.steps_per_epoch, 6))
        if cfg.mode == "joint":
            self.blocks = [("joint", max(sft_steps, pref_steps))]
        else:
            self.blocks = hbat_blocks(sft_steps, pref_steps, cfg.segments)
        # Per step: (objective, index of the step within that objective's stream, index of its block).
        self.steps: list[tuple[str, int, int]] = []
        seen = {SFT: 0, PREF: 0, "joint": 0}
        for b, (objective, n) in enumerate(self.blocks):
            for _ in range(n):
                self.steps.append((objective, seen[objective], b))
                seen[objective] += 1
        if cfg.max_steps > 0:
            self.steps = self.steps[: cfg.max_steps]
        self.steps_per_epoch = self.sft.steps_per_epoch + self.pref.steps_per_epoch

    def _mine(self, global_batch: list[int]) -> list[list[int]]:
        per_process = self.cfg.batch_size * self.cfg.grad_accum
        mine = global_batch[self.process_index * per_process : (self.process_index + 1) * per_process]
        return [mine[i * self.cfg.batch_size : (i + 1) * self.cfg.batch_size] for i in range(self.cfg.grad_accum)]

    def micro_batches(self, step: int) -> list[list[int]]:
        objective, k, _ = self.steps[step]
        if objective == "joint":
            return self._mine(self.sft.batch(k)) + self._mine(self.pref.batch(k))
        return self._mine((self.sft if objective == SFT else self.pref).batch(k))

    def switch_at(self, step: int) -> str | None:
        """The objective training leaves at `step` (the first step of a block after the first), else None."""
        if step == 0 or step >= len(self.steps):
            return None
        (before, _, block_before), (now, _, block_now) = self.steps[step - 1], self.steps[step]
        return before if block_now != block_before and before != now else None

    def last_examples(self, step: int, objective: str, n: int) -> list[int]:
        """Up to n of the examples `objective` trained on in the block that ended just before `step`, latest first."""
        out: list[int] = []
        for s in range(step - 1, -1, -1):
            name, k, _ = self.steps[s]
            if name != objective or len(out) >= n:
                break
            out += (self.sft if name == SFT else self.pref).batch(k)
        return out[:n]

    def summary(self) -> dict:
        return {"mode": self.cfg.mode, "blocks": [{"objective": o, "steps": n} for o, n in self.blocks],
                "total_steps": len(self.steps)}


def estimate_fisher(example_losses: list, params: dict[str, torch.Tensor], *, normalize: bool) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher: the mean over examples of each parameter's squared gradient of that example's loss
    (`example_losses`: callables, one per example, each returning its loss). `normalize` scales it to mean 1 over
    all parameters."""
    fisher: dict[str, torch.Tensor] = {}
    for n, example_loss in enumerate(example_losses, start=1):
        grads = torch.autograd.grad(example_loss(), list(params.values()), allow_unused=True)
        fisher = fisher_diagonal_update(fisher, {name: g for name, g in zip(params, grads) if g is not None}, n)
    if normalize and fisher:
        mean = sum(float(f.sum()) for f in fisher.values()) / sum(f.numel() for f in fisher.values())
        fisher = {name: f / max(mean, 1e-30) for name, f in fisher.items()}
    return fisher


class _Hybrid(nn.Module):
    """The policy seen by both objectives: token log-probs for SFT batches, shared-prompt pair log-probs for DPO."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.tokens = TokenLogps(model)
        self.pairs = SharedPromptLogps(model)


def _is_pairs(batch: dict) -> bool:
    return "ref_chosen" in batch


def train_hbat(cfg: HBATConfig) -> TrainResult:
    if sharding.requested():
        raise RunError("hbat does not run sharded (FSDP) yet: its Fisher and EWC penalty read the parameters "
                       "themselves, which sharding replaces; launch it without the FSDP config (DDP)")
    configure_threads()
    # 1. Run directory, policy; demonstrations and pairs (with their reference log-probs, from the starting model).
    run = Run(cfg, "hbat")
    # Both datasets are checked before the model loads.
    sft_records, _ = load_splits(cfg.model_copy(update={"data": cfg.sft_data}), "sft")
    pair_records = load_splits(cfg, "preference")
    model, tokenizer = load_policy(cfg)
    pad_id = tokenizer.pad_token_id
    sft_items = render_sft(tokenizer, sft_records, cfg.max_length, cfg.sft_data.train)
    require_items(cfg.sft_data.train, sft_items)
    pair_items, _, pair_collate = prepare_pairs(run, cfg, model, tokenizer, pair_records)
    items = sft_items + pair_items
    lengths = [item_length(it) for it in items] if cfg.group_by_length else None
    plan = HBATPlan(cfg, len(sft_items), len(pair_items), run.accelerator.num_processes,
                    run.accelerator.process_index, lengths)
    if run.is_main:
        atomic_write_json(run.output_dir / "schedule.json", plan.summary())

    def collate(batch_items: list) -> dict:
        return pair_collate(batch_items) if isinstance(batch_items[0], dict) else pad_sequences(batch_items, pad_id)

    pair_losses = pair_losses_fn(cfg)
    joint = cfg.mode == "joint"

    # 2. Losses. Alternate: summed, and the loop divides by the step's tokens (SFT) or pairs (DPO), as the plain
    # trainers do. Joint: each micro-batch counts 1 and contributes its weighted mean.
    def count(batch):
        if joint:
            return 1
        return pair_examples(batch) if _is_pairs(batch) else int(batch["loss_mask"][:, 1:].sum())

    def examples(batch):
        return pair_examples(batch) if _is_pairs(batch) else batch["input_ids"].shape[0]

    def loss(module, batch):
        if _is_pairs(batch):
            losses, metrics = pair_losses(module.pairs, batch)
            return (cfg.pref_weight * losses.mean() if joint else losses.sum()), metrics
        total, tokens = sequence_logps(module.tokens, batch)
        nll = -total.sum()
        return (cfg.sft_weight * nll / tokens.sum().clamp(min=1) if joint else nll), {"sft_tokens": tokens}

    # 3. EWC at each switch (alternate mode).
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    ewc: dict = {"anchors": None, "fisher": None, "left": None, "at": None}

    def example_loss(module: _Hybrid, index: int) -> torch.Tensor:
        batch = {k: v.to(run.device) for k, v in collate([items[index]]).items()}
        with run.autocast():
            if _is_pairs(batch):
                return pair_losses(module.pairs, batch)[0].sum()
            return -sequence_logps(module.tokens, batch)[0].sum()  # -log p(completion | prompt)

    def before_step(step: int, module: nn.Module) -> None:
        left = plan.switch_at(step)
        if joint or cfg.ewc_strength == 0 or left is None or ewc["at"] == step:
            return
        was_training = module.training
        module.eval()
        examples_left = plan.last_examples(step, left, cfg.fisher_samples)
        fisher = estimate_fisher([lambda i=i: example_loss(module, i) for i in examples_left], params,
                                 normalize=cfg.fisher_normalize)
        module.train(was_training)
        ewc.update(anchors={name: p.detach().clone() for name, p in params.items()}, fisher=fisher, left=left, at=step)

    def step_penalty(module: nn.Module):
        if ewc["fisher"] is None:
            return torch.zeros(()), {}
        penalty = ewc_penalty(params, ewc["anchors"], ewc["fisher"], cfg.ewc_strength)
        return penalty, {"ewc_penalty": float(penalty.detach())}

    def load_state(state: dict) -> None:
        ewc.update(state)

    method = Method(count=count, loss=loss, examples=examples, before_step=before_step, step_penalty=step_penalty,
                    state=lambda: dict(ewc), load_state=load_state)
    schedule = Schedule(total_steps=len(plan.steps), steps_per_epoch=plan.steps_per_epoch,
                        micro_batches=plan.micro_batches)
    # 4. Train; the final model goes to <output_dir>/final in HF format.
    return offline_loop(run, _Hybrid(model), items, collate, method, final_saver(model, tokenizer, cfg), schedule)


METHOD = MethodSpec("hbat", HBATConfig, train_hbat, "HBAT: SFT and preference blocks in turn with EWC, or the joint "
                    "SFT+DPO objective", "preferences", recipes={"hbat": ("hbat",), "joint": ("joint",)},
                    presets={"joint": {"mode": "joint"}}, owned=("model", "data", "output_dir", "sft_data"),
                    # In `alignkit compare`, sft-dpo's budget: `steps` of each objective, in turn; joint: `steps`
                    # steps, each on a batch of each (the same examples as sft-dpo, in half the optimizer steps).
                    compare=lambda c: {"sft_data": {"train": c.sft_data}, "sft_steps": c.steps,
                                       "preference_steps": c.steps, "max_steps": -1})
