"""SFT throughput and memory: alignkit vs TRL's SFTTrainer, same model, data, batch and precision.

    .venv/bin/python bench/sft_vs_trl.py [--steps 8] [--precisions fp32,bf16]

64 synthetic conversational prompt-completion examples (~112 tokens each, loss on the completion only in both),
batch 4, max_length 256, 8 optimizer steps, on the embedded smollm2-135m. s/step is the median over steps 2..N;
"total s" runs from model load to the last step. Both save the final model, so peak RSS covers the same work.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alignkit_worker, bench_main, synthetic_sft, trl_worker  # noqa: E402

BATCH, MAX_LENGTH, EXAMPLES, LR = 4, 256, 64, 2e-5


def mean_tokens_per_step(data: Path) -> float:
    from alignkit.data import load_records
    from alignkit.train.common import render_sft
    from alignkit.models import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    items = render_sft(tokenizer, load_records(str(data), "sft").records, MAX_LENGTH, str(data))
    return sum(len(it.input_ids) for it in items) / len(items) * BATCH


def worker_alignkit(data: Path, precision: str, steps: int, out: Path) -> dict:
    return alignkit_worker("sft", data, precision, steps, out, batch_size=BATCH, max_length=MAX_LENGTH, lr=LR)


def worker_trl(data: Path, precision: str, steps: int, out: Path) -> dict:
    # Loss on the completion only, as alignkit does for prompt-completion data.
    return trl_worker("SFT", data, precision, steps, out, per_device_train_batch_size=BATCH, max_length=MAX_LENGTH,
                      learning_rate=LR, completion_only_loss=True)


WORKERS = {"alignkit": worker_alignkit, "trl": worker_trl}


if __name__ == "__main__":
    bench_main(__file__, WORKERS, lambda: synthetic_sft(EXAMPLES), mean_tokens_per_step, f"{EXAMPLES} synthetic examples, batch {BATCH}, max_length {MAX_LENGTH}")
