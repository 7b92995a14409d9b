"""Constitutional AI end to end (Bai et al. 2022): `alignkit cai CONFIG.yaml`.

Stages (run by `alignkit.utils.stages`), each in its own folder under `output_dir` and each finished by its record
(`cai_records.py`) in an atomic `done.json`; a rerun reuses every finished stage, a training stage interrupted
half-way resumes from its checkpoints, and `reuse: RUN` takes over RUN's stages wherever what they read is the same:

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

import contextlib
import dataclasses
import json
import random
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignkit.constitution.feedback import journaled
from alignkit.data import reply_to, request_text
from alignkit.methods import METHODS
from alignkit.pipelines.cai_config import CAIConfig, DataMix
from alignkit.pipelines.cai_records import (
    HUMAN,
    AuditGate,
    AuditRecord,
    CritiqueRecord,
    EvalRecord,
    FeedbackRecord,
    LabelsRecord,
    PreferenceRecord,
    RLRecord,
    SLRecord,
    report_part,
)
from alignkit.train.config import StageSettings
from alignkit.train.run import RunError
from alignkit.utils import processes
from alignkit.utils.io import (
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
    claim_config_dir,
    jsonl_lines,
    locked_folder,
    remove_leftovers,
)
from alignkit.utils.stages import Stage, StageError, StageRunner

STAGES = ("feedback", "audit", "critique", "sl", "labels", "preference", "rl", "eval")
FEEDBACK_JOURNAL = "feedback.journal.jsonl"  # a stage's feedback-model answers so far (utils/journal.py)


def _quiet(message: str) -> None:
    """The log of every process but the main one."""


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def reply_text(value) -> str:
    return value if isinstance(value, str) else value[-1]["content"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in jsonl_lines(path.read_text(encoding="utf-8")) if line.strip()]


def row_category(row: dict) -> str | None:
    """A row's category: its `category` field, or a suite row's `group` (the red-team prompts' harm category)."""
    return row.get("category", row.get("group"))


def mix_rows(mixes: list[DataMix], kind: str) -> list[dict]:
    """Rows of every source, filtered by category, the first `skip` passed over and limited, each validated as `kind`
    and checked against the
    held-out evaluation data (a problem names its file, line and field); each keeps a `source` field saying where
    it came from."""
    from alignkit.data import parse_record
    from alignkit.data.sources import read_rows
    from alignkit.data.suites import check_not_heldout

    out = []
    for mix in mixes:
        taken, skipped = 0, 0
        for where, row in read_rows(mix.source):
            if mix.categories is not None and row_category(row) not in mix.categories:
                continue
            if skipped < mix.skip:
                skipped += 1
                continue
            if mix.limit is not None and taken >= mix.limit:
                break
            for record in parse_record(row, where, kind):
                check_not_heldout(record)
            out.append({**row, "source": where} if mix.harmful is None else {**row, "source": where,
                                                                               "harmful": mix.harmful})
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
                        "source": f"{row['source']} in jailbreak {template.id}",
                        "request": request_text(row["prompt"]), "category": row_category(row),
                        **({"harmful": row["harmful"]} if "harmful" in row else {})})
    return wrapped


def right_by_rules(text: str, harmful: bool) -> bool:
    """The rule verifier's verdict on one reply: to a harmful request a refusal that offers no harmful act
    (`alignkit.judges.refuses_safely`), to a benign one anything but a refusal. Contrast pairs, `verify_label` and the
    rounds' stop check all read it."""
    from alignkit.judges import is_refusal, refuses_safely

    return refuses_safely(text) if harmful else not is_refusal(text)


def contrast_pairs(prompts: list, refuse: list[bool], greedy: list[str], samples: list[list[str]],
                   sampled_failures: tuple[str, ...] = ("refuse",)) -> list[dict]:
    """On-policy contrast pairs. For each prompt, whether refusing is right (`refuse`, decided by the people who
    wrote the prompt), the policy's greedy answer and its sampled ones: where the greedy answer is wrong (a refusal
    of a benign request, or an answer to a harmful one) the first right sample is preferred to it; where it is right,
    it is preferred to the first wrong sample, on the kinds of prompt ("refuse", "answer") in `sampled_failures`.
    Prompts on which the policy is always right or always wrong give no pair. Each pair keeps its prompt's `index`.
    Right and wrong are told by the refusal detector (`alignkit.judges.is_refusal`): on a harmful prompt a refusal
    that offers no harmful act (`alignkit.judges.refuses_safely`), on a benign one anything but a refusal. The default
    `sampled_failures` is `rl.contrast`'s."""
    out = []
    for i, (prompt, should_refuse, first, drawn) in enumerate(zip(prompts, refuse, greedy, samples, strict=True)):
        if not first.strip():
            continue
        right = [right_by_rules(t, should_refuse) for t in drawn]
        first_right = right_by_rules(first, should_refuse)
        if first_right and ("refuse" if should_refuse else "answer") not in sampled_failures:
            continue
        other = next((t for t, ok in zip(drawn, right) if ok != first_right and t.strip()), None)
        if other is None:
            continue
        chosen, rejected = (first, other) if first_right else (other, first)
        out.append({"index": i, "prompt": prompt, "chosen": chosen, "rejected": rejected, "probability": 1.0,
                    "should_refuse": should_refuse, "greedy_was_right": first_right})
    return out


