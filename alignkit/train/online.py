"""The loop every online method shares: sample from the policy, judge the samples, update on them, repeat.

One iteration = one rollout batch of `prompts_per_step` prompts x `samples_per_prompt` samples:

1. rollout: sample responses with the current policy (`alignkit.rollouts.sample`);
2. score: the judge scores each response (a verifier, a reward model, an HTTP judge ...);
3. experience: no-grad passes for what the algorithm needs — the rollout policy's log-probs and values
   (when the update is not a single on-policy step), the reference's log-probs (when there is a KL term);
4. advantages: the algorithm's (GAE for PPO, group baselines for GRPO / RLOO);
5. update: `ppo_epochs` passes over the batch in shuffled minibatches of `minibatch_size` sequences, one optimizer
   step per minibatch (micro-batches of `batch_size` accumulate into it).

Each distinct prompt of a (micro-)batch goes through the transformer once; its samples reuse the prompt's KV cache
(`response_states`). An algorithm (PPO, GRPO, RLOO) is a small `Algorithm` record of plain functions.

Several processes (`accelerate launch --num_processes N`): each process samples, scores and runs the no-grad
passes for its contiguous share of the iteration's prompts (N must divide `prompts_per_step`), so a prompt's samples
— a GRPO/RLOO group — live in one process. The experience is then gathered, so every process holds the whole batch
and computes the advantages, the whitening, the KL controller and the logged statistics over all of it, exactly as
one process does. Each minibatch is split over the processes (N must divide `minibatch_size`) and the gradients are
summed across them (DDP), scaled so the step equals one process's over the same minibatch. Each prompt draws its
samples from its own stream (`SamplingSettings.prompt_seeds`), so N processes sample what one process samples.

Checkpoints are taken between iterations and resume exactly, on any process count that divides the batch: the
prompt order and each prompt's sampling seed are functions of (seed, iteration, prompt position) alone.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from alignkit.data import load_records
from alignkit.eval.judged import judged_generation
from alignkit.judges import judge_from_spec
from alignkit.losses import masked_mean_per_row
from alignkit.models import adapters_disabled, apply_lora, is_peft, load_causal_lm
from alignkit.rollouts import SamplingSettings, generate
from alignkit.train import sharding
from alignkit.train.common import final_saver, load_policy
from alignkit.train.config import OnlineConfig
from alignkit.train.experience import Experience, PolicyWithValue, merge_batches, pad_to, rollout_batch, select_rows
from alignkit.train.run import Run, RunError, Steps, TrainResult, configure_threads, decay_groups
from alignkit.utils import processes
from alignkit.utils.seeds import derived_seed


@dataclass
class Algorithm:
    """What distinguishes PPO, GRPO and RLOO; everything else is the shared loop.

    advantages(exp, state) fills exp["advantages"] (and exp["returns"] for a critic) from the scores and the
    experience; it returns metrics. loss(out, mb) -> (per-sequence losses [b], per-sequence metrics) for a
    micro-batch, given the policy's forward output `out` and the micro-batch's slice of the experience.
    """

    name: str
    advantages: Callable[[Experience, dict], dict[str, float]]
    loss: Callable[[dict[str, torch.Tensor], Experience], tuple[torch.Tensor, dict[str, torch.Tensor]]]
    critic: str | None = None  # None, "shared" or "separate"
    uses_reference: bool = True
    adapts_kl: bool = False  # steers the KL coefficient itself (PPO's kl_target), so needs the KL even from 0


@dataclass
class OnlineState:
    """Mutable per-run state (checkpointed): the KL coefficient an algorithm may adapt, the tokens generated so far."""

    kl_coef: float
    generated_tokens: int = 0


def load_prompts(source: str, limit: int | None, skip_invalid: bool, split: str | None = "train") -> list:
    """Prompt records of `source`; `split` None for evaluation prompts (the source's test/validation split)."""
    result = load_records(source, "prompt", skip_invalid=skip_invalid, limit=limit, split=split)
    if result.skipped:
        print(f"{source}: skipped {result.skipped} invalid record(s); first: {result.errors[0]}", flush=True)
    return result.records


class OnlineTrainer:
    """Runs one online method in `cfg.output_dir`; see the module docstring for the iteration."""

    def __init__(self, cfg: OnlineConfig, algorithm: Algorithm):
        configure_threads()
        self.cfg, self.algorithm = cfg, algorithm
        self.run = Run(cfg, algorithm.name)
        self.world, self.rank = self.run.accelerator.num_processes, self.run.accelerator.process_index
        n = cfg.prompts_per_step * cfg.samples_per_prompt
        if cfg.prompts_per_step % self.world or self.minibatch_size() % self.world:
            raise RunError(f"{algorithm.name} on {self.world} processes: the process count must divide "
                           f"prompts_per_step ({cfg.prompts_per_step}) and the minibatch "
                           f"({self.minibatch_size()} of the {n} sequences)")
        self.device = self.run.device
        # The prompts are checked before any model loads.
        self.train_prompts = load_prompts(cfg.data.train, cfg.data.limit, cfg.data.skip_invalid)
        self.eval_prompts = (
            load_prompts(cfg.data.eval, cfg.data.eval_limit, cfg.data.skip_invalid, None) if cfg.data.eval else []
        )
        policy, self.tokenizer = load_policy(cfg)
        critic_model = None
        if algorithm.critic == "separate":
            critic_model = load_causal_lm(cfg.critic_model or cfg.model)
            if cfg.lora is not None:
                critic_model = apply_lora(critic_model, r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout,
                                          target_modules=cfg.lora.target_modules)
        self.model = PolicyWithValue(policy, algorithm.critic, critic_model).to(self.device)
        self.policy = policy
        self.reference = self._reference() if algorithm.uses_reference and self._kl_used() else None  # kept whole
        # What the update's forward goes through: the model sharded (FSDP), or DDP around it, on several processes
        # (either averages the gradients across them); sampling, the no-grad passes, evaluation and checkpoints use
        # the model itself (sharded: inside `sharding.whole`).
        if sharding.requested():
            self.trained = sharding.shard(self.model)
        else:
            self.trained = self.run.accelerator.prepare_model(self.model) if self.world > 1 else self.model
        self.judge = judge_from_spec(cfg.judge)
        if len(self.train_prompts) < cfg.prompts_per_step:
            raise RunError(
                f"{cfg.data.train}: {len(self.train_prompts)} prompts, fewer than prompts_per_step={cfg.prompts_per_step}"
            )

    def _kl_used(self) -> bool:
        return self.cfg.kl_coef > 0 or self.algorithm.adapts_kl

    def _reference(self) -> nn.Module | None:
        """A frozen reference: `ref_model`, the adapter-disabled base under LoRA, or a copy of the starting policy."""
        if self.cfg.ref_model is not None:
            ref = load_causal_lm(self.cfg.ref_model)
        elif is_peft(self.policy):
            return None  # the policy itself with adapters disabled
        else:
            ref = copy.deepcopy(self.policy)
        ref.requires_grad_(False)
        return ref.to(self.device).eval()

    # ------------------------------------------------------------------ the iteration

    def settings(self, iteration: int, first: int = 0, count: int | None = None) -> SamplingSettings:
        """Sampling for prompts first .. first + count of the iteration: each draws from the stream of (seed,
        iteration, its position), wherever it is sampled."""
        c = self.cfg
        count = c.prompts_per_step if count is None else count
        return c.sampling_settings(n=c.samples_per_prompt, seed=derived_seed(c.seed, iteration),
                                   prompt_seeds=tuple(derived_seed(c.seed, iteration, first + i) for i in range(count)))

    def prompts_for(self, iteration: int) -> list:
        per_epoch = len(self.train_prompts) // self.cfg.prompts_per_step
        epoch, k = divmod(iteration, per_epoch)
        generator = torch.Generator().manual_seed(derived_seed(self.cfg.seed, epoch))
        order = torch.randperm(len(self.train_prompts), generator=generator)
        size = self.cfg.prompts_per_step
        return [self.train_prompts[i] for i in order[k * size : (k + 1) * size].tolist()]

    @torch.no_grad()
    def experience(self, iteration: int, state: OnlineState) -> tuple[Experience, dict[str, float]]:
        # Sharded, each process samples with the whole policy: its answers end after different numbers of forward
        # passes, which per-layer gathers would have to match.
        with sharding.whole(self.model):
            return self._experience(iteration, state)

    def _experience(self, iteration: int, state: OnlineState) -> tuple[Experience, dict[str, float]]:
        cfg, alg = self.cfg, self.algorithm
        share = cfg.prompts_per_step // self.world  # this process's consecutive share of the iteration's prompts
        records = self.prompts_for(iteration)[self.rank * share : (self.rank + 1) * share]
        t0 = time.perf_counter()
        # One batch in the order of the prompts, each drawing from its own stream, computed as the update computes
        # (its autocast, whole prompts), so the sampler's log-probs are the update's.
        rollout = generate(self.policy, self.tokenizer, [r.prompt for r in records],
                           self.settings(iteration, self.rank * share, share), precision=self.run.precision,
                           batch_size=None, sort=False, desc=None, as_update=True).rollouts[0]
        t_generate = time.perf_counter() - t0
        rows = rollout.prompt_index.tolist()
        scores = self.judge.score([records[i].prompt for i in rows], rollout.texts,
                                  [records[i].reference for i in rows])
        t_score = time.perf_counter() - t0 - t_generate
        exp: Experience = rollout_batch(rollout)
        exp["scores"] = torch.tensor(scores, dtype=torch.float32, device=self.device)
        exp["eos"] = rollout.eos.to(self.device)
        exp["sample_logps"] = rollout.logps[:, : exp["response_ids"].shape[1]].float().to(self.device)
        # The rollout policy's log-probs (and values) in a no-grad pass when the update is not one on-policy step;
        # otherwise the loss uses the current log-probs, detached, which are the same numbers.
        single_step = cfg.ppo_epochs == 1 and self.minibatch_size() >= cfg.prompts_per_step * cfg.samples_per_prompt
        if not single_step or alg.critic is not None:
            out = self.forward_chunks(exp, with_values=alg.critic is not None)
            exp["old_logps"] = out["logps"]
            if "values" in out:
                exp["values"] = out["values"]
        if alg.uses_reference and self._kl_used():
            exp["ref_logps"] = self.reference_logps(exp)
        if self.world > 1:
            exp = self.gathered(exp)
        generated = int(exp["response_mask"].sum())
        state.generated_tokens += generated
        metrics = {
            "score": float(exp["scores"].mean()),
            "score_std": float(exp["scores"].std()) if exp["scores"].numel() > 1 else 0.0,
            "response_length": float(exp["response_mask"].sum(-1).float().mean()),
            "eos_rate": float(exp["eos"].float().mean()),
            "generate_seconds": t_generate,
            "score_seconds": t_score,
            "generate_tokens_per_s": generated / max(t_generate, 1e-9),
            "generated_tokens": float(state.generated_tokens),
        }
        return exp, metrics

    def gathered(self, exp: Experience) -> Experience:
        """Every process's experience, in prompt order, on every process."""
        parts = processes.gathered([{k: v.cpu() for k, v in exp.items()}])
        return {k: v.to(self.device) for k, v in merge_batches(parts, self.tokenizer.pad_token_id).items()}

    def forward_chunks(self, exp: Experience, with_values: bool) -> dict[str, torch.Tensor]:
        """No-grad forward over the whole batch in micro-batches of `eval_batch_size` (default 2 x batch_size)."""
        size = self.cfg.eval_batch_size or 2 * self.cfg.batch_size
        n, width = exp["response_ids"].shape
        parts: dict[str, list[torch.Tensor]] = {}
        self.model.eval()
        with self.run.autocast():
            for start in range(0, n, size):
                rows = torch.arange(start, min(start + size, n), device=self.device)
                out = self.model(select_rows(exp, rows), self.cfg.temperature, with_values)
                for key, value in out.items():
                    parts.setdefault(key, []).append(pad_to(value.float(), width))
        self.model.train()
        return {k: torch.cat(v) for k, v in parts.items()}

    def reference_logps(self, exp: Experience) -> torch.Tensor:
        size = self.cfg.eval_batch_size or 2 * self.cfg.batch_size
        n, width = exp["response_ids"].shape
        chunks = []
        if self.reference is not None:
            ref, context = PolicyWithValue(self.reference), contextlib.nullcontext()
        else:
            ref, context = PolicyWithValue(self.policy), adapters_disabled(self.policy)
        with context, self.run.autocast():
            for start in range(0, n, size):
                rows = torch.arange(start, min(start + size, n), device=self.device)
                chunks.append(pad_to(ref(select_rows(exp, rows), self.cfg.temperature)["logps"].float(), width))
        return torch.cat(chunks)

    def minibatch_size(self) -> int:
        total = self.cfg.prompts_per_step * self.cfg.samples_per_prompt
        return min(self.cfg.minibatch_size or total, total)

    def update(self, exp: Experience, optimizer, scheduler, iteration: int) -> dict[str, float]:
        """`ppo_epochs` passes over the (whole, gathered) batch in minibatches; this process computes its share of
        each minibatch, micro-batch by micro-batch, and DDP sums the gradients over the processes at the last one."""
        cfg, acc, n = self.cfg, self.run.accelerator, exp["response_ids"].shape[0]
        mb_size = self.minibatch_size()
        mine = mb_size // self.world
        sums: dict[str, float] = {}
        counted = 0
        gap_sum, gap_tokens = 0.0, 0  # |sampler log-prob - trainer log-prob| of the first minibatch's tokens
        generator = torch.Generator().manual_seed(derived_seed(cfg.seed, iteration))
        grad_norms = []
        for epoch in range(cfg.ppo_epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n - mb_size + 1, mb_size):
                minibatch = order[start : start + mb_size]
                own = minibatch[self.rank * mine : (self.rank + 1) * mine]
                minibatch_loss = 0.0
                for m in range(0, mine, cfg.batch_size):
                    rows = own[m : m + cfg.batch_size].to(self.device)
                    mb = select_rows(exp, rows)
                    last = m + cfg.batch_size >= mine
                    with (contextlib.nullcontext() if last or self.world == 1
                          else sharding.gradients_kept_local(self.trained, acc)):
                        with self.run.autocast():
                            out = self.trained(mb, cfg.temperature, with_values=self.algorithm.critic is not None,
                                               with_entropy=True)
                        if "old_logps" not in mb:
                            mb["old_logps"] = out["logps"].detach()
                        losses, metrics = self.algorithm.loss(out, mb)
                        loss = losses.sum() / mb_size
                        # DDP (or FSDP) averages over processes
                        (loss * self.world if self.world > 1 else loss).backward()
                    minibatch_loss += float(losses.detach().sum()) / mb_size
                    if epoch == 0 and start == 0:  # still the weights that sampled: both saw the same tokens
                        mask = mb["response_mask"]
                        diff = torch.where(mask.bool(), out["logps"].detach() - mb["sample_logps"], 0.0).abs()
                        gap_sum, gap_tokens = gap_sum + float(diff.sum()), gap_tokens + int(mask.sum())
                    metrics["entropy"] = masked_mean_per_row(out["entropy"], mb["response_mask"])
                    for key, value in {"loss": losses.detach(), **metrics}.items():
                        sums[key] = sums.get(key, 0.0) + float(value.sum())
                    counted += len(rows)
                if self.world > 1:  # every process decides on the same (whole minibatch's) loss
                    total = torch.tensor(minibatch_loss, dtype=torch.float64, device=self.device)
                    minibatch_loss = float(acc.reduce(total, "sum"))
                grad_norm = self.run.grad_norm(self.model.parameters())
                grad_norms.append(grad_norm)
                rows = ", ".join(map(str, minibatch.tolist()[:16])) + (" ..." if mb_size > 16 else "")
                if not self.run.skip_update(iteration, minibatch_loss, grad_norm,
                                            f"update epoch {epoch + 1}, minibatch of rollout rows {rows}"):
                    optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        sums, counted = self.run.summed(sums, counted)  # the statistics of every process's rows
        metrics = {k: v / counted for k, v in sums.items()}
        gap, gap_tokens = self.run.summed({"sampler_logp_gap": gap_sum}, gap_tokens)
        metrics["sampler_logp_gap"] = gap["sampler_logp_gap"] / max(gap_tokens, 1)
        if grad_norms:
            metrics["grad_norm"] = sum(grad_norms) / len(grad_norms)
        metrics["lr"] = scheduler.get_last_lr()[0]
        if cfg.skip_nonfinite:
            metrics["skipped_nonfinite"] = self.run.skipped_nonfinite
        return metrics

    # ------------------------------------------------------------------ evaluation and the run

    def evaluate(self) -> dict[str, float]:
        """The policy's judged samples on the eval prompts (`Run.fit` calls it without gradients, under autocast)."""
        greedy = SamplingSettings(max_new_tokens=self.cfg.eval_max_new_tokens or self.cfg.max_new_tokens,
                                  temperature=0.0)
        return judged_generation(self.policy, self.tokenizer, self.eval_prompts, self.judge, settings=greedy,
                                 batch_size=self.cfg.eval_batch_size or 16, precision=self.run.precision).metrics

    def param_groups(self) -> list[dict]:
        """Weight decay on matrices only; the value function (head and separate critic) at `critic_lr` if set."""
        critic_lr = getattr(self.cfg, "critic_lr", None)
        critic_lr = self.cfg.lr if critic_lr is None else critic_lr
        parts = ((self.model.policy, self.cfg.lr), (self.model.value_head, critic_lr), (self.model.critic, critic_lr))
        return [g for module, lr in parts if module is not None for g in decay_groups(module, self.cfg.weight_decay, lr)]

    def iterations(self) -> int:
        if self.cfg.max_steps > 0:
            return self.cfg.max_steps
        return max(1, math.ceil(self.cfg.epochs * len(self.train_prompts) / self.cfg.prompts_per_step))

    def train(self) -> TrainResult:
        """The online step (one iteration: experience, advantages, update), handed to `Run.fit`."""
        cfg = self.cfg
        n = cfg.prompts_per_step * cfg.samples_per_prompt
        if n % self.minibatch_size():
            raise RunError(f"minibatch_size={cfg.minibatch_size} must divide the rollout batch ({n} sequences)")
        total = self.iterations()
        steps_per_iteration = cfg.ppo_epochs * (n // self.minibatch_size())
        optimizer, scheduler = self.run.optimizer(self.param_groups(), total * steps_per_iteration)
        state = OnlineState(kl_coef=cfg.kl_coef)

        def step(iteration: int) -> dict[str, float]:
            t_iter = time.perf_counter()
            exp, metrics = self.experience(iteration, state)
            metrics.update(self.algorithm.advantages(exp, {"state": state, "cfg": cfg}))
            t_update = time.perf_counter()
            metrics.update(self.update(exp, optimizer, scheduler, iteration))
            metrics["update_seconds"] = time.perf_counter() - t_update
            metrics["iteration_seconds"] = time.perf_counter() - t_iter
            metrics["kl_coef"] = state.kl_coef
            return metrics

        def load_state(saved: dict) -> None:
            state.kl_coef, state.generated_tokens = saved["kl_coef"], saved["generated_tokens"]

        steps = Steps(
            total=total, step=step, evaluate=self.evaluate if self.eval_prompts else None, evaluate_first=True,
            state=lambda: {"kl_coef": state.kl_coef, "generated_tokens": state.generated_tokens},
            load_state=load_state, progress=("score", "kl"),
            summary=lambda: {"generated_tokens": state.generated_tokens},
            generated=f"responses sampled from the policy ({cfg.samples_per_prompt} per prompt), scored by the "
                      f"judge `{json.dumps(cfg.judge) if isinstance(cfg.judge, dict) else cfg.judge}`",
        )
        return self.run.fit(self.model, optimizer, scheduler, steps, final_saver(self.policy, self.tokenizer, cfg))


__all__ = ["Algorithm", "OnlineState", "OnlineTrainer", "load_prompts"]
