"""Can the embedded model learn to be a Constitutional AI feedback model? Teach comparisons by SFT, audit on held-out.

    .venv/bin/python bench/cai_feedback_model.py rows runs/cai-judge/compare_sft.jsonl
    .venv/bin/alignkit sft model=smollm2-135m data.train=runs/cai-judge/compare_sft.jsonl \
        output_dir=runs/cai-judge/sft epochs=3 batch_size=8 lr=5e-5 max_length=512 precision=fp32 save_every=0
    .venv/bin/python bench/cai_feedback_model.py audit smollm2-135m
    .venv/bin/python bench/cai_feedback_model.py audit runs/cai-judge/sft/final

`rows` writes the comparison-skill SFT rows (the 60 train gold comparisons, each in both orders, answered "(A)" or
"(B)"); `audit` asks a model, as an LM judge, the 60 held-out gold comparisons under each one's principle (and two
more random principles for agreement) and prints accuracy, position bias and agreement across principles.
"""

from __future__ import annotations

import argparse
import json
import time

from alignkit.constitution import audit_feedback_model, load_constitution, load_gold_comparisons
from alignkit.constitution.critique import comparison_sft_rows
from alignkit.judges.model import LMJudge
from alignkit.utils.io import atomic_write_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("rows").add_argument("out")
    sub.add_parser("audit").add_argument("model")
    args = parser.parse_args()
    constitution = load_constitution()
    if args.command == "rows":
        rows = comparison_sft_rows(load_gold_comparisons(split="train"), constitution)
        lines = [json.dumps({"prompt": r["prompt"], "completion": r["completion"]}) + "\n" for r in rows]
        atomic_write_text(args.out, "".join(lines))
        print(f"{len(rows)} rows -> {args.out}")
        return
    started = time.perf_counter()
    report = audit_feedback_model(LMJudge(args.model), load_gold_comparisons(split="heldout"), constitution,
                                  extra_principles=2)
    print(json.dumps({"model": args.model, **report.as_dict(), "seconds": round(time.perf_counter() - started, 1)},
                     indent=2))


if __name__ == "__main__":
    main()
