"""Typed configuration for every trainer: YAML file + `key=value` overrides, unknown keys rejected.

One pydantic model per recipe. Every trainer shares `TrainConfig`'s keys (the documented interface); each method adds
its own (e.g. DPO's `beta`). Nested keys use dots on the command line: `data.train=my.jsonl lora.r=16`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration problem, with the file and key it concerns."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    train: str = Field(description="training data: a file (.jsonl/.json/.csv/.parquet), a datasets dir, hub name, or builtin:NAME")
    eval: str | None = Field(default=None, description="evaluation data, same forms as train")
    skip_invalid: bool = Field(default=False, description="skip bad records and report the count instead of failing")
    limit: int | None = Field(default=None, ge=1, description="use at most this many training records")
    eval_limit: int | None = Field(default=None, ge=1, description="use at most this many eval records")


class LoraConfig(Strict):
    r: int = Field(default=16, ge=1)
    alpha: float = 32.0
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | str = "all-linear"


class TrainConfig(Strict):
    model: str = Field(default="smollm2-135m", description="alias, HF model directory, .gguf file, or hub id")
    data: DataConfig
    output_dir: str
    max_steps: int = Field(default=-1, description="optimizer steps; -1 = run `epochs` epochs")
    epochs: float = Field(default=1.0, gt=0)
    batch_size: int = Field(default=4, ge=1, description="examples per micro-batch per process")
    eval_batch_size: int | None = Field(default=None, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    lr: float = Field(default=1e-5, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_ratio: float = Field(default=0.0, ge=0, le=1)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    max_length: int = Field(default=512, ge=8)
    group_by_length: bool = Field(
        default=False, description="put examples of similar length in the same batch (less padding to compute over); "
                                   "batches are still visited in random order")
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    seed: int = 0
    resume: Literal["auto", "never"] = Field(
        default="auto", description="auto: continue from the newest checkpoint in output_dir if there is one"
    )
    overwrite: bool = Field(default=False, description="allow replacing a finished run in output_dir")
    save_every: int = Field(default=0, ge=0, description="checkpoint every N steps (0 = only at the end)")
    keep_checkpoints: int = Field(default=2, ge=1)
    eval_every: int = Field(default=0, ge=0, description="evaluate every N steps (0 = at the end only)")
    log_every: int = Field(default=1, ge=1)
    report_to: list[Literal["tensorboard", "wandb", "trackio"]] = Field(default_factory=list)
    lora: LoraConfig | None = None
    save_merged: bool = Field(default=True, description="with LoRA, save the final model merged (else the adapter)")
    progress: bool = True


class SFTConfig(TrainConfig):
    lr: float = 2e-5


class RewardConfig(TrainConfig):
    loss: Literal["auto", "bradley_terry", "plackett_luce", "all_pairs", "rating"] = Field(
        default="auto", description="auto: Bradley-Terry for pairs, Plackett-Luce for rankings, regression for ratings"
    )
    use_margin: bool = Field(default=True, description="use a pair's `margin` field in the Bradley-Terry loss")
    center_rewards_coef: float = Field(default=0.0, ge=0)
    lr: float = 1e-5


class DPOConfig(TrainConfig):
    beta: float = Field(default=0.1, gt=0)
    loss: Literal["sigmoid", "robust", "ipo", "hinge"] = "sigmoid"
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5)
    ref_model: str | None = Field(default=None, description="reference policy; default: the starting model")
    lr: float = 5e-6

    @model_validator(mode="after")
    def _robust_needs_smoothing(self):
        if self.loss == "robust" and self.label_smoothing == 0:
            raise ValueError("loss=robust needs label_smoothing > 0 (the assumed label-noise rate)")
        return self


class HBATConfig(DPOConfig):
    """`alignkit hbat`: Hybrid Alignment Training (Wang et al. 2024). `data` holds the preference pairs, `sft_data`
    the demonstrations; `epochs` passes over each."""

    sft_data: DataConfig = Field(description="demonstrations for the instruction-following (SFT) objective")
    mode: Literal["alternate", "joint"] = Field(
        default="alternate", description="alternate: HBAT, blocks of SFT and preference steps in turn, EWC at each "
                                         "switch; joint: every step the weighted sum of both objectives")
    segments: int = Field(default=4, ge=1, description="alternate: each objective's steps split into this many blocks "
                                                      "(SFT block 1, preference block 1, SFT block 2, ...)")
    sft_steps: int | None = Field(default=None, ge=1, description="SFT steps in all; default: epochs over sft_data")
    preference_steps: int | None = Field(default=None, ge=1,
                                         description="preference steps in all; default: epochs over data")
    ewc_strength: float = Field(default=1.0, ge=0, description="alternate: lambda of the EWC penalty after a switch "
                                                               "(0: plain alternation)")
    fisher_samples: int = Field(default=16, ge=1, description="examples of the objective just left whose squared "
                                                              "gradients estimate its diagonal Fisher")
    fisher_normalize: bool = Field(default=True, description="scale the Fisher to mean 1, so ewc_strength is on the "
                                                             "scale of the losses whatever the model size")
    sft_weight: float = Field(default=1.0, ge=0, description="joint: weight of the SFT loss (mean NLL per token)")
    pref_weight: float = Field(default=1.0, ge=0, description="joint: weight of the preference loss (mean per pair)")
    lr: float = 1e-5


class ORPOConfig(TrainConfig):
    beta: float = Field(default=0.1, gt=0, description="weight of the odds-ratio term (lambda in the paper)")
    lr: float = 8e-6


class KTOConfig(TrainConfig):
    beta: float = Field(default=0.1, gt=0)
    desirable_weight: float = Field(default=1.0, gt=0)
    undesirable_weight: float = Field(default=1.0, gt=0)
    ref_model: str | None = None
    lr: float = 5e-6


class OnlineConfig(TrainConfig):
    """Keys shared by the methods that learn from the policy's own samples (PPO, GRPO, RLOO).

    `data.train` / `data.eval` hold prompts (kind `prompt`: a `prompt` and an optional `reference` for verifiers),
    e.g. `task:arithmetic?difficulty=1&split=train`. `max_steps` counts iterations (rollout batches); without it,
    `epochs` passes over the training prompts.
    """

    judge: str | dict = Field(default="final_answer", description="what scores a response: a judge spec (see judges)")
    prompts_per_step: int = Field(default=8, ge=1, description="prompts per rollout batch")
    samples_per_prompt: int = Field(default=1, ge=1, description="responses sampled per prompt")
    max_new_tokens: int = Field(default=64, ge=1)
    temperature: float = Field(default=1.0, gt=0, description="sampling temperature (log-probs use the same)")
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0)
    ppo_epochs: int = Field(default=1, ge=1, description="passes over each rollout batch")
    minibatch_size: int | None = Field(default=None, ge=1, description="sequences per optimizer step; default: the whole batch")
    clip_range: float = Field(default=0.2, gt=0)
    kl_coef: float = Field(default=0.05, ge=0, description="weight of the KL penalty to the reference")
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"
    ref_model: str | None = Field(default=None, description="reference policy; default: the starting model")
    eval_max_new_tokens: int | None = Field(default=None, ge=1, description="default: max_new_tokens")
    batch_size: int = Field(default=8, ge=1, description="sequences per micro-batch")
    lr: float = 1e-6
    scheduler: Literal["cosine", "linear", "constant"] = "constant"

    @model_validator(mode="after")
    def _no_grad_accum(self):
        if self.grad_accum != 1:
            raise ValueError("grad_accum: online methods accumulate over minibatch_size / batch_size instead")
        if self.group_by_length:
            raise ValueError("group_by_length: online methods train on the batch they just sampled, in its order")
        return self


class PPOConfig(OnlineConfig):
    critic: Literal["shared", "separate"] = Field(
        default="separate", description="value head on the policy's backbone (shared) or on its own transformer"
    )
    critic_model: str | None = Field(default=None, description="separate critic's starting weights; default: model")
    kl_target: float | None = Field(default=None, gt=0, description="adaptive KL: steer the per-sequence KL to this value")
    kl_horizon: int = Field(default=10000, ge=1, description="adaptive KL horizon, in sequences")
    vf_coef: float = Field(default=0.1, ge=0, description="weight of the value loss")
    critic_lr: float | None = Field(default=None, gt=0, description="learning rate of the value head / critic; default: lr")
    clip_range_value: float = Field(default=0.2, gt=0)
    gamma: float = Field(default=1.0, ge=0, le=1)
    lam: float = Field(default=0.95, ge=0, le=1)
    whiten_advantages: bool = True
    missing_eos_penalty: float | None = Field(default=None, ge=0, description="subtracted from the score of a response cut at max_new_tokens")
    ppo_epochs: int = 4
    minibatch_size: int | None = 8
    lr: float = 1e-6


class GRPOConfig(OnlineConfig):
    samples_per_prompt: int = Field(default=8, ge=2)
    kl_coef: float = Field(default=0.0, ge=0, description="beta of the per-token KL term in the loss")
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    scale_rewards: bool = Field(default=True, description="divide by the group's std (False: Dr. GRPO)")
    lr: float = 1e-6


class RLOOConfig(OnlineConfig):
    samples_per_prompt: int = Field(default=4, ge=2)
    kl_coef: float = Field(default=0.05, ge=0, description="beta of the sequence KL subtracted from the reward")
    lr: float = 1e-6


class IterativeDPOConfig(DPOConfig):
    """Rounds of sample -> judge -> (best, worst) pairs -> DPO. All DPO keys apply to each round's DPO run;
    `data.train` / `data.eval` hold prompts (kind `prompt`), as for the online methods."""

    rounds: int = Field(default=3, ge=1)
    prompts_per_round: int = Field(default=64, ge=1)
    samples_per_prompt: int = Field(default=4, ge=2, description="responses sampled per prompt to pick best and worst from")
    max_new_tokens: int = Field(default=64, ge=1)
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0)
    judge: str | dict = Field(default="final_answer", description="judge spec that scores the samples")
    reference: Literal["fixed", "refresh"] = Field(
        default="fixed", description="fixed: the starting model (or ref_model) in every round; refresh: each round's start"
    )
    eval_max_new_tokens: int | None = Field(default=None, ge=1)
    generation_batch_size: int = Field(default=32, ge=1, description="sequences generated at once")
    epochs: float = Field(default=2.0, gt=0, description="DPO epochs over each round's pairs")


class DataMix(Strict):
    """One source of rows for a Constitutional AI stage, optionally filtered by the rows' `category` field."""

    source: str = Field(description="a data source, as data.train takes it (file, builtin:NAME, suite:PART?split=train)")
    categories: list[str] | None = Field(default=None, description="keep only rows whose `category` is one of these")
    limit: int | None = Field(default=None, ge=1, description="use at most this many rows (after filtering)")


