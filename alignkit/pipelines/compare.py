"""`alignkit compare`: several alignment recipes from the same starting model and the same built-in data, with the
same step budget per training stage, for several seeds; then one evaluation of every resulting model and a table.

Recipes (each a chain of training stages, declared by the methods' rows in `alignkit.methods`; a stage shared by two
recipes, e.g. the SFT before DPO and before KTO, is trained once per seed and counted in both recipes' time):

    sft        SFT on the demonstrations
    sft-ppo    SFT -> reward model on the preferences -> PPO against it (KL penalty to the SFT model)
    sft-dpo    SFT -> DPO on the preferences
    sft-simpo  SFT -> SimPO on the preferences (length-normalised margin, no reference model)
    orpo       ORPO on the preferences, from the starting model (no SFT stage: that is ORPO's point)
    sft-kto    SFT -> KTO on the preferences split into desirable / undesirable completions
    cai        Constitutional AI (`alignkit cai`, the demo's settings): SL-CAI then DPO on AI-labelled pairs
    hbat       HBAT: SFT and DPO blocks in turn with EWC (as many SFT and DPO steps as sft-dpo has)
    joint      SFT + DPO summed at every step (`steps` steps, each on a batch of each: sft-dpo's examples)

Matched budget: every training stage runs `steps` optimizer steps of `batch_size` examples. Each stage runs in its
own process, so its peak memory is its own; a recipe's time is the sum of its stages' wall-clock seconds (model
loading included), its peak memory the largest of theirs. Stages are resumable: a rerun skips finished ones, and a
rerun with more recipes or seeds trains only what is new (the evaluation is redone for the new set of models).
Under `accelerate launch` each stage's process is started by every process of the command, and the stage's processes
train it together (`docs/scaling.md`).

Output (`output_dir`): stages/<chain>/seed-<s>/ (each stage's run), eval/ (results.json, responses, report.html of
every model), comparison.json, comparison.md (the table: mean and seed-to-seed standard deviation of attack success
rate, over-refusal, helpfulness, KL from the start model, time and peak memory) and pareto.png.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field, create_model, model_validator

from alignkit.data.suites import load_suite
from alignkit.eval.harness import EvalSettings, evaluate, save_eval
from alignkit.eval.metrics import HEADLINE, METRIC
from alignkit.eval.plots import COLORS, harm_help_axes, pareto_front, save_png
from alignkit.eval.results import EvalResults
from alignkit.methods import METHODS, MethodSpec
from alignkit.pipelines.cai_config import CAIStage
from alignkit.pipelines.compare_stage import TrainedStage, die_with_parent
from alignkit.pipelines.demo import demo_config
from alignkit.train.config import Strict, WrittenOnly, stage_settings
from alignkit.train.config_loading import merge_config
from alignkit.utils import processes
from alignkit.utils import sampling_defaults as defaults
from alignkit.utils.io import atomic_write_json, atomic_write_text
from alignkit.utils.run_folder import RunFolder
from alignkit.utils.stages import Finished, Stage, StageRunner

# The recipes: those the methods' rows declare, and Constitutional AI (a pipeline of its own).
RECIPES: dict[str, tuple[str, ...]] = {**{name: chain for spec in METHODS.values() for name, chain in spec.recipes.items()},
                                       "cai": ("cai",)}
# A stage of a recipe is a method, or a preset of one (HBAT's `joint`): stage -> (method, keys it fixes).
STAGES: dict[str, tuple[MethodSpec, dict]] = {
    **{name: (spec, {}) for name, spec in METHODS.items()},
    **{name: (spec, keys) for spec in METHODS.values() for name, keys in spec.presets.items()},
}
# Metrics compared (the headline ones the suite parts it answers give), with the direction that is better.
COMPARED = {key: METRIC[key].better for key in HEADLINE
            if METRIC[key].part in ("redteam", "jailbreak", "borderline", "verifiable", "helpful")}


# Each stage's own keys, typed by its method (a preset's fixed keys are not among them).
CompareStages = create_model("CompareStages", __base__=WrittenOnly, **{
    name: (stage_settings(spec.config, spec.owned + tuple(keys)) | None, None) for name, (spec, keys) in STAGES.items()})


EVAL_PARTS = ("redteam", "jailbreak", "borderline", "verifiable", "anthropomorphism", "bias")


class CompareEvalConfig(Strict):
    suite: str = Field(default="default", description="evaluation suite (its held-out split is used)")
    parts: list[Literal[EVAL_PARTS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["redteam", "borderline", "verifiable"],
        description="suite parts answered: red-team gives ASR, borderline over-refusal, verifiable helpfulness; "
                    "KL from the start model comes from the borderline and verifiable answers")
    max_new_tokens: int = Field(default=defaults.MAX_NEW_TOKENS, ge=1, description="longest answer to a suite prompt")
    batch_size: int = Field(default=defaults.BATCH_ROWS, ge=1, description="rows answered at once")


class CompareConfig(Strict):
    """`alignkit compare`: recipes from one starting model on the same data and step budget, over several seeds."""

    model: str = Field(default="smollm2-135m", description="the starting model of every recipe")
    output_dir: str = Field(default="runs/compare", description="the comparison's folder: a run per recipe and "
                                                                "seed, comparison.md, pareto.png")
    recipes: list[Literal[tuple(RECIPES)]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(RECIPES), min_length=1, description="the recipes to run side by side")
    seeds: list[int] = Field(default_factory=lambda: [0, 1], min_length=1, description="each recipe runs once per seed")
    steps: int = Field(default=20, ge=1, description="optimizer steps of every training stage: the matched budget")
    batch_size: int = Field(default=8, ge=1, description="examples per micro-batch of every training stage (each "
                                                         "process's, under a launcher)")
    max_length: int = Field(default=384, ge=8, description="token budget per sequence of every training stage")
    sft_data: str = Field(default="builtin:sft", description="demonstrations (SFT, HBAT, joint)")
    preference_data: str = Field(default="builtin:preference",
                                 description="preferences (reward model, DPO, ORPO, KTO, HBAT, joint; PPO's prompts)")
    stages: CompareStages = Field(
        default_factory=lambda: CompareStages(), description="trainer keys per stage, over the methods' own defaults: "
                                                             + ", ".join(STAGES))
    cai: CAIStage = Field(default_factory=CAIStage, description="keys of `alignkit cai` over the CAI recipe's (the "
                                                                "demo's settings); model, seeds and eval are compare's")
    eval: CompareEvalConfig = Field(default_factory=CompareEvalConfig)

    @model_validator(mode="after")
    def _check(self):
        for name, values in (("recipes", self.recipes), ("seeds", self.seeds)):
            if len(set(values)) != len(values):
                raise ValueError(f"{name}: each may appear once, got {values}")
        return self


class CompareError(RuntimeError):
    """The comparison cannot run as configured."""


class Comparison:
    def __init__(self, cfg: CompareConfig, log: Callable[[str], None] = print):
        # Under `accelerate launch` every process runs the comparison: each stage's process is started by every one
        # of them, and those processes train it as one data-parallel run (`run_stage`); the evaluation's answers
        # are split over the processes; the main process writes and speaks.
        processes.join()
        self.cfg, self.log = cfg, log if processes.is_main() else (lambda message: None)
        self.out = Path(cfg.output_dir)
        self.runner = StageRunner(self.out, cfg, lambda message: None, "compare")

    # ---------------------------------------------------------------- stages
    def stage_dir(self, chain: tuple[str, ...], seed: int) -> Path:
        return self.out / "stages" / "+".join(chain) / f"seed-{seed}"

    def stage_spec(self, chain: tuple[str, ...], seed: int, start: str) -> dict:
        """What the last stage of `chain` trains (`kind`: its method, `config`: that method's config as a dict),
        starting from `start` (the previous stage's model, or the starting model)."""
        cfg = self.cfg
        stage, folder = chain[-1], self.stage_dir(chain, seed)
        if stage == "cai":
            overrides = merge_config({"seed": seed, "eval": None, "sl": {"sft": {"max_steps": cfg.steps}},
                                      "rl": {"dpo": {"max_steps": cfg.steps}}}, cfg.cai.written())
            cai = demo_config(str(folder / "run"), start).model_dump(mode="json")
            return {"kind": "cai", "config": merge_config(cai, overrides)}
        spec, preset = STAGES[stage]
        # The matched budget: `steps` optimizer steps of `batch_size` examples (the online loop: `batch_size`
        # prompts per iteration, one minibatch). No intermediate checkpoints: stages are short, a rerun repeats an
        # unfinished one, and a comparison of many stages would otherwise fill the disk with optimizer states.
        common = {"model": start, "output_dir": str(folder / "run"), "seed": seed, "max_steps": cfg.steps,
                  "progress": sys.stderr.isatty(), "save_every": 0, "batch_size": cfg.batch_size,
                  "data": {"train": cfg.sft_data if spec.data == "demonstrations" else cfg.preference_data}}
        if spec.online:  # prompts: the preferences' prompts
            common.update(prompts_per_step=cfg.batch_size, minibatch_size=cfg.batch_size)
            if len(chain) > 1 and STAGES[chain[-2]][0].scorer:  # judged by the scorer trained just before
                common["judge"] = {"reward_model": str(self.stage_dir(chain[:-1], seed) / "run" / "final")}
        else:
            common.update(max_length=cfg.max_length, group_by_length=True)
        if spec.compare is not None:  # the method's own part of the budget (HBAT: `steps` of each objective)
            common.update(spec.compare(cfg))
        own = getattr(cfg.stages, stage)
        config = merge_config({**common, **preset}, own.written() if own is not None else {})
        return {"kind": spec.name, "config": config}

    def run_stage(self, chain: tuple[str, ...], seed: int, start: str) -> Finished[TrainedStage]:
        """The last stage of `chain`, trained in its own process unless it finished earlier (the stage runner)."""
        folder = self.stage_dir(chain, seed)

        def prepare(folder: Path, spec: dict) -> None:
            if (folder / "run").exists():  # an unfinished attempt: start the stage over
                shutil.rmtree(folder / "run")
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(folder / "stage.json", spec)

        def train(folder: Path) -> TrainedStage:
            spec = self.stage_spec(chain, seed, start)
            processes.on_main(prepare, folder, spec)
            self.log(f"[compare] {'+'.join(chain)} seed {seed}: training {spec['kind']}")
            env = {**os.environ}
            if processes.world() > 1:
                # The stage's processes form a group of their own, on a port of their own, with a store of their
                # own (torchrun's agent store, which the launcher's variables point to, serves this command's group).
                env = {k: v for k, v in env.items() if not k.startswith("TORCHELASTIC_")}
                env["MASTER_PORT"] = str(processes.from_main(processes.free_port))
            proc = subprocess.run([sys.executable, "-m", "alignkit.pipelines.compare_stage", str(folder / "stage.json")],
                                  env=env, capture_output=True, text=True, preexec_fn=die_with_parent)
            if proc.returncode != 0:
                log = folder / ("error.log" if processes.is_main() else f"error-{processes.rank()}.log")
                atomic_write_text(log, proc.stdout + proc.stderr)
                raise CompareError(f"stage {'+'.join(chain)} seed {seed} failed (exit {proc.returncode}); its output "
                                   f"is in {log}:\n{proc.stderr[-2000:]}")
            processes.barrier()  # the stage's main process writes result.json once all of them are done
            return TrainedStage(**json.loads((folder / "result.json").read_text(encoding="utf-8")))

        return self.runner.run(Stage(f"{'+'.join(chain)}/seed-{seed}", folder, TrainedStage, train))

    def run_recipe(self, recipe: str, seed: int) -> dict:
        model, seconds, peak, stages = self.cfg.model, 0.0, 0.0, []
        chain = RECIPES[recipe]
        failed = None
        for i in range(len(chain)):
            finished = self.run_stage(chain[: i + 1], seed, model)
            record = finished.record
            model = record.model
            seconds += finished.seconds
            peak = max(peak, record.peak_rss_gb)
            stages.append({"stage": chain[i], "seconds": finished.seconds, "peak_rss_gb": record.peak_rss_gb})
            if record.failed:
                failed = f"{chain[i]}: {record.failed}"
                self.log(f"[compare] {recipe} seed {seed} stopped at its own gate ({failed})")
                break
        run = {"recipe": recipe, "seed": seed, "model": model, "seconds": round(seconds, 1),
               "peak_rss_gb": round(peak, 2), "stages": stages}
        return {**run, "failed": failed} if failed else run

    # ---------------------------------------------------------------- evaluation and table
    def evaluate(self, runs: list[dict]) -> EvalResults:
        folder = self.out / "eval"
        # Runs stopped by their own gate have no model to evaluate.
        models = {"start": self.cfg.model, **{f"{r['recipe']}/seed-{r['seed']}": r["model"] for r in runs
                                              if not r.get("failed")}}
        if (folder / "results.json").is_file():
            results = EvalResults.read(folder / "results.json")
            if set(results.metrics) == set(models):
                return results
        suite = load_suite(self.cfg.eval.suite, "heldout")
        parts = set(self.cfg.eval.parts)
        suite = dataclasses.replace(
            suite, redteam=suite.redteam if "redteam" in parts else [],
            jailbreaks=suite.jailbreaks if "jailbreak" in parts else [],
            borderline=suite.borderline if "borderline" in parts else [],
            verifiable=suite.verifiable if "verifiable" in parts else [],
            anthropomorphism=suite.anthropomorphism if "anthropomorphism" in parts else [],
            bias=suite.bias if "bias" in parts else [])
        settings = EvalSettings(max_new_tokens=self.cfg.eval.max_new_tokens, batch_size=self.cfg.eval.batch_size)
        results, rows = evaluate(models, suite, settings=settings, log=self.log, shard=True)
        processes.on_main(lambda: save_eval(folder, results, rows, overwrite=True))
        return results

    def run(self) -> dict:
        # A rerun with the same settings resumes, and may add or drop recipes and seeds (each stage's run depends on
        # neither).
        with RunFolder(self.out, "comparison", CompareError) as folder:
            folder.claim(self.cfg.model_dump(mode="json"), may_change=("recipes", "seeds"))
            return self._run()

    def _run(self) -> dict:
        runs = [self.run_recipe(recipe, seed) for recipe in self.cfg.recipes for seed in self.cfg.seeds]
        results = self.evaluate(runs)
        table = comparison_table(runs, results.metrics, self.cfg.seeds)
        summary = {"config": self.cfg.model_dump(mode="json"), "runs": runs, "table": table,
                   "eval": str(self.out / "eval" / "results.json")}
        processes.on_main(atomic_write_json, self.out / "comparison.json", summary)
        processes.on_main(atomic_write_text, self.out / "comparison.md", comparison_markdown(table, self.cfg))
        processes.on_main(_write_plot, table, results.metrics.get("start", {}), self.out)
        self.log(f"[compare] table: {self.out / 'comparison.md'}")
        return summary


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def comparison_table(runs: list[dict], metrics: dict[str, dict], seeds: list[int]) -> dict[str, dict]:
    """recipe -> {metric: {mean, std}} over seeds (std: the sample standard deviation, our measure of stability),
    plus seconds and peak memory (mean and std over seeds too)."""
    table: dict[str, dict] = {}
    for recipe in dict.fromkeys(r["recipe"] for r in runs):
        mine = [r for r in runs if r["recipe"] == recipe]
        row: dict[str, Any] = {"seeds": [r["seed"] for r in mine],
                               "failed": {r["seed"]: r["failed"] for r in mine if r.get("failed")}}
        for key in COMPARED:
            mean, std = _mean_std([metrics.get(f"{recipe}/seed-{r['seed']}", {}).get(key) for r in mine])
            row[key] = {"mean": mean, "std": std}
        for key in ("seconds", "peak_rss_gb"):
            mean, std = _mean_std([r[key] for r in mine])
            row[key] = {"mean": mean, "std": std}
        table[recipe] = row
    return table


def _cell(entry: dict, digits: int = 3) -> str:
    if entry["mean"] is None:
        return "—"
    text = f"{entry['mean']:.{digits}f}"
    return text if entry["std"] is None else f"{text} ± {entry['std']:.{digits}f}"


def comparison_markdown(table: dict[str, dict], cfg: CompareConfig) -> str:
    keys = [k for k in COMPARED if any(row[k]["mean"] is not None for row in table.values())]
    head = ["recipe"] + [f"{k} ({COMPARED[k]} is better)" for k in keys] + ["time s", "peak RSS GB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for recipe, row in table.items():
        cells = [recipe] + [_cell(row[k]) for k in keys] + [_cell(row["seconds"], 0), _cell(row["peak_rss_gb"], 2)]
        lines.append("| " + " | ".join(cells) + " |")
    failures = [f"- {recipe}, seed {seed}: {why}" for recipe, row in table.items()
                for seed, why in row["failed"].items()]
    notes = ("\n\nRuns stopped by their own gate (not evaluated; their recipe's metrics are over the other seeds, its "
             "time and memory over all):\n" + "\n".join(failures)) if failures else ""
    return (f"Model {cfg.model}; {cfg.steps} optimizer steps x batch {cfg.batch_size} per training stage; seeds "
            f"{cfg.seeds}; mean ± standard deviation over seeds; evaluation suite {cfg.eval.suite} (held-out; parts "
            f"{', '.join(cfg.eval.parts)}), greedy, {cfg.eval.max_new_tokens} new tokens.\n\n" + "\n".join(lines)
            + notes + "\n")


def _write_plot(table: dict[str, dict], start: dict, out: Path) -> None:
    """Helpfulness against harmlessness, one point per recipe (mean over seeds, bars: one standard deviation)."""
    from matplotlib.figure import Figure


    points = {r: (1 - row["asr"]["mean"], row["helpful_accuracy"]["mean"]) for r, row in table.items()
              if row["asr"]["mean"] is not None and row["helpful_accuracy"]["mean"] is not None}
    if not points:
        return
    front = set(pareto_front(points))
    fig = Figure(figsize=(7, 5.4), layout="constrained")
    ax = fig.add_subplot()
    for i, (recipe, (x, y)) in enumerate(points.items()):
        row, color = table[recipe], COLORS[i % len(COLORS)]
        ax.errorbar([x], [y], xerr=row["asr"]["std"] or 0, yerr=row["helpful_accuracy"]["std"] or 0, fmt="o",
                    color=color, markerfacecolor=color if recipe in front else "white", markersize=8, capsize=3)
        ax.annotate(recipe, (x, y), xytext=(6, 5), textcoords="offset points", fontsize=9)
    if start.get("asr") is not None and start.get("helpful_accuracy") is not None:
        ax.scatter([1 - start["asr"]], [start["helpful_accuracy"]], marker="x", color="black", s=60, zorder=3)
        ax.annotate("start", (1 - start["asr"], start["helpful_accuracy"]), xytext=(6, -12),
                    textcoords="offset points", fontsize=9)
    harm_help_axes(ax, "Recipes: helpfulness vs harmlessness (filled: Pareto front)")
    save_png(fig, out / "pareto.png")


def run_compare(cfg: CompareConfig, log: Callable[[str], None] = print) -> dict:
    return Comparison(cfg, log).run()
