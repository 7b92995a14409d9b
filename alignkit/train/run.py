"""The core every training loop shares: one run directory and what happens around each loop's steps.

A `Run` owns the output directory (a `RunFolder`: held, conflict checks, config.yaml, final/, summary.json), the
device and precision, the AdamW optimizer with its weight-decay split and the warmup + cosine/linear schedule, and
`fit`: resume from the newest checkpoint, the loop over steps with metrics, progress, evaluation and checkpoint
cadence, the final save and the summary. A loop (`loop.offline_loop`, `online.OnlineTrainer`) supplies only its step logic, as a `Steps` record.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from torch import nn
from torch.distributed.tensor import DTensor

from alignkit.train import sharding
from alignkit.train.card import model_card
from alignkit.train.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    trainable_state,
)
from alignkit.train.config import TrainConfig
from alignkit.train.errors import Interrupted, NonFiniteError, RunError
from alignkit.train.logging import MetricsLog
from alignkit.utils.interrupts import StopAtStepBoundary
from alignkit.utils.memory import peak_rss_gb
from alignkit.utils.precision import autocast as precision_autocast
from alignkit.utils.precision import resolve_precision
from alignkit.utils.run_folder import Opening, RunFolder
from alignkit.utils.secrets import redact

__all__ = ["Interrupted", "NonFiniteError", "Run", "RunError", "Steps", "TrainResult"]


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path
    steps: int
    seconds: float
    peak_rss_gb: float
    resumed_from: int
    train_metrics: dict = field(default_factory=dict)
    eval_metrics: dict = field(default_factory=dict)


@dataclass
class Steps:
    """A loop's part of a run, handed to `Run.fit`.

    `step(i)` runs step i — its forward and backward passes and its optimizer step(s) — and returns the metrics to
    log (the main process's; other processes may return {}). `evaluate()` returns evaluation metrics; the core runs
    it on the main process in eval mode, without gradients, under the run's autocast. `state`/`load_state`: what the
    loop keeps across steps besides weights, optimizer and schedule, saved in every checkpoint and given back on
    resume. `progress`: the metrics shown beside the progress bar.
    """

    total: int
    step: Callable[[int], dict[str, float]]
    evaluate: Callable[[], dict[str, float]] | None = None
    evaluate_first: bool = False  # also evaluate before the first step (the summary's "eval_before")
    state: Callable[[], dict] | None = None
    load_state: Callable[[dict], None] | None = None
    progress: tuple[str, ...] = ("loss",)
    summary: Callable[[], dict] | None = None  # entries the loop adds to summary.json
    generated: str | None = None  # what the run produces and trains on itself, for the model card (online methods)


def configure_threads() -> None:
    """Use every core for intra-op work unless the user set OMP/torch threads explicitly."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)


def lr_lambda(kind: str, warmup: int, total: int):
    """The learning-rate factor at each optimizer step: linear warmup, then constant, linear or cosine decay."""

    def fn(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return fn


def decay_groups(module: nn.Module, weight_decay: float, lr: float) -> list[dict]:
    """AdamW parameter groups of a module's trainable parameters (LoRA: the adapters): weight decay on matrices only."""
    params = [p for p in module.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay, "lr": lr},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr": lr}]
    return [g for g in groups if g["params"]]


def _os_reason(err: Exception) -> str:
    """The operating system's words for a failed write (safetensors reports it as "... (os error 28)")."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    found = re.search(r"os error (\d+)", str(err))
    return os.strerror(int(found.group(1))) if found else str(err)


class Run:
    """One training run in `cfg.output_dir`: created with the output-directory checks, then `fit(...)`."""

    def __init__(self, cfg: TrainConfig, method_name: str, work: tuple[str, ...] = (),
                 writes: str = "config.yaml, metrics.jsonl, checkpoints/, summary.json"):
        """`work`: what else than checkpoints an unfinished run of this method leaves in its folder (`RunFolder`);
        `writes`: what the folder will hold, as the run says when it begins."""
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.cfg = cfg
        self.method_name = method_name
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.device = self.accelerator.device
        self.precision = resolve_precision(cfg.precision, self.device)
        self.output_dir = Path(cfg.output_dir)
        self.skipped_nonfinite = 0  # updates skipped under skip_nonfinite (kept in checkpoints)
        self.writes = writes
        # Held before anything in it is read: a second process on the same run folder is refused at once.
        self.folder = RunFolder(self.output_dir, "run", RunError, ("checkpoints", *work)).hold()
        try:
            opening = self.folder.open(resume=cfg.resume, overwrite=cfg.overwrite)
        except RunError:
            self.folder.release()
            raise
        checkpoints = list_checkpoints(self.output_dir)
        # Resumed (or finished again, the same steps giving the same final/) from the newest checkpoint.
        self.resume_from = checkpoints[-1] if checkpoints and opening in (Opening.RESUME, Opening.REFINISH) else None
        set_seed(cfg.seed)

    @property
    def refinish(self) -> bool:
        """final/ is there but not its summary: the run is finished again (`RunFolder.open`)."""
        return self.folder.opening is Opening.REFINISH

    def begin(self) -> None:
        """The run starts writing into its folder: a finished run that `overwrite` replaces is removed, and
        config.yaml written. Called when training is about to start, so a run that stops earlier (bad data, a model
        that does not load) leaves the folder as it found it."""
        self.folder.begin({"method": self.method_name, **redact(self.cfg.model_dump())})
        if self.is_main:
            out = self.output_dir
            print(f"alignkit {self.method_name}: {self.cfg.model} -> {out}/ ({self.writes}; the model: {out / 'final'}/)",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        """Release the run folder to other processes (`fit` does it when it ends, however it ends)."""
        self.folder.release()

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def final_dir(self) -> Path:
        return self.folder.final

    def autocast(self):
        return precision_autocast(self.precision, self.device)

    def grad_norm(self, parameters) -> float:
        """The gradient norm over `parameters` (of all processes: gradients are synchronised by now), clipped to
        max_grad_norm when that is set."""
        limit = self.cfg.max_grad_norm if self.cfg.max_grad_norm is not None else math.inf
        parameters = list(parameters)
        if any(isinstance(p, DTensor) for p in parameters):
            return sharding.grad_norm(parameters, limit)
        return float(self.accelerator.clip_grad_norm_(parameters, limit))

    def skip_update(self, step: int, loss: float, grad_norm: float, batch: str) -> bool:
        """Whether step `step` (0-based) must not apply its update: its loss or gradient norm (both over all
        processes) is NaN or infinite. Under skip_nonfinite the update is skipped and counted; otherwise the run
        stops here with a NonFiniteError naming the step and `batch`, before anything is applied or written, so the
        last checkpoint stays the last good one."""
        if math.isfinite(loss) and math.isfinite(grad_norm):
            return False
        what = f"the loss is {loss}" if not math.isfinite(loss) else f"the gradient norm is {grad_norm}"
        if self.cfg.skip_nonfinite:
            self.skipped_nonfinite += 1
            if self.is_main:
                print(f"[{self.method_name}] step {step + 1}: {what} ({batch}); update skipped "
                      f"({self.skipped_nonfinite} so far)", flush=True)
            return True
        checkpoints = list_checkpoints(self.output_dir)
        keep = (f"the last good checkpoint is {checkpoints[-1]} (resume=auto continues from it)" if checkpoints
                else "no checkpoint was written before it (save_every sets how often one is)")
        raise NonFiniteError(f"step {step + 1}: {what} ({batch}); the run stopped without applying it: {keep}. "
                             "Lower lr, check that batch, or set skip_nonfinite=true to skip such updates")

    def cache_path(self, name: str) -> Path:
        return self.output_dir / "cache" / name

    def optimizer(self, groups: list[dict], schedule_steps: int):
        """AdamW over `groups` (see `decay_groups`) and its schedule over `schedule_steps` optimizer steps.

        AdamW's fused kernel where torch has one (CPU, CUDA): on CPU it steps SmolLM2-135M's parameters 4.9x faster
        than the default per-tensor loop (0.31 vs 1.48 s, one thread, same parameters after the steps to 6e-8;
        `bench/optimizer_step.py`)."""
        optimizer = torch.optim.AdamW(groups, lr=self.cfg.lr, fused=self.device.type in ("cpu", "cuda"))
        warmup = int(self.cfg.warmup_ratio * schedule_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(self.cfg.scheduler, warmup, schedule_steps))
        return optimizer, scheduler

    def fit(self, module: nn.Module, optimizer, scheduler, steps: Steps,
            save_final: Callable[[Path, dict[str, str]], None]) -> TrainResult:
        """Resume, run `steps` with logging, progress, evaluation and checkpoints, save the final model, summarise.

        `module` is what checkpoints hold (its trainable parameters) and what evaluation switches to eval mode."""
        try:
            return self._fit(module, optimizer, scheduler, steps, save_final)
        finally:
            self.close()

    def _fit(self, module: nn.Module, optimizer, scheduler, steps: Steps,
             save_final: Callable[[Path, dict[str, str]], None]) -> TrainResult:
        cfg, acc = self.cfg, self.accelerator
        self.begin()
        acc.wait_for_everyone()
        total = steps.total
        start = 0
        if self.resume_from is not None:
            state = load_checkpoint(self.resume_from, module, optimizer, scheduler)
            start = state["step"]
            self.skipped_nonfinite = state.get("skipped_nonfinite", 0)
            if steps.load_state is not None and "method_state" in state:
                steps.load_state(state["method_state"])
            if self.is_main:
                print(f"resuming from {self.resume_from} (step {start} of {total})", flush=True)
        log = MetricsLog(self.output_dir, cfg.report_to, cfg.model_dump(), start) if self.is_main else None
        before: dict = {}
        if steps.evaluate is not None and steps.evaluate_first and start == 0:
            before = self._evaluate(module, steps.evaluate, log, 0, "before training")

        progress = None
        if self.is_main and cfg.progress:
            from tqdm.auto import tqdm

            progress = tqdm(total=total, initial=start, desc=self.method_name, dynamic_ncols=True)
        t0 = time.perf_counter()
        last_train: dict = {}
        last_eval: dict = {}
        module.train()
        with StopAtStepBoundary("Ctrl-C: stopping after this step with a checkpoint to resume from") as stop:
            for step in range(start, total):
                metrics = steps.step(step)
                done = step + 1
                if self.is_main:
                    last_train = metrics
                    if done % cfg.log_every == 0 or done == total:
                        log.log(done, {f"train/{k}": v for k, v in metrics.items()})
                    if progress is not None:
                        progress.update(1)
                        progress.set_postfix({k: f"{metrics[k]:.4g}" for k in steps.progress if k in metrics})
                if steps.evaluate is not None and cfg.eval_every and done % cfg.eval_every == 0 and done < total:
                    last_eval = self._evaluate(module, steps.evaluate, log, done, f"step {done}")
                saved = bool(cfg.save_every and done % cfg.save_every == 0 and done < total)
                if saved:
                    acc.wait_for_everyone()
                    self._checkpoint(done, module, optimizer, scheduler, total, steps)
                if done < total and stop.agreed():
                    if not saved:
                        acc.wait_for_everyone()
                        self._checkpoint(done, module, optimizer, scheduler, total, steps)
                    if progress is not None:
                        progress.close()
                    if log is not None:
                        log.close()
                    raise Interrupted(f"interrupted at step {done} of {total}; the checkpoint "
                                      f"{list_checkpoints(self.output_dir)[-1] if self.is_main else ''} holds it: run "
                                      "the same command again to resume from it (resume=auto)")
        if progress is not None:
            progress.close()
        seconds = time.perf_counter() - t0
        if steps.evaluate is not None:
            last_eval = self._evaluate(module, steps.evaluate, log, total, "after training")
        acc.wait_for_everyone()
        card = model_card(self.method_name, cfg, steps=total, precision=self.precision, seconds=seconds,
                          train_metrics=last_train, eval_metrics=last_eval,
                          adapter=cfg.lora is not None and not cfg.save_merged, generated=steps.generated)
        self.folder.final_set_aside()
        save_final(self.final_dir, {"README.md": card})  # every process: a sharded model is gathered by all of them
        acc.wait_for_everyone()
        summary = {
            "method": self.method_name,
            "steps": total,
            "resumed_from_step": start,
            "train_seconds": round(seconds, 2),
            "peak_rss_gb": round(peak_rss_gb(), 3),
            "precision": self.precision,
            "processes": acc.num_processes,
            **({"sharded": {"parameter_share": round(sharding.local_share(module), 4)}}
               if sharding.is_sharded(module) else {}),
            **({"skipped_nonfinite": self.skipped_nonfinite} if cfg.skip_nonfinite else {}),
            "train": last_train,
            **({"eval_before": before} if steps.evaluate_first else {}),
            "eval": last_eval,
            **(steps.summary() if steps.summary is not None else {}),
        }

        def after() -> None:
            log.close()
            if cfg.keep_checkpoints == 0:  # finished: nothing left to resume, so no optimizer states left behind
                shutil.rmtree(self.output_dir / "checkpoints", ignore_errors=True)

        self.folder.finish(summary, after)
        acc.wait_for_everyone()
        return TrainResult(output_dir=self.output_dir, final_dir=self.final_dir, steps=total, seconds=seconds,
                           peak_rss_gb=peak_rss_gb(), resumed_from=start, train_metrics=last_train,
                           eval_metrics=last_eval)

    def summed(self, sums: dict[str, float], count: float) -> tuple[dict[str, float], float]:
        """Per-key sums and a count added up over every process (as they are in one process): what a step's logged
        statistics are averaged from."""
        if self.accelerator.num_processes == 1:
            return sums, count
        keys = sorted(sums)
        totals = torch.tensor([sums[k] for k in keys] + [float(count)], dtype=torch.float64, device=self.device)
        *values, total = self.accelerator.reduce(totals, reduction="sum").tolist()
        return dict(zip(keys, values)), total

    def _checkpoint(self, step: int, module: nn.Module, optimizer, scheduler, total: int, steps: Steps) -> None:
        """A checkpoint (every process calls it; a sharded model's tensors are gathered by all of them, and the main
        process writes), or, where the disk is full or read-only, a RunError saying so: the new checkpoint was not
        kept (atomic_dir removes its partial folder) and the previous one is intact, so the same command resumes
        from it once there is room."""
        if not (self.is_main or sharding.is_sharded(module)):
            return
        weights, optimizer_state = trainable_state(module), sharding.full_optimizer_state(optimizer)
        if not self.is_main:
            return
        try:
            save_checkpoint(self.output_dir, step, weights, optimizer_state, scheduler,
                            {"total_steps": total, "method": self.method_name,
                             "skipped_nonfinite": self.skipped_nonfinite}, max(self.cfg.keep_checkpoints, 1),
                            steps.state() if steps.state is not None else None)
        except (OSError, SafetensorError) as err:
            earlier = list_checkpoints(self.output_dir)
            kept = (f"{earlier[-1]} is intact and the same command resumes from it (resume=auto)" if earlier
                    else "there is no earlier checkpoint")
            raise RunError(f"step {step}: the checkpoint could not be written into {self.output_dir / 'checkpoints'} "
                           f"({_os_reason(err)}); nothing of it was kept, {kept} once the disk has room and "
                           "the folder is writable") from err

    def _evaluate(self, module: nn.Module, evaluate: Callable[[], dict], log: MetricsLog | None, step: int,
                  when: str) -> dict:
        metrics: dict = {}
        with sharding.whole(module):  # the main process evaluates alone
            if self.is_main:
                module.eval()
                with torch.no_grad(), self.autocast():
                    metrics = evaluate()
                module.train()
            self.accelerator.wait_for_everyone()
        if self.is_main:
            log.log(step, {f"eval/{k}": v for k, v in metrics.items()})
            print(f"[{self.method_name}] {when}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()), flush=True)
        return metrics