def _check_stage_keys(name: str, keys: dict, cls: type[BaseModel]) -> None:
    """A stage's trainer settings are that trainer's keys; the pipeline sets model, data and output_dir itself."""
    own = {"model", "data", "output_dir"}
    unknown = sorted(set(keys) - (set(cls.model_fields) - own))
    if unknown:
        raise ValueError(f"{name}: unknown or pipeline-owned keys {unknown}; valid keys: "
                         + ", ".join(sorted(set(cls.model_fields) - own)))
    cls.model_validate({"data": {"train": "x"}, "output_dir": "x", **keys})


class CAIFeedbackConfig(Strict):
    model: str | dict | None = Field(
        default=None, description="None: the policy; a model (alias, HF dir, .gguf, hub id); {http: {...}}; or a judge spec")
    train: bool = Field(default=True, description="first teach it critique/revision (the constitution's exemplars) and "
                                                  "comparison (the train gold comparisons) by SFT")
    exemplar_repeats: int = Field(default=1, ge=1, description="copies of each worked exemplar in the teaching data")
    comparison_repeats: int = Field(default=1, ge=1, description="copies of each gold comparison (both orders) in it")
    sft: dict[str, Any] = Field(default_factory=dict, description="SFT keys for teaching critique and revision "
                                                                  "(epochs, lr, ...)")
    judge_sft: dict[str, Any] = Field(default_factory=dict, description="SFT keys for teaching comparison (a copy of "
                                                                        "the model of its own)")
    min_accuracy: float = Field(default=0.7, ge=0, le=1, description="audit gate on the held-out gold comparisons")
    min_principle_accuracy: float = Field(
        default=0.7, ge=0, le=1, description="the feedback model labels, checks and critiques only under principles "
                                             "whose own held-out accuracy reaches this")
    override_audit: bool = Field(default=False, description="proceed even if the audit is below min_accuracy, and "
                                                            "judge under every principle")
    audit_extra_principles: int = Field(default=1, ge=0, description="other principles asked per gold item (agreement)")
    batch_size: int = Field(default=128, ge=1, description="conversations the feedback model or the policy "
                                                        "generates at once (decoding on a CPU costs per step, not per row)")

    @model_validator(mode="after")
    def _check_sft(self):
        _check_stage_keys("feedback.sft", self.sft, SFTConfig)
        _check_stage_keys("feedback.judge_sft", self.judge_sft, SFTConfig)
        return self


