"""The demo's models on a second held-out prompt set: the harmful and borderline prompts of `builtin:sft_eval` and
`builtin:preference_eval` (team-written for the SFT/DPO issues, never trained on by the Constitutional AI pipeline,
and written before it existed, so nobody tuned the pipeline to them).

    .venv/bin/python bench/cai_other_heldout.py runs/demo runs/eval/demo-other-heldout

Builds a suite (redteam = the harmful prompts, borderline = the borderline ones) in OUT/suite/, then runs
`alignkit eval` on base, SL-CAI and RL-CAI of the run in RUN: attack success rate and over-refusal on that set.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from alignkit.cli import main as alignkit
from alignkit.data.sources import read_rows
from alignkit.utils.io import atomic_write_text


def first_user_turn(row: dict) -> str:
    turns = row.get("prompt") or row["messages"]
    return turns if isinstance(turns, str) else next(t["content"] for t in turns if t["role"] == "user")


def build_suite(folder: Path) -> Path:
    parts: dict[str, list[dict]] = {"harmful": [], "borderline": []}
    for source in ("builtin:sft_eval", "builtin:preference_eval"):
        for where, row in read_rows(source):
            category = row.get("category")
            if category in parts:
                parts[category].append({"id": where, "prompt": first_user_turn(row), "split": "heldout",
                                        "category" if category == "harmful" else "topic": source.split(":")[1]})
    atomic_write_text(folder / "redteam.jsonl", "".join(json.dumps(r) + "\n" for r in parts["harmful"]))
    atomic_write_text(folder / "borderline.jsonl", "".join(json.dumps(r) + "\n" for r in parts["borderline"]))
    suite = folder / "suite.yaml"
    atomic_write_text(suite, "redteam: redteam.jsonl\nborderline: borderline.jsonl\n")
    print(f"{len(parts['harmful'])} harmful and {len(parts['borderline'])} borderline prompts -> {suite}")
    return suite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished `alignkit cai` / `make demo` folder")
    parser.add_argument("out")
    args = parser.parse_args()
    run = Path(args.run)
    suite = build_suite(Path(args.out) / "suite")
    stages = json.loads((run / "cai.json").read_text())["stages"]
    models = [f"base={stages_model(run)}", f"sl-cai={stages['sl']['model']}", f"rl-cai={stages['rl']['model']}"]
    raise SystemExit(alignkit(["eval", *models, "--suite", str(suite), "--out", str(Path(args.out) / "eval")]))


def stages_model(run: Path) -> str:
    return json.loads((run / "config.json").read_text())["model"]


if __name__ == "__main__":
    main()
