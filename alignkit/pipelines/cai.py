"""Constitutional AI end to end (Bai et al. 2022): `alignkit cai CONFIG.yaml`.

Stages, each in its own folder under `output_dir` and each finished by an atomic `done.json`; a rerun reuses every
finished stage, and a training stage interrupted half-way resumes from its checkpoints:

  1-feedback    teach the feedback model critique/revision (the constitution's worked exemplars: writer/) and,
                separately, comparison (the train gold comparisons: judge/) by SFT, when it is a local model and
                `feedback.train` is on
  2-audit       audit it on the held-out gold comparisons (accuracy, position bias, agreement across principles);
                below `feedback.min_accuracy` the pipeline stops unless `feedback.override_audit`
  3-critique    the policy answers red-team prompts (plain and wrapped in train-split jailbreak templates); for
                `rounds` rounds a randomly drawn principle drives a critique and a revision by the feedback model;
                every step is kept in revisions.jsonl with its provenance
  4-sl          SL-CAI: SFT of the policy on the final revisions mixed with helpfulness demonstrations
  5-labels      the SL-CAI policy samples two responses per prompt; the feedback model compares them under k random
                principles in both orders; the soft label P(first better) and its provenance go to labels.jsonl
  6-preference  (rl.method=ppo) a preference model trained on the soft labels plus human helpfulness preferences
  7-rl          PPO against that preference model with a KL penalty to the SL-CAI policy, or (rl.method=dpo) DPO on
                the labels made hard (those within min_confidence of 0.5 dropped) plus the helpfulness preferences
  8-eval        base, SL-CAI and RL-CAI on the evaluation suite's held-out split; report.html at the top with the
                audit, each stage's data and where it came from (people or AI), and each stage's effect

The aligned model is copied to `output_dir/final` (HF format).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignkit.data import render_prompt, reply_to, request_text
from alignkit.methods import METHODS
from alignkit.pipelines.cai_config import CAIConfig, DataMix
from alignkit.train.config import StageSettings
from alignkit.utils.io import atomic_dir, atomic_write_json, atomic_write_text, claim_config_dir

STAGES = ("feedback", "audit", "critique", "sl", "labels", "preference", "rl", "eval")

HUMAN = "human (written by the alignkit team)"


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def reply_text(value) -> str:
    return value if isinstance(value, str) else value[-1]["content"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def mix_rows(mixes: list[DataMix], kind: str) -> list[dict]:
    """Rows of every source, filtered by category and limited, each validated as `kind` and checked against the
    held-out evaluation data (a problem names its file, line and field); each keeps a `source` field saying where
    it came from."""
    from alignkit.data import parse_record
    from alignkit.data.sources import read_rows
    from alignkit.data.suites import check_not_heldout

    out = []
    for mix in mixes:
        taken = 0
        for where, row in read_rows(mix.source):
            if mix.categories is not None and row.get("category") not in mix.categories:
                continue
            if mix.limit is not None and taken >= mix.limit:
                break
            for record in parse_record(row, where, kind):
                check_not_heldout(record)
            out.append({**row, "source": where})
            taken += 1
    return out


def jailbreak_wrapped(rows: list[dict], suite: str | None, rng: random.Random, fraction: float = 1.0) -> list[dict]:
    """Single requests (plain or one user turn) again inside one train-split jailbreak template of `suite` each (templates taken in turn
    from a random start), so the stage also sees the attacks the evaluation measures (its held-out templates differ).
    `fraction` < 1 wraps only that share of them, drawn at random (in their original order)."""
    if suite is None or fraction == 0:
        return []
    from alignkit.data.suites import load_suite

    templates = load_suite(suite, "train").jailbreaks
    if not templates:
        return []
    start = rng.randrange(len(templates))
    candidates = [r for r in rows if request_text(r["prompt"]) is not None]
    if fraction < 1:
        chosen = set(rng.sample(range(len(candidates)), round(fraction * len(candidates))))
        candidates = [r for i, r in enumerate(candidates) if i in chosen]
    wrapped = []
    for i, row in enumerate(candidates):
        template = templates[(start + i) % len(templates)]
        wrapped.append({"prompt": template.apply(request_text(row["prompt"])),
                        "source": f"{row['source']} in jailbreak {template.id}"})
    return wrapped


def contrast_pairs(prompts: list, refuse: list[bool], greedy: list[str], samples: list[list[str]],
                   sampled_failures: tuple[str, ...] = ("refuse",)) -> list[dict]:
    """On-policy contrast pairs. For each prompt, whether refusing is right (`refuse`, decided by the people who
    wrote the prompt), the policy's greedy answer and its sampled ones: where the greedy answer is wrong (a refusal
    of a benign request, or an answer to a harmful one) the first right sample is preferred to it; where it is right,
    it is preferred to the first wrong sample, on the kinds of prompt ("refuse", "answer") in `sampled_failures`.
    Prompts on which the policy is always right or always wrong give no pair. Each pair keeps its prompt's `index`.
    Right and wrong are told by the refusal detector (`alignkit.judges.is_refusal`). The default `sampled_failures`
    is `rl.contrast`'s."""
    from alignkit.judges import is_refusal

    out = []
    for i, (prompt, should_refuse, first, drawn) in enumerate(zip(prompts, refuse, greedy, samples, strict=True)):
        if not first.strip():
            continue
        right = [is_refusal(t) == should_refuse for t in drawn]
        first_right = is_refusal(first) == should_refuse
        if first_right and ("refuse" if should_refuse else "answer") not in sampled_failures:
            continue
        other = next((t for t, ok in zip(drawn, right) if ok != first_right and t.strip()), None)
        if other is None:
            continue
        chosen, rejected = (first, other) if first_right else (other, first)
        out.append({"index": i, "prompt": prompt, "chosen": chosen, "rejected": rejected, "probability": 1.0,
                    "should_refuse": should_refuse, "greedy_was_right": first_right})
    return out


