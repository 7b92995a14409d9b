"""Shared pieces of the side-by-side benchmarks: synthetic data, worker subprocesses, and the report table.

Each configuration runs in its own Python process so that peak RSS is measured per run and one run's caches cannot
help another. Seconds drift on a shared machine, so the tables print ratios measured in the same invocation.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

WORDS = (
    "the a model answer question river light music garden window simple careful quiet bright market travel "
    "history science number letter people city mountain evening morning kitchen paper story reason method "
    "system table chair friend water energy system small large early late open close write read build test "
    "measure explain describe compare improve learn teach help share plan check choose follow"
).split()


def synthetic_sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def synthetic_pairs(n: int, seed: int = 0) -> list[dict]:
    """Conversational preference pairs of ~112 tokens per sequence with the SmolLM2 chat template."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = synthetic_sentence(rng, 32)
        rows.append(
            {
                "prompt": [{"role": "user", "content": prompt}],
                "chosen": [{"role": "assistant", "content": synthetic_sentence(rng, rng.randint(44, 56))}],
                "rejected": [{"role": "assistant", "content": synthetic_sentence(rng, rng.randint(44, 56))}],
            }
        )
    return rows


def synthetic_sft(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "prompt": [{"role": "user", "content": synthetic_sentence(rng, 32)}],
            "completion": [{"role": "assistant", "content": synthetic_sentence(rng, rng.randint(44, 56))}],
        }
        for _ in range(n)
    ]


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def step_seconds(step_end_times: list[float]) -> float:
    """Median seconds per optimizer step, leaving out the first step (allocator and kernel warm-up)."""
    deltas = [b - a for a, b in zip(step_end_times, step_end_times[1:])]
    return statistics.median(deltas)


def run_worker(script: str, args: list[str], env: dict | None = None) -> dict:
    """Run `script --worker ...` in a fresh process (with `env` added to the environment) and return the JSON it
    prints on its last line."""
    # Offline: nothing may try to reach a model hub in the middle of a timed run.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false",
           **(env or {})}
    proc = subprocess.run([sys.executable, script, "--worker", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(results: list[dict], baseline: str = "trl") -> list[str]:
    lines = [
        f"{'impl':<10} {'precision':<9} {'s/step':>8} {'tokens/s':>9} {'peak RSS GB':>11} {'total s':>8}",
    ]
    for r in results:
        lines.append(
            f"{r['impl']:<10} {r['precision']:<9} {r['s_per_step']:>8.2f} {r['tokens_per_s']:>9.0f} "
            f"{r['peak_rss_gb']:>11.2f} {r['total_s']:>8.1f}"
        )
    lines.append("")
    for precision in sorted({r["precision"] for r in results}):
        base = next((r for r in results if r["impl"] == baseline and r["precision"] == precision), None)
        for r in results:
            if base is None or r is base or r["precision"] != precision:
                continue
            lines.append(
                f"{precision}: {r['impl']} vs {baseline}: throughput x{r['tokens_per_s'] / base['tokens_per_s']:.2f}, "
                f"peak RSS x{r['peak_rss_gb'] / base['peak_rss_gb']:.2f}, whole run x{base['total_s'] / r['total_s']:.2f} faster"
            )
    print("\n".join(lines), flush=True)
    return lines


def run_as_worker(worker_args: list[str], workers: dict) -> None:
    """Worker mode: run one (impl, precision, data, steps) case in a temporary directory and print its JSON result,
    with this process's peak RSS."""
    import tempfile

    impl, precision, data, steps = worker_args
    with tempfile.TemporaryDirectory() as tmp:
        res = workers[impl](Path(data), precision, int(steps), Path(tmp) / "run")
    import torch

    from alignkit.utils.memory import peak_rss_gb

    res["peak_rss_gb"] = peak_rss_gb()
    if torch.cuda.is_available():
        res["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(res))


def bench_main(script: str, workers: dict, make_rows, tokens_per_step, describe: str) -> None:
    """Command line shared by the benchmarks: parent mode runs every (precision, impl) worker and prints the table."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", nargs=4, metavar=("IMPL", "PRECISION", "DATA", "STEPS"))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    if args.worker:
        run_as_worker(args.worker, workers)
        return

    with tempfile.TemporaryDirectory() as tmp:
        data = write_jsonl(make_rows(), Path(tmp) / "data.jsonl")
        tokens = tokens_per_step(data)
        print(f"{describe}; {tokens:.0f} tokens per step on average; {args.steps} steps", flush=True)
        results = []
        for precision in args.precisions.split(","):
            for impl in ("trl", "alignkit"):
                res = run_worker(script, [impl, precision, str(data), str(args.steps)])
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


def trl_worker(trainer_name: str, data: Path, precision: str, steps: int, out: Path, model: str = "smollm2-135m",
               **config) -> dict:
    """Run TRL's `<trainer_name>Trainer` with its `<trainer_name>Config` on `model` (default: the embedded one); step
    end times. On the GPU where one is visible (as alignkit's runs), else on the CPU."""
    import time

    import datasets
    import torch
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from alignkit.models import prepare

    times: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.time())

    t0 = time.time()
    path = str(prepare(model))
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    dataset = datasets.load_dataset("json", data_files=str(data), split="train")
    args = getattr(trl, f"{trainer_name}Config")(
        output_dir=str(out), max_steps=steps, bf16=precision == "bf16", logging_steps=1, report_to=[],
        save_strategy="no", use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        lr_scheduler_type="constant", disable_tqdm=True, **config,
    )
    trainer = getattr(trl, f"{trainer_name}Trainer")(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[StepTimes()]
    )
    trainer.train()
    trainer.save_model(str(out / "final"))
    return {"step_end_times": times, "t0": t0}


def alignkit_worker(method: str, data: Path, precision: str, steps: int, out: Path, **config) -> dict:
    """Run alignkit's trainer for `method` on the embedded model; step end times from its metrics.jsonl."""
    import time

    from alignkit.methods import METHODS
    from alignkit.train.config import DataConfig

    cfg = METHODS[method].config(
        model="smollm2-135m", data=DataConfig(train=str(data)), output_dir=str(out), max_steps=steps,
        precision=precision, progress=False, scheduler="constant", **config,
    )
    t0 = time.time()
    METHODS[method].train(cfg)
    times = [json.loads(line)["time"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"step_end_times": times, "t0": t0}
