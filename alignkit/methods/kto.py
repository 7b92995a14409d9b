"""KTO: prospect-theoretic alignment from unpaired desirable / undesirable completions (Ethayarajh et al. 2024).

Each example is scored against a reference point z0, an estimate of KL(policy || reference) from *mismatched* pairs:
every prompt paired with another example's completion. The mismatch is fixed once (a seeded derangement) so the
reference log-probs of those pairs can be cached like the matched ones.
"""

from __future__ import annotations

import functools
import random

import torch
import torch.distributed as dist
from pydantic import Field

from alignkit.data import render_responses
from alignkit.losses import kto_kl_estimate, kto_loss
from alignkit.methods.spec import MethodSpec
from alignkit.models import SharedPromptLogps
from alignkit.train.common import final_saver, load_policy, load_splits, mean_over, report_truncation, require_items
from alignkit.train.pairs import pair_collate, pair_examples, pair_sequence_logps, reference_logps
from alignkit.train.config import TrainConfig
from alignkit.train.loop import Method, offline_loop
from alignkit.train.run import Run, RunError, TrainResult, configure_threads
from alignkit.utils import processes


class KTOConfig(TrainConfig):
    """`alignkit kto`: unpaired completions labelled desirable or undesirable (pairs are split into both)."""

    beta: float = Field(default=0.1, gt=0, description="strength of the KL constraint to the reference")
    desirable_weight: float = Field(default=1.0, gt=0, description="weight of the desirable examples' loss")
    undesirable_weight: float = Field(default=1.0, gt=0, description="weight of the undesirable examples' loss")
    ref_model: str | None = Field(default=None, description="reference policy (default: the starting model)")
    lr: float = 5e-6


def render_unpaired(tokenizer, records: list, max_length: int, seed: int, name: str) -> list[dict]:
    if len(records) < 2:
        raise RunError(f"{name}: KTO needs at least 2 examples (the KL reference point uses mismatched pairs)")
    # A derangement: example i borrows the completion of example partner[i] != i.
    rng = random.Random(seed)
    order = list(range(len(records)))
    rng.shuffle(order)
    partner = {order[k]: order[(k + 1) % len(order)] for k in range(len(order))}
    items = []
    for i, rec in enumerate(records):
        # One prompt cut for both, so they can share the prompt's forward pass.
        seq, kl_seq = render_responses(
            tokenizer, rec.prompt, [rec.completion, records[partner[i]].completion], max_length=max_length
        )
        items.append({"seq": seq, "kl_seq": kl_seq, "label": float(rec.label)})
    report_truncation(name, sum(it["seq"].truncated for it in items), len(items), max_length)
    return [it for it in items if any(it["seq"].loss_mask[1:]) and any(it["kl_seq"].loss_mask[1:])]


def reference_point(policy_kl: torch.Tensor, ref_kl: torch.Tensor, across_processes: bool) -> torch.Tensor:
    """z0 from the mismatched rows; while training under several processes, from those of every process's
    micro-batch of the same step, as one process holding all of them would compute it (evaluation runs on one)."""
    if not across_processes or processes.world() == 1:
        return kto_kl_estimate(policy_kl, ref_kl)
    diff = (policy_kl - ref_kl).detach().double()
    sums = torch.stack([diff.sum(), torch.tensor(float(diff.numel()), dtype=torch.float64, device=diff.device)])
    dist.all_reduce(sums)
    return (sums[0] / sums[1]).clamp(min=0).to(policy_kl.dtype)


def train_kto(cfg: KTOConfig) -> TrainResult:
    configure_threads()
    # 1. Run directory, policy, unpaired examples (preference data is split into chosen=good / rejected=bad).
    run = Run(cfg, "kto")
    train_records, eval_records = load_splits(cfg, "unpaired")  # checked before the model loads
    model, tokenizer = load_policy(cfg)
    pad_id = tokenizer.pad_token_id
    train_items = render_unpaired(tokenizer, train_records, cfg.max_length, cfg.seed, cfg.data.train)
    eval_items = render_unpaired(tokenizer, eval_records, cfg.max_length, cfg.seed, cfg.data.eval) if eval_records else []
    require_items(cfg.data.train, train_items)

    # 2. Reference log-probs of matched and mismatched sequences, once.
    splits = {"ref_train": train_items, "ref_eval": eval_items}
    collate_refs = pair_collate(pad_id, first="seq", second="kl_seq")
    for name, values in reference_logps(run, cfg, model, collate_refs, splits).items():
        for it, (ref, ref_kl, _, _) in zip(splits[name], values.tolist()):
            it.update(ref=ref, ref_kl=ref_kl)
    collate = pair_collate(pad_id, ("label", "ref", "ref_kl"), first="seq", second="kl_seq")

    loss_fn = functools.partial(
        kto_loss, beta=cfg.beta, desirable_weight=cfg.desirable_weight, undesirable_weight=cfg.undesirable_weight
    )

    # 3. One forward over matched + mismatched rows; z0 from the mismatched rows of this micro-batch on every process.
    def example_losses(module, batch):
        total, _ = pair_sequence_logps(module, batch)
        n = total.shape[0] // 2
        kl = reference_point(total[n:], batch["ref_kl"], across_processes=module.training)
        losses, metrics = loss_fn(total[:n], batch["ref"], batch["label"] > 0.5, kl)
        desirable = metrics["desirable"]
        # Per-example statistics that average correctly across micro-batches (the loss's NaN-masked split does not).
        stats = {
            "rewards": metrics["rewards"],
            "kl": metrics["kl"].expand_as(losses),
            "desirable_rewards_sum": metrics["rewards"] * desirable,
            "desirable": desirable,
        }
        return losses, stats

    def loss(module, batch):
        losses, stats = example_losses(module, batch)
        return losses.sum(), stats

    def evaluate(module):
        out = mean_over(module, eval_items, cfg.eval_batch_size or cfg.batch_size, collate, run.device, example_losses)
        # Class means from the overall means: E[r | desirable] = E[r * d] / E[d].
        good = out.pop("desirable")
        good_rewards = out.pop("desirable_rewards_sum")
        if 0 < good < 1:
            out["desirable_rewards"] = good_rewards / good
            out["undesirable_rewards"] = (out["rewards"] - good_rewards) / (1 - good)
        return out

    method = Method(count=pair_examples, loss=loss, evaluate=evaluate if eval_items else None, examples=pair_examples)
    return offline_loop(run, SharedPromptLogps(model), train_items, collate, method, final_saver(model, tokenizer, cfg))


METHOD = MethodSpec("kto", KTOConfig, train_kto, "KTO: unpaired desirable / undesirable completions", "preferences",
                    recipes={"sft-kto": ("sft", "kto")})
