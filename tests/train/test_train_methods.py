"""Each trainer, run for a few steps on a tiny model, moves the quantity it exists to move."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from alignkit.data import load_records, pad_batch
from alignkit.methods import METHODS
from alignkit.methods.dpo import DPOConfig, train_dpo
from alignkit.methods.kto import KTOConfig, train_kto
from alignkit.methods.orpo import ORPOConfig, train_orpo
from alignkit.methods.reward import RewardConfig, train_reward
from alignkit.methods.sft import SFTConfig, train_sft
from alignkit.train.common import render_sft
from alignkit.methods.simpo import SimPOConfig, train_simpo
from alignkit.models import TokenLogps, load_causal_lm, load_tokenizer, per_row_sum
from alignkit.train.pairs import render_pairs
from alignkit.train.config import DataConfig, LoraConfig
from alignkit.train.loop import epoch_order
from alignkit.utils.seeds import derived_seed

COMMON = dict(precision="fp32", progress=False, max_length=64, scheduler="constant")


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def sft_nll(model_spec: str, data: str) -> float:
    tokenizer = load_tokenizer(model_spec)
    module = TokenLogps(load_causal_lm(model_spec)).eval()
    items = render_sft(tokenizer, load_records(data, "sft").records, 64, data)
    batch = pad_batch(items, pad_id=tokenizer.pad_token_id)
    with torch.no_grad():
        logps, _ = module(batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    return float(-logps.mean())


def pair_logps(model_spec: str, data: str, average: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed (or, with `average`, per-token mean) log-prob of every pair's chosen and rejected completion, computed
    apart from the trainers."""
    tokenizer = load_tokenizer(model_spec)
    module = TokenLogps(load_causal_lm(model_spec)).eval()
    items = render_pairs(tokenizer, load_records(data, "preference").records, 64, data)
    seqs = [it["chosen"] for it in items] + [it["rejected"] for it in items]
    batch = pad_batch(seqs, pad_id=tokenizer.pad_token_id)
    with torch.no_grad():
        logps, rows = module(batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    total = per_row_sum(logps, rows, len(seqs))
    if average:
        total = total / per_row_sum(torch.ones_like(logps), rows, len(seqs))
    return total[: len(items)], total[len(items) :]


def test_sft_lowers_nll_on_its_training_data(tiny_dir, sft_file, tmp_path):
    before = sft_nll(tiny_dir, sft_file)
    cfg = SFTConfig(model=tiny_dir, data=DataConfig(train=sft_file, eval=sft_file), output_dir=str(tmp_path / "run"),
                    max_steps=12, batch_size=4, lr=3e-3, **COMMON)
    result = train_sft(cfg)
    after = sft_nll(str(result.final_dir), sft_file)
    assert after < before - 0.5, (before, after)
    # The trainer's own eval agrees with an independent computation on the saved model (same token-mean NLL).
    assert result.eval_metrics["loss"] == pytest.approx(after, rel=1e-4)


def test_dpo_starts_at_log2_and_raises_the_margin(tiny_dir, pref_file, tmp_path):
    cfg = DPOConfig(model=tiny_dir, data=DataConfig(train=pref_file, eval=pref_file), output_dir=str(tmp_path / "run"),
                    max_steps=12, batch_size=4, lr=2e-3, beta=0.5, **COMMON)
    result = train_dpo(cfg)
    first = metrics(tmp_path / "run")[0]
    # Before the first update the policy is its own reference: every pair's loss is exactly log 2.
    assert first["train/loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert result.eval_metrics["reward_accuracy"] >= 0.9
    assert result.eval_metrics["reward_margin"] > 0.5
    # Independently of the trainer's bookkeeping: chosen minus rejected log-prob grew on every pair.
    c0, r0 = pair_logps(tiny_dir, pref_file)
    c1, r1 = pair_logps(str(result.final_dir), pref_file)
    assert bool(((c1 - r1) > (c0 - r0)).all())


@pytest.mark.parametrize("loss,extra", [("ipo", {}), ("hinge", {}), ("robust", {"label_smoothing": 0.1})])
def test_dpo_variants_raise_the_margin(tiny_dir, pref_file, tmp_path, loss, extra):
    cfg = DPOConfig(model=tiny_dir, data=DataConfig(train=pref_file, eval=pref_file), output_dir=str(tmp_path / "run"),
                    max_steps=8, batch_size=4, lr=2e-3, beta=0.5, loss=loss, **extra, **COMMON)
    result = train_dpo(cfg)
    assert result.eval_metrics["reward_margin"] > 0
    assert result.eval_metrics["reward_accuracy"] >= 0.75


def test_dpo_with_lora_uses_the_disabled_adapter_as_reference(tiny_dir, pref_file, tmp_path, capsys):
    cfg = DPOConfig(model=tiny_dir, data=DataConfig(train=pref_file, eval=pref_file), output_dir=str(tmp_path / "run"),
                    max_steps=10, batch_size=4, lr=5e-3, beta=0.5, lora=LoraConfig(r=4, alpha=8), **COMMON)
    result = train_dpo(cfg)
    said = capsys.readouterr().out.split("LoRA r=4: ", 1)[1].split(" trainable parameters of ")
    trainable, total = int(said[0].replace(",", "")), int(said[1].split()[0].replace(",", ""))
    assert 0 < trainable < total // 10, "the run says how many parameters its adapters train"
    assert metrics(tmp_path / "run")[0]["train/loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert result.eval_metrics["reward_accuracy"] >= 0.9
    # Saved merged: a plain HF model (no adapter files) whose weights differ from the base only where LoRA applied.
    assert not (result.final_dir / "adapter_config.json").exists()
    base = load_file(str(Path(tiny_dir) / "model.safetensors"))
    merged = load_file(str(result.final_dir / "model.safetensors"))
    changed = [k for k in base if not torch.equal(base[k], merged[k])]
    assert changed and all("proj" in k for k in changed)


def test_orpo_raises_the_odds_ratio(tiny_dir, pref_file, tmp_path):
    c0, r0 = pair_logps(tiny_dir, pref_file)
    cfg = ORPOConfig(model=tiny_dir, data=DataConfig(train=pref_file, eval=pref_file), output_dir=str(tmp_path / "run"),
                     max_steps=12, batch_size=4, lr=3e-3, beta=0.5, **COMMON)
    result = train_orpo(cfg)
    c1, r1 = pair_logps(str(result.final_dir), pref_file)
    assert float((c1 - r1).mean()) > float((c0 - r0).mean())
    assert float(c1.mean()) > float(c0.mean())  # the NLL term: chosen completions became likelier
    assert result.eval_metrics["log_odds_ratio"] > 0


def test_simpo_starts_at_its_closed_form_and_raises_the_normalised_margin(tiny_dir, pref_file, tmp_path):
    beta, gamma = 2.0, 0.5
    c0, r0 = pair_logps(tiny_dir, pref_file, average=True)
    cfg = SimPOConfig(model=tiny_dir, data=DataConfig(train=pref_file, eval=pref_file),
                      output_dir=str(tmp_path / "run"), max_steps=12, batch_size=4, lr=2e-3, beta=beta, gamma=gamma,
                      **COMMON)
    result = train_simpo(cfg)
    # The first step's loss, before any update: the closed form on the starting model, over that step's pairs.
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    batch = epoch_order(derived_seed(cfg.seed, 0), len(c0), cfg.batch_size)[: cfg.batch_size]
    expected = -F.logsigmoid(beta * (c0[batch] - r0[batch]) - gamma)
    assert first["train/loss"] == pytest.approx(float(expected.mean()), abs=1e-5)
    # What SimPO is for: the chosen completion's average log-prob pulls ahead of the rejected one's.
    c1, r1 = pair_logps(str(result.final_dir), pref_file, average=True)
    assert float((c1 - r1).mean()) > float((c0 - r0).mean()) + 0.1
    assert result.eval_metrics["reward_accuracy"] >= 0.9
    # The trainer's eval loss agrees with the closed form on the saved model.
    closed_form = -F.logsigmoid(beta * (c1 - r1) - gamma)
    assert result.eval_metrics["loss"] == pytest.approx(float(closed_form.mean()), rel=1e-3)


def test_simpo_is_a_row_of_the_table():
    row = METHODS["simpo"]
    assert row.config is SimPOConfig and row.train is train_simpo and row.data == "preferences"
    assert row.recipes == {"sft-simpo": ("sft", "simpo")}


def test_kto_separates_desirable_from_undesirable(tiny_dir, pref_file, tmp_path):
    cfg = KTOConfig(model=tiny_dir, data=DataConfig(train=pref_file, eval=pref_file), output_dir=str(tmp_path / "run"),
                    max_steps=12, batch_size=4, lr=2e-3, beta=0.5, **COMMON)
    result = train_kto(cfg)
    ev = result.eval_metrics
    assert ev["desirable_rewards"] > 0 > ev["undesirable_rewards"]


@pytest.mark.parametrize("fixture,loss", [("pref_file", "auto"), ("ranked_file", "plackett_luce"),
                                          ("ranked_file", "all_pairs"), ("rating_file", "auto")])
def test_reward_model_ranks_its_training_data(tiny_dir, tmp_path, request, fixture, loss):
    data = request.getfixturevalue(fixture)
    cfg = RewardConfig(model=tiny_dir, data=DataConfig(train=data, eval=data), output_dir=str(tmp_path / "run"),
                       max_steps=15, batch_size=4, lr=3e-3, loss=loss, **COMMON)
    result = train_reward(cfg)
    assert result.eval_metrics["pairwise_accuracy"] >= 0.9
    assert result.eval_metrics["pairs"] > 0
    # The saved reward model reloads as a sequence-classification model and scores the data the same way.
    from alignkit.data import Preference, render_preference
    from alignkit.models import SequenceScores, load_score_model

    if fixture == "pref_file":
        tok = load_tokenizer(str(result.final_dir))
        scorer = SequenceScores(load_score_model(str(result.final_dir)).eval())
        records = load_records(data, "reward").records
        assert all(isinstance(r, Preference) for r in records)
        correct = 0
        for rec in records:
            chosen, rejected = render_preference(tok, rec, max_length=64)
            batch = pad_batch([chosen, rejected], pad_id=tok.pad_token_id)
            with torch.no_grad():
                s = scorer(batch["input_ids"], batch["attention_mask"])
            correct += int(s[0] > s[1])
        assert correct / len(records) == pytest.approx(result.eval_metrics["pairwise_accuracy"])


def test_dpo_with_an_explicit_reference_model(tiny_dir, pref_file, tmp_path):
    # A separate reference (here: another copy of the starting model) is loaded, scored once, and freed.
    cfg = DPOConfig(model=tiny_dir, ref_model=tiny_dir, data=DataConfig(train=pref_file),
                    output_dir=str(tmp_path / "run"), max_steps=4, batch_size=4, lr=2e-3, beta=0.5, **COMMON)
    train_dpo(cfg)
    assert metrics(tmp_path / "run")[0]["train/loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert (tmp_path / "run" / "cache" / "ref_train.pt").is_file()


def test_reward_model_follows_soft_labels(tiny_dir, tmp_path, write_data):
    # AI feedback gives probabilities, not verdicts: the model should learn P(chosen better) = 0.9 for one kind of
    # pair and 0.2 (i.e. the "rejected" one is better) for another.
    rows = []
    for i in range(8):
        rows.append({"prompt": f"Question {i}?", "chosen": "Yes, gladly.", "rejected": "No.", "probability": 0.9})
        rows.append({"prompt": f"Request {i}!", "chosen": "Sure thing.", "rejected": "I can't.", "probability": 0.2})
    data = str(write_data(rows))
    cfg = RewardConfig(model=tiny_dir, data=DataConfig(train=data, eval=data), output_dir=str(tmp_path / "run"),
                       max_steps=20, batch_size=4, lr=3e-3, **COMMON)
    result = train_reward(cfg)
    # accuracy counts agreement between the score order and the label's side of 0.5.
    assert result.eval_metrics["pairwise_accuracy"] >= 0.9


@pytest.mark.parametrize("lora", [None, LoraConfig(r=4, alpha=8)], ids=["full", "lora"])
def test_gradient_checkpointing_trains_the_same_weights(lora, tiny_dir, pref_file, tmp_path):
    from alignkit.models.forward import activation_checkpointing
    from alignkit.train.common import load_policy

    runs = {}
    for checkpointing in (False, True):
        cfg = DPOConfig(model=tiny_dir, data=DataConfig(train=pref_file), output_dir=str(tmp_path / str(checkpointing)),
                        max_steps=4, batch_size=4, lr=2e-3, beta=0.5, lora=lora, gradient_checkpointing=checkpointing,
                        **COMMON)
        assert activation_checkpointing(load_policy(cfg)[0]) == checkpointing
        runs[checkpointing] = train_dpo(cfg).final_dir
    losses = [[row["train/loss"] for row in metrics(folder.parent)] for folder in runs.values()]
    assert losses[0] == pytest.approx(losses[1], abs=1e-6) and len(set(losses[0])) > 1
    plain, recomputed = (load_file(str(folder / "model.safetensors")) for folder in runs.values())
    for key in plain:
        # The checkpointed run computes each row's prompt itself (no KV cache): same numbers up to float rounding,
        # which Adam turns into at most ~5e-6 on a few weights here.
        torch.testing.assert_close(plain[key], recomputed[key], atol=1e-5, rtol=1e-4, msg=key)
