"""Reward (preference) model: an LM backbone with a scalar head, trained on pairs, rankings or ratings.

- pairs (prompt, chosen, rejected[, margin][, probability]): Bradley-Terry, optionally with a margin (Touvron et al.
  2023), or the cross-entropy against a soft label `probability` (AI feedback, Bai et al. 2022);
- ranked lists (prompt, responses, ranking | scores): Plackett-Luce over the full ranking, or all pairs (InstructGPT);
- ratings (prompt, completion, rating): regression.
The model reports pairwise accuracy on its eval split: the fraction of ordered pairs it scores in the right order.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from alignkit.data import Preference, Ranked, Rating, render_preference, render_prompt_completion, render_responses
from alignkit.losses import (
    all_pairs_ranking_loss,
    bradley_terry_loss,
    plackett_luce_loss,
    rating_regression_loss,
    reward_centering_penalty,
    soft_bradley_terry_loss,
)
from alignkit.methods.spec import MethodSpec
from alignkit.models import SequenceScores, apply_lora, load_score_model, load_tokenizer
from alignkit.train.common import batches, final_saver, load_splits, pad_sequences, report_truncation, require_items
from alignkit.train.config import TrainConfig
from alignkit.train.loop import Method, offline_loop
from alignkit.train.run import Run, RunError, TrainResult, configure_threads


class RewardConfig(TrainConfig):
    loss: Literal["auto", "bradley_terry", "plackett_luce", "all_pairs", "rating"] = Field(
        default="auto", description="auto: Bradley-Terry for pairs, Plackett-Luce for rankings, regression for ratings"
    )
    use_margin: bool = Field(default=True, description="use a pair's `margin` field in the Bradley-Terry loss")
    center_rewards_coef: float = Field(default=0.0, ge=0,
                                       description="weight of a penalty on the squared mean reward (keeps scores "
                                                   "centred at 0)")
    lr: float = 1e-5


DEFAULT_LOSS = {Preference: "bradley_terry", Ranked: "plackett_luce", Rating: "rating"}
ALLOWED = {Preference: {"bradley_terry"}, Ranked: {"plackett_luce", "all_pairs"}, Rating: {"rating"}}


def record_type(records: list, name: str) -> type:
    types = {type(r) for r in records}
    if len(types) != 1:
        kinds = ", ".join(sorted(t.__name__ for t in types))
        raise RunError(f"{name}: reward data mixes record kinds ({kinds}); use one kind per dataset")
    return types.pop()


def render_reward_items(tokenizer, records: list, max_length: int, name: str) -> list[dict]:
    items = []
    for rec in records:
        if isinstance(rec, Preference):
            chosen, rejected = render_preference(tokenizer, rec, max_length=max_length)
            # probability NaN: a hard label; else the soft label P(chosen better), whose side of 0.5 is what
            # pairwise accuracy checks (gold [p, 1 - p]; p = 0.5 makes no pair).
            if rec.probability is None:
                probability, gold = float("nan"), [1.0, 0.0]
            else:
                probability, gold = rec.probability, [rec.probability, 1.0 - rec.probability]
            items.append({"seqs": [chosen, rejected], "gold": gold, "margin": rec.margin or 0.0,
                          "probability": probability})
        elif isinstance(rec, Ranked):
            seqs = render_responses(tokenizer, rec.prompt, rec.responses, max_length=max_length)
            items.append({"seqs": seqs, "gold": list(rec.scores), "margin": 0.0})
        else:
            seq = render_prompt_completion(tokenizer, rec.prompt, rec.completion, max_length=max_length)
            items.append({"seqs": [seq], "gold": [float(rec.rating)], "margin": 0.0})
    report_truncation(name, sum(any(s.truncated for s in it["seqs"]) for it in items), len(items), max_length)
    return items


def make_collate(pad_id: int):
    def collate(items: list[dict]) -> dict:
        # Every candidate of every example in one padded block; `group` says which example each row belongs to.
        seqs = [s for it in items for s in it["seqs"]]
        batch = pad_sequences(seqs, pad_id)
        batch["group"] = torch.tensor([i for i, it in enumerate(items) for _ in it["seqs"]])
        k = max(len(it["seqs"]) for it in items)
        gold = torch.full((len(items), k), float("nan"))
        for i, it in enumerate(items):
            gold[i, : len(it["gold"])] = torch.tensor(it["gold"])
        batch["gold"] = gold
        batch["margin"] = torch.tensor([it["margin"] for it in items], dtype=torch.float32)
        batch["probability"] = torch.tensor([it.get("probability", float("nan")) for it in items], dtype=torch.float32)
        return batch

    return collate


def grouped_scores(module, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores arranged [B, K] with a validity mask, from the flat block of candidates."""
    flat = module(batch["input_ids"], batch["attention_mask"])
    mask = ~torch.isnan(batch["gold"])
    scores = torch.zeros(mask.shape, dtype=flat.dtype, device=flat.device)
    return scores.masked_scatter(mask, flat), mask


