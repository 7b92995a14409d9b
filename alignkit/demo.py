"""`make demo`: SFT then DPO on the embedded model with the built-in data, with before/after figures.

Stages are resumable: a stage whose `final/` model exists is reused (use --fresh to start over), so running the demo
twice never silently overwrites a finished run.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from alignkit.data import load_records, read_rows
from alignkit.eval import preference_reports
from alignkit.models import load_causal_lm, load_tokenizer
from alignkit.rollouts import generate_responses
from alignkit.train import train_dpo, train_sft
from alignkit.train.common import render_pairs
from alignkit.train.config import DataConfig, DPOConfig, SFTConfig
from alignkit.train.loop import configure_threads, peak_rss_gb, resolve_precision
from alignkit.utils.io import atomic_write_json

BETA = 0.1
MAX_LENGTH = 256


def _stage(name: str, out: Path, train, cfg) -> Path:
    final = out / "final"
    if final.is_dir():
        print(f"== {name}: reusing the finished run in {out} (pass --fresh to retrain)", flush=True)
        return final
    print(f"== {name}: training into {out}", flush=True)
    t0 = time.perf_counter()
    result = train(cfg)
    print(f"== {name}: {result.steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
    return result.final_dir


def _sample_prompts(per_category: int = 2) -> list[dict]:
    """The first held-out prompts of each category (harmful, borderline, benign), for side-by-side responses."""
    picked: list[dict] = []
    seen: dict[str, int] = {}
    for _, row in read_rows("builtin:preference_eval"):
        category = row.get("category", "other")
        if seen.get(category, 0) < per_category:
            seen[category] = seen.get(category, 0) + 1
            picked.append({"category": category, "prompt": row["prompt"]})
    return picked


def run_demo(out: str = "runs/demo", *, model: str = "smollm2-135m", fresh: bool = False) -> dict:
    configure_threads()
    out_dir = Path(out)
    if fresh and out_dir.exists():
        shutil.rmtree(out_dir)
    t_start = time.perf_counter()
    precision = resolve_precision("auto", torch.device("cpu"))
    print(f"alignkit demo: SFT then DPO on {model}, built-in data, precision {precision}", flush=True)

    # 1. SFT on demonstrations.
    sft_cfg = SFTConfig(
        model=model, data=DataConfig(train="builtin:sft", eval="builtin:sft_eval"), output_dir=str(out_dir / "sft"),
        epochs=2, batch_size=8, lr=5e-5, warmup_ratio=0.1, max_length=MAX_LENGTH, save_every=10,
    )
    sft_final = _stage("SFT", out_dir / "sft", train_sft, sft_cfg)

    # 2. DPO on preference pairs, starting from (and referenced to) the SFT model.
    # No eval split here: step 3 evaluates every model on the held-out pairs, DPO against its SFT reference included.
    dpo_cfg = DPOConfig(
        model=str(sft_final), data=DataConfig(train="builtin:preference"), output_dir=str(out_dir / "dpo"),
        epochs=1, batch_size=8, lr=5e-6, beta=BETA, warmup_ratio=0.1, max_length=MAX_LENGTH, save_every=10,
    )
    dpo_final = _stage("DPO", out_dir / "dpo", train_dpo, dpo_cfg)

    # 3. Before/after on the held-out pairs: base, SFT, DPO, each against the base model; DPO also against SFT.
    print("== evaluating on builtin:preference_eval (held out from training)", flush=True)
    tokenizer = load_tokenizer(model)
    pairs = render_pairs(tokenizer, load_records("builtin:preference_eval", "preference").records, MAX_LENGTH,
                         "builtin:preference_eval")
    models = {"base": load_causal_lm(model), "sft": load_causal_lm(str(sft_final)), "dpo": load_causal_lm(str(dpo_final))}
    pad = tokenizer.pad_token_id
    comparisons = [("base", "base"), ("sft", "base"), ("dpo", "base"), ("dpo", "sft")]
    reports = preference_reports(models, comparisons, pairs, pad, beta=BETA)
    results = {
        "vs_base": {name: reports[f"{name}/base"].as_dict() for name in models},
        "dpo_vs_sft": reports["dpo/sft"].as_dict(),
    }

    # 4. A few held-out prompts answered by each model (greedy, so reproducible).
    samples = _sample_prompts()
    prompts = [s["prompt"] for s in samples]
    for name, m in models.items():
        for s, text in zip(samples, generate_responses(m, tokenizer, prompts, max_new_tokens=60, batch_size=8)):
            s[name] = text
    results["samples"] = samples
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    results["peak_rss_gb"] = round(peak_rss_gb(), 2)
    results["precision"] = precision
    atomic_write_json(out_dir / "demo_results.json", results)
    _print_results(results, out_dir)
    return results


def _print_results(results: dict, out_dir: Path) -> None:
    rows = results["vs_base"]
    print("\nHeld-out preference pairs (builtin:preference_eval, %d pairs); reference = base model" % rows["base"]["pairs"])
    print(f"{'model':<6} {'pref. accuracy':>15} {'reward accuracy':>16} {'reward margin':>14} {'KL to base':>11}")
    for name, r in rows.items():
        print(f"{name:<6} {r['preference_accuracy']:>15.3f} {r['reward_accuracy']:>16.3f} "
              f"{r['reward_margin']:>14.3f} {r['kl_to_reference']:>11.4f}")
    d = results["dpo_vs_sft"]
    print(f"DPO against its own reference (the SFT model): reward accuracy {d['reward_accuracy']:.3f}, "
          f"reward margin {d['reward_margin']:.3f}, KL {d['kl_to_reference']:.4f}")
    print("  pref. accuracy: share of pairs where the model's mean per-token log-prob of the chosen reply is higher;")
    print("  reward: beta*(log pi - log ref) with beta=%.2f; KL: mean per-token KL(pi || ref) on the pairs' replies" % BETA)
    print("\nSample responses (greedy, held-out prompts):")
    for s in results["samples"]:
        prompt = s["prompt"][-1]["content"] if isinstance(s["prompt"], list) else s["prompt"]
        print(f"\n[{s['category']}] {prompt}")
        for name in ("base", "sft", "dpo"):
            print(f"  {name:>4}: {json.dumps(s[name])[:300]}")
    print(f"\nDone in {results['seconds']:.0f} s (peak RSS {results['peak_rss_gb']} GB). Results: {out_dir / 'demo_results.json'}")
    print(f"Models: {out_dir / 'sft' / 'final'}, {out_dir / 'dpo' / 'final'}")
