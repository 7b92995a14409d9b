"""How long `alignkit eval` takes on the embedded model: 150 prompts x 96 new tokens (target: under 3 minutes on 2 cores).

The 150 generated prompts are the default held-out suite's 72 red-team requests, 40 borderline prompts and the first
38 verifiable questions; bias (54 items, option log-probs) and drift (on the 78 benign responses) come on top, as in
a real run. Also times greedy generation alone at several batch sizes, and transformers' `generate` (batch 16) for comparison
with --compare-generate.

    .venv/bin/python bench/eval_speed.py [--model smollm2-135m] [--batch-sizes 64 150] [--compare-generate]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from alignkit.data.suites import load_suite
from alignkit.eval.harness import EvalSettings, evaluate, greedy_rollouts, suite_prompts
from alignkit.models import load_causal_lm, load_tokenizer
from alignkit.rollouts import HFGenerateBackend, SamplingSettings, sample
from alignkit.rollouts.engine import prompt_order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 150])
    parser.add_argument("--compare-generate", action="store_true",
                        help="also time transformers' generate at batch 16 (about 4 more minutes)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args()

    suite = load_suite("default", "heldout")
    suite = dataclasses.replace(suite, jailbreaks=[], anthropomorphism=[], verifiable=suite.verifiable[:38])
    prompts = [p.prompt for p in suite_prompts(suite)]
    assert len(prompts) == 150, len(prompts)
    tokenizer, model = load_tokenizer(args.model), load_causal_lm(args.model)
    report = {"model": args.model, "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
              "torch_threads": torch.get_num_threads()}

    started = time.perf_counter()
    results, _ = evaluate({args.model: (model, tokenizer)}, suite, reference=(model, tokenizer),
                          settings=EvalSettings(max_new_tokens=args.max_new_tokens, batch_size=64))
    report["evaluate_seconds"] = round(time.perf_counter() - started, 1)
    report["evaluate_generation_seconds"] = results["models"][0]["generation_seconds"]

    for batch_size in args.batch_sizes:
        started = time.perf_counter()
        greedy_rollouts(model, tokenizer, prompts, EvalSettings(max_new_tokens=args.max_new_tokens,
                                                                batch_size=batch_size))
        report[f"decode_loop_batch_{batch_size}_seconds"] = round(time.perf_counter() - started, 1)
    if args.compare_generate:
        started = time.perf_counter()
        order = prompt_order(tokenizer, prompts)
        greedy = SamplingSettings(max_new_tokens=args.max_new_tokens, temperature=0.0)
        for start in range(0, len(order), 16):
            sample(model, tokenizer, [prompts[i] for i in order[start : start + 16]], greedy,
                   backend=HFGenerateBackend())
        report["hf_generate_batch_16_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