def pairwise_accuracy(scores: torch.Tensor, gold: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    """(correctly ordered pairs, pairs with distinct gold) within each row."""
    diff_gold = gold.unsqueeze(-1) - gold.unsqueeze(-2)
    diff_score = scores.unsqueeze(-1) - scores.unsqueeze(-2)
    valid = (mask.unsqueeze(-1) & mask.unsqueeze(-2)) & (diff_gold > 0)
    return float(((diff_score > 0) & valid).sum()), int(valid.sum())


def train_reward(cfg: RewardConfig) -> TrainResult:
    configure_threads()
    # 1. Run directory, score model (LM backbone + fresh 1-output head), data of one kind.
    run = Run(cfg, "reward")
    train_records, eval_records = load_splits(cfg, "reward")  # checked before the model loads
    tokenizer = load_tokenizer(cfg.model)
    model = load_score_model(cfg.model)
    if cfg.lora is not None:
        model = apply_lora(
            model, r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules, task_type="SEQ_CLS",
        )
    kind = record_type(train_records, cfg.data.train)
    if eval_records and record_type(eval_records, cfg.data.eval) is not kind:
        raise RunError(f"{cfg.data.eval}: eval data is of a different kind than the training data ({kind.__name__})")
    loss_name = DEFAULT_LOSS[kind] if cfg.loss == "auto" else cfg.loss
    if loss_name not in ALLOWED[kind]:
        raise RunError(f"loss={cfg.loss} does not apply to {kind.__name__} data; use one of {sorted(ALLOWED[kind])}")
    train_items = render_reward_items(tokenizer, train_records, cfg.max_length, cfg.data.train)
    eval_items = render_reward_items(tokenizer, eval_records, cfg.max_length, cfg.data.eval) if eval_records else []
    require_items(cfg.data.train, train_items)
    collate = make_collate(tokenizer.pad_token_id)

    # 2. The loss for this kind of data, per example.
    def example_losses(module, batch):
        scores, mask = grouped_scores(module, batch)
        gold = batch["gold"]
        if loss_name == "bradley_terry":
            margin = batch["margin"] if cfg.use_margin else None
            losses, _ = bradley_terry_loss(scores[:, 0], scores[:, 1], margin)
            soft = ~torch.isnan(batch["probability"])
            if soft.any():
                # Pairs with a soft label (AI feedback) take the cross-entropy against it instead.
                soft_losses, _ = soft_bradley_terry_loss(scores[:, 0], scores[:, 1],
                                                         torch.nan_to_num(batch["probability"], nan=1.0))
                losses = torch.where(soft, soft_losses, losses)
            if cfg.center_rewards_coef:
                losses = losses + reward_centering_penalty(scores[:, 0], scores[:, 1], cfg.center_rewards_coef)
        elif loss_name == "plackett_luce":
            order = torch.argsort(torch.nan_to_num(gold, nan=float("-inf")), dim=-1, descending=True, stable=True)
            losses, _ = plackett_luce_loss(scores, order, mask)
        elif loss_name == "all_pairs":
            losses, _ = all_pairs_ranking_loss(scores, torch.nan_to_num(gold, nan=0.0), mask)
        else:
            losses, _ = rating_regression_loss(scores[:, 0], gold[:, 0])
        return losses, scores, mask

    def loss(module, batch):
        losses, scores, mask = example_losses(module, batch)
        stats = {"score_mean": (scores * mask).sum(-1) / mask.sum(-1)}
        if loss_name != "rating":
            correct, pairs = pairwise_accuracy(scores.detach(), batch["gold"], mask)
            stats["pair_accuracy"] = torch.full_like(losses, correct / max(pairs, 1)).detach()
        return losses.sum(), {k: v.detach() for k, v in stats.items()}

    def evaluate(module):
        total_loss, n, correct, pairs = 0.0, 0, 0.0, 0
        all_scores, all_gold = [], []
        for batch in batches(eval_items, cfg.eval_batch_size or cfg.batch_size, collate, run.device):
            losses, scores, mask = example_losses(module, batch)
            total_loss += float(losses.sum())
            n += losses.shape[0]
            if loss_name == "rating":
                all_scores.append(scores[:, 0])
                all_gold.append(batch["gold"][:, 0])
            else:
                c, p = pairwise_accuracy(scores, batch["gold"], mask)
                correct, pairs = correct + c, pairs + p
        if loss_name == "rating":
            # Ratings: pairs across examples with different ratings.
            s, g = torch.cat(all_scores).unsqueeze(0), torch.cat(all_gold).unsqueeze(0)
            correct, pairs = pairwise_accuracy(s, g, torch.ones_like(s, dtype=torch.bool))
        return {"loss": total_loss / n, "pairwise_accuracy": correct / max(pairs, 1), "pairs": float(pairs)}

    def examples(batch):
        return batch["gold"].shape[0]

    method = Method(count=examples, loss=loss, evaluate=evaluate if eval_items else None, examples=examples)
    return offline_loop(run, SequenceScores(model), train_items, collate, method, final_saver(model, tokenizer, cfg))


METHOD = MethodSpec("reward", RewardConfig, train_reward, "a reward model on pairs, rankings or ratings (Bradley-Terry, "
                    "Plackett-Luce, regression)", "preferences", scorer=True)
