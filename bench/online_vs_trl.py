"""GRPO step time and memory: alignkit vs TRL's GRPOTrainer on the same prompts; plus alignkit's PPO step.

    .venv/bin/python bench/online_vs_trl.py [--steps 6] [--precisions fp32]

Every step: one arithmetic word problem (task:arithmetic, difficulty 1), 8 sampled completions of at most 48 new
tokens, rewarded by the final-answer verifier, one optimizer step, no KL term (TRL's default beta = 0), on the
embedded smollm2-135m. TRL runs twice: with its default gradient checkpointing, and without it (its fastest
setting here). alignkit's PPO row does the same generation work with a shared critic, a reference model (KL 0.05)
and one PPO epoch: the cost of the critic and reference passes. s/step is the median over steps 2..N; mean
completion length is reported because generation stops at EOS and dominates the step.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import run_as_worker, run_worker, step_seconds, write_jsonl  # noqa: E402

GENERATIONS, MAX_NEW, LR, PROMPTS = 8, 48, 1e-6, 32


def prompt_rows() -> list[dict]:
    from alignkit.data import load_records

    records = load_records("task:arithmetic?difficulty=1&split=train", "prompt", limit=PROMPTS).records
    # The task's prompts are user turns already (the one prompt renderer); a plain string would be wrapped in one.
    return [{"prompt": r.prompt if isinstance(r.prompt, list) else [{"role": "user", "content": r.prompt}],
             "reference": r.reference} for r in records]


def worker_trl(data: Path, precision: str, steps: int, out: Path, checkpointing: bool, generations: int = GENERATIONS,
               max_new: int = MAX_NEW, model: str = "smollm2-135m") -> dict:
    """TRL's GRPOTrainer on `model` (default: the embedded one); on the GPU where one is visible, else on the CPU."""
    import time

    import datasets
    import torch
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from alignkit.judges import FinalAnswerVerifier
    from alignkit.models import prepare

    verifier = FinalAnswerVerifier()
    times: list[float] = []
    lengths: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.time())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    def reward(prompts, completions, reference, **kwargs):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return verifier.score(prompts, texts, reference)

    t0 = time.time()
    path = str(prepare(model))
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    dataset = datasets.load_dataset("json", data_files=str(data), split="train")
    args = trl.GRPOConfig(
        output_dir=str(out), max_steps=steps, bf16=precision == "bf16", logging_steps=1, report_to=[],
        save_strategy="no", use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        lr_scheduler_type="constant", disable_tqdm=True, per_device_train_batch_size=generations,
        num_generations=generations, max_completion_length=max_new,
        learning_rate=LR, beta=0.0, gradient_checkpointing=checkpointing, seed=0,
    )
    trainer = trl.GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[StepTimes()])
    trainer.train()
    return {"step_end_times": times, "t0": t0, "mean_length": statistics.mean(lengths) if lengths else None}


def worker_alignkit(data: Path, precision: str, steps: int, out: Path, method: str) -> dict:
    import time

    from alignkit.methods import METHODS

    common = dict(model="smollm2-135m", data={"train": str(data)}, output_dir=str(out), max_steps=steps,
                  precision=precision, progress=False, scheduler="constant", lr=LR, max_new_tokens=MAX_NEW,
                  judge="final_answer", batch_size=GENERATIONS)
    if method == "grpo":
        cfg = METHODS["grpo"].config(**common, prompts_per_step=1, samples_per_prompt=GENERATIONS, kl_coef=0.0)
    else:
        cfg = METHODS["ppo"].config(**common, prompts_per_step=GENERATIONS, samples_per_prompt=1, critic="shared",
                                    kl_coef=0.05, ppo_epochs=1, minibatch_size=GENERATIONS)
    t0 = time.time()
    METHODS[method].train(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"step_end_times": [r["time"] for r in rows], "t0": t0,
            "mean_length": statistics.mean(r["train/response_length"] for r in rows)}


VARIANTS = {
    "trl": lambda d, p, s, o: worker_trl(d, p, s, o, checkpointing=True),
    "trl-no-gc": lambda d, p, s, o: worker_trl(d, p, s, o, checkpointing=False),
    "alignkit": lambda d, p, s, o: worker_alignkit(d, p, s, o, "grpo"),
    "alignkit-ppo": lambda d, p, s, o: worker_alignkit(d, p, s, o, "ppo"),
}


def main() -> None:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", nargs=4, metavar=("IMPL", "PRECISION", "DATA", "STEPS"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--precisions", default="fp32")
    parser.add_argument("--impls", default="trl,trl-no-gc,alignkit,alignkit-ppo")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.worker:
        run_as_worker(args.worker, VARIANTS)
        return

    with tempfile.TemporaryDirectory() as tmp:
        data = write_jsonl(prompt_rows(), Path(tmp) / "prompts.jsonl")
        print(f"GRPO step: 1 prompt x {GENERATIONS} completions x <= {MAX_NEW} new tokens; {args.steps} steps", flush=True)
        results = []
        for precision in args.precisions.split(","):
            for impl in args.impls.split(","):
                res = run_worker(__file__, [impl, precision, str(data), str(args.steps)])
                results.append({"impl": impl, "precision": precision, "s_per_step": step_seconds(res["step_end_times"]),
                                "mean_completion_tokens": res["mean_length"], "peak_rss_gb": res["peak_rss_gb"],
                                "total_s": res["step_end_times"][-1] - res["t0"]})
                print(json.dumps(results[-1]), flush=True)
        print(f"\n{'impl':<13} {'precision':<9} {'s/step':>7} {'completion tok':>14} {'peak RSS GB':>11} {'total s':>8}")
        for r in results:
            print(f"{r['impl']:<13} {r['precision']:<9} {r['s_per_step']:>7.2f} {r['mean_completion_tokens'] or 0:>14.1f} "
                  f"{r['peak_rss_gb']:>11.2f} {r['total_s']:>8.1f}")
        for precision in args.precisions.split(","):
            ours = next((r for r in results if r["impl"] == "alignkit" and r["precision"] == precision), None)
            for base in (r for r in results if r["impl"].startswith("trl") and r["precision"] == precision):
                if ours:
                    print(f"{precision}: alignkit GRPO step / {base['impl']} step = {ours['s_per_step'] / base['s_per_step']:.2f}")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
