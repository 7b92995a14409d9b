"""DPO throughput and memory: alignkit vs TRL's DPOTrainer, same model, data, batch and precision.

    .venv/bin/python bench/dpo_vs_trl.py [--steps 8] [--precisions fp32,bf16]

64 synthetic conversational pairs (~112 tokens per sequence), batch 4, max_length 256, 8 optimizer steps, on the
embedded smollm2-135m. s/step is the median over steps 2..N; "total s" runs from model load to the last step and
includes alignkit's one-off reference log-prob pass. Each run is a separate process (peak RSS per run), and both
save the final model, so peak RSS covers the same work.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alignkit_worker, bench_main, synthetic_pairs, trl_worker  # noqa: E402

BATCH, MAX_LENGTH, PAIRS, LR, BETA = 4, 256, 64, 5e-7, 0.1


def mean_tokens_per_step(data: Path) -> float:
    from alignkit.data import load_records
    from alignkit.models import load_tokenizer
    from alignkit.train.pairs import render_pairs

    tokenizer = load_tokenizer("smollm2-135m")
    items = render_pairs(tokenizer, load_records(str(data), "preference").records, MAX_LENGTH, str(data))
    per_pair = sum(len(it["chosen"].input_ids) + len(it["rejected"].input_ids) for it in items) / len(items)
    return per_pair * BATCH


def worker_alignkit(data: Path, precision: str, steps: int, out: Path) -> dict:
    return alignkit_worker("dpo", data, precision, steps, out, batch_size=BATCH, max_length=MAX_LENGTH, lr=LR, beta=BETA)


def worker_trl(data: Path, precision: str, steps: int, out: Path) -> dict:
    return trl_worker("DPO", data, precision, steps, out, per_device_train_batch_size=BATCH, max_length=MAX_LENGTH,
                      learning_rate=LR, beta=BETA)


WORKERS = {"alignkit": worker_alignkit, "trl": worker_trl}


if __name__ == "__main__":
    bench_main(__file__, WORKERS, lambda: synthetic_pairs(PAIRS), mean_tokens_per_step, f"{PAIRS} synthetic pairs, batch {BATCH}, max_length {MAX_LENGTH}")
