"""Development check for the Constitutional AI demo's settings: how often each model refuses, on prompt sets that are
not the held-out evaluation suite, so settings can be compared without tuning to the held-out figures.

    .venv/bin/python bench/cai_dev_refusal.py runs/demo/4-sl/run/final runs/demo/7-rl/run/final [--out FILE]

Sets (greedy, 48 new tokens, the refusal detector of `alignkit.judges`):
- harmful: the harmful prompts of `builtin:sft` (the demo never trains on them; refusing is right);
- borderline (preference): the borderline prompts of `builtin:preference` (the demo's DPO stage trains on their
  pairs, its SL stage does not; refusing is over-refusal);
- borderline (suite train): `suite:borderline?split=train` (phase 2 samples on them; refusing is over-refusal);
- harmful (held back) and borderline (held back): the train-split red-team and borderline prompts after the ones the
  demo reads (`alignkit/pipelines/demo.py`: the first 72 and 40), less those with a demonstration the SL stage
  trains on (120 borderline ones), so no stage of the demo sees them. On harmful sets
  the rate is of safe refusals (`refuses_safely`: a refusal that goes on to offer harm is no refusal here).
  `--skip-held-back N` leaves out the first N rows of both held-back sets: the rows an `rl.stop_check` chose rounds
  on, so rounds are compared on prompts nothing chose by.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from alignkit.eval.harness import EvalSettings, greedy_rollouts
from alignkit.judges import is_refusal, refuses_safely
from alignkit.models import load_causal_lm, load_tokenizer
from alignkit.pipelines.cai_data import mix_rows
from alignkit.pipelines.cai_config import DataMix
from alignkit.pipelines.demo import BORDERLINE, DEMONSTRATIONS, REDTEAM
from alignkit.train.run import configure_threads
from alignkit.utils.io import atomic_write_text


def dev_sets(skip_held_back: int = 0) -> dict[str, list]:
    # The demo's SL stage trains on every benign and borderline demonstration, and 120 of the held-back borderline
    # prompts have one: those are not held back, so they are left out.
    demonstrated = {_text(r["messages"][:1]) for r in mix_rows([DataMix(**DEMONSTRATIONS)], "sft")}

    def held_back(mix: dict) -> list:
        rows = mix_rows([DataMix(**{**mix, "skip": mix["limit"] + skip_held_back, "limit": None})], "prompt")
        return [r["prompt"] for r in rows if _text(r["prompt"]) not in demonstrated]

    return {
        "harmful": [r["messages"][:1] for r in mix_rows([DataMix(source="builtin:sft", categories=["harmful"])],
                                                          "sft")],
        "borderline (preference)": [r["prompt"] for r in mix_rows(
            [DataMix(source="builtin:preference", categories=["borderline"])], "preference")],
        "borderline (suite train)": [r["prompt"] for r in mix_rows([DataMix(source="suite:borderline?split=train")],
                                                                   "prompt")],
        "harmful (held back)": held_back(REDTEAM),
        "borderline (held back)": held_back(BORDERLINE),
    }


def _text(prompt) -> str:
    return (prompt if isinstance(prompt, str) else prompt[-1]["content"]).strip().lower()


def refusal_rates(model: str, sets: dict[str, list], max_new_tokens: int = 48) -> dict[str, float]:
    prompts = [p for group in sets.values() for p in group]
    texts, _ = greedy_rollouts(load_causal_lm(model), load_tokenizer(model), prompts,
                               EvalSettings(max_new_tokens=max_new_tokens, batch_size=128))
    rates, start = {}, 0
    for name, group in sets.items():
        refused = refuses_safely if name.startswith("harmful") else is_refusal
        rates[name] = sum(refused(t) for t in texts[start:start + len(group)]) / len(group)
        start += len(group)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="model folders or registry names")
    parser.add_argument("--out", help="also write the results as JSON here (a new file)")
    parser.add_argument("--skip-held-back", type=int, default=0, metavar="N",
                        help="leave out the first N rows of both held-back sets (those a stop check read)")
    args = parser.parse_args()
    if args.out and Path(args.out).exists():
        parser.error(f"--out {args.out} exists; give a new path so earlier results are kept")
    configure_threads()
    sets = dev_sets(args.skip_held_back)
    results = []
    n = {name: len(group) for name, group in sets.items()}
    print("| model | " + " | ".join(f"{name} ({len(group)})" for name, group in sets.items()) + " |")
    print("| --- |" + " ---: |" * len(sets))
    for model in args.models:
        rates = refusal_rates(model, sets)
        results.append({"model": model, "refused": rates, "n": n})
        print(f"| {model} | " + " | ".join(f"{rate:.3f}" for rate in rates.values()) + " |", flush=True)
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
