"""Fixtures for trainer tests: small datasets a tiny model can learn."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def preference_rows(n: int = 16, seed: int = 0) -> list[dict]:
    """Pairs a tiny model can learn to tell apart: the chosen reply is polite, the rejected one curt."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"add {a} and {b}"}],
                "chosen": [{"role": "assistant", "content": f"sure: {a + b}"}],
                "rejected": [{"role": "assistant", "content": f"no!! {a + b + 1}"}],
            }
        )
    return rows


@pytest.fixture
def pref_file(tmp_path) -> str:
    return _jsonl(tmp_path / "pref.jsonl", preference_rows())


@pytest.fixture
def sft_file(tmp_path) -> str:
    rng = random.Random(1)
    rows = []
    for _ in range(16):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        rows.append({"prompt": f"add {a} and {b}: ", "completion": f"sure: {a + b}"})
    return _jsonl(tmp_path / "sft.jsonl", rows)


@pytest.fixture
def ranked_file(tmp_path) -> str:
    rng = random.Random(2)
    rows = []
    for _ in range(12):
        a = rng.randint(1, 9)
        rows.append({"prompt": f"rate {a}", "responses": ["no!!", "ok", "sure, gladly"], "ranking": [2, 1, 0]})
    return _jsonl(tmp_path / "ranked.jsonl", rows)


@pytest.fixture
def rating_file(tmp_path) -> str:
    rows = [{"prompt": f"say {i}", "completion": word, "rating": score}
            for i in range(6) for word, score in (("no!!", 0.0), ("ok", 1.0), ("sure, gladly", 2.0))]
    return _jsonl(tmp_path / "rating.jsonl", rows)


@pytest.fixture(scope="session")
def chatty_dir(tmp_path_factory) -> str:
    """The tiny model with the embeddings of whitespace, control and special tokens zeroed: a random tiny model's
    greedy reply is otherwise all whitespace, which strips to an empty answer (and an empty revision is skipped)."""
    import torch

    from alignkit.models.tiny import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer, seed=0)
    blank = [i for i in range(len(tokenizer)) if not tokenizer.decode([i]).strip()
             or not tokenizer.decode([i]).isprintable()]
    with torch.no_grad():
        model.get_input_embeddings().weight[blank] = 0
    path = tmp_path_factory.mktemp("chatty-tiny")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
