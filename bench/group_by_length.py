"""Length-grouped batches against random ones: the same SFT steps on data of mixed lengths, each run in its own
process.

The data is the Constitutional AI demo's feedback-teaching set (the constitution's critique/revision exemplars and the
train gold comparisons in both orders, about 40 to 380 tokens per example). Both runs take the same number of steps
with the same batch size and learning rate; printed: seconds per step, peak memory, the last step's loss, and the
speed-up.

    .venv/bin/python bench/group_by_length.py [--steps 12] [--batch-size 8] [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    from alignkit.constitution import load_constitution, load_gold_comparisons
    from alignkit.constitution.critique import comparison_sft_rows, exemplar_sft_rows

    constitution = load_constitution("default")
    rows = exemplar_sft_rows(constitution) + comparison_sft_rows(load_gold_comparisons(split="train"), constitution)
    report = {"examples": len(rows), "steps": args.steps, "batch_size": args.batch_size}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        for grouped in (False, True):
            out = Path(tmp) / f"grouped-{grouped}"
            subprocess.run([sys.executable, "-m", "alignkit.cli", "sft", f"model={args.model}",
                            f"data.train={data}", f"output_dir={out}", f"max_steps={args.steps}",
                            f"batch_size={args.batch_size}", "lr=5e-5", "max_length=512", "progress=false",
                            f"group_by_length={str(grouped).lower()}", "precision=fp32"], check=True,
                           stdout=subprocess.DEVNULL)
            summary = json.loads((out / "summary.json").read_text())
            metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            key = "grouped" if grouped else "random"
            report[f"{key}_s_per_step"] = round(summary["train_seconds"] / args.steps, 2)
            report[f"{key}_peak_rss_gb"] = summary["peak_rss_gb"]
            report[f"{key}_final_loss"] = round(metrics[-1]["train/loss"], 4)
    report["speedup"] = round(report["random_s_per_step"] / report["grouped_s_per_step"], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