# Settings that decide whether the run goes on past the audit, not what any stage computes: changing them keeps every
# finished stage (the audit's report is kept, and the gate is applied to it again on each run).
GATE_SETTINGS = {"feedback": ("min_accuracy", "override_audit")}


def computed_settings(settings: CAIConfig | dict) -> dict:
    """A run's settings (a config, or a recorded config.json) less GATE_SETTINGS: what its finished stages are tied
    to."""
    settings = settings.model_dump(mode="json") if isinstance(settings, CAIConfig) else dict(settings)
    for section, keys in GATE_SETTINGS.items():
        settings[section] = {k: v for k, v in settings.get(section, {}).items() if k not in keys}
    return settings


class Pipeline:
    """The stages of one run; `self.done[stage]` holds each finished stage's summary (its done.json)."""

    def __init__(self, cfg: CAIConfig, log: Callable[[str], None] = print):
        from alignkit.constitution import load_constitution

        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.log = log
        self.constitution = load_constitution(cfg.constitution)
        self.done: dict[str, dict] = {}
        self._feedback = None

    def folder(self, stage: str) -> Path:
        return self.out / f"{STAGES.index(stage) + 1}-{stage}"

    def _claim_output_dir(self) -> None:
        """Finished stages are reused only by the same configuration: another one in this folder is refused, so a
        run never silently mixes with, or overwrites, another run's results."""
        from alignkit.train.run import RunError

        conflict = claim_config_dir(self.out, computed_settings(self.cfg))
        if conflict == "foreign":
            raise RunError(f"{self.out} exists and is not a Constitutional AI run; use another output_dir")
        if conflict:
            raise RunError(f"{self.out} holds a Constitutional AI run with another configuration (differs in "
                           f"{', '.join(conflict)}); use another output_dir, or delete that folder to start over")

    def _shared_stages(self) -> dict[str, dict]:
        """With `reuse: RUN`, the finished stages of RUN up to the labels whose settings equal this run's (phase 1
        and the AI labels do not depend on the RL method), so another RL variant starts from the same labels."""
        from alignkit.train.run import RunError

        if self.cfg.reuse is None:
            return {}
        other = Path(self.cfg.reuse)
        path = other / "config.json"
        if not path.is_file():
            raise RunError(f"reuse: {other} is not a Constitutional AI run (no config.json)")
        # (A folder written before GATE_SETTINGS existed recorded them too.)
        theirs = computed_settings(json.loads(path.read_text(encoding="utf-8")))
        mine = computed_settings(self.cfg)
        rl_only = ("method", "min_confidence", "phase1_pairs", "helpful_preferences", "preference", "ppo", "dpo")
        same = {
            "phase 1": all(theirs.get(k) == mine.get(k) for k in ("model", "constitution", "seed", "feedback",
                                                                  "critique", "sl")),
            "labels": {k: v for k, v in theirs.get("rl", {}).items() if k not in rl_only}
                      == {k: v for k, v in mine["rl"].items() if k not in rl_only},
        }
        if not same["phase 1"]:
            raise RunError(f"reuse: {other} ran phase 1 with other settings (model, constitution, seed, feedback, "
                           "critique or sl differ); its stages cannot stand in for this run's")
        shared = {}
        for stage in ("feedback", "audit", "critique", "sl") + (("labels",) if same["labels"] else ()):
            marker = other / f"{STAGES.index(stage) + 1}-{stage}" / "done.json"
            if marker.is_file():
                shared[stage] = json.loads(marker.read_text(encoding="utf-8"))
        return shared

    def run(self) -> dict:
        self._claim_output_dir()
        started = time.perf_counter()
        shared = self._shared_stages()
        for stage in STAGES:
            folder = self.folder(stage)
            marker = folder / "done.json"
            if marker.is_file():
                self.done[stage] = json.loads(marker.read_text(encoding="utf-8"))
                self.log(f"== cai {stage}: finished earlier, reusing {folder}")
                self._after(stage, folder)
                continue
            if stage in shared:
                self.done[stage] = {**shared[stage], "reused_from": str(self.cfg.reuse)}
                folder.mkdir(parents=True, exist_ok=True)
                atomic_write_json(marker, self.done[stage])
                self.log(f"== cai {stage}: reusing the identical stage of {self.cfg.reuse}")
                self._after(stage, folder)
                continue
            self.log(f"== cai {stage}: running into {folder}")
            t0 = time.perf_counter()
            summary = getattr(self, f"stage_{stage}")(folder)
            if summary is None:  # the stage does not apply to this configuration
                self.log(f"== cai {stage}: skipped")
                continue
            summary["seconds"] = round(time.perf_counter() - t0, 1)
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(marker, summary)
            self.done[stage] = summary
            self.log(f"== cai {stage}: done in {summary['seconds']:.0f} s")
            self._after(stage, folder)
        final = self._copy_final()
        manifest = {"config": self.cfg.model_dump(mode="json"), "stages": self.done, "final": str(final),
                    "seconds_this_run": round(time.perf_counter() - started, 1)}
        atomic_write_json(self.out / "cai.json", manifest)
        return manifest

    # ------------------------------------------------------------------ helpers

    def _after(self, stage: str, folder: Path) -> None:
        """The audit gate, applied to the audit's report whether it ran now or earlier: the gate settings decide,
        they compute nothing (GATE_SETTINGS)."""
        if stage != "audit":
            return
        from alignkit.constitution import AuditReport, check_audit

        fb = self.cfg.feedback
        audit = self.done["audit"]
        report = AuditReport(**{k: audit[k] for k in AuditReport.__dataclass_fields__ if k in audit})
        try:
            check_audit(report, fb.min_accuracy, override=fb.override_audit,
                        min_principle_accuracy=fb.min_principle_accuracy)
        finally:
            # Written either way, so a refused run still shows why.
            audit.update(min_accuracy=report.min_accuracy, passed=report.passed, overridden=fb.override_audit,
                         min_principle_accuracy=report.min_principle_accuracy,
                         allowed_principles=report.allowed_principles,
                         labelling_principles=self._labelling(report.allowed_principles))
            atomic_write_json(folder / "audit.json", audit)
        excluded = sorted(set(self.constitution_ids()) - set(audit["labelling_principles"]))
        self.log(f"   audit: labels under {len(audit['labelling_principles'])} principles"
                 + (f" (below {fb.min_principle_accuracy:.2f}, left out: {', '.join(excluded)})" if excluded else ""))

    def constitution_ids(self) -> list[str]:
        return [p.id for p in self.constitution.principles]

    def _labelling(self, allowed: list[str] | None) -> list[str]:
        """The principles the feedback model judges under: those its audit allows, in the constitution's order; all
        of them when the audit is overridden (the user has chosen to trust the model as it is)."""
        if self.cfg.feedback.override_audit:
            return self.constitution_ids()
        return [p for p in self.constitution_ids() if p in set(allowed or ())]

    def judging_constitution(self, wanted: list[str] | None = None):
        """The constitution restricted to the principles the audit allows (and to `wanted`, when given); a stage
        whose principles all failed the audit is refused, naming them."""
        from alignkit.train.run import RunError

        wanted = [p.id for p in self.constitution.subset(wanted or self.constitution_ids()).principles]  # known ids
        allowed = self.done["audit"]["labelling_principles"] if "audit" in self.done else self.constitution_ids()
        ids = [p for p in wanted if p in allowed]
        if not ids:
            raise RunError(f"none of the principles {wanted} passed the feedback model's audit (each needs "
                           f"{self.cfg.feedback.min_principle_accuracy:.2f}); allowed: {allowed}")
        return self.constitution.subset(ids)

    def _train(self, stage: str, method: str, folder: Path, model: str, data: str, settings: StageSettings, *,
               run: str = "run", **fixed) -> str:
        """Train `method` (a row of `METHODS`) on `data` from `model` in folder/run, under the stage's settings."""
        spec = METHODS[method]
        # The run's seed seeds every trainer (data order, sampling) unless the stage's own keys set one.
        cfg = spec.config.model_validate({"seed": self.cfg.seed, **settings.written(), **fixed, "model": model,
                                          "data": {"train": data}, "output_dir": str(folder / run), "progress": False})
        final = folder / run / "final"
        if final.is_dir():  # trained before the stage's done.json was written
            return str(final)
        result = spec.train(cfg)
        self.log(f"   {stage}: {result.steps} steps")
        return str(result.final_dir)

    def feedback(self):
        """The feedback model, loaded once: the taught one if stage 1 ran, else the configured one."""
        if self._feedback is None:
            from alignkit.constitution.feedback import load_feedback_model

            fb = self.cfg.feedback
            taught = self.done.get("feedback", {})
            if "model" in taught:
                from alignkit.constitution.feedback import local_feedback_model

                # A taught judge is asked its questions cut as its teaching cut them (the same ids: data/render.py).
                self._feedback = local_feedback_model(taught["model"], judge_model=taught["judge_model"],
                                                      batch_size=fb.batch_size, max_length=fb.judge_sft.max_length)
            else:
                self._feedback = load_feedback_model(self.cfg.model if fb.model is None else fb.model,
                                                     batch_size=fb.batch_size)
        return self._feedback

    def _policy_rollouts(self, model: str, prompts: list, max_new_tokens: int, temperature: float, n: int,
                         batch_size: int) -> list[str]:
        """n responses per prompt (prompt-major), in length-sorted batches."""
        from alignkit.models import load_causal_lm, load_tokenizer
        from alignkit.rollouts import SamplingSettings, sample
        from alignkit.rollouts.sampler import DecodeLoopBackend

        tokenizer, module = load_tokenizer(model), load_causal_lm(model)
        order = sorted(range(len(prompts)), key=lambda i: -len(render_prompt(tokenizer, prompts[i])))
        texts: list[str] = [""] * (len(prompts) * n)
        per_batch = max(1, batch_size // n)
        for start in range(0, len(order), per_batch):
            chunk = order[start : start + per_batch]
            rollout = sample(module, tokenizer, [prompts[i] for i in chunk],
                             SamplingSettings(max_new_tokens=max_new_tokens, temperature=temperature, n=n,
                                              seed=self.cfg.seed + start),
                             backend=DecodeLoopBackend())
            for j, text in enumerate(rollout.texts):
                texts[chunk[j // n] * n + j % n] = text
        return texts

    # ------------------------------------------------------------------ stages

    def stage_feedback(self, folder: Path) -> dict | None:
        from alignkit.constitution import load_gold_comparisons
        from alignkit.constitution.critique import comparison_sft_rows, exemplar_sft_rows
        fb = self.cfg.feedback
        if not fb.train or (fb.model is not None and not isinstance(fb.model, str)):
            return None
        start = self.cfg.model if fb.model is None else fb.model
        gold = load_gold_comparisons(split="train")
        # Each skill is taught to its own copy of the model. A comparison row trains four answer tokens ("(A)" and
        # the end of turn) after a long question, a critique row dozens: mixed in one run, the per-token loss drowns
        # the answers (held-out audit 0.60-0.65 mixed, against 0.80 and now 0.87 taught alone; docs/constitution.md).
        writing = folder / "critique_data.jsonl"
        comparing = folder / "comparison_data.jsonl"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(writing, _jsonl(exemplar_sft_rows(self.constitution) * fb.exemplar_repeats))
        atomic_write_text(comparing, _jsonl(comparison_sft_rows(gold, self.constitution) * fb.comparison_repeats))
        model = self._train("feedback (critique and revision)", "sft", folder, start, str(writing),
                            fb.sft, run="writer")
        judge = self._train("feedback (comparison)", "sft", folder, start, str(comparing),
                            fb.judge_sft, run="judge")
        return {"model": model, "judge_model": judge, "started_from": start,
                "data": {"critique and revision": str(writing), "comparison": str(comparing)},
                "rows": {"exemplars (critique -> revision)": len(self.constitution.exemplars),
                         "gold comparisons, both orders": 2 * len(gold),
                         "repeats (exemplars, comparisons)": f"{fb.exemplar_repeats}, {fb.comparison_repeats}"},
                "origin": HUMAN}

    def stage_audit(self, folder: Path) -> dict:
        from alignkit.constitution import audit_feedback_model, load_gold_comparisons

        fb = self.cfg.feedback
        feedback = self.feedback()
        report = audit_feedback_model(feedback.judge, load_gold_comparisons(split="heldout"), self.constitution,
                                      extra_principles=fb.audit_extra_principles, seed=self.cfg.seed)
        folder.mkdir(parents=True, exist_ok=True)
        self.log(f"   audit: accuracy {report.accuracy:.2f} on {report.n} held-out gold comparisons, position bias "
                 f"{report.position_bias}, agreement {report.principle_agreement}")
        return {"feedback_model": feedback.name, **report.as_dict()}

    def stage_critique(self, folder: Path) -> dict:
        from alignkit.constitution.critique import critique_and_revise
        from alignkit.constitution.labels import judge_orders

        cfg = self.cfg.critique
        rng = random.Random(self.cfg.seed)
        plain = mix_rows(cfg.prompts, "prompt")
        rows = plain + jailbreak_wrapped(plain, cfg.jailbreak_suite, rng, cfg.jailbreak_fraction)
        prompts = [r["prompt"] for r in rows]
        initial = self._policy_rollouts(self.cfg.model, prompts, cfg.max_new_tokens, temperature=0.0, n=1,
                                        batch_size=self.cfg.feedback.batch_size)
        feedback = self.feedback()
        # Critiques, revisions and their check are the feedback model's judgements: only under principles it passed.
        pool = self.judging_constitution(cfg.principles)
        records = critique_and_revise(prompts, initial, pool, feedback.require_generate(), rng,
                                      rounds=cfg.rounds,
                                      critique_tokens=cfg.critique_tokens, revision_tokens=cfg.revision_tokens,
                                      policy=self.cfg.model, feedback_model=feedback.name)
        out = [{"source": row["source"], **record.as_dict()} for row, record in zip(rows, records)]
        if cfg.check_revisions:
            # The feedback model's own check: is the final revision better than the first answer under the last
            # round's principle (both orders)? Revisions it does not prefer are kept on record but not trained on.
            items = [(r["prompt"], r["final"], r["initial"], self.constitution.principle(r["steps"][-1]["principle"])
                      .comparison) for r in out]
            for r, p in zip(out, (0.5 * sum(o) for o in judge_orders(feedback.judge, items))):
                r["revision_preferred"] = p
                r["use"] = p > 0.5
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "revisions.jsonl", _jsonl(out))
        changed = sum(r["final"].strip() != r["initial"].strip() for r in out)
        return {"revisions": str(folder / "revisions.jsonl"), "prompts": len(out), "plain": len(plain),
                "jailbreak_wrapped": len(out) - len(plain), "rounds": cfg.rounds, "changed": changed,
                "kept_by_check": sum(r.get("use", True) for r in out),
                "origin": f"prompts: {HUMAN}; answers: AI (the policy); critiques and revisions: AI ({feedback.name})"}

    def stage_sl(self, folder: Path) -> dict:
        revisions = read_jsonl(Path(self.done["critique"]["revisions"]))
        helpful = mix_rows(self.cfg.sl.helpful, "sft")
        kept = [{"prompt": r["prompt"], "completion": reply_to(r["prompt"], r["final"]), "origin": "AI revision",
                 "source": r["source"]}
                for r in revisions if r["final"].strip() and r.get("use", True)]
        # The starting policy's own answers to benign prompts (sl.policy_answers), kept as they are: SL-CAI learns
        # to refuse from the revisions, and these show it where refusing stops.
        asked = mix_rows(self.cfg.sl.policy_answers, "prompt")
        answers = self._policy_rollouts(self.cfg.model, [r["prompt"] for r in asked], self.cfg.critique.max_new_tokens,
                                        temperature=0.0, n=1, batch_size=self.cfg.feedback.batch_size) if asked else []
        own = [{"prompt": r["prompt"], "completion": reply_to(r["prompt"], text), "origin": "AI answer (the policy)",
                "source": r["source"]} for r, text in zip(asked, answers) if text.strip()]
        rows = (kept * self.cfg.sl.revision_repeats + own
                + [{**r, "origin": "human demonstration"} for r in helpful])
        random.Random(self.cfg.seed).shuffle(rows)
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / "data.jsonl"
        atomic_write_text(data, _jsonl(rows))
        model = self._train("sl", "sft", folder, self.cfg.model, str(data), self.cfg.sl.sft)
        return {"model": model, "data": str(data), "revisions": len(kept),
                "revision_repeats": self.cfg.sl.revision_repeats, "policy_answers": len(own),
                "helpful_demonstrations": len(helpful),
                "origin": f"revisions: AI (feedback model); policy answers: AI (the policy); demonstrations: {HUMAN}"}

    def stage_labels(self, folder: Path) -> dict:
        from alignkit.constitution.labels import rlaif_rows

        cfg = self.cfg.rl
        rng = random.Random(self.cfg.seed + 1)
        plain = mix_rows(cfg.prompts, "prompt")
        rows = plain + jailbreak_wrapped(plain, cfg.jailbreak_suite, rng, cfg.jailbreak_fraction)
        prompts = [r["prompt"] for r in rows]
        policy = self.done["sl"]["model"]
        texts = self._policy_rollouts(policy, prompts, cfg.max_new_tokens, cfg.temperature, n=2,
                                      batch_size=self.cfg.feedback.batch_size)
        pairs = [(texts[2 * i], texts[2 * i + 1]) for i in range(len(prompts))]
        # Two identical samples carry no preference; empty ones are not answers.
        keep = [i for i, (a, b) in enumerate(pairs) if a.strip() and b.strip() and a.strip() != b.strip()]
        feedback = self.feedback()
        judging = self.judging_constitution()  # the principles the audit allows
        out = rlaif_rows([prompts[i] for i in keep], [pairs[i] for i in keep], feedback.judge, judging,
                         rng, k=min(cfg.principles_per_label, len(judging.principles)), cot=cfg.cot,
                         feedback_model=feedback.name)
        for i, row in zip(keep, out):  # replies in the prompt's form, plus where the prompt came from
            row.update(chosen=reply_to(row["prompt"], row["chosen"]), rejected=reply_to(row["prompt"], row["rejected"]),
                       source=rows[i]["source"], policy=policy)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "labels.jsonl", _jsonl(out))
        contrast = self._contrast(policy, folder) if cfg.contrast is not None else {}
        confident = sum(abs(r["probability"] - 0.5) >= cfg.min_confidence for r in out)
        mean_confidence = sum(abs(r["probability"] - 0.5) for r in out) / max(len(out), 1)
        return {"labels": str(folder / "labels.jsonl"), "prompts": len(prompts), "pairs": len(out),
                "labelling_principles": [p.id for p in judging.principles],
                "dropped_identical_or_empty": len(prompts) - len(out), "principles_per_label": cfg.principles_per_label,
                "cot_clamp": cfg.cot, "mean_abs_label_minus_half": round(mean_confidence, 4),
                f"labels_at_least_{cfg.min_confidence}_from_half": confident, **contrast,
                "origin": f"prompts: {HUMAN}; responses: AI (the SL-CAI policy); labels: AI ({feedback.name})"
                          + ("; contrast pairs: the refusal detector on prompts people marked harmful or benign"
                             if contrast else "")}

    def _contrast(self, policy: str, folder: Path) -> dict:
        """rl.contrast: the SL-CAI policy's greedy answer and n samples on prompts whose right behaviour people
        decided; pairs where it does right against where it does wrong (`contrast_pairs`), in contrast.jsonl."""
        c = self.cfg.rl.contrast
        rows = ([(r, True) for r in mix_rows(c.refuse, "prompt")]
                + [(r, False) for r in mix_rows(c.answer, "prompt")])
        prompts = [r["prompt"] for r, _ in rows]
        batch = self.cfg.feedback.batch_size
        greedy = self._policy_rollouts(policy, prompts, c.max_new_tokens, 0.0, 1, batch)
        drawn = self._policy_rollouts(policy, prompts, c.max_new_tokens, c.temperature, c.samples, batch)
        pairs = contrast_pairs(prompts, [refuse for _, refuse in rows], greedy,
                               [drawn[i * c.samples:(i + 1) * c.samples] for i in range(len(prompts))],
                               tuple(c.sampled_failures))
        for pair in pairs:
            pair.update(chosen=reply_to(pair["prompt"], pair["chosen"]),
                        rejected=reply_to(pair["prompt"], pair["rejected"]),
                        source=rows[pair.pop("index")][0]["source"], policy=policy)
        atomic_write_text(folder / "contrast.jsonl", _jsonl(pairs))
        return {"contrast": str(folder / "contrast.jsonl"), "contrast_prompts": len(prompts),
                "contrast_pairs_refuse": sum(p["should_refuse"] for p in pairs),
                "contrast_pairs_answer": sum(not p["should_refuse"] for p in pairs),
                "contrast_greedy_wrong": sum(not p["greedy_was_right"] for p in pairs)}

    def _contrast_rows(self) -> list[dict]:
        path = self.done["labels"].get("contrast")
        return [] if path is None else [{**r, "origin": "contrast pair (refusal detector)"}
                                        for r in read_jsonl(Path(path))]

    def _ai_labels(self) -> tuple[list[dict], int]:
        """Phase 2's soft labels, plus (rl.phase1_pairs) phase 1's revision-vs-first-answer comparisons; and how many
        of them came from phase 1."""
        labels = read_jsonl(Path(self.done["labels"]["labels"]))
        if not self.cfg.rl.phase1_pairs:
            return labels, 0
        phase1 = [{"prompt": r["prompt"], "chosen": reply_to(r["prompt"], r["final"]),
                   "rejected": reply_to(r["prompt"], r["initial"]), "probability": r["revision_preferred"],
                   "principles": [r["steps"][-1]["principle"]], "source": r["source"], "policy": r["policy"],
                   "feedback_model": r["feedback_model"], "phase": 1}
                  for r in read_jsonl(Path(self.done["critique"]["revisions"]))
                  if r["final"].strip() and r["final"].strip() != r["initial"].strip()]
        return labels + phase1, len(phase1)

    def _helpful_preferences(self) -> list[dict]:
        return [{**r, "origin": "human preference"} for r in mix_rows(self.cfg.rl.helpful_preferences, "preference")]

    def stage_preference(self, folder: Path) -> dict | None:
        if self.cfg.rl.method != "ppo":
            return None
        ai, phase1 = self._ai_labels()
        labels = [{**r, "origin": "AI label"} for r in ai]
        helpful = self._helpful_preferences()
        contrast = self._contrast_rows()
        rows = labels + contrast + helpful
        random.Random(self.cfg.seed).shuffle(rows)
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / "data.jsonl"
        atomic_write_text(data, _jsonl(rows))
        model = self._train("preference", "reward", folder, self.done["sl"]["model"], str(data),
                            self.cfg.rl.preference)
        return {"model": model, "data": str(data), "ai_soft_labels": len(labels), "of_them_phase1": phase1,
                "contrast_pairs": len(contrast), "human_preferences": len(helpful),
                "origin": f"soft labels: AI (feedback model); preferences: {HUMAN}"}

    def stage_rl(self, folder: Path) -> dict:
        from alignkit.constitution.labels import hard_pairs

        cfg = self.cfg.rl
        policy = self.done["sl"]["model"]
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / "data.jsonl"
        if cfg.method == "ppo":
            labels = read_jsonl(Path(self.done["labels"]["labels"]))  # phase 2's prompts: the policy's own
            prompts = [{"prompt": r["prompt"], "source": r["source"]} for r in labels]
            atomic_write_text(data, _jsonl(prompts))
            judge = {"reward_model": self.done["preference"]["model"]}
            model = self._train("rl", "ppo", folder, policy, str(data), cfg.ppo, judge=judge)
            return {"model": model, "method": "ppo", "data": str(data), "prompts": len(prompts),
                    "judge": judge, "reference": policy}
        labels, _ = self._ai_labels()
        pairs = [{**r, "origin": "AI label"} for r in hard_pairs(labels, min_confidence=cfg.min_confidence)]
        helpful = self._helpful_preferences()
        contrast = self._contrast_rows()
        rows = pairs + contrast + helpful
        random.Random(self.cfg.seed).shuffle(rows)
        atomic_write_text(data, _jsonl(rows))
        model = self._train("rl", "dpo", folder, policy, str(data), cfg.dpo)
        return {"model": model, "method": "dpo", "data": str(data), "ai_pairs": len(pairs),
                "of_them_phase1": sum(r.get("phase") == 1 for r in pairs),
                "ai_pairs_dropped_as_unsure": len(labels) - len(pairs), "contrast_pairs": len(contrast),
                "human_preferences": len(helpful),
                "reference": policy, "origin": f"pairs: AI (feedback-model labels); preferences: {HUMAN}"}

    def stage_eval(self, folder: Path) -> dict | None:
        from alignkit.data.suites import load_suite
        from alignkit.eval.harness import EvalSettings, evaluate, save_eval
        from alignkit.judges.factory import judge_from_spec

        cfg = self.cfg.eval
        if cfg is None:
            return None
        models = {"base": self.cfg.model, "sl-cai": self.done["sl"]["model"], "rl-cai": self.done["rl"]["model"]}
        judge = judge_from_spec(cfg.judge) if cfg.judge is not None else None
        results, rows = evaluate(models, load_suite(cfg.suite, "heldout"), judge=judge,
                                 judge_name=None if cfg.judge is None else json.dumps(cfg.judge),
                                 settings=EvalSettings(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size),
                                 log=self.log)
        results["pipeline"] = self.pipeline_summary()
        save_eval(folder, results, rows, overwrite=True, report_dir=self.out)
        return {"results": str(folder / "results.json"), "report": str(self.out / "report.html"),
                "metrics": results["metrics"]}

    def pipeline_summary(self) -> dict:
        """What the report shows about the run: the audit, each stage's data with its origin, and timings."""
        return {"constitution": str(self.constitution.path), "principles": len(self.constitution.principles),
                "rl_method": self.cfg.rl.method, "stages": {k: v for k, v in self.done.items() if k != "eval"}}

    def _copy_final(self) -> Path | None:
        rl = self.done.get("rl", {}).get("model")
        if rl is None:
            return None
        final = self.out / "final"
        if not final.is_dir():
            with atomic_dir(final) as tmp:
                shutil.copytree(rl, tmp, dirs_exist_ok=True)
        return final


def run_cai(cfg: CAIConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    return Pipeline(cfg, log).run()


__all__ = ["Pipeline", "STAGES", "contrast_pairs", "jailbreak_wrapped", "mix_rows", "run_cai"]
