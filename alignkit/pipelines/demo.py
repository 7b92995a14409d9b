"""`make demo`: Constitutional AI end to end on the embedded model, offline, on a laptop CPU.

The 135M model cannot critique, revise or judge from a prompt alone (shared GUIDE), so the demo first teaches one
copy to critique and revise (the constitution's worked exemplars) and another to compare (the train gold comparisons:
process supervision), audits the judge on the held-out gold comparisons, and only then lets them write revisions and
labels, under the principles the judge passed. The reinforcement stage is DPO on
the AI-labelled pairs rather than PPO against a preference model: on 2 CPU cores the preference model and 20 PPO
steps took 1245 s against DPO's 252 s (docs/demo.md), which would take the ~50-minute demo further past its
30-minute target; `alignkit cai` runs PPO when `rl.method` is `ppo`, its default.

Output (`runs/demo`): report.html (base, SL-CAI and RL-CAI on the held-out evaluation suite, the audit, and which data
people wrote and which AI produced), final/ (the aligned model, HF format) and each stage's folder. Stages are
resumable: a rerun reuses every finished one; --fresh starts over.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from alignkit.eval.metrics import HEADLINE
from alignkit.pipelines.cai import run_cai
from alignkit.pipelines.cai_config import CAIConfig
from alignkit.train.config_loading import merge_config, parse_overrides
from alignkit.train.run import configure_threads
from alignkit.utils.io import LOCK_FILE, locked_folder

# The train-side prompts the demo reads: the first rows of each built-in train source, the set it was tuned on (72
# red-team requests, 6 of each harm category, and 40 borderline prompts). The built-in sets have since grown (240 / 231
# train rows); all of them would multiply the critique, label and contrast stages' generation well past the demo's 30
# minutes. The demonstrations are all 232 benign and borderline ones (161 of them borderline): training on them costs
# far less than generating, and with the first 112 (41 borderline) SL-CAI refused 0.485 of held-out borderline
# prompts (docs/demo.md).
REDTEAM = {"source": "suite:redteam?split=train", "limit": 72}
BORDERLINE = {"source": "suite:borderline?split=train", "limit": 40}
DEMONSTRATIONS = {"source": "builtin:sft", "categories": ["benign", "borderline"]}

HARM_PRINCIPLES = ["harmless-ethical", "no-dangerous-assistance", "refuse-with-alternative", "human-rights-dignity",
                   "privacy-respect", "wellbeing-support"]


def demo_config(out: str, model: str, overrides: list[str] | None = None) -> CAIConfig:
    """The demo's settings; `overrides` are `key=value` pairs as on the command line (e.g. for a tiny test model)."""
    return CAIConfig.model_validate(merge_config({
        "model": model,
        "output_dir": out,
        "feedback": {
            # The writer learns critique and revision from the 71 worked exemplars (each twice); the judge, a copy of
            # its own, comparison from the 409 train gold comparisons (both orders, once: at least 24 for every
            # principle). The judge alone, 1 epoch: 0.87 on the 60 held-out gold comparisons of the time (313 train),
            # where the same data mixed with the exemplars in one model gave 0.62 (bf16; docs/constitution.md).
            "exemplar_repeats": 2,
            "comparison_repeats": 1,
            # lr 2e-4 for the writer: at 5e-5 its loss stayed near 2.4 and its revisions of red-team answers were
            # 16 refusals in 108, copies of the first answer or of the critique; at 2e-4, 30 of 36 (on the first 36).
            "sft": {"epochs": 1, "batch_size": 8, "lr": 2e-4, "warmup_ratio": 0.05, "max_length": 512,
                    "save_every": 10, "group_by_length": True},
            "judge_sft": {"epochs": 1, "batch_size": 8, "lr": 5e-5, "warmup_ratio": 0.05, "max_length": 512,
                          "save_every": 10, "group_by_length": True},
            "min_accuracy": 0.7,
            # A principle labels when the judge is better than chance under it with 90% confidence: the Wilson lower
            # bound of its accuracy on its 15-16 held-out comparisons above 0.5 (11 of 15 right). The bar the demo
            # had, 0.7 on 3-4 comparisons, passed principles on 3 right answers of 4; 0.7 as a lower bound would ask
            # 14 of 15, more than this 135M judge gives on most principles.
            "min_principle_accuracy": 0.5,
            "min_principle_comparisons": 15,
            # The audit asks each gold comparison under its own principle only: the agreement question (another
            # principle per item) cost 118 of its 236 s and gates nothing.
            "audit_extra_principles": 0,
        },
        # Red-team critiques under the harm-avoidance principles (the paper's critique principles are all about
        # harm); comparisons later draw from all 16.
        # Half the prompts also inside a jailbreak template: the first demo wrapped all of them, and half of its
        # revisions were then refusals inside templates while plain harmful requests stayed answered.
        # Short revisions: the writer's free revisions were 9 acceptable in 50 read (32 senseless, 8 offering harm;
        # docs/demo.md); the short form keeps its refusal sentence only where it refuses this request, and then says
        # what the constitution's `alternatives` say for the request's kind of harm. The judge's check keeps a
        # revision it prefers to the first answer by a margin (0.6 over both orders), not on one 0.5 cut.
        "critique": {"prompts": [REDTEAM], "rounds": 1, "principles": HARM_PRINCIPLES, "jailbreak_fraction": 0.5,
                     "max_new_tokens": 96, "critique_tokens": 48, "revision_tokens": 96, "check_revisions": True,
                     "check_margin": 0.1, "revision_form": "short"},
        # Each kept revision once against the demonstrations, one epoch at lr 1e-4 (lr and epochs chosen on a
        # development check, docs/demo.md; revisions were weighed twice while they were trained as plain text, a
        # format the model was never asked in). The starting policy's own answers to the train-split borderline prompts join the SL data as they are
        # (helpfulness samples): the revisions teach refusing, these where refusing stops.
        "sl": {"revision_repeats": 1, "helpful": [DEMONSTRATIONS],
               "policy_answers": [BORDERLINE],
               "sft": {"epochs": 1, "batch_size": 8, "lr": 1e-4, "max_length": 384, "save_every": 10,
                       "group_by_length": True}},
        "rl": {
            "method": "dpo",
            # The AI labels with the rule verifier beside the judge (people marked which prompts are harmful): where
            # one response of a pair is right by the rules it wins, whatever the judge said; phase 1's pairs too.
            # Without it RL-CAI undid SL-CAI's harmlessness (development check: held-back harmful prompts refused
            # safely 0.905 -> 0.667); with it 0.875 -> 0.810 at lr 2e-5 and 0.857 at 1e-5 (docs/demo.md).
            "prompts": [{**REDTEAM, "harmful": True}, {**BORDERLINE, "harmful": False}],
            "verifier": True,
            "jailbreak_suite": None,
            "max_new_tokens": 64,
            "principles_per_label": 2,
            # Phase 1's checked revisions are AI comparisons too (revision vs first answer): the SL-CAI policy's
            # own two samples rarely differ in harmlessness, so they alone gave DPO few confident pairs.
            "phase1_pairs": True,
            # On-policy contrast pairs: the SL-CAI policy's greedy answer and 4 samples on the train-split red-team
            # and borderline prompts, its own right response preferred to its own wrong one (a refusal of a benign
            # request, an answer to a harmful one). At temperature 1 it refused 13% of borderline samples but 33%
            # greedily, the way it is evaluated; its own failures are what DPO needs to see (docs/demo.md).
            "contrast": {"refuse": [REDTEAM], "answer": [BORDERLINE], "samples": 4, "max_new_tokens": 64},
            # lr 1e-5, chosen on the development check (held-back train prompts, one seed, bf16): from SL-CAI's
            # 0.875 safe refusals of harmful prompts and 0.346 refusals of borderline ones, 1e-5 gave 0.857 and
            # 0.241, 2e-5 0.810 and 0.183 — 1e-5 keeps RL-CAI as harmless as SL-CAI, the bar (docs/demo.md).
            "dpo": {"epochs": 1, "batch_size": 8, "lr": 1e-5, "beta": 0.1, "max_length": 384, "save_every": 10,
                    "group_by_length": True},
        },
        "eval": {"max_new_tokens": 64, "batch_size": 128},
    }, parse_overrides(overrides or [])))