class CAICritiqueConfig(Strict):
    prompts: list[DataMix] = Field(default_factory=lambda: [DataMix(source="suite:redteam?split=train")],
                                   description="red-team prompts the policy answers and the feedback model revises")
    jailbreak_suite: str | None = Field(
        default="default", description="also wrap each prompt in a train-split jailbreak template of this suite (None: no)")
    jailbreak_fraction: float = Field(default=1.0, ge=0, le=1,
                                      description="share of the prompts that get a jailbreak-wrapped copy (drawn at random)")
    rounds: int = Field(default=1, ge=1, description="critique -> revision rounds, each under a random principle")
    principles: list[str] | None = Field(
        default=None, description="ids of the principles drawn for critiques (None: all of the constitution's)")
    max_new_tokens: int = Field(default=96, ge=1, description="length of the policy's first answers")
    critique_tokens: int = Field(default=96, ge=1, description="length of the feedback model's critiques")
    revision_tokens: int = Field(default=128, ge=1, description="length of its revisions")
    check_revisions: bool = Field(
        default=False, description="train only on revisions the feedback model itself prefers to the first answer")


class CAISLConfig(Strict):
    helpful: list[DataMix] = Field(
        default_factory=lambda: [DataMix(source="builtin:sft", categories=["benign", "borderline"])],
        description="helpfulness demonstrations mixed with the revisions so the model keeps its helpfulness")
    revision_repeats: int = Field(default=1, ge=1, description="copies of each kept revision in the SFT data (weighs "
                                                               "harmlessness against the demonstrations)")
    policy_answers: list[DataMix] = Field(
        default_factory=list, description="prompts the starting policy answers (greedily); its own answers join the "
                                          "SFT data as helpfulness samples, as the paper mixes in the helpful model's")
    sft: dict[str, Any] = Field(default_factory=dict, description="SFT keys (epochs, lr, batch_size, ...)")

    @model_validator(mode="after")
    def _check_sft(self):
        _check_stage_keys("sl.sft", self.sft, SFTConfig)
        return self