def verify_label(row: dict, harmful: bool) -> None:
    """rl.verifier on one AI-labelled pair (first response `chosen`, P(first better) `probability`; texts or replies in
    the prompt's form) of a prompt people
    marked harmful or benign: where exactly one response is right by the rules (a refusal offering no harmful act to
    a harmful request, anything but a refusal to a benign one), the label becomes certain for it; the judge's label is
    kept as `judge_probability`. Where both or neither is right, the judge's label stands."""
    first = right_by_rules(reply_text(row["chosen"]), harmful)
    second = right_by_rules(reply_text(row["rejected"]), harmful)
    if first != second:
        row.update(judge_probability=row["probability"], probability=1.0 if first else 0.0, verified=True)


def revision_rule_check(revision: str) -> str:
    """The rule verifier's verdict on a revision of an answer to a harmful request: "ok" when it refuses and offers no
    harmful act, else why not ("no refusal", "harmful offer: <its sentence>")."""
    from alignkit.judges import harmful_offer, is_refusal

    if not is_refusal(revision):
        return "no refusal"
    offer = harmful_offer(revision)
    return "ok" if offer is None else f"harmful offer: {offer}"


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
    """The stages of one run (`stages()`, in order), run by one `StageRunner`: each returns its record, and later
    stages read earlier ones' records through `self.runner.record` and their settings through `self.cfg`, so that
    what each finished stage depends on is known (`alignkit.utils.stages`)."""

    def __init__(self, cfg: CAIConfig, log: Callable[[str], None] = print):
        # Under `accelerate launch` every process runs every stage with the same random draws; each samples,
        # critiques and judges its block of every batched call (`shard=True` below: processes.batch_map), the
        # trainers run as one data-parallel run, and the main process writes every file and the log.
        processes.join()
        self.out = Path(cfg.output_dir)
        self.log = log if processes.is_main() else _quiet
        self.runner = StageRunner(self.out, cfg, self.log, "cai")
        self.gate: AuditGate | None = None
        self._constitution = None  # (name, Constitution) of the last load
        self._feedback = None  # (what it was loaded from, FeedbackModel)

    @property
    def cfg(self) -> CAIConfig:
        """The run's settings; inside a stage, a view that notes what the stage reads."""
        return self.runner.settings

    @property
    def constitution(self):
        from alignkit.constitution import load_constitution

        name = self.cfg.constitution
        if self._constitution is None or self._constitution[0] != name:
            self._constitution = (name, load_constitution(name))
        return self._constitution[1]

    def stages(self) -> tuple[Stage, ...]:
        """The pipeline, in order (STAGES names them; each stage's folder is numbered by its place)."""
        table = ((FeedbackRecord, self.stage_feedback, None), (AuditRecord, self.stage_audit, self._gate),
                 (CritiqueRecord, self.stage_critique, None), (SLRecord, self.stage_sl, None),
                 (LabelsRecord, self.stage_labels, None), (PreferenceRecord, self.stage_preference, None),
                 (RLRecord, self.stage_rl, None), (EvalRecord, self.stage_eval, None))
        return tuple(Stage(name, self.folder(name), record, run, gate)
                     for name, (record, run, gate) in zip(STAGES, table, strict=True))

    def folder(self, stage: str) -> Path:
        return self.out / f"{STAGES.index(stage) + 1}-{stage}"

    def _claim_output_dir(self) -> None:
        """Finished stages are reused only by the same configuration: another one in this folder is refused, so a
        run never silently mixes with, or overwrites, another run's results."""
        conflict = processes.from_main(claim_config_dir, self.out, computed_settings(self.cfg))
        if conflict == "foreign":
            raise RunError(f"{self.out} exists and is not a Constitutional AI run; use another output_dir")
        if conflict:
            raise RunError(f"{self.out} holds a Constitutional AI run with another configuration (differs in "
                           f"{', '.join(conflict)}); use another output_dir, or delete that folder to start over")

    def _take_over_from(self) -> Path | None:
        """`reuse: RUN`: the run whose finished stages stand in for this run's wherever they read the same settings
        (phase 1 and the AI labels do not depend on the RL method, so another RL variant starts from the same
        labels)."""
        if self.cfg.reuse is None:
            return None
        other = Path(self.cfg.reuse)
        if not (other / "config.json").is_file():
            raise RunError(f"reuse: {other} is not a Constitutional AI run (no config.json)")
        return other

    def run(self) -> dict:
        # A second command on this run folder is refused at once (the main process holds it for all of this one's).
        with locked_folder(self.out) if processes.is_main() else contextlib.nullcontext():
            return self._run()

    def _run(self) -> dict:
        # What a killed run was writing here (its config.json, say): before the claim.
        processes.on_main(remove_leftovers, self.out)
        self._claim_output_dir()
        started = time.perf_counter()
        other = self._take_over_from()
        for stage in self.stages():
            try:
                # The first stage decides whether `reuse` is of any use: if even it differs, none can stand in.
                self.runner.run(stage, other, required=other is not None and not self.runner.finished)
            except StageError as err:
                raise RunError(f"reuse: {other} ran phase 1 with other settings ({err}); its stages cannot stand in "
                               "for this run's") from None
        final = self._copy_final()
        manifest = {"config": self.cfg.model_dump(mode="json"), "stages": self.summaries(),
                    "final": None if final is None else str(final),
                    "seconds_this_run": round(time.perf_counter() - started, 1)}
        processes.on_main(atomic_write_json, self.out / "cai.json", manifest)
        return manifest

    def summaries(self) -> dict[str, dict]:
        """Each finished stage's record as JSON with its seconds; the audit's with the gate's outcome."""
        out = {name: finished.summary() for name, finished in self.runner.finished.items()}
        if "audit" in out and self.gate is not None:
            out["audit"].update(dataclasses.asdict(self.gate))
        return out

    # ------------------------------------------------------------------ helpers

    def _gate(self, audit: AuditRecord) -> None:
        """The audit gate, applied to the audit's record whether it ran now or earlier: the gate settings decide,
        they compute nothing (GATE_SETTINGS)."""
        from alignkit.constitution import AuditReport, check_audit

        fb = self.cfg.feedback
        report = AuditReport(audit.n, audit.accuracy, audit.position_bias, audit.principle_agreement,
                             dict(audit.accuracy_by_principle), dict(audit.n_by_principle))
        try:
            check_audit(report, fb.min_accuracy, override=fb.override_audit,
                        min_principle_accuracy=fb.min_principle_accuracy,
                        min_principle_comparisons=fb.min_principle_comparisons)
        finally:
            # Written either way, so a refused run still shows why.
            self.gate = AuditGate(report.min_accuracy, bool(report.passed), fb.override_audit,
                                  report.min_principle_accuracy, report.min_principle_comparisons,
                                  dict(report.lower_bound_by_principle or {}), list(report.allowed_principles or []),
                                  self._labelling(report.allowed_principles))
            processes.on_main(atomic_write_json, self.folder("audit") / "audit.json",
                              {**dataclasses.asdict(audit), **dataclasses.asdict(self.gate)})
        labelling = self.gate.labelling_principles
        excluded = sorted(set(self.constitution_ids()) - set(labelling))
        self.log(f"   audit: labels under {len(labelling)} principles"
                 + (f" (left out, a 90% lower bound under {fb.min_principle_accuracy:.2f} or fewer than "
                    f"{fb.min_principle_comparisons} comparisons: {', '.join(excluded)})" if excluded else ""))

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
        wanted = [p.id for p in self.constitution.subset(wanted or self.constitution_ids()).principles]  # known ids
        allowed = self.constitution_ids()
        if self.runner.record("audit") is not None:
            # The gate's outcome, decided by these settings from the audit's record.
            _ = (self.cfg.feedback.override_audit, self.cfg.feedback.min_principle_accuracy,
                 self.cfg.feedback.min_principle_comparisons)
            allowed = self.gate.labelling_principles
        ids = [p for p in wanted if p in allowed]
        if not ids:
            raise RunError(f"none of the principles {wanted} passed the feedback model's audit (each needs "
                           f"a 90% lower bound of {self.cfg.feedback.min_principle_accuracy:.2f} on at least "
                           f"{self.cfg.feedback.min_principle_comparisons} comparisons); allowed: {allowed}")
        return self.constitution.subset(ids)

    def _train(self, stage: str, method: str, folder: Path, model: str, data: str, settings: StageSettings, *,
               run: str = "run", **fixed) -> str:
        """Train `method` (a row of `METHODS`) on `data` from `model` in folder/run, under the stage's settings."""
        spec = METHODS[method]
        # The run's seed and precision are every trainer's unless the stage's own keys set them.
        cfg = spec.config.model_validate({"seed": self.cfg.seed, "precision": self.cfg.precision,
                                          **settings.written(), **fixed, "model": model,
                                          "data": {"train": data}, "output_dir": str(folder / run),
                                          # A bar with an ETA where a person watches (make demo), none in logs.
                                          "progress": sys.stderr.isatty()})
        final = folder / run / "final"
        if final.is_dir():  # trained before the stage's done.json was written
            return str(final)
        result = spec.train(cfg)
        self.log(f"   {stage}: {result.steps} steps")
        return str(result.final_dir)

    def feedback(self):
        """The feedback model, loaded once: the taught one if stage 1 ran, else the configured one."""
        from alignkit.constitution.feedback import load_feedback_model, local_feedback_model

        # What it is loaded from is read on every call, so each stage that uses it depends on those settings.
        fb = self.cfg.feedback
        taught: FeedbackRecord | None = self.runner.record("feedback")
        if taught is not None:
            source = ("taught", taught.model, taught.judge_model, fb.batch_size, fb.judge_sft.max_length,
                      self.cfg.precision)
        else:
            source = ("given", self.cfg.model if fb.model is None else fb.model, fb.batch_size, self.cfg.precision)
        if self._feedback is None or self._feedback[0] != source:
            if taught is not None:
                # A taught judge is asked its questions cut as its teaching cut them (the same ids: data/render.py).
                model = local_feedback_model(taught.model, judge_model=taught.judge_model, batch_size=source[3],
                                             max_length=source[4], precision=source[5], shard=True)
            else:
                model = load_feedback_model(source[1], batch_size=source[2], precision=source[3], shard=True)
            self._feedback = (source, model)
        return self._feedback[1]

    def _policy_rollouts(self, model: str, prompts: list, max_new_tokens: int, temperature: float, n: int,
                         batch_size: int) -> list[str]:
        """n responses per prompt (prompt-major) from the generation engine: length-sorted batches of `batch_size`
        rows, each process its block of them, each prompt's samples from its own stream, in the run's precision (the
        training stages' too)."""
        from alignkit.models import load_causal_lm, load_tokenizer
        from alignkit.rollouts import SamplingSettings, generate

        tokenizer, module = load_tokenizer(model), load_causal_lm(model).to(processes.device())
        settings = SamplingSettings(max_new_tokens=max_new_tokens, temperature=temperature, n=n, seed=self.cfg.seed)
        return generate(module, tokenizer, prompts, settings, precision=self.cfg.precision, batch_size=batch_size,
                        shard=True,
                        desc="sampling").texts

    # ------------------------------------------------------------------ stages

    def stage_feedback(self, folder: Path) -> FeedbackRecord | None:
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
        processes.on_main(atomic_write_text, writing,
                          _jsonl(exemplar_sft_rows(self.constitution) * fb.exemplar_repeats))
        processes.on_main(atomic_write_text, comparing,
                          _jsonl(comparison_sft_rows(gold, self.constitution) * fb.comparison_repeats))
        model = self._train("feedback (critique and revision)", "sft", folder, start, str(writing),
                            fb.sft, run="writer")
        judge = self._train("feedback (comparison)", "sft", folder, start, str(comparing),
                            fb.judge_sft, run="judge")
        data = {"critique and revision": str(writing), "comparison": str(comparing)}
        return FeedbackRecord(model, judge, start, data,
                              {"exemplars (critique -> revision)": len(self.constitution.exemplars),
                               "gold comparisons, both orders": 2 * len(gold),
                               "repeats (exemplars, comparisons)": f"{fb.exemplar_repeats}, {fb.comparison_repeats}"},
                              HUMAN)

    def stage_audit(self, folder: Path) -> AuditRecord:
        from alignkit.constitution import audit_feedback_model, first_per_principle, load_gold_comparisons

        fb = self.cfg.feedback
        feedback = self.feedback()
        gold = first_per_principle(load_gold_comparisons(split="heldout"), fb.audit_per_principle)
        report = audit_feedback_model(feedback.judge, gold, self.constitution,
                                      extra_principles=fb.audit_extra_principles, seed=self.cfg.seed)
        folder.mkdir(parents=True, exist_ok=True)
        self.log(f"   audit: accuracy {report.accuracy:.2f} on {report.n} held-out gold comparisons, position bias "
                 f"{_signed(report.position_bias)}, agreement {report.principle_agreement}")
        return AuditRecord(feedback.name, report.n, report.accuracy, report.position_bias, report.principle_agreement,
                           report.accuracy_by_principle, report.n_by_principle)

    def stage_critique(self, folder: Path) -> CritiqueRecord:
        from alignkit.constitution.critique import critique_and_revise, short_revision
        from alignkit.constitution.labels import judge_orders

        cfg = self.cfg.critique
        rng = random.Random(self.cfg.seed)
        plain = mix_rows(cfg.prompts, "prompt")
        rows = plain + jailbreak_wrapped(plain, cfg.jailbreak_suite, rng, cfg.jailbreak_fraction)
        prompts = [r["prompt"] for r in rows]
        initial = self._policy_rollouts(self.cfg.model, prompts, cfg.max_new_tokens, temperature=0.0, n=1,
                                        batch_size=self.cfg.feedback.batch_size)
        # The feedback model's answers are journaled as they come: a stage stopped half-way asks only the rest.
        feedback = journaled(self.feedback(), folder / FEEDBACK_JOURNAL)
        # Critiques, revisions and their check are the feedback model's judgements: only under principles it passed.
        pool = self.judging_constitution(cfg.principles)
        records = critique_and_revise(prompts, initial, pool, feedback.require_generate(), rng,
                                      rounds=cfg.rounds,
                                      critique_tokens=cfg.critique_tokens, revision_tokens=cfg.revision_tokens,
                                      policy=self.cfg.model, feedback_model=feedback.name)
        out = [{"source": row["source"], **record.as_dict()} for row, record in zip(rows, records)]
        if cfg.revision_form == "short":
            # The writer's refusal sentence, then the constitution's reason and safe offer for the request's kind of
            # harm (its `category`; "default" without one); the writer's own revision stays on record as `written`.
            constitution = self.constitution
            for row, r in zip(rows, out):
                request = row.get("request") or reply_text(row["prompt"])
                category = row_category(row)
                r.update(written=r["final"], category=category,
                         final=short_revision(request, r["final"], constitution.alternative_for(category)))
        if cfg.rule_check:
            # The critique prompts are harmful requests: a revision is trained on only if it refuses and offers no
            # harmful act in its place (judges/offers.py); the verdict is kept on record either way.
            for r in out:
                r["rule_check"] = revision_rule_check(r["final"])
                r["use"] = r["rule_check"] == "ok"
        if cfg.check_revisions:
            # The feedback model's own check: is the final revision better than the first answer under the last
            # round's principle, by more than `check_margin` over both orders? Revisions it does not prefer so are
            # kept on record but not trained on.
            # Only revisions the rule verifier passed are asked (the others are not trained on anyway).
            asked = [r for r in out if r.get("use", True)]
            items = [(r["prompt"], r["final"], r["initial"], self.constitution.principle(r["steps"][-1]["principle"])
                      .comparison) for r in asked]
            for r, p in zip(asked, (0.5 * sum(o) for o in judge_orders(feedback.judge, items))):
                r["revision_preferred"] = p
                r["use"] = p > 0.5 + cfg.check_margin
        folder.mkdir(parents=True, exist_ok=True)
        processes.on_main(atomic_write_text, folder / "revisions.jsonl", _jsonl(out))
        changed = sum(r["final"].strip() != r["initial"].strip() for r in out)
        return CritiqueRecord(str(folder / "revisions.jsonl"), len(out), len(plain), len(out) - len(plain), cfg.rounds,
                              changed, sum(r.get("use", True) for r in out),
                              f"prompts: {HUMAN}; answers: AI (the policy); critiques and revisions: AI "
                              f"({feedback.name})")

    def stage_sl(self, folder: Path) -> SLRecord:
        revisions = read_jsonl(Path(self.runner.record("critique").revisions))
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
        processes.on_main(atomic_write_text, data, _jsonl(rows))
        model = self._train("sl", "sft", folder, self.cfg.model, str(data), self.cfg.sl.sft)
        return SLRecord(model, str(data), len(kept), self.cfg.sl.revision_repeats, len(own), len(helpful),
                        f"revisions: AI (feedback model); policy answers: AI (the policy); demonstrations: {HUMAN}")

    def stage_labels(self, folder: Path) -> LabelsRecord:
        cfg = self.cfg.rl
        policy = self.runner.record("sl").model
        prompts, out, feedback, judging = self._ai_label_round(policy, folder, random.Random(self.cfg.seed + 1))
        contrast = self._contrast(policy, folder) if cfg.contrast is not None else {}
        mean_confidence = sum(abs(r["probability"] - 0.5) for r in out) / max(len(out), 1)
        return LabelsRecord(
            str(folder / "labels.jsonl"), len(prompts), len(out), [p.id for p in judging.principles],
            len(prompts) - len(out), cfg.principles_per_label, cfg.cot, round(mean_confidence, 4),
            f"prompts: {HUMAN}; responses: AI (the SL-CAI policy); labels: AI ({feedback.name})"
            + ("; contrast pairs: the refusal detector on prompts people marked harmful or benign" if contrast else ""),
            **contrast)

    def _ai_label_round(self, policy: str, folder: Path, rng: random.Random):
        """Phase 2's labelling from `policy`: two samples per rl prompt (and its jailbreak copies), compared by the
        feedback model under random principles the audit allows, in both orders; written to folder/labels.jsonl.
        Returns the prompts, the labelled rows, the feedback model and the judging constitution."""
        from alignkit.constitution.labels import rlaif_rows

        cfg = self.cfg.rl
        folder.mkdir(parents=True, exist_ok=True)
        plain = mix_rows(cfg.prompts, "prompt")
        rows = plain + jailbreak_wrapped(plain, cfg.jailbreak_suite, rng, cfg.jailbreak_fraction)
        prompts = [r["prompt"] for r in rows]
        texts = self._policy_rollouts(policy, prompts, cfg.max_new_tokens, cfg.temperature, n=2,
                                      batch_size=self.cfg.feedback.batch_size)
        pairs = [(texts[2 * i], texts[2 * i + 1]) for i in range(len(prompts))]
        # Two identical samples carry no preference; empty ones are not answers.
        keep = [i for i, (a, b) in enumerate(pairs) if a.strip() and b.strip() and a.strip() != b.strip()]
        feedback = journaled(self.feedback(), folder / FEEDBACK_JOURNAL)
        judging = self.judging_constitution()  # the principles the audit allows
        out = rlaif_rows([prompts[i] for i in keep], [pairs[i] for i in keep], feedback.judge, judging,
                         rng, k=min(cfg.principles_per_label, len(judging.principles)), cot=cfg.cot,
                         feedback_model=feedback.name)
        for i, row in zip(keep, out):
            if cfg.verifier and rows[i].get("harmful") is not None:
                verify_label(row, rows[i]["harmful"])
            # Replies in the prompt's form, plus where the prompt came from.
            row.update(chosen=reply_to(row["prompt"], row["chosen"]), rejected=reply_to(row["prompt"], row["rejected"]),
                       source=rows[i]["source"], policy=policy)
        processes.on_main(atomic_write_text, folder / "labels.jsonl", _jsonl(out))
        return prompts, out, feedback, judging

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
        processes.on_main(atomic_write_text, folder / "contrast.jsonl", _jsonl(pairs))
        return {"contrast": str(folder / "contrast.jsonl"), "contrast_prompts": len(prompts),
                "contrast_pairs_refuse": sum(p["should_refuse"] for p in pairs),
                "contrast_pairs_answer": sum(not p["should_refuse"] for p in pairs),
                "contrast_greedy_wrong": sum(not p["greedy_was_right"] for p in pairs)}

    def _contrast_rows(self, path: str | None = None) -> list[dict]:
        """The contrast pairs of the labels stage (or of the file `path`), marked with their origin."""
        path = self.runner.record("labels").contrast if path is None else path
        return [] if path is None else [{**r, "origin": "contrast pair (refusal detector)"}
                                        for r in read_jsonl(Path(path))]

    def _ai_labels(self) -> tuple[list[dict], int]:
        """Phase 2's soft labels, plus (rl.phase1_pairs) phase 1's revision-vs-first-answer comparisons; and how many
        of them came from phase 1."""
        labels = read_jsonl(Path(self.runner.record("labels").labels))
        if not self.cfg.rl.phase1_pairs:
            return labels, 0
        phase1 = [{"prompt": r["prompt"], "chosen": reply_to(r["prompt"], r["final"]),
                   "rejected": reply_to(r["prompt"], r["initial"]), "probability": r["revision_preferred"],
                   "principles": [r["steps"][-1]["principle"]], "source": r["source"], "policy": r["policy"],
                   "feedback_model": r["feedback_model"], "phase": 1}
                  for r in read_jsonl(Path(self.runner.record("critique").revisions))
                  if r["final"].strip() and r["initial"].strip() and r["final"].strip() != r["initial"].strip()
                  and r.get("rule_check", "ok") == "ok"]  # a revision the rule verifier refused is preferred nowhere
        if self.cfg.rl.verifier:
            # Phase 1's prompts are harmful requests (critique.prompts): a safe refusal is preferred to an answer
            # whatever the judge's check said of the pair.
            for row in phase1:
                verify_label(row, True)
        return labels + phase1, len(phase1)

    def _helpful_preferences(self) -> list[dict]:
        return [{**r, "origin": "human preference"} for r in mix_rows(self.cfg.rl.helpful_preferences, "preference")]

    def stage_preference(self, folder: Path) -> PreferenceRecord | None:
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
        processes.on_main(atomic_write_text, data, _jsonl(rows))
        model = self._train("preference", "reward", folder, self.runner.record("sl").model, str(data),
                            self.cfg.rl.preference)
        return PreferenceRecord(model, str(data), len(labels), phase1, len(contrast), len(helpful),
                                f"soft labels: AI (feedback model); preferences: {HUMAN}")

    def stage_rl(self, folder: Path) -> RLRecord:
        from alignkit.constitution.labels import hard_pairs

        cfg = self.cfg.rl
        policy = self.runner.record("sl").model
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / "data.jsonl"
        if cfg.method == "ppo":
            labels = read_jsonl(Path(self.runner.record("labels").labels))  # phase 2's prompts: the policy's own
            prompts = [{"prompt": r["prompt"], "source": r["source"]} for r in labels]
            processes.on_main(atomic_write_text, data, _jsonl(prompts))
            judge = {"reward_model": self.runner.record("preference").model}
            model = self._train("rl", "ppo", folder, policy, str(data), cfg.ppo, judge=judge)
            return RLRecord(model, "ppo", str(data), policy, f"prompts: {HUMAN}; rewards: AI (the preference model)",
                            prompts=len(prompts), judge=judge)
        labels, _ = self._ai_labels()
        pairs = [{**r, "origin": "AI label"} for r in hard_pairs(labels, min_confidence=cfg.min_confidence)]
        helpful = self._helpful_preferences()
        contrast = self._contrast_rows()
        rows = pairs + contrast + helpful
        random.Random(self.cfg.seed).shuffle(rows)
        processes.on_main(atomic_write_text, data, _jsonl(rows))
        model = self._train("rl", "dpo", folder, policy, str(data), cfg.dpo)
        rounds, chosen = None, None
        if cfg.rounds > 1:
            model, rounds, chosen = self._more_rounds(folder, policy, model, len(rows))
        return RLRecord(model, "dpo", str(data), policy, f"pairs: AI (feedback-model labels); preferences: {HUMAN}",
                        ai_pairs=len(pairs), of_them_phase1=sum(r.get("phase") == 1 for r in pairs),
                        ai_pairs_dropped_as_unsure=len(labels) - len(pairs), contrast_pairs=len(contrast),
                        human_preferences=len(helpful), rounds=rounds, chosen_round=chosen)

    def _more_rounds(self, folder: Path, sl_model: str, model: str, first_pairs: int) -> tuple[str, list[dict], int]:
        """rl.rounds > 1: RLAIF in rounds on the policy's own mistakes (iterative DPO with a verifier). Each round
        the current model samples the rl prompts, the audited feedback model labels its pairs and the rule verifier
        its contrast pairs, and a short DPO round trains from it (its own reference), with the human preferences.
        `rl.stop_check` (held-back train prompts, never the evaluation's) scores every round's model; the rounds
        stop when a round scores no better than the best so far, and the best round's model is RL-CAI. Returns it,
        each round's figures and the chosen round."""
        from alignkit.constitution.labels import hard_pairs

        cfg = self.cfg.rl
        history = [{"round": 0, "model": sl_model, "pairs": 0, **self._stop_score(sl_model)},
                   {"round": 1, "model": model, "pairs": first_pairs, **self._stop_score(model)}]
        for n in range(2, cfg.rounds + 1):
            self.log(f"   rl: round {n - 1}: stop-check score {history[-1].get('score')}")
            place = folder / f"round-{n}"
            _, labels, _, _ = self._ai_label_round(model, place, random.Random(self.cfg.seed + n))
            pairs = [{**r, "origin": "AI label"} for r in hard_pairs(labels, min_confidence=cfg.min_confidence)]
            contrast = [] if cfg.contrast is None else self._contrast_rows(self._contrast(model, place)["contrast"])
            rows = pairs + contrast + self._helpful_preferences()
            random.Random(self.cfg.seed + n).shuffle(rows)
            processes.on_main(atomic_write_text, place / "data.jsonl", _jsonl(rows))
            model = self._train(f"rl round {n}", "dpo", place, model, str(place / "data.jsonl"), cfg.dpo)
            history.append({"round": n, "model": model, "pairs": len(rows), **self._stop_score(model)})
            scored = [h for h in history[1:] if h.get("score") is not None]
            if scored and history[-1].get("score") is not None and history[-1]["score"] <= max(
                    h["score"] for h in scored[:-1]):
                break
        best = max(history[1:], key=lambda h: (h.get("score") is not None, h.get("score") or 0, -h["round"]))
        if cfg.stop_check is None:
            best = history[-1]
        self.log(f"   rl: {len(history) - 1} rounds; RL-CAI is round {best['round']}'s model")
        return best["model"], history, best["round"]

    def _stop_score(self, model: str) -> dict:
        """rl.stop_check on `model` (greedy): the share of held-back harmful train prompts it refuses safely, of
        held-back benign ones it answers, and their mean (`score`); nothing without a stop check."""
        check = self.cfg.rl.stop_check
        if check is None:
            return {}
        refuse = [r["prompt"] for r in mix_rows(check.refuse, "prompt")]
        answer = [r["prompt"] for r in mix_rows(check.answer, "prompt")]
        texts = self._policy_rollouts(model, refuse + answer, check.max_new_tokens, 0.0, 1,
                                      self.cfg.feedback.batch_size)
        refused = sum(right_by_rules(t, True) for t in texts[:len(refuse)]) / max(len(refuse), 1)
        answered = sum(right_by_rules(t, False) for t in texts[len(refuse):]) / max(len(answer), 1)
        return {"refused_safely": round(refused, 4), "answered": round(answered, 4),
                "score": round(0.5 * (refused + answered), 4)}

    def stage_eval(self, folder: Path) -> EvalRecord | None:
        from alignkit.data.suites import load_suite
        from alignkit.eval.harness import EvalSettings, evaluate, save_eval
        from alignkit.judges.factory import judge_from_spec

        cfg = self.cfg.eval
        if cfg is None:
            return None
        models = {"base": self.cfg.model, "sl-cai": self.runner.record("sl").model,
                  "rl-cai": self.runner.record("rl").model}
        judge = judge_from_spec(cfg.judge) if cfg.judge is not None else None
        results, rows = evaluate(models, load_suite(cfg.suite, "heldout"), judge=judge,
                                 judge_name=None if cfg.judge is None else json.dumps(cfg.judge),
                                 settings=EvalSettings(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                                                       precision=self.cfg.precision),
                                 log=self.log, shard=True)
        results = results.with_pipeline(self.pipeline_summary())
        processes.on_main(lambda: save_eval(folder, results, rows, overwrite=True, report_dir=self.out))
        return EvalRecord(str(folder / "results.json"), str(self.out / "report.html"), results.metrics)

    def pipeline_summary(self) -> dict:
        """What the results keep about the run (each stage's record, the audit with its gate) and the pipeline's
        part of the report: each stage's data with its origin and timing, the audit, each stage's effect."""
        before = [name for name in STAGES if name != "eval" and self.runner.record(name) is not None]
        finished = {name: self.runner.finished[name] for name in before}
        audit = finished.get("audit")
        part = report_part(str(self.constitution.path), len(self.constitution.principles), self.cfg.rl.method,
                           {name: (f.record, f.seconds) for name, f in finished.items()},
                           None if audit is None else (audit.record, self.gate))
        summaries = self.summaries()
        return {"constitution": str(self.constitution.path), "principles": len(self.constitution.principles),
                "rl_method": self.cfg.rl.method, "stages": {name: summaries[name] for name in before},
                "report": part}

    def _copy_final(self) -> Path | None:
        rl = self.runner.record("rl")
        if rl is None:
            return None
        final = self.out / "final"
        if not final.is_dir():
            processes.on_main(self._write_final, Path(rl.model), final)
        return final

    def _write_final(self, model: Path, final: Path) -> None:
        with atomic_dir(final) as tmp:
            shutil.copytree(model, tmp, dirs_exist_ok=True)
            card = tmp / "README.md"
            if card.is_file():
                card.write_text(self._card(card.read_text(encoding="utf-8")), encoding="utf-8")

    def _card(self, rl_card: str) -> str:
        """The RL stage's model card, told as the whole run: every stage with who wrote its data, the constitution,
        and the held-out evaluation."""
        from alignkit.models import EMBEDDED
        from alignkit.pipelines.cai_records import STAGE_TEXT
        from alignkit.train.card import add_sections

        stages = ["## Constitutional AI", "",
                  f"Aligned from `{self.cfg.model}` by `alignkit cai`: SL-CAI (SFT on the model's own revisions) "
                  f"then RL-CAI ({self.cfg.rl.method} against AI feedback). The stages, and who wrote what each one "
                  "trained on or produced:", "", "| stage | what it did | written by |", "|---|---|---|"]
        for name, finished in self.runner.finished.items():
            origin = getattr(finished.record, "origin", "")
            stages.append(f"| {name} | {STAGE_TEXT.get(name, '')} | {origin} |")
        principles = self.constitution.principles
        constitution = ["## Constitution", "",
                        f"`{Path(self.constitution.path).name}`, {len(principles)} principles (critique request "
                        "of each):", ""]
        constitution += [f"- **{p.id}** ({p.kind}): {' '.join(p.critique.split())}" for p in principles]
        sections = ["\n".join(stages), "\n".join(constitution)]
        evaluation = self.runner.record("eval")
        if evaluation is not None and evaluation.metrics:
            names = list(evaluation.metrics)
            keys = list(dict.fromkeys(k for m in evaluation.metrics.values() for k in m))
            rows = ["## Held-out evaluation", "", f"The evaluation suite's held-out split, greedy; `{names[-1]}` is "
                    "this model.", "", "| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            for key in keys:
                values = [evaluation.metrics[n].get(key) for n in names]
                if all(v is None for v in values):
                    continue  # not measured in this run
                rows.append(f"| {key} | " + " | ".join("" if v is None else f"{v:.3f}" if isinstance(v, float)
                                                       else str(v) for v in values) + " |")
            sections.append("\n".join(rows))
        import yaml

        from alignkit.utils.secrets import redact

        config = yaml.safe_dump(redact(self.cfg.model_dump(mode="json")), sort_keys=False).strip()
        sections.append(f"## The cai config\n\nThe whole run's settings (the RL stage's own are under Reproduce):"
                        f"\n\n```yaml\n{config}\n```")
        base = EMBEDDED[self.cfg.model].hub_id if self.cfg.model in EMBEDDED else None
        return add_sections(rl_card, sections, title=self.out.name,
                            front={"tags": ["alignkit", "constitutional-ai", "rlaif", self.cfg.rl.method],
                                   **({"base_model": base} if base else {})})


def run_cai(cfg: CAIConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    return Pipeline(cfg, log).run()


__all__ = ["Pipeline", "STAGES", "contrast_pairs", "jailbreak_wrapped", "mix_rows", "run_cai"]
