"""Iterative DPO with a verifier or judge (Xu et al. 2023, "Some things are more CRINGE than others"; Yuan et al.
2024; Xiong et al. 2024): for R rounds, sample n responses per prompt from the current policy, score them, pair the
best with the worst (prompts whose samples all score the same are skipped), train DPO on those pairs, and continue
from the result.

The reference is the starting model in every round (`reference: fixed`) or the round's own starting policy
(`reference: refresh`). Every round keeps its files in `round-NN/`:

    samples.jsonl   prompt, reference, the n responses and their scores
    pairs.jsonl     the (chosen, rejected) pairs used for DPO, with both scores
    dpo/            the DPO run (its config, metrics, final/ model)
    done.json       the round's figures (RoundRecord); written last by the stage runner, it marks the round complete

A stopped run continues from the first incomplete round, reusing a round's samples if they were written.

Under `accelerate launch --num_processes N` each process samples and scores its block of a round's generation
batches (the batches and seeds of one process, so the samples are the same), the rows are gathered, the main process
writes the round's files, and every process trains the round's DPO run together (DDP).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from alignkit.data import reply_to
from alignkit.eval.judged import judged_generation
from alignkit.judges import judge_from_spec
from alignkit.methods.dpo import DPOConfig, train_dpo
from alignkit.methods.spec import MethodSpec
from alignkit.models import load_causal_lm, load_tokenizer
from alignkit.rollouts import SamplingSettings, generate
from alignkit.train.card import model_card
from alignkit.train.config import Sampling, TrainConfig
from alignkit.train.online import load_prompts
from alignkit.train.pairs import DPOKeys
from alignkit.train.run import Run, RunError, TrainResult, configure_threads
from alignkit.utils import processes
from alignkit.utils.io import atomic_dir, atomic_write_json, atomic_write_text, jsonl_lines, plain_modes
from alignkit.utils.memory import peak_rss_gb
from alignkit.utils.seeds import derived_seed
from alignkit.utils.stages import Stage, StageRunner


class IterativeDPOConfig(TrainConfig, DPOKeys, Sampling):
    """`alignkit iterative-dpo`: rounds of sample -> judge -> (best, worst) pairs -> DPO. `data.train` / `data.eval`
    hold prompts (kind `prompt`), as for the online methods. Every key of `DPOConfig` applies to each round's DPO run
    (its `epochs` are passes over the round's pairs); the sampling keys and those below describe the rounds."""

    rounds: int = Field(default=3, ge=1, description="rounds of sample -> judge -> pairs -> DPO")
    prompts_per_round: int = Field(default=64, ge=1, description="prompts sampled in each round")
    samples_per_prompt: int = Field(default=4, ge=2, description="responses sampled per prompt to pick best and worst from")
    judge: str | dict = Field(default="final_answer", description="judge spec that scores the samples")
    reference: Literal["fixed", "refresh"] = Field(
        default="fixed", description="fixed: the starting model (or ref_model) in every round; refresh: each round's start"
    )
    eval_max_new_tokens: int | None = Field(default=None, ge=1,
                                            description="longest response when evaluating (default: max_new_tokens)")
    generation_batch_size: int = Field(default=32, ge=1, description="sequences generated at once")
    epochs: float = Field(default=2.0, gt=0, description="DPO epochs over each round's pairs")
    lr: float = DPOConfig.model_fields["lr"].default


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


@dataclass(frozen=True)
class RoundRecord:
    """One round's figures: written last (the round folder's done.json), it marks the round complete."""

    round: int
    start_model: str
    sample_score: float
    pairs: int
    prompts_without_spread: int
    generated_tokens: int
    sample_seconds: float
    model: str  # the round's policy: its DPO run's final model, or the start where too few pairs were found
    dpo_seconds: float | None
    dpo_steps: int | None
    dpo_train: dict | None
    eval: dict
    round_seconds: float


def best_worst_pairs(samples: list[dict]) -> tuple[list[dict], int]:
    """One (best, worst) pair per prompt from its scored samples; prompts without spread are skipped.

    Empty responses are left out of the choice.

    `samples`: [{"prompt", "reference", "responses": [...], "scores": [...]}]. Among equal scores the first sample
    wins, so the choice is deterministic. Returns (pairs, number of prompts skipped).
    """
    pairs, skipped = [], 0
    for row in samples:
        scores = row["scores"]
        # An empty response cannot be a DPO completion (there is no token to train), so it takes no part.
        usable = [i for i, text in enumerate(row["responses"]) if text.strip()]
        if len(usable) < 2:
            skipped += 1
            continue
        best = max(usable, key=lambda i: (scores[i], -i))
        worst = min(usable, key=lambda i: (scores[i], i))
        if scores[best] == scores[worst] or row["responses"][best] == row["responses"][worst]:
            skipped += 1
            continue
        # Replies in the prompt's form, so DPO trains on the prompt ids the samples were drawn from.
        prompt = row["prompt"]
        pairs.append({"prompt": prompt, "chosen": reply_to(prompt, row["responses"][best]),
                      "rejected": reply_to(prompt, row["responses"][worst]),
                      "chosen_score": scores[best], "rejected_score": scores[worst]})
    return pairs, skipped


class IterativeDPO:
    def __init__(self, cfg: IterativeDPOConfig):
        configure_threads()
        processes.join()
        self.cfg = cfg
        # The rounds and the evaluation before them are its unfinished work: resumed, refused or replaced as a
        # training run's checkpoints are (`RunFolder`).
        self.run = Run(cfg, "iterative-dpo", work=("round-*", "initial_eval.json"),
                       writes="config.yaml, initial_eval.json, round-NN/ (samples, pairs, its DPO run), summary.json")
        self.out = self.run.output_dir
        self._loaded = None  # (path, model, tokenizer) of the last model used
        try:
            self.judge = judge_from_spec(cfg.judge)
            self.train_prompts = load_prompts(cfg.data.train, cfg.data.limit, cfg.data.skip_invalid)
            self.eval_prompts = (load_prompts(cfg.data.eval, cfg.data.eval_limit, cfg.data.skip_invalid, None)
                                 if cfg.data.eval else [])
            if len(self.train_prompts) < cfg.prompts_per_round:
                raise RunError(f"{cfg.data.train}: {len(self.train_prompts)} prompts, fewer than prompts_per_round="
                               f"{cfg.prompts_per_round}")
        except BaseException:
            self.run.close()  # a run that stops before it begins leaves the folder as it found it
            raise

    def round_dir(self, r: int) -> Path:
        return self.out / f"round-{r:02d}"

    def prompts_for(self, r: int) -> list:
        """Round r's prompts: consecutive slices of one seeded permutation per pass over the training prompts."""
        size, n = self.cfg.prompts_per_round, len(self.train_prompts)
        per_pass = n // size
        epoch, k = divmod(r - 1, per_pass)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(derived_seed(self.cfg.seed, epoch)))
        return [self.train_prompts[i] for i in order[k * size : (k + 1) * size].tolist()]

    def load(self, model_path: str):
        """The model at `model_path` and its tokenizer, kept while the next use is the same model: a round's model is
        evaluated at the end of the round and sampled from at the start of the next one."""
        if self._loaded is None or self._loaded[0] != model_path:
            self._loaded = (model_path, load_causal_lm(model_path).to(self.run.device), load_tokenizer(model_path))
        return self._loaded[1], self._loaded[2]

    def evaluate(self, model_path: str) -> dict:
        if not self.eval_prompts:
            return {}
        model, tokenizer = self.load(model_path)
        greedy = SamplingSettings(max_new_tokens=self.cfg.eval_max_new_tokens or self.cfg.max_new_tokens,
                                  temperature=0.0)
        result = judged_generation(model, tokenizer, self.eval_prompts, self.judge, settings=greedy,
                                   batch_size=self.cfg.generation_batch_size, precision=self.run.precision,
                                   shard=True)
        return result.metrics

    def sample_round(self, r: int, model_path: str) -> tuple[list[dict], int]:
        cfg = self.cfg
        records = self.prompts_for(r)
        model, tokenizer = self.load(model_path)
        n = cfg.samples_per_prompt
        # Every process decodes its block of the batches and gets all the samples (each prompt from its own stream);
        # each then scores its block of the prompts.
        out = generate(model, tokenizer, [rec.prompt for rec in records],
                       cfg.sampling_settings(n=n, seed=derived_seed(cfg.seed, r)), precision=self.run.precision,
                       batch_size=cfg.generation_batch_size, shard=True, desc="sampling")
        generated = sum(int(rollout.response_mask.sum()) for rollout in out.rollouts)
        mine = list(processes.my_share(range(len(records))))
        texts = [out.texts[i * n + j] for i in mine for j in range(n)]
        scores = self.judge.score([records[i].prompt for i in mine for _ in range(n)], texts,
                                  [records[i].reference for i in mine for _ in range(n)])
        rows = [{"prompt": records[i].prompt, "reference": records[i].reference,
                 "responses": texts[k * n : (k + 1) * n], "scores": scores[k * n : (k + 1) * n]}
                for k, i in enumerate(mine)]
        return processes.gathered(rows), generated

    def dpo_config(self, r: int, model_path: str, pairs_file: Path, base: str) -> DPOConfig:
        cfg = self.cfg
        # The round's DPO run takes every key DPO has; the rest describe the rounds.
        values = {k: v for k, v in cfg.model_dump().items() if k in DPOConfig.model_fields}
        values.update(
            model=model_path,
            data={"train": str(pairs_file)},
            output_dir=str(self.round_dir(r) / "dpo"),
            ref_model=(cfg.ref_model or base) if cfg.reference == "fixed" else None,
            save_merged=True,  # each round continues from a complete model
            overwrite=False,
            seed=cfg.seed + r,
        )
        return DPOConfig.model_validate(values)

    def run_round(self, r: int, current: str, base: str) -> RoundRecord:
        """Round r from the policy `current`: sample and score, pair, DPO, evaluate."""
        cfg = self.cfg
        rdir = self.round_dir(r)
        rdir.mkdir(parents=True, exist_ok=True)
        t_round = time.perf_counter()
        # 1. Sample and score (reused when a stopped run left them behind).
        samples_file = rdir / "samples.jsonl"
        if samples_file.is_file():
            samples = [json.loads(line) for line in jsonl_lines(samples_file.read_text(encoding="utf-8")) if line.strip()]
            generated = json.loads((rdir / "samples.meta.json").read_text())["generated_tokens"]
        else:
            samples, generated = self.sample_round(r, current)
            # The samples file marks the step done, so it is written last (a kill between the two resamples).
            def write_samples() -> None:
                atomic_write_json(rdir / "samples.meta.json", {"generated_tokens": generated})
                atomic_write_text(samples_file, _jsonl(samples))

            processes.on_main(write_samples)
        t_sampled = time.perf_counter()
        # 2. Pairs.
        pairs, skipped = best_worst_pairs(samples)
        pairs_file = rdir / "pairs.jsonl"
        processes.on_main(atomic_write_text, pairs_file, _jsonl(pairs))
        sample_scores = [s for row in samples for s in row["scores"]]
        # 3. DPO on the pairs (resumable on its own through its checkpoints).
        model, dpo_seconds, dpo_steps, dpo_train = current, 0.0, 0, None
        if len(pairs) < cfg.batch_size * cfg.grad_accum * processes.world():
            self.log(f"round {r}: only {len(pairs)} pairs, too few to train; model unchanged")
        elif (rdir / "dpo" / "final").is_dir():  # trained before a stop that came ahead of the round's record
            model, dpo_seconds, dpo_steps = str(rdir / "dpo" / "final"), None, None
        else:
            self._loaded = None  # free the sampling model while DPO trains its own copy
            result = train_dpo(self.dpo_config(r, current, pairs_file, base))
            model, dpo_seconds, dpo_steps = str(result.final_dir), round(result.seconds, 2), result.steps
            dpo_train = result.train_metrics
        # 4. Held-out evaluation of the round's model.
        record = RoundRecord(r, current, sum(sample_scores) / len(sample_scores), len(pairs), skipped, generated,
                             round(t_sampled - t_round, 2), model, dpo_seconds, dpo_steps, dpo_train,
                             self.evaluate(model), round(time.perf_counter() - t_round, 2))
        self.log(f"round {r}: {len(pairs)} pairs ({skipped} prompts without spread), sample score "
                 f"{record.sample_score:.3f}, eval {record.eval}")
        return record

    @staticmethod
    def log(message: str) -> None:
        if processes.is_main():
            print(f"[iterative-dpo] {message}", flush=True)

    def train(self) -> TrainResult:
        try:
            return self._train()
        finally:
            self.run.close()

    def _train(self) -> TrainResult:
        cfg = self.cfg
        self.run.begin()
        t0 = time.perf_counter()
        base = cfg.model
        history_path = self.out / "initial_eval.json"
        if history_path.is_file():
            initial = json.loads(history_path.read_text())
        else:
            initial = self.evaluate(base)
            processes.on_main(atomic_write_json, history_path, initial)
            self.log(f"before training: {initial}")
        current, rounds = base, []
        runner = StageRunner(self.out, cfg, self.log, "round")
        for r in range(1, cfg.rounds + 1):
            finished = runner.run(Stage(f"{r:02d}", self.round_dir(r), RoundRecord,
                                        lambda folder, r=r, start=current: self.run_round(r, start, base)))
            rounds.append(finished.record)
            current = finished.record.model
        generated_total = sum(record.generated_tokens for record in rounds)
        # The last round's model, copied whole so that final/ stands alone.
        seconds = time.perf_counter() - t0
        final_eval = rounds[-1].eval if rounds else initial
        card = model_card("iterative-dpo", cfg, steps=sum(r.dpo_steps or 0 for r in rounds), precision=self.run.precision,
                          seconds=seconds, train_metrics={}, eval_metrics=final_eval,
                          adapter=False,  # every round saves its model merged
                          generated=f"{cfg.rounds} rounds of responses sampled from the policy, scored by the judge "
                                    f"`{json.dumps(cfg.judge) if isinstance(cfg.judge, dict) else cfg.judge}`, "
                                    "best/worst of each prompt as DPO pairs")
        report = {
            "method": "iterative-dpo",
            "rounds": [dataclasses.asdict(record) for record in rounds],
            "eval_before": initial,
            "eval": final_eval,
            "generated_tokens": generated_total,
            "train_seconds": round(seconds, 2),
            "peak_rss_gb": round(peak_rss_gb(), 3),
            "precision": self.run.precision,
            "processes": processes.world(),
        }
        self.run.folder.final_set_aside()

        def write_final() -> None:
            with atomic_dir(self.run.final_dir, replace=True) as tmp:  # only a replaced run's final/ is there
                if Path(current).is_dir():  # a round's model (or a start given as a folder)
                    shutil.copytree(current, tmp, dirs_exist_ok=True)
                else:  # no round trained: the start, an alias, a .gguf or a hub id, saved as a folder
                    load_causal_lm(current).save_pretrained(tmp, safe_serialization=True)
                    load_tokenizer(current).save_pretrained(tmp)
                    plain_modes(tmp)
                (tmp / "README.md").write_text(card, encoding="utf-8")

        processes.on_main(write_final)
        self.run.folder.finish(report)
        return TrainResult(output_dir=self.out, final_dir=self.run.final_dir, steps=cfg.rounds, seconds=seconds,
                           peak_rss_gb=peak_rss_gb(), resumed_from=0, train_metrics={}, eval_metrics=report["eval"])


def train_iterative_dpo(cfg: IterativeDPOConfig) -> TrainResult:
    return IterativeDPO(cfg).train()


METHOD = MethodSpec("iterative-dpo", IterativeDPOConfig, train_iterative_dpo, "rounds of sample -> judge -> "
                    "(best, worst) pairs -> DPO", "prompts")
