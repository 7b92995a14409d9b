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

import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignkit.constitution import (
    AuditReport,
    audit_feedback_model,
    check_audit,
    first_per_principle,
    load_constitution,
    load_gold_comparisons,
)
from alignkit.constitution.critique import comparison_sft_rows, exemplar_sft_rows
from alignkit.constitution.feedback import load_feedback_model, local_feedback_model
from alignkit.data.suites import load_suite
from alignkit.eval.harness import EvalSettings, evaluate, save_eval
from alignkit.judges.factory import judge_from_spec
from alignkit.methods import METHODS
from alignkit.models import load_causal_lm, load_tokenizer
from alignkit.pipelines.cai_card import cai_card
from alignkit.pipelines.cai_config import CAIConfig
from alignkit.pipelines.cai_data import jsonl_text
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
from alignkit.pipelines.cai_rlaif import RLAIFStages
from alignkit.pipelines.cai_sl import SLStages
from alignkit.rollouts import SamplingSettings, generate
from alignkit.train.config import StageSettings
from alignkit.train.run import RunError
from alignkit.utils import processes
from alignkit.utils.io import atomic_dir, atomic_write_json, atomic_write_text
from alignkit.utils.run_folder import RunFolder
from alignkit.utils.stages import Stage, StageError, StageRunner

STAGES = ("feedback", "audit", "critique", "sl", "labels", "preference", "rl", "eval")


def _quiet(message: str) -> None:
    """The log of every process but the main one."""


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


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


class Pipeline(SLStages, RLAIFStages):
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
        # Finished stages are reused only by the same configuration (GATE_SETTINGS aside).
        with RunFolder(self.out, "Constitutional AI run", RunError) as folder:
            folder.claim(computed_settings(self.cfg))
            self.log(f"alignkit cai: {self.cfg.model} -> {self.out}/ (a numbered folder per stage, cai.json, "
                     f"report.html; the model: {self.out / 'final'}/)")
            return self._run()

    def _run(self) -> dict:
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
        tokenizer, module = load_tokenizer(model), load_causal_lm(model).to(processes.device())
        settings = SamplingSettings(max_new_tokens=max_new_tokens, temperature=temperature, n=n, seed=self.cfg.seed)
        return generate(module, tokenizer, prompts, settings, precision=self.cfg.precision, batch_size=batch_size,
                        shard=True,
                        desc="sampling").texts

    # ------------------------------------------------------------------ stages

    def stage_feedback(self, folder: Path) -> FeedbackRecord | None:
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
                          jsonl_text(exemplar_sft_rows(self.constitution) * fb.exemplar_repeats))
        processes.on_main(atomic_write_text, comparing,
                          jsonl_text(comparison_sft_rows(gold, self.constitution) * fb.comparison_repeats))
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

    def stage_eval(self, folder: Path) -> EvalRecord | None:
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
                card.write_text(cai_card(self, card.read_text(encoding="utf-8")), encoding="utf-8")

def run_cai(cfg: CAIConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    return Pipeline(cfg, log).run()


__all__ = ["Pipeline", "STAGES", "run_cai"]