class CAIContrastConfig(Strict):
    """On-policy contrast pairs: on prompts whose right behaviour people decided, the SL-CAI policy's own right
    answer preferred to its own wrong one (the refusal detector tells which is which)."""

    refuse: list[DataMix] = Field(default_factory=lambda: [DataMix(source="suite:redteam?split=train")],
                                  description="harmful prompts (written as such by people): a refusal is right")
    answer: list[DataMix] = Field(default_factory=lambda: [DataMix(source="suite:borderline?split=train")],
                                  description="benign prompts with alarming words: a refusal is over-refusal")
    samples: int = Field(default=4, ge=1, description="responses sampled per prompt beside the greedy one")
    sampled_failures: list[Literal["refuse", "answer"]] = Field(
        default_factory=lambda: ["refuse"],
        description="kinds of prompt on which a wrong sample is rejected even where the greedy answer is right "
                    "(elsewhere only wrong greedy answers are: on benign prompts, rejecting sampled refusals also "
                    "unlearnt refusing harmful requests; docs/demo.md)")
    temperature: float = Field(default=1.0, gt=0, description="their sampling temperature")
    max_new_tokens: int = Field(default=64, ge=1)


class CAIRLConfig(Strict):
    method: Literal["ppo", "dpo"] = Field(
        default="ppo", description="ppo: preference model on the soft labels, then PPO against it; dpo: DPO on the hard pairs")
    prompts: list[DataMix] = Field(
        default_factory=lambda: [DataMix(source="suite:redteam?split=train"),
                                 DataMix(source="suite:borderline?split=train")],
        description="prompts the SL-CAI policy answers twice for AI comparison")
    jailbreak_suite: str | None = Field(default="default", description="as critique.jailbreak_suite")
    jailbreak_fraction: float = Field(default=1.0, ge=0, le=1, description="as critique.jailbreak_fraction")
    max_new_tokens: int = Field(default=96, ge=1)
    temperature: float = Field(default=1.0, gt=0, description="sampling temperature of the two responses")
    principles_per_label: int = Field(default=2, ge=1, description="k: principles drawn per pair (ensembled)")
    cot: bool = Field(default=False, description="clamp each judgement to [0.4, 0.6], as for chain-of-thought labels")
    helpful_preferences: list[DataMix] = Field(
        default_factory=lambda: [DataMix(source="builtin:preference", categories=["benign", "borderline"])],
        description="human helpfulness preferences trained beside the AI labels")
    min_confidence: float = Field(default=0.1, ge=0, lt=0.5, description="dpo: drop labels within this of 0.5")
    phase1_pairs: bool = Field(
        default=False, description="also learn from phase 1's AI comparisons: each revision against the first answer, "
                                   "labelled by the feedback model's check (needs critique.check_revisions)")
    contrast: CAIContrastConfig | None = Field(
        default=None, description="also learn from on-policy contrast pairs (null: off): where the greedy answer "
                                  "or one of n samples refuses wrongly, or answers a harmful request, the policy's "
                                  "own right response is preferred to it")
    preference: dict[str, Any] = Field(default_factory=dict, description="reward-model keys for the preference model")
    ppo: dict[str, Any] = Field(default_factory=dict, description="PPO keys")
    dpo: dict[str, Any] = Field(default_factory=dict, description="DPO keys")

    @model_validator(mode="after")
    def _check_stages(self):
        _check_stage_keys("rl.preference", self.preference, RewardConfig)
        _check_stage_keys("rl.ppo", {k: v for k, v in self.ppo.items() if k != "judge"}, PPOConfig)
        _check_stage_keys("rl.dpo", self.dpo, DPOConfig)
        return self