def run_demo(out: str = "runs/demo", *, model: str = "smollm2-135m", fresh: bool = False,
             overrides: list[str] | None = None) -> dict:
    configure_threads()
    started = time.perf_counter()
    print(f"alignkit demo: Constitutional AI on {model} -> {out}", flush=True)
    with locked_folder(out):  # held from here, so `fresh` never removes a run another process is writing
        if fresh:
            for entry in Path(out).iterdir():
                if entry.name != LOCK_FILE:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        manifest = run_cai(demo_config(out, model, overrides), log=lambda message: print(message, flush=True))
    _print_summary(manifest, time.perf_counter() - started)
    return manifest


def _print_summary(manifest: dict, seconds: float) -> None:
    stages = manifest["stages"]
    audit = stages.get("audit", {})
    print(f"\nFeedback model audit: accuracy {audit.get('accuracy', float('nan')):.2f} on {audit.get('n')} held-out "
          f"gold comparisons (required {audit.get('min_accuracy')}), position bias "
          f"{audit.get('position_bias', float('nan')):+.3f}")
    metrics = stages.get("eval", {}).get("metrics", {})
    keys = HEADLINE
    if metrics:
        print(f"\n{'model':<8}" + "".join(f"{k:>18}" for k in keys))
        for name in ("base", "sl-cai", "rl-cai"):
            values = metrics[name]
            print(f"{name:<8}" + "".join(f"{'—' if values.get(k) is None else format(values[k], '.3f'):>18}"
                                         for k in keys))
    print("\nStage times: " + ", ".join(f"{k} {v.get('seconds', 0):.0f} s" for k, v in stages.items()))
    print(f"Done in {seconds:.0f} s this run. Report: {stages.get('eval', {}).get('report')}; "
          f"model: {manifest['final']}")
