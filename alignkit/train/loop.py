"""The one training loop every offline method shares.

A method supplies three plain functions (no base class): how much a batch counts towards the loss normaliser
(`count`), the summed loss of a batch (`loss`), and an optional `evaluate`. The loop owns everything else:
accelerate (devices, DDP), micro-batching and gradient accumulation, AdamW, warmup + cosine/linear schedule,
gradient clipping, bf16 autocast, evaluation, atomic checkpoints, exact resume, progress and metrics.

Normalisation. Each method returns a loss *sum* and the loop divides by the count over the whole optimizer step —
all micro-batches of all processes — known before the first backward. So 1 process with grad_accum=2 and 2 processes
with grad_accum=1 compute the same gradient, and token-averaged losses are not biased by uneven micro-batches.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from alignkit.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from alignkit.train.config import TrainConfig
from alignkit.train.logging import MetricsLog
from alignkit.utils.io import atomic_write_json, atomic_write_text
from alignkit.utils.memory import peak_rss_gb
from alignkit.utils.seeds import derived_seed

Batch = dict[str, torch.Tensor]


@dataclass
class Method:
    count: Callable[[Batch], int]
    loss: Callable[[nn.Module, Batch], tuple[torch.Tensor, dict[str, torch.Tensor]]]
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None
    # Examples in a batch, the denominator of logged per-example statistics (default: rows of the first tensor).
    examples: Callable[[Batch], int] | None = None
    # Called at the start of every step with (step, module), before its batches (e.g. HBAT's Fisher at a switch).
    before_step: Callable[[int, nn.Module], None] | None = None
    # A term of the objective that depends on the parameters only (e.g. EWC): added once per step, not per example;
    # returns (penalty, statistics to log).
    step_penalty: Callable[[nn.Module], tuple[torch.Tensor, dict[str, float]]] | None = None
    # State the method keeps across steps, saved in every checkpoint and given back on resume.
    state: Callable[[], dict] | None = None
    load_state: Callable[[dict], None] | None = None


@dataclass
class Schedule:
    """Which examples each step trains on, when the default (a seeded permutation per epoch) does not fit: a method
    that alternates between datasets decides it itself. `micro_batches(step)` gives one list of item indices per
    micro-batch (one process)."""

    total_steps: int
    steps_per_epoch: int
    micro_batches: Callable[[int], list[list[int]]]


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


class RunError(RuntimeError):
    """The run cannot start as configured (output directory conflicts, data too small...)."""


def processed_tokens(batch: Batch) -> int:
    """Tokens that went through the model: every attention mask in the batch (a shared prompt counts once)."""
    return int(sum(v.sum() for k, v in batch.items() if k.endswith(("attention_mask", "prompt_mask", "completion_mask"))))


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matrix instructions (AMX or AVX512-BF16).

    Elsewhere oneDNN emulates bf16 and it is slower than fp32 (measured on an AVX512 Xeon without them: bf16 matmul
    38 GFLOP/s vs fp32 104 GFLOP/s; with AMX, bf16 is ~4x fp32).
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto`: bf16 autocast where the hardware runs it fast, else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"


def _lr_lambda(kind: str, warmup: int, total: int):
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


class Run:
    """One training run in `cfg.output_dir`: created with the output-directory checks, then `train(...)`."""

    def __init__(self, cfg: TrainConfig, method_name: str):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.cfg = cfg
        self.method_name = method_name
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.device = self.accelerator.device
        self.precision = resolve_precision(cfg.precision, self.device)
        self.output_dir = Path(cfg.output_dir)
        self.resume_from = self._check_output_dir()
        self._epoch_order: tuple[int, list[int]] | None = None  # (epoch, its example order), computed once per epoch
        set_seed(cfg.seed)
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            import yaml

            atomic_write_text(self.output_dir / "config.yaml", yaml.safe_dump({"method": method_name, **cfg.model_dump()}))

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def final_dir(self) -> Path:
        return self.output_dir / "final"

    def _check_output_dir(self) -> Path | None:
        out, cfg = self.output_dir, self.cfg
        if (out / "final").exists():
            if not cfg.overwrite:
                raise RunError(
                    f"{out} already holds a finished run (final/ exists). Choose another output_dir, "
                    "or pass overwrite=true to replace it."
                )
            if self.accelerator.is_main_process:
                for name in ("final", "checkpoints", "metrics.jsonl", "summary.json", "cache"):
                    target = out / name
                    shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
            self.accelerator.wait_for_everyone()
            return None
        checkpoints = list_checkpoints(out)
        if checkpoints and cfg.resume == "auto":
            return checkpoints[-1]
        if checkpoints and not cfg.overwrite:
            raise RunError(
                f"{out} holds an unfinished run (checkpoints/). Use resume=auto to continue it, "
                "overwrite=true to start over, or another output_dir."
            )
        return None

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def cache_path(self, name: str) -> Path:
        return self.output_dir / "cache" / name

    def train(
        self,
        module: nn.Module,
        items: list,
        collate: Callable[[list], Batch],
        method: Method,
        save_final: Callable[[Path], None],
        schedule: Schedule | None = None,
    ) -> TrainResult:
        cfg, acc = self.cfg, self.accelerator
        world = acc.num_processes
        global_batch = cfg.batch_size * cfg.grad_accum * world
        if schedule is not None:
            steps_per_epoch, total_steps = schedule.steps_per_epoch, schedule.total_steps
        else:
            steps_per_epoch = len(items) // global_batch
            if steps_per_epoch == 0:
                raise RunError(
                    f"the training set has {len(items)} examples, fewer than one optimizer step needs "
                    f"(batch_size {cfg.batch_size} x grad_accum {cfg.grad_accum} x processes {world} = {global_batch})"
                )
            total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.epochs * steps_per_epoch)

        # 1. Optimizer and schedule over the trainable parameters only (LoRA: adapters; frozen parts are skipped).
        params = [p for p in module.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
            fused=False,
        )
        warmup = int(cfg.warmup_ratio * total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.scheduler, warmup, total_steps))
        model, optimizer = acc.prepare(module, optimizer)

        # 2. Resume: weights, optimizer, schedule and RNG from the newest complete checkpoint; data position = step.
        start_step = 0
        if self.resume_from is not None:
            state = load_checkpoint(self.resume_from, acc.unwrap_model(model), optimizer, scheduler)
            start_step = state["step"]
            if method.load_state is not None and "method_state" in state:
                method.load_state(state["method_state"])
            if self.is_main:
                print(f"resuming from {self.resume_from} (step {start_step} of {total_steps})", flush=True)
        log = MetricsLog(self.output_dir, cfg.report_to, cfg.model_dump(), start_step) if self.is_main else None

        progress = None
        if self.is_main and cfg.progress:
            from tqdm.auto import tqdm

            progress = tqdm(total=total_steps, initial=start_step, desc=self.method_name, dynamic_ncols=True)

        t0 = time.perf_counter()
        last_train: dict = {}
        last_eval: dict = {}
        tokens_seen = 0
        model.train()
        lengths = [item_length(it) for it in items] if cfg.group_by_length else None
        for step in range(start_step, total_steps):
            # 3. This step's micro-batches: a seeded permutation per epoch, sliced by step, process and micro-batch.
            if schedule is not None:
                micro = schedule.micro_batches(step)
            else:
                micro = self._micro_batches(step, steps_per_epoch, len(items), global_batch, lengths)
            if method.before_step is not None:
                method.before_step(step, acc.unwrap_model(model))
            batches = [collate([items[i] for i in idx]) for idx in micro]
            batches = [{k: v.to(self.device) for k, v in b.items()} for b in batches]
            local_count = sum(method.count(b) for b in batches)
            total_count = acc.reduce(torch.tensor(float(local_count), device=self.device), reduction="sum").item()
            if total_count <= 0:
                raise RunError(f"step {step + 1}: the batch has nothing to train on (all loss masks empty)")

            # 4. Forward/backward each micro-batch; DDP averages over processes, hence the `* world`.
            loss_total = 0.0
            stats: dict[str, float] = {}
            examples = 0
            step_tokens = 0
            for i, batch in enumerate(batches):
                sync = i == len(batches) - 1
                with contextlib.nullcontext() if sync else acc.no_sync(model):
                    with self.autocast():
                        loss_sum, batch_stats = method.loss(model, batch)
                    acc.backward(loss_sum * (world / total_count))
                loss_total += loss_sum.item()
                for key, value in batch_stats.items():
                    stats[key] = stats.get(key, 0.0) + float(value.sum())
                examples += method.examples(batch) if method.examples else next(iter(batch.values())).shape[0]
                step_tokens += processed_tokens(batch)
            penalty_stats: dict[str, float] = {}
            if method.step_penalty is not None:
                with self.autocast():
                    penalty, penalty_stats = method.step_penalty(model)
                if penalty.requires_grad:
                    acc.backward(penalty)

            # 5. Clip, step, schedule.
            grad_norm = None
            if cfg.max_grad_norm is not None:
                grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            lr = scheduler.get_last_lr()[0]  # the rate this step used (the scheduler then moves to the next one)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            tokens_seen += step_tokens * world
            done = step + 1

            # 6. Log, evaluate, checkpoint.
            if self.is_main:
                elapsed = time.perf_counter() - t0
                loss_value = acc.reduce(torch.tensor(loss_total, device=self.device), reduction="sum").item() / total_count
                last_train = {"loss": loss_value, "lr": lr, "epoch": step / steps_per_epoch}
                last_train.update({k: v / examples for k, v in stats.items()})
                last_train.update(penalty_stats)
                if grad_norm is not None:
                    last_train["grad_norm"] = float(grad_norm)
                last_train["tokens_per_s"] = tokens_seen / elapsed
                if done % cfg.log_every == 0 or done == total_steps:
                    log.log(done, {f"train/{k}": v for k, v in last_train.items()})
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{tokens_seen / elapsed:.0f}")
            else:
                acc.reduce(torch.tensor(loss_total, device=self.device), reduction="sum")
            if method.evaluate is not None and cfg.eval_every and done % cfg.eval_every == 0 and done < total_steps:
                last_eval = self._evaluate(model, method, log, done)
            if cfg.save_every and done % cfg.save_every == 0 and done < total_steps:
                acc.wait_for_everyone()
                if self.is_main:
                    save_checkpoint(
                        self.output_dir, done, acc.unwrap_model(model), optimizer, scheduler,
                        {"total_steps": total_steps, "method": self.method_name}, cfg.keep_checkpoints,
                        method.state() if method.state is not None else None,
                    )

        if progress is not None:
            progress.close()
        train_seconds = time.perf_counter() - t0
        if method.evaluate is not None:
            last_eval = self._evaluate(model, method, log, total_steps)
        acc.wait_for_everyone()
        if self.is_main:
            save_final(self.final_dir)
            summary = {
                "method": self.method_name,
                "steps": total_steps,
                "resumed_from_step": start_step,
                "train_seconds": round(train_seconds, 2),
                "peak_rss_gb": round(peak_rss_gb(), 3),
                "precision": self.precision,
                "processes": world,
                "train": last_train,
                "eval": last_eval,
            }
            atomic_write_json(self.output_dir / "summary.json", summary)
            log.close()
        acc.wait_for_everyone()
        return TrainResult(
            output_dir=self.output_dir,
            final_dir=self.final_dir,
            steps=total_steps,
            seconds=train_seconds,
            peak_rss_gb=peak_rss_gb(),
            resumed_from=start_step,
            train_metrics=last_train,
            eval_metrics=last_eval,
        )

    def _micro_batches(self, step: int, steps_per_epoch: int, n: int, global_batch: int,
                       lengths: list[int] | None = None) -> list[list[int]]:
        cfg, acc = self.cfg, self.accelerator
        epoch, k = divmod(step, steps_per_epoch)
        if self._epoch_order is None or self._epoch_order[0] != epoch:
            self._epoch_order = (epoch, epoch_order(derived_seed(cfg.seed, epoch), n, global_batch, lengths))
        order = self._epoch_order[1][k * global_batch : (k + 1) * global_batch]
        per_process = cfg.batch_size * cfg.grad_accum
        mine = order[acc.process_index * per_process : (acc.process_index + 1) * per_process]
        return [mine[i * cfg.batch_size : (i + 1) * cfg.batch_size] for i in range(cfg.grad_accum)]

    def _evaluate(self, model, method: Method, log: MetricsLog | None, step: int) -> dict:
        acc = self.accelerator
        metrics: dict = {}
        if self.is_main:
            unwrapped = acc.unwrap_model(model)
            unwrapped.eval()
            with torch.no_grad(), self.autocast():
                metrics = method.evaluate(unwrapped)
            unwrapped.train()
            log.log(step, {f"eval/{k}": v for k, v in metrics.items()})
            print(f"[{self.method_name}] step {step} eval: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()), flush=True)
        acc.wait_for_everyone()
        return metrics


def _sequence_lengths(item) -> list[int]:
    if hasattr(item, "input_ids"):
        return [len(item.input_ids)]
    parts = item.values() if isinstance(item, dict) else item if isinstance(item, (tuple, list)) else ()
    return [n for part in parts for n in _sequence_lengths(part)]


def item_length(item) -> int:
    """Tokens an example pads its batch to: its sequence, or the longest of its sequences (a pair, a ranking)."""
    lengths = _sequence_lengths(item)
    if not lengths:
        raise RunError(f"group_by_length: cannot tell the length of a {type(item).__name__} example")
    return max(lengths)


# Examples are sorted by length within windows of this many batches: enough to find similar lengths, few enough
# that an epoch still mixes the data.
LENGTH_WINDOW_BATCHES = 64


def epoch_order(seed: int, n: int, global_batch: int, lengths: list[int] | None = None) -> list[int]:
    """One epoch's example order: a seeded permutation. With `lengths`, each window of LENGTH_WINDOW_BATCHES batches of
    it is sorted longest first, cut into batches, and the full batches are visited in a seeded random order (the few
    left over, fewer than a batch, come last and are not trained on this epoch, as without grouping)."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator).tolist()
    if lengths is None:
        return order
    window = global_batch * LENGTH_WINDOW_BATCHES
    grouped = [i for start in range(0, n, window)
               for i in sorted(order[start : start + window], key=lambda i: -lengths[i])]
    full = n // global_batch
    chunks = [grouped[b * global_batch : (b + 1) * global_batch] for b in range(full)]
    visit = torch.randperm(full, generator=generator).tolist()
    return [i for b in visit for i in chunks[b]] + grouped[full * global_batch :]


def configure_threads() -> None:
    """Use every core for intra-op work unless the user set OMP/torch threads explicitly."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)