class CAIEvalConfig(Strict):
    suite: str = Field(default="default", description="evaluation suite (its held-out split is used)")
    max_new_tokens: int = Field(default=96, ge=1)
    batch_size: int = Field(default=128, ge=1)
    judge: str | dict | None = Field(default=None, description="optional judge for the judged metrics")


class CAIConfig(Strict):
    """`alignkit cai`: Constitutional AI end to end, in resumable stages under output_dir."""

    model: str = Field(default="smollm2-135m", description="the policy to align")
    output_dir: str = "runs/cai"
    constitution: str = Field(default="default", description="a built-in constitution name or a YAML file")
    seed: int = Field(default=0, description="seeds every stage: principle draws, sampling, data order and each "
                                             "trainer (unless a stage's own keys set `seed`)")
    reuse: str | None = Field(
        default=None, description="a finished run whose identical phase-1 and label stages this run takes over "
                                  "(e.g. to try PPO after a DPO run)")
    feedback: CAIFeedbackConfig = Field(default_factory=CAIFeedbackConfig)
    critique: CAICritiqueConfig = Field(default_factory=CAICritiqueConfig)
    sl: CAISLConfig = Field(default_factory=CAISLConfig)
    rl: CAIRLConfig = Field(default_factory=CAIRLConfig)
    eval: CAIEvalConfig | None = Field(default_factory=CAIEvalConfig, description="null: skip the final evaluation")

    @model_validator(mode="after")
    def _check_phase1_pairs(self):
        if self.rl.phase1_pairs and not self.critique.check_revisions:
            raise ValueError("rl.phase1_pairs needs critique.check_revisions: true (its labels are that check's)")
        return self


COMPARE_RECIPES = ("sft", "sft-ppo", "sft-dpo", "orpo", "sft-kto", "cai", "hbat", "joint")
EVAL_PARTS = ("redteam", "jailbreak", "borderline", "verifiable", "anthropomorphism", "bias")


