"""Generation throughput on the embedded model, side by side in one invocation, and each row's distance to the
machine's bound.

    .venv/bin/python bench/generation.py [--before REV] [--llama-prompts 32] [--out FILE]

Two shapes:
- eval: the built-in suite's held-out prompts (every generated part: 256 prompts), greedy, 64 new tokens, batches of
  128 rows, longest prompts first (what `alignkit eval` and the demo's evaluation decode);
- online: 8 prompts x 8 samples x 48 new tokens, temperature 1, each prompt from its own stream (an online step).

Rows, each in its own process (so peak RSS is the row's own; the model load is not timed):
- alignkit now (`rollouts.generate`), precision auto (bf16 on a CPU with AMX / AVX512-BF16) and forced fp32;
- alignkit before: the same work through the API of commit REV (default: the commit before the engine), checked out
  into a temporary git worktree; evaluation decoded in fp32 there, the online sampler under the run's autocast;
- transformers' `generate` on the same batches, fp32 weights and bf16 weights;
- llama.cpp (llama-cpp-python, from the test extra) on the f16 GGUF that `alignkit export` writes of the same model:
  greedy, one sequence at a time (its Python API decodes one sequence per context), on the first --llama-prompts
  prompts of the eval shape only.

The machine's bound: a decode step must read the weights once and every cached key and value of its rows, and a
forward pass must do its matrix products. The benchmark measures the memory bandwidth (a large copy) and the matrix
product rate (2048^3, fp32 and bf16) in the same invocation, counts for each row the bytes its decode steps read and
the FLOPs of its prefill and decode, and reports bound = max(bytes / bandwidth, FLOPs / rate) beside the measured time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL_NEW_TOKENS, EVAL_ROWS = 64, 128
ONLINE_PROMPTS, ONLINE_SAMPLES, ONLINE_NEW_TOKENS = 8, 8, 48


# ---------------------------------------------------------------------------------------------------- one row

def _eval_prompts():
    from alignkit.data.suites import load_suite
    from alignkit.eval.harness import suite_prompts

    return [p.prompt for p in suite_prompts(load_suite("default", split="heldout"))]


def _online_prompts():
    from alignkit.tasks import arithmetic_problems

    return [p.prompt for p in arithmetic_problems(ONLINE_PROMPTS, difficulty=1, seed=0)]


def _prompt_seeds():
    return tuple(range(ONLINE_PROMPTS))


def _summary(rollouts):
    """Prompt and generated token counts, and the decode steps' work for the bound."""
    prompt_tokens = generated = 0
    kv_token_steps = steps = 0  # sum over steps of the cached tokens read; decode steps
    for r in rollouts:
        lengths = r.prompt_mask.sum(-1)
        index = r.prompt_index
        distinct = {int(i): int(lengths[j]) for j, i in enumerate(index.tolist())}
        prompt_tokens += sum(distinct.values())
        generated += int(r.response_mask.sum())
        width = r.response_ids.shape[1]
        steps += width
        alive = r.response_mask  # a row reads its cache at each step it is still decoding
        for t in range(width):
            rows = alive[:, t].bool()
            kv_token_steps += int((r.prompt_mask.shape[1] + t) * int(rows.sum()))
    return {"prompt_tokens": prompt_tokens, "generated_tokens": generated, "decode_steps": steps,
            "kv_token_steps": kv_token_steps}


