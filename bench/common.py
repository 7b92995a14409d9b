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


def run_worker(script: str, args: list[str]) -> dict:
    """Run `script --worker ...` in a fresh process and return the JSON it prints on its last line."""
    # Offline: nothing may try to reach a model hub in the middle of a timed run.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}
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
