"""Length-grouped batching: every example once per epoch, similar lengths together, batches in random order."""

from __future__ import annotations

import json
import random

import pytest

from alignkit.data.render import Rendered
from alignkit.methods.dpo import DPOConfig, train_dpo
from alignkit.methods.ppo import PPOConfig
from alignkit.methods.sft import SFTConfig, train_sft
from alignkit.train.config import ConfigError, DataConfig
from alignkit.train.config_loading import load_config
from alignkit.train.loop import epoch_order, item_length
from alignkit.train.run import RunError


def _padded(order: list[int], lengths: list[int], batch: int) -> int:
    """Tokens computed when each batch is padded to its longest example (full batches only, as training uses)."""
    full = len(order) // batch * batch
    return sum(max(lengths[i] for i in order[s : s + batch]) * batch for s in range(0, full, batch))


def test_without_lengths_the_order_is_the_plain_seeded_permutation():
    import torch

    assert epoch_order(7, 50, 8) == torch.randperm(50, generator=torch.Generator().manual_seed(7)).tolist()


def test_grouped_order_covers_every_example_batches_similar_lengths_and_shuffles_batches():
    rng = random.Random(0)
    lengths = [rng.randint(10, 400) for _ in range(203)]
    order = epoch_order(3, 203, 8, lengths)
    assert sorted(order) == list(range(203)) and order == epoch_order(3, 203, 8, lengths)
    full = order[: 203 // 8 * 8]
    batches = [sorted(lengths[i] for i in full[s : s + 8]) for s in range(0, len(full), 8)]
    # One window holds the whole epoch here, so batches are runs of the length-sorted examples: none overlap.
    spans = sorted((b[0], b[-1]) for b in batches)
    assert all(prev[1] <= nxt[0] for prev, nxt in zip(spans, spans[1:]))
    # ...visited in random order, not longest first.
    maxima = [b[-1] for b in batches]
    assert maxima != sorted(maxima, reverse=True) and maxima != sorted(maxima)
    # The point of it: far less padding than the plain permutation of the same epoch.
    plain = epoch_order(3, 203, 8)
    assert _padded(order, lengths, 8) < 0.8 * _padded(plain, lengths, 8)
    assert epoch_order(4, 203, 8, lengths) != order  # another epoch, another order


def test_item_length_is_the_longest_sequence_of_an_example():
    short, long = Rendered([1, 2, 3], [0, 1, 1], 1), Rendered([1, 2, 3, 4, 5], [0, 0, 1, 1, 1], 2)
    assert item_length(short) == 3 and item_length((short, long)) == 5
    assert item_length({"chosen": long, "rejected": short, "margin": 1.0}) == 5
    assert item_length({"seqs": [short, long], "gold": [1.0, 0.0]}) == 5  # a reward model's ranking
    with pytest.raises(RunError, match="cannot tell the length of a dict example"):
        item_length({"x": 1})


def _rows(n: int) -> list[dict]:
    rng = random.Random(1)
    rows = []
    for i in range(n):
        words = " ".join(rng.choice(["alpha", "beta", "gamma"]) for _ in range(rng.randint(1, 30)))
        rows.append({"prompt": f"say {words}", "completion": f"ok {i}"})
    return rows


def test_sft_and_dpo_train_with_grouped_batches(tiny_dir, tmp_path):
    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps(r) + "\n" for r in _rows(24)))
    result = train_sft(SFTConfig(model=tiny_dir, data=DataConfig(train=str(sft)), output_dir=str(tmp_path / "s"),
                                 epochs=2, batch_size=4, group_by_length=True, progress=False, lr=1e-3))
    assert result.steps == 12 and result.train_metrics["loss"] > 0
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": r["prompt"], "chosen": r["completion"], "rejected": "no"}) + "\n"
                             for r in _rows(16)))
    result = train_dpo(DPOConfig(model=tiny_dir, data=DataConfig(train=str(pairs)), output_dir=str(tmp_path / "d"),
                                 batch_size=4, group_by_length=True, progress=False, lr=1e-3))
    assert result.steps == 4 and result.train_metrics["reward_margin"] > 0


def test_online_methods_refuse_group_by_length():
    reason = r"unknown key .group_by_length. \(online methods train on the batch they just sampled"
    with pytest.raises(ConfigError, match=reason):
        load_config(PPOConfig, None, ["data.train=x", "output_dir=y", "group_by_length=true"])