def run_row(row: str, shape: str) -> dict:
    import torch

    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.rollouts import SamplingSettings

    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer, model = load_tokenizer("smollm2-135m"), load_causal_lm("smollm2-135m").eval()
    greedy = SamplingSettings(max_new_tokens=EVAL_NEW_TOKENS, temperature=0.0)
    online = SamplingSettings(max_new_tokens=ONLINE_NEW_TOKENS, temperature=1.0, n=ONLINE_SAMPLES, seed=0,
                              prompt_seeds=_prompt_seeds())
    prompts = _eval_prompts() if shape == "eval" else _online_prompts()
    precision = "fp32"
    if row in ("now", "now-fp32", "now-bf16-weights"):
        from alignkit.rollouts import generate

        precision = "fp32" if row == "now-fp32" else "auto"

        def work():
            if shape == "eval":
                return generate(model, tokenizer, prompts, greedy, precision=precision, batch_size=EVAL_ROWS).rollouts
            # as the online loop samples: one batch, the update's autocast (or, for comparison, a bf16 copy)
            return generate(model, tokenizer, prompts, online, precision=precision, batch_size=None, sort=False,
                            as_update=row != "now-bf16-weights").rollouts
    elif row == "before":
        from alignkit.rollouts import sample

        def work():
            if shape == "eval":  # the evaluation decoded in fp32
                from alignkit.eval.harness import EvalSettings, greedy_rollouts

                return greedy_rollouts(model, tokenizer, prompts, EvalSettings(max_new_tokens=EVAL_NEW_TOKENS,
                                                                                batch_size=EVAL_ROWS))[1]
            from alignkit.train.run import resolve_precision  # the online sampler ran under the run's autocast

            on = resolve_precision("auto", torch.device("cpu")) == "bf16"
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=on):
                return [sample(model, tokenizer, prompts, online)]
    elif row in ("hf-fp32", "hf-bf16"):
        from alignkit.rollouts import HFGenerateBackend, sample
        from alignkit.rollouts.engine import bf16_copy, prompt_order

        if row == "hf-bf16":
            model = bf16_copy(model)

        def work():
            if shape == "eval":
                order = prompt_order(tokenizer, prompts)
                return [sample(model, tokenizer, [prompts[i] for i in order[s : s + EVAL_ROWS]], greedy,
                               backend=HFGenerateBackend()) for s in range(0, len(order), EVAL_ROWS)]
            # transformers draws from one stream: same shape and temperature, its own samples
            from dataclasses import replace

            return [sample(model, tokenizer, prompts, replace(online, prompt_seeds=None),
                           backend=HFGenerateBackend())]
    else:
        raise SystemExit(f"unknown row {row}")
    started = time.perf_counter()
    rollouts = work()
    seconds = time.perf_counter() - started
    texts = [t for r in rollouts for t in r.texts]
    out = {"row": row, "shape": shape, "seconds": seconds, **_summary(rollouts), "texts": texts,
           "weights_bytes_per_step": sum(p.numel() for p in model.parameters()) * (2 if row == "hf-bf16" else 4),
           "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "dims": _dims(model)}
    if row in ("now", "now-bf16-weights"):
        from alignkit.utils.precision import resolve_precision

        out["precision"] = resolve_precision("auto", torch.device("cpu"))
    else:
        out["precision"] = {"hf-bf16": "bf16"}.get(row, "fp32")
    if row == "before" and shape == "online":
        from alignkit.train.run import resolve_precision

        out["precision"] = resolve_precision("auto", torch.device("cpu")) + " (autocast)"
    if row == "now" and shape == "online" and out["precision"] == "bf16":
        out["precision"] = "bf16 (autocast)"  # the online sampler keeps the update's autocast: fp32 weights read
    elif row in ("now", "now-bf16-weights") and out["precision"] == "bf16":
        out["weights_bytes_per_step"] //= 2
    return out


def _dims(model) -> dict:
    c = model.config
    embedding = model.get_input_embeddings().weight.numel()
    body = sum(p.numel() for p in model.parameters()) - embedding  # tied output projection counted once, as head
    return {"layers": c.num_hidden_layers, "kv_heads": c.num_key_value_heads, "hidden": c.hidden_size,
            "head_dim": getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
            "vocab": c.vocab_size, "body_params": body}


def run_llama(n_prompts: int) -> dict:
    """llama.cpp on the f16 GGUF of the model, greedy, the first n prompts of the eval shape, one at a time."""
    from llama_cpp import Llama

    from alignkit.data import render_prompt
    from alignkit.models import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    gguf = _f16_gguf()
    llm = Llama(model_path=str(gguf), n_ctx=1024, n_threads=os.cpu_count() or 1, n_batch=512, verbose=False,
                logits_all=False)
    prompts = _eval_prompts()[:n_prompts]
    encoded = [render_prompt(tokenizer, p) for p in prompts]
    started = time.perf_counter()
    generated = 0
    for ids in encoded:
        llm.reset()
        for count, token in enumerate(llm.generate(ids, temp=0.0, top_k=1, reset=True), start=1):
            if token == llm.token_eos() or token == tokenizer.eos_token_id:
                break
            generated += 1
            if count == EVAL_NEW_TOKENS:
                break
    seconds = time.perf_counter() - started
    return {"row": "llama.cpp", "shape": f"eval (first {n_prompts})", "seconds": seconds, "precision": "f16",
            "prompt_tokens": sum(len(e) for e in encoded), "generated_tokens": generated,
            "decode_steps": None, "kv_token_steps": None,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def _f16_gguf() -> Path:
    from alignkit.models.loading import alignkit_home

    path = alignkit_home() / "bench" / "smollm2-135m-f16.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "alignkit.cli", "export", "smollm2-135m", "--gguf", str(path),
                        "--type", "f16"], check=True)
    return path


# ---------------------------------------------------------------------------------------------- the machine

