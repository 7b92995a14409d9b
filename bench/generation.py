"""Generation throughput of the rollout sampler on the embedded model (tokens generated per second).

    .venv/bin/python bench/generation.py

Three shapes: 8 different prompts x 1 sample (evaluation-like), 1 prompt x 8 samples (a GRPO group) and 8 prompts x
8 samples (an online training batch), 48 new tokens each, temperature 1, fp32, for both backends: the default
`DecodeLoopBackend` (each prompt prefilled once, KV cache shared by its samples) and transformers' `generate`. Each
case is run twice; the second (warm) run is reported.
"""

from __future__ import annotations

import json
import time

import torch

from alignkit.models import load_causal_lm, load_tokenizer
from alignkit.rollouts import DecodeLoopBackend, HFGenerateBackend, SamplingSettings, sample
from alignkit.tasks import arithmetic_problems

NEW_TOKENS = 48


def main() -> None:
    torch.set_num_threads(torch.get_num_threads())
    tokenizer = load_tokenizer("smollm2-135m")
    model = load_causal_lm("smollm2-135m")
    problems = [p.prompt for p in arithmetic_problems(8, difficulty=1, seed=0)]
    results = []
    shapes = (("8 prompts x 1", problems, 1), ("1 prompt x 8", problems[:1], 8), ("8 prompts x 8", problems, 8))
    for name, prompts, n in shapes:
        for backend in (DecodeLoopBackend(), HFGenerateBackend()):
            settings = SamplingSettings(max_new_tokens=NEW_TOKENS, n=n, temperature=1.0, seed=0)
            for _ in range(2):
                t0 = time.perf_counter()
                roll = sample(model, tokenizer, prompts, settings, backend=backend)
                seconds = time.perf_counter() - t0
            generated = int(roll.response_mask.sum())
            results.append({"shape": name, "backend": type(backend).__name__, "seconds": round(seconds, 2),
                            "decode_steps": roll.response_ids.shape[1], "generated_tokens": generated,
                            "tokens_per_s": round(generated / seconds, 1)})
            print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main()
