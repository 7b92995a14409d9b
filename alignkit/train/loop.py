"""The offline loop every offline method shares: the `Method` contract and the offline step.

A method supplies three plain functions (no base class): how much a batch counts towards the loss normaliser
(`count`), the summed loss of a batch (`loss`), and an optional `evaluate`. The offline step owns accelerate
(devices, DDP), micro-batching and gradient accumulation, gradient clipping and bf16 autocast; the run's core
(`train/run.py`) owns AdamW, the warmup + cosine/linear schedule, evaluation, atomic checkpoints, exact resume,
progress and metrics, as it does for the online loop.

Normalisation. Each method returns a loss *sum* and the loop divides by the count over the whole optimizer step —
all micro-batches of all processes — known before the first backward. So 1 process with grad_accum=2 and 2 processes
with grad_accum=1 compute the same gradient, and token-averaged losses are not biased by uneven micro-batches.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from alignkit.train import sharding
from alignkit.train.run import Run, RunError, Steps, TrainResult, decay_groups
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


def processed_tokens(batch: Batch) -> int:
    """Tokens that went through the model: every attention mask in the batch (a shared prompt counts once)."""
    return int(sum(v.sum() for k, v in batch.items() if k.endswith(("attention_mask", "prompt_mask", "completion_mask"))))


def offline_loop(run: Run, module: nn.Module, items: list, collate: Callable[[list], Batch], method: Method,
                 save_final: Callable[[Path, dict[str, str]], None], schedule: Schedule | None = None) -> TrainResult:
    """Train `module` on `items` with `method` in `run`: the offline step, handed to `Run.fit`."""
    cfg, acc = run.cfg, run.accelerator
    world = acc.num_processes
    global_batch = cfg.batch_size * cfg.grad_accum * world
    if schedule is not None:
        steps_per_epoch, total_steps = schedule.steps_per_epoch, schedule.total_steps
        micro_batches = schedule.micro_batches
    else:
        steps_per_epoch = len(items) // global_batch
        if steps_per_epoch == 0:
            raise RunError(
                f"the training set has {len(items)} examples, fewer than one optimizer step needs "
                f"(batch_size {cfg.batch_size} x grad_accum {cfg.grad_accum} x processes {world} = {global_batch})"
            )
        total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.epochs * steps_per_epoch)
        lengths = [item_length(it) for it in items] if cfg.group_by_length else None
        micro_batches = _permuted_micro_batches(run, steps_per_epoch, len(items), global_batch, lengths)

    # Sharded (FSDP) or DDP around the module on several processes. The optimizer covers the trainable parameters
    # only (LoRA: adapters; frozen parts are skipped), made after sharding, which replaces the parameters.
    sharded = sharding.requested()
    if sharded:
        sharding.shard(module)
    optimizer, scheduler = run.optimizer(decay_groups(module, cfg.weight_decay, cfg.lr), total_steps)
    model, optimizer = (module, optimizer) if sharded else acc.prepare(module, optimizer)
    unwrapped = acc.unwrap_model(model)
    seen = {"tokens": 0, "since": None}

    def step(i: int) -> dict[str, float]:
        # 1. This step's micro-batches (by default a seeded permutation per epoch, sliced by step, process and
        #    micro-batch) and the count that normalises the step's loss over all of them.
        if seen["since"] is None:
            seen["since"] = time.perf_counter()
        if method.before_step is not None:
            method.before_step(i, unwrapped)
        batches = [collate([items[j] for j in idx]) for idx in micro_batches(i)]
        batches = [{k: v.to(run.device) for k, v in b.items()} for b in batches]
        local_count = sum(method.count(b) for b in batches)
        total_count = acc.reduce(torch.tensor(float(local_count), device=run.device), reduction="sum").item()
        if total_count <= 0:
            raise RunError(f"step {i + 1}: the batch has nothing to train on (all loss masks empty)")

        # 2. Forward/backward each micro-batch; DDP (or FSDP) averages over processes, hence the `* world`.
        loss_total = 0.0
        stats: dict[str, float] = {}
        examples = 0
        step_tokens = 0
        for k, batch in enumerate(batches):
            sync = k == len(batches) - 1
            with contextlib.nullcontext() if sync else sharding.gradients_kept_local(model, acc):
                with run.autocast():
                    loss_sum, batch_stats = method.loss(model, batch)
                acc.backward(loss_sum * (world / total_count))
            loss_total += loss_sum.item()
            for key, value in batch_stats.items():
                stats[key] = stats.get(key, 0.0) + float(value.sum())
            examples += method.examples(batch) if method.examples else next(iter(batch.values())).shape[0]
            step_tokens += processed_tokens(batch)
        penalty_stats: dict[str, float] = {}
        if method.step_penalty is not None:
            with run.autocast():
                penalty, penalty_stats = method.step_penalty(model)
            if penalty.requires_grad:
                acc.backward(penalty)

        # 3. Clip, step, schedule: a NaN/inf loss or gradient (over all processes) stops the run or, under
        #    skip_nonfinite, skips the update (the schedule still moves on).
        loss_value = acc.reduce(torch.tensor(loss_total, device=run.device), reduction="sum").item() / total_count
        grad_norm = run.grad_norm(model.parameters())
        lr = scheduler.get_last_lr()[0]  # the rate this step used (the scheduler then moves to the next one)
        if not run.skip_update(i, loss_value, grad_norm, f"training examples {_listed(micro_batches(i))} of this "
                                                         "process, 0-based"):
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        seen["tokens"] += step_tokens * world

        # 4. Metrics, of the examples of every process.
        stats, examples = run.summed(stats, examples)
        if not run.is_main:
            return {}
        metrics = {"loss": loss_value, "lr": lr, "epoch": i / steps_per_epoch}
        metrics.update({k: v / examples for k, v in stats.items()})
        metrics.update(penalty_stats)
        metrics["grad_norm"] = grad_norm
        if cfg.skip_nonfinite:
            metrics["skipped_nonfinite"] = run.skipped_nonfinite
        metrics["tokens_per_s"] = seen["tokens"] / (time.perf_counter() - seen["since"])
        return metrics

    evaluate = (lambda: method.evaluate(unwrapped)) if method.evaluate is not None else None
    steps = Steps(total=total_steps, step=step, evaluate=evaluate, state=method.state, load_state=method.load_state,
                  progress=("loss", "tokens_per_s"))
    return run.fit(unwrapped, optimizer, scheduler, steps, save_final)


def _listed(micro_batches: list[list[int]], most: int = 16) -> str:
    flat = [i for batch in micro_batches for i in batch]
    return ", ".join(map(str, flat[:most])) + (f" and {len(flat) - most} more" if len(flat) > most else "")


def _permuted_micro_batches(run: Run, steps_per_epoch: int, n: int, global_batch: int,
                            lengths: list[int] | None) -> Callable[[int], list[list[int]]]:
    """The default schedule: step i's micro-batches for this process, from one seeded order per epoch."""
    cfg, acc = run.cfg, run.accelerator
    cached: list = [None, None]  # (epoch, its example order), computed once per epoch

    def micro_batches(step: int) -> list[list[int]]:
        epoch, k = divmod(step, steps_per_epoch)
        if cached[0] != epoch:
            cached[:] = [epoch, epoch_order(derived_seed(cfg.seed, epoch), n, global_batch, lengths)]
        order = cached[1][k * global_batch : (k + 1) * global_batch]
        per_process = cfg.batch_size * cfg.grad_accum
        mine = order[acc.process_index * per_process : (acc.process_index + 1) * per_process]
        return [mine[i * cfg.batch_size : (i + 1) * cfg.batch_size] for i in range(cfg.grad_accum)]

    return micro_batches


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