def machine() -> dict:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    src = torch.ones(256 * 2**20 // 4 * 4)  # 1 GiB
    dst = torch.empty_like(src)
    best = min(_timed(lambda: dst.copy_(src)) for _ in range(5))
    bandwidth = 2 * src.numel() * 4 / best  # read + write
    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        a @ b
        rates[str(dtype).split(".")[1]] = 2 * 2048**3 / min(_timed(lambda: a @ b) for _ in range(5))
    flags = open("/proc/cpuinfo").read()
    return {"bandwidth_gb_s": bandwidth / 1e9, "gflops": {k: v / 1e9 for k, v in rates.items()},
            "cpu_bf16": sorted({f for f in ("avx512_bf16", "amx_bf16") if f in flags.split()}),
            "cores": os.cpu_count()}


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bound_seconds(result: dict, mach: dict) -> float | None:
    """max(bytes the decode steps must read / bandwidth, matrix-product FLOPs / rate) for this row's work."""
    if result.get("decode_steps") is None:
        return None
    dims = result["dims"]
    bf16 = result["precision"].startswith("bf16")
    width = 2 if bf16 else 4
    kv_per_token = 2 * dims["layers"] * dims["kv_heads"] * dims["head_dim"] * width
    read = result["decode_steps"] * result["weights_bytes_per_step"] + result["kv_token_steps"] * kv_per_token
    body = 2 * dims["body_params"]  # FLOPs per token through the layers
    head = 2 * dims["vocab"] * dims["hidden"]  # the output projection, at the last prompt token and each new one
    flops = (result["prompt_tokens"] + result["generated_tokens"]) * body + result["generated_tokens"] * head
    rate = mach["gflops"]["bfloat16" if bf16 else "float32"] * 1e9
    return max(read / (mach["bandwidth_gb_s"] * 1e9), flops / rate)


# ------------------------------------------------------------------------------------------------ the table

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="23b019d", help="the commit to compare against (default: %(default)s)")
    parser.add_argument("--llama-prompts", type=int, default=32)
    parser.add_argument("--rows", default="now,now-fp32,now-bf16-weights,before,hf-fp32,hf-bf16,llama.cpp")
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--one", nargs=2, metavar=("ROW", "SHAPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        row, shape = args.one
        result = run_llama(int(shape)) if row == "llama.cpp" else run_row(row, shape)
        print("RESULT " + json.dumps(result), flush=True)
        return
    mach = machine()
    print(json.dumps(mach), flush=True)
    rows = args.rows.split(",")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        if "before" in rows:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(before), args.before],
                           check=True)
        try:
            for shape in ("eval", "online"):
                for row in rows:
                    if row == "llama.cpp":
                        if shape == "eval":
                            results.append(_child(row, str(args.llama_prompts), None))
                        continue
                    if row == "now-bf16-weights" and shape == "eval":
                        continue  # the eval row "now" is that already
                    results.append(_child(row, shape, before if row == "before" else None))
        finally:
            if "before" in rows:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False)
    for r in results:
        r["bound_seconds"] = bound_seconds(r, mach)
    _table(results, mach)
    # Greedy answers in fp32, now against before: both decode the same length-sorted batches.
    answers = {r["row"]: r["texts"] for r in results if r["shape"] == "eval" and "texts" in r}
    if "now-fp32" in answers and "before" in answers:
        differ = sum(a != b for a, b in zip(answers["now-fp32"], answers["before"]))
        print(f"\neval shape, fp32 greedy answers that differ between now and before: {differ} of "
              f"{len(answers['before'])}")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": mach, "rows": results}, indent=1))


def _child(row: str, shape: str, tree: Path | None) -> dict:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)  # that commit's alignkit, this file's driver
    proc = subprocess.run([sys.executable, __file__, "--one", row, shape], capture_output=True, text=True, env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{row} {shape} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(line[len("RESULT "):])
    print(json.dumps({k: v for k, v in result.items() if k != "texts"}), flush=True)
    return result


def _table(results: list[dict], mach: dict) -> None:
    print(f"\nmachine: {mach['cores']} cores, bf16 flags {mach['cpu_bf16'] or 'none'}, copy bandwidth "
          f"{mach['bandwidth_gb_s']:.1f} GB/s, 2048^3 matmul {mach['gflops']['float32']:.0f} GFLOP/s fp32 / "
          f"{mach['gflops']['bfloat16']:.0f} bf16\n")
    print("| shape | row | precision | seconds | generated tok/s | prompt tok/s | peak RSS GB | x before | bound s | "
          "x bound |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    before = {r["shape"]: r["seconds"] / max(r["generated_tokens"], 1) for r in results if r["row"] == "before"}
    for r in results:
        per_token = r["seconds"] / max(r["generated_tokens"], 1)
        speedup = before.get(r["shape"])
        bound = r.get("bound_seconds")
        ratio = "" if speedup is None else f"{speedup / per_token:.2f}"
        bound_text = "" if bound is None else f"{bound:.1f} | {r['seconds'] / bound:.1f}"
        print(f"| {r['shape']} | {r['row']} | {r['precision']} | {r['seconds']:.1f} | "
              f"{r['generated_tokens'] / r['seconds']:.0f} | {r['prompt_tokens'] / r['seconds']:.0f} | "
              f"{r['peak_rss_gb']:.2f} | {ratio} | {bound_text or ' | '} |")


if __name__ == "__main__":
    main()
