"""Held-out arithmetic accuracy before and after PPO, GRPO and iterative DPO at the same sampling budget.

    .venv/bin/python bench/online_arithmetic.py [--out runs/online-arithmetic] [--methods grpo,ppo,iterative-dpo]

Each method runs its shipped config (configs/<method>.yaml: smollm2-135m, task:arithmetic difficulty 1, final-answer
verifier, temperature 0.7, at most 64 new tokens) in its own process, so wall time and peak RSS are per method. All
three sample 768 responses in total (PPO/GRPO: 12 iterations x 64; iterative DPO: 2 rounds x 48 prompts x 8).
Accuracy is greedy decoding on the first 100 held-out problems (the eval split, never trained on). Writes
results.json, a markdown table (table.md) and the PPO reward/KL curves (ppo_curves.png) into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTRA = {"ppo": [], "grpo": [], "iterative-dpo": []}


def run(method: str, out: Path) -> dict:
    target = out / method
    cmd = [str(Path(sys.executable).parent / "alignkit"), method, str(ROOT / "configs" / f"{method}.yaml"),
           f"output_dir={target}", "progress=false", *EXTRA[method]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.time()
    with open(out / f"{method}.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env)
    summary = json.loads((target / "summary.json").read_text())
    summary["wall_seconds"] = time.time() - t0
    return summary


def ppo_curves(run_dir: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "train/score" in r]
    steps = [r["step"] for r in train]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(steps, [r["train/score"] for r in train], marker="o", label="verifier score (sampled, T=0.7)")
    evals = [r for r in rows if "eval/score" in r]
    axes[0].plot([r["step"] for r in evals], [r["eval/score"] for r in evals], marker="s", label="held-out accuracy (greedy)")
    axes[0].set_title("reward")
    axes[0].legend(fontsize=8)
    axes[1].plot(steps, [r["train/kl"] for r in train], marker="o", color="tab:red")
    axes[1].set_title("KL(policy || reference) per sequence (k1)")
    axes[2].plot(steps, [r["train/explained_variance"] for r in train], marker="o", color="tab:green")
    axes[2].set_title("value explained variance")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def table(results: dict[str, dict]) -> str:
    lines = ["| method | held-out accuracy before | after | sampled responses | generated tokens | train time (s) "
             "| wall time incl. evals (s) | peak RSS (GB) |", "|---|---|---|---|---|---|---|---|"]
    for method, s in results.items():
        lines.append(
            f"| {method} | {s['eval_before']['score']:.2f} | {s['eval']['score']:.2f} | 768 | {s['generated_tokens']} "
            f"| {s['train_seconds']:.0f} | {s['wall_seconds']:.0f} | {s['peak_rss_gb']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="runs/online-arithmetic")
    parser.add_argument("--methods", default="grpo,ppo,iterative-dpo")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for method in args.methods.split(","):
        results[method] = run(method, out)
        print(method, json.dumps({k: results[method][k] for k in ("eval_before", "eval", "generated_tokens",
                                                                    "train_seconds", "peak_rss_gb")}), flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "table.md").write_text(table(results) + "\n")
    print(table(results))
    if "ppo" in results:
        ppo_curves(out / "ppo", out / "ppo_curves.png")


if __name__ == "__main__":
    main()
