"""One AdamW step over a real model's parameters: torch's default per-tensor loop against its fused kernel.

Loads the model given (its parameters as training holds them: fp32, every one trainable), gives each a fixed random
gradient, and times `--steps` optimizer steps of each implementation, alternating them `--rounds` times so that
drift on a shared machine falls on both. Also checks that both give the same parameters after the same steps (up
to float rounding). Prints the median seconds per step of each and the ratio.

    .venv/bin/python bench/optimizer_step.py [--model smollm2-135m] [--threads 2] [--steps 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from alignkit.models import load_causal_lm


def timed_steps(params: list[torch.Tensor], grads: list[torch.Tensor], steps: int, fused: bool) -> tuple[float, list]:
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for copy, grad in zip(copies, grads):
        copy.grad = grad
    optimizer = torch.optim.AdamW([{"params": [c for c in copies if c.ndim >= 2], "weight_decay": 0.01},
                                   {"params": [c for c in copies if c.ndim < 2], "weight_decay": 0.0}],
                                  lr=1e-5, fused=fused)
    optimizer.step()  # state allocated outside the timing
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - started) / steps, copies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_causal_lm(args.model, dtype=torch.float32)
    params = [p.detach() for p in model.parameters()]
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(p.shape, generator=generator) * 1e-3 for p in params]
    seconds: dict[str, list[float]] = {"default": [], "fused": []}
    finals = {}
    for _ in range(args.rounds):
        for name in seconds:
            took, finals[name] = timed_steps(params, grads, args.steps, fused=name == "fused")
            seconds[name].append(took)
    gap = max(float((a - b).abs().max()) for a, b in zip(finals["default"], finals["fused"]))
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(json.dumps({"model": args.model, "parameters_m": round(sum(p.numel() for p in params) / 1e6, 1),
                      "threads": args.threads, "seconds_per_step": {k: round(v, 3) for k, v in median.items()},
                      "all_rounds": {k: [round(x, 3) for x in v] for k, v in seconds.items()},
                      "default_over_fused": round(median["default"] / median["fused"], 2),
                      "max_parameter_difference": gap}, indent=2))


if __name__ == "__main__":
    main()
