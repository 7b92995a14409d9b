"""DPO throughput and memory: alignkit vs TRL's DPOTrainer, same model, data, batch and precision.

    .venv/bin/python bench/dpo_vs_trl.py [--steps 8] [--precisions fp32,bf16]

64 synthetic conversational pairs (~112 tokens per sequence), batch 4, max_length 256, 8 optimizer steps, on the
embedded smollm2-135m. s/step is the median over steps 2..N; "total s" runs from model load to the last step and
includes alignkit's one-off reference log-prob pass. Each run is a separate process (peak RSS per run).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, run_worker, step_seconds, synthetic_pairs, write_jsonl  # noqa: E402

BATCH, MAX_LENGTH, PAIRS, LR, BETA = 4, 256, 64, 5e-7, 0.1


def mean_tokens_per_step(data: Path) -> float:
    from alignkit.data import load_records
    from alignkit.models import load_tokenizer
    from alignkit.train.common import render_pairs

    tokenizer = load_tokenizer("smollm2-135m")
    items = render_pairs(tokenizer, load_records(str(data), "preference").records, MAX_LENGTH, str(data))
    per_pair = sum(len(it["chosen"].input_ids) + len(it["rejected"].input_ids) for it in items) / len(items)
    return per_pair * BATCH


def worker_alignkit(data: Path, precision: str, steps: int, out: Path) -> dict:
    from alignkit.train import train_dpo
    from alignkit.train.config import DPOConfig, DataConfig

    cfg = DPOConfig(
        model="smollm2-135m", data=DataConfig(train=str(data)), output_dir=str(out), max_steps=steps,
        batch_size=BATCH, max_length=MAX_LENGTH, precision=precision, lr=LR, beta=BETA, progress=False,
        scheduler="constant",
    )
    t0 = time.time()
    train_dpo(cfg)
    times = [json.loads(line)["time"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"step_end_times": times, "t0": t0}


def worker_trl(data: Path, precision: str, steps: int, out: Path) -> dict:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from alignkit.models import prepare

    times: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.time())

    t0 = time.time()
    path = str(prepare("smollm2-135m"))
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    dataset = datasets.load_dataset("json", data_files=str(data), split="train")
    args = DPOConfig(
        output_dir=str(out), per_device_train_batch_size=BATCH, max_steps=steps, max_length=MAX_LENGTH,
        bf16=precision == "bf16", learning_rate=LR, beta=BETA, logging_steps=1, report_to=[], save_strategy="no",
        use_cpu=True, dataloader_num_workers=0, lr_scheduler_type="constant", disable_tqdm=True,
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[StepTimes()])
    trainer.train()
    return {"step_end_times": times, "t0": t0}


WORKERS = {"alignkit": worker_alignkit, "trl": worker_trl}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", nargs=4, metavar=("IMPL", "PRECISION", "DATA", "STEPS"))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    if args.worker:
        impl, precision, data, steps = args.worker
        with tempfile.TemporaryDirectory() as tmp:
            res = WORKERS[impl](Path(data), precision, int(steps), Path(tmp) / "run")
        res["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        print(json.dumps(res))
        return

    with tempfile.TemporaryDirectory() as tmp:
        data = write_jsonl(synthetic_pairs(PAIRS), Path(tmp) / "pairs.jsonl")
        tokens = mean_tokens_per_step(data)
        print(f"{PAIRS} pairs, batch {BATCH}, {tokens / BATCH / 2:.0f} tokens/sequence on average, {args.steps} steps")
        results = []
        for precision in args.precisions.split(","):
            for impl in ("trl", "alignkit"):
                res = run_worker(__file__, [impl, precision, str(data), str(args.steps)])
                s = step_seconds(res["step_end_times"])
                results.append(
                    {
                        "impl": impl, "precision": precision, "s_per_step": s, "tokens_per_s": tokens / s,
                        "peak_rss_gb": res["peak_rss_gb"], "total_s": res["step_end_times"][-1] - res["t0"],
                    }
                )
                print(json.dumps(results[-1]), flush=True)
        print_table(results)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