class CompareEvalConfig(Strict):
    suite: str = Field(default="default", description="evaluation suite (its held-out split is used)")
    parts: list[Literal[EVAL_PARTS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["redteam", "borderline", "verifiable"],
        description="suite parts answered: red-team gives ASR, borderline over-refusal, verifiable helpfulness; "
                    "KL from the start model comes from the borderline and verifiable answers")
    max_new_tokens: int = Field(default=64, ge=1)
    batch_size: int = Field(default=128, ge=1)


class CompareConfig(Strict):
    """`alignkit compare`: recipes from one starting model on the same data and step budget, over several seeds."""

    model: str = Field(default="smollm2-135m", description="the starting model of every recipe")
    output_dir: str = "runs/compare"
    recipes: list[Literal[COMPARE_RECIPES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(COMPARE_RECIPES), min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1], min_length=1)
    steps: int = Field(default=20, ge=1, description="optimizer steps of every training stage: the matched budget")
    batch_size: int = Field(default=8, ge=1)
    max_length: int = Field(default=384, ge=8)
    sft_data: str = Field(default="builtin:sft", description="demonstrations (SFT, HBAT, joint)")
    preference_data: str = Field(default="builtin:preference",
                                 description="preferences (reward model, DPO, ORPO, KTO, HBAT, joint; PPO's prompts)")
    stages: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="trainer keys per stage: sft, reward, ppo, dpo, orpo, kto, hbat, joint")
    cai: dict[str, Any] = Field(default_factory=dict, description="overrides of the CAI recipe (the demo's settings)")
    eval: CompareEvalConfig = Field(default_factory=CompareEvalConfig)

    @model_validator(mode="after")
    def _check(self):
        for name, values in (("recipes", self.recipes), ("seeds", self.seeds)):
            if len(set(values)) != len(values):
                raise ValueError(f"{name}: each may appear once, got {values}")
        classes = {"sft": SFTConfig, "reward": RewardConfig, "ppo": PPOConfig, "dpo": DPOConfig, "orpo": ORPOConfig,
                   "kto": KTOConfig, "hbat": HBATConfig, "joint": HBATConfig}
        for stage, keys in self.stages.items():
            if stage not in classes:
                raise ValueError(f"stages.{stage}: no such stage; stages are {', '.join(classes)}")
            probe = {"data": {"train": "x"}, "output_dir": "x", **({"sft_data": {"train": "x"}}
                                                                   if classes[stage] is HBATConfig else {})}
            unknown = sorted(set(keys) - set(classes[stage].model_fields))
            if unknown:
                raise ValueError(f"stages.{stage}: unknown keys {unknown}; valid keys: "
                                 + ", ".join(sorted(classes[stage].model_fields)))
            classes[stage].model_validate({**probe, **keys})
        return self


C = TypeVar("C", bound=BaseModel)


def _valid_keys(model: type[BaseModel]) -> list[str]:
    return sorted(model.model_fields)


def _check_keys(raw: dict, model: type[BaseModel], where: str, prefix: str = "") -> None:
    """Reject unknown keys with the list of valid ones (pydantic's own message does not list them)."""
    fields = model.model_fields
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(
                f"{where}: unknown key '{dotted}'. Valid keys{' under ' + prefix[:-1] if prefix else ''}: "
                + ", ".join(_valid_keys(model))
            )
        annotation = fields[key].annotation
        sub = _submodel(annotation)
        if sub is not None and isinstance(value, dict):
            _check_keys(value, sub, where, prefix=f"{dotted}.")


def _submodel(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def parse_overrides(pairs: list[str]) -> dict:
    """`["a.b=1", "c=x"]` -> `{"a": {"b": 1}, "c": "x"}`; values are parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override '{pair}': expected key=value")
        key, value = pair.split("=", 1)
        node = out
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override '{pair}': empty key")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{pair}': '{part}' is not a section")
        node[parts[-1]] = yaml.safe_load(value) if value != "" else None
    return out


def merge_config(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    raw: dict = {}
    where = "command line"
    if path is not None:
        where = str(path)
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    raw = merge_config(raw, parse_overrides(overrides or []))
    _check_keys(raw, cls, where)
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"'{'.'.join(str(p) for p in err['loc']) or '(top level)'}': {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"{where}: {problems}") from None


METHOD_CONFIGS: dict[str, type[TrainConfig]] = {
    "sft": SFTConfig,
    "reward": RewardConfig,
    "dpo": DPOConfig,
    "orpo": ORPOConfig,
    "kto": KTOConfig,
    "ppo": PPOConfig,
    "grpo": GRPOConfig,
    "rloo": RLOOConfig,
    "iterative-dpo": IterativeDPOConfig,
    "hbat": HBATConfig,
}
