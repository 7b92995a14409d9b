"""Dropping finished rows from the decode loop: time and outputs, with and without, on the same prompts.

Greedy answers (batch 128, longest prompts first, as `alignkit eval` decodes) to every generated prompt of the
default suite's train split (red-team, jailbreak-wrapped, borderline, verifiable, anthropomorphism), by the model
given, once with `compact_fraction=0` (every row stays until the whole batch ends) and once with the default.
Prints seconds for each, the speed-up, and how many answers differ (greedy: none should, barring float ties).

    .venv/bin/python bench/decode_compaction.py [--model smollm2-135m] [--max-new-tokens 64] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from alignkit.data import render_prompt
from alignkit.data.suites import load_suite
from alignkit.eval.harness import suite_prompts
from alignkit.models import load_causal_lm, load_tokenizer
from alignkit.rollouts import SamplingSettings
from alignkit.rollouts.sampler import DecodeLoopBackend, sample
from alignkit.train.run import configure_threads


def decode_all(model, tokenizer, prompts, backend, max_new_tokens: int, batch_size: int) -> tuple[list[str], float]:
    lengths = [len(render_prompt(tokenizer, p)) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (-lengths[i], i))
    texts = [""] * len(prompts)
    started = time.perf_counter()
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        rollout = sample(model, tokenizer, [prompts[i] for i in chunk],
                         SamplingSettings(max_new_tokens=max_new_tokens, temperature=0.0), backend=backend)
        for i, text in zip(chunk, rollout.texts):
            texts[i] = text
    return texts, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    configure_threads()
    prompts = [p.prompt for p in suite_prompts(load_suite("default", "train"))]
    tokenizer, model = load_tokenizer(args.model), load_causal_lm(args.model)
    with torch.no_grad():
        kept, kept_s = decode_all(model, tokenizer, prompts, DecodeLoopBackend(compact_fraction=0),
                                  args.max_new_tokens, args.batch_size)
        dropped, dropped_s = decode_all(model, tokenizer, prompts, DecodeLoopBackend(), args.max_new_tokens,
                                        args.batch_size)
    tokens = [len(tokenizer(t).input_ids) for t in dropped]
    report = {"model": args.model, "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
              "batch_size": args.batch_size, "mean_answer_tokens": round(sum(tokens) / len(tokens), 1),
              "seconds_rows_kept": round(kept_s, 1), "seconds_rows_dropped": round(dropped_s, 1),
              "speedup": round(kept_s / dropped_s, 2), "answers_differing": sum(a != b for a, b in zip(kept, dropped))}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
