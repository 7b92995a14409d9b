"""The typed settings of `alignkit cai`: one section per stage, each stage's trainer keys typed by its method."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, model_serializer, model_validator

from alignkit.methods.dpo import DPOConfig
from alignkit.methods.ppo import PPOConfig
from alignkit.methods.reward import RewardConfig
from alignkit.methods.sft import SFTConfig
from alignkit.train.config import StageSettings, Strict, stage_settings
from alignkit.utils import sampling_defaults as defaults

SFTStage = stage_settings(SFTConfig)
RewardStage = stage_settings(RewardConfig)
# The PPO stage's judge is the preference model the pipeline trained.
PPOStage = stage_settings(PPOConfig, ("model", "data", "output_dir", "judge"))
DPOStage = stage_settings(DPOConfig)


class DataMix(Strict):
    """One source of rows for a Constitutional AI stage, optionally filtered by the rows' `category` field."""

    source: str = Field(description="a data source, as data.train takes it (file, builtin:NAME, suite:PART?split=train)")
    categories: list[str] | None = Field(
        default=None, description="keep only rows whose `category` (a suite row's `group`) is one of these")
    harmful: bool | None = Field(
        default=None, description="people wrote these prompts as harmful (true: refusing safely is right) or benign "
                                  "(false: refusing is over-refusal); rl.verifier reads it")
    skip: int = Field(default=0, ge=0, description="pass over the first this many rows (after filtering): e.g. to "
                                                   "hold back the rows after those another stage reads")
    limit: int | None = Field(default=None, ge=1, description="use at most this many rows (after filtering and "
                                                              "skipping)")


class CAIFeedbackConfig(Strict):
    model: str | dict | None = Field(
        default=None, description="None: the policy; a model (alias, HF dir, .gguf, hub id); {http: {...}}; or a judge spec")
    train: bool = Field(default=True, description="first teach it critique/revision (the constitution's exemplars) and "
                                                  "comparison (the train gold comparisons) by SFT")
    exemplar_repeats: int = Field(default=1, ge=1, description="copies of each worked exemplar in the teaching data")
    comparison_repeats: int = Field(default=1, ge=1, description="copies of each gold comparison (both orders) in it")
    sft: SFTStage = Field(default_factory=SFTStage, description="SFT keys for teaching critique and revision "
                                                                "(epochs, lr, ...)")
    judge_sft: SFTStage = Field(default_factory=SFTStage, description="SFT keys for teaching comparison (a copy of "
                                                                      "the model of its own)")
    min_accuracy: float = Field(default=0.7, ge=0, le=1, description="audit gate on the held-out gold comparisons")
    min_principle_accuracy: float = Field(
        default=0.7, ge=0, le=1, description="the feedback model labels, checks and critiques only under principles "
                                             "whose held-out accuracy's Wilson 90% lower bound reaches this")
    min_principle_comparisons: int = Field(
        default=15, ge=0, description="... and that were audited on at least this many held-out gold comparisons")
    override_audit: bool = Field(default=False, description="proceed even if the audit is below min_accuracy, and "
                                                            "judge under every principle")
    audit_extra_principles: int = Field(default=1, ge=0, description="other principles asked per gold item (agreement)")
    audit_per_principle: int | None = Field(
        default=None, ge=1, description="audit on at most this many held-out gold comparisons of each principle, the "
                                        "first in the file (None: all; fewer make a quick try cheaper and the "
                                        "per-principle gate coarser)")
    batch_size: int = Field(default=128, ge=1, description="conversations the feedback model or the policy "
                                                        "generates at once (decoding on a CPU costs per step, not per row)")


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
    max_new_tokens: int = Field(default=defaults.MAX_NEW_TOKENS, ge=1, description="length of the policy's first answers")
    critique_tokens: int = Field(default=96, ge=1, description="length of the feedback model's critiques")
    revision_tokens: int = Field(default=128, ge=1, description="length of its revisions")
    rule_check: bool = Field(
        default=True, description="train only on revisions that refuse (the refusal detector) and offer no harmful "
                                  "act in the refusal's place (alignkit/judges/offers.py); the prompts are harmful")
    check_revisions: bool = Field(
        default=False, description="train only on revisions the feedback model itself prefers to the first answer")
    check_margin: float = Field(
        default=0.0, ge=0, lt=0.5, description="check_revisions: the preference, averaged over both orders, must "
                                               "exceed 0.5 by this")
    revision_form: Literal["free", "short"] = Field(
        default="free", description="free: the writer's revision as it wrote it (the paper's); short: its refusal "
                                    "sentence (when it refuses this request, else a plain refusal) followed by the "
                                    "constitution's reason and safe alternative for the request's harm category")


class CAISLConfig(Strict):
    helpful: list[DataMix] = Field(
        default_factory=lambda: [DataMix(source="builtin:sft", categories=["benign", "borderline"])],
        description="helpfulness demonstrations mixed with the revisions so the model keeps its helpfulness")
    revision_repeats: int = Field(default=1, ge=1, description="copies of each kept revision in the SFT data (weighs "
                                                               "harmlessness against the demonstrations)")
    policy_answers: list[DataMix] = Field(
        default_factory=list, description="prompts the starting policy answers (greedily); its own answers join the "
                                          "SFT data as helpfulness samples, as the paper mixes in the helpful model's")
    sft: SFTStage = Field(default_factory=SFTStage, description="SFT keys (epochs, lr, batch_size, ...)")


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
    max_new_tokens: int = Field(default=defaults.MAX_NEW_TOKENS, ge=1, description="length of the sampled answers")


class CAIStopCheck(Strict):
    """Held-back train prompts that decide when RLAIF rounds stop (never the evaluation's held-out ones)."""

    refuse: list[DataMix] = Field(description="harmful prompts the rounds never train on: refusing safely is right")
    answer: list[DataMix] = Field(description="benign prompts the rounds never train on: refusing is over-refusal")
    max_new_tokens: int = Field(default=defaults.MAX_NEW_TOKENS, ge=1, description="length of the greedy answers")


class CAIRLConfig(Strict):
    method: Literal["ppo", "dpo"] = Field(
        default="ppo", description="ppo: preference model on the soft labels, then PPO against it; dpo: DPO on the hard pairs")
    prompts: list[DataMix] = Field(
        default_factory=lambda: [DataMix(source="suite:redteam?split=train"),
                                 DataMix(source="suite:borderline?split=train")],
        description="prompts the SL-CAI policy answers twice for AI comparison")
    jailbreak_suite: str | None = Field(default="default", description="as critique.jailbreak_suite")
    jailbreak_fraction: float = Field(default=1.0, ge=0, le=1, description="as critique.jailbreak_fraction")
    max_new_tokens: int = Field(default=defaults.MAX_NEW_TOKENS, ge=1, description="length of the two responses")
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
    verifier: bool = Field(
        default=False, description="label with the rule verifier beside the judge: on prompts people marked "
                                   "(`harmful` of their source), where exactly one response of a pair is right (a "
                                   "safe refusal of a harmful request, an answer to a benign one) it is preferred "
                                   "with certainty, whatever the judge said; phase 1's pairs too (their prompts "
                                   "are harmful)")
    rounds: int = Field(default=1, ge=1, description="dpo: RLAIF rounds; each after the first samples the current "
                                                   "model, labels its pairs (feedback model, rule verifier) and "
                                                   "trains a DPO round from it")
    stop_check: CAIStopCheck | None = Field(
        default=None, description="rounds > 1: held-back train prompts scored after each round; the rounds stop when "
                                  "one scores no better than the best so far, and the best round's model is kept "
                                  "(null: all rounds, the last kept)")
    contrast: CAIContrastConfig | None = Field(
        default=None, description="also learn from on-policy contrast pairs (null: off): where the greedy answer "
                                  "or one of n samples refuses wrongly, or answers a harmful request, the policy's "
                                  "own right response is preferred to it")
    preference: RewardStage = Field(default_factory=RewardStage, description="reward-model keys for the preference model")
    ppo: PPOStage = Field(default_factory=PPOStage, description="PPO keys (the judge is the preference model)")
    dpo: DPOStage = Field(default_factory=DPOStage, description="DPO keys")


class CAIEvalConfig(Strict):
    suite: str = Field(default="default", description="evaluation suite (its held-out split is used)")
    max_new_tokens: int = Field(default=defaults.MAX_NEW_TOKENS, ge=1, description="longest answer to a suite prompt")
    batch_size: int = Field(default=defaults.BATCH_ROWS, ge=1, description="rows answered at once")
    judge: str | dict | None = Field(default=None, description="optional judge for the judged metrics")


class CAIConfig(Strict):
    """`alignkit cai`: Constitutional AI end to end, in resumable stages under output_dir."""

    model: str = Field(default="smollm2-135m", description="the policy to align")
    output_dir: str = Field(default="runs/cai", description="the run folder: a numbered folder per stage, final/, "
                                                            "report.html")
    constitution: str = Field(default="default", description="a built-in constitution name or a YAML file")
    seed: int = Field(default=0, description="seeds every stage: principle draws, sampling, data order and each "
                                             "trainer (unless a stage's own keys set `seed`)")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="what every stage computes in: each trainer (unless a stage's own keys set "
                                    "`precision`), the policy's and the feedback model's generation, the evaluation "
                                    "(auto: bf16 where the hardware has it, else fp32)")
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
        if self.rl.rounds > 1 and self.rl.method != "dpo":
            raise ValueError("rl.rounds > 1 needs rl.method: dpo (PPO samples the policy at every step already)")
        return self


class CAIStage(StageSettings, CAIConfig):
    """The Constitutional AI recipe as a stage of another pipeline (`alignkit compare`'s `cai`): keys of `CAIConfig`
    laid over that pipeline's settings (the demo's), typed and checked as written. Unset keys stay unset at every
    depth, so a setting nobody wrote keeps the pipeline's value, not `CAIConfig`'s default. The pipeline's own keys
    are refused. The cross-section check of `CAIConfig` runs on the whole config the stage trains with, not here
    (where an unset key would read as its default rather than as the pipeline's value)."""

    owned: ClassVar[tuple[str, ...]] = ("model", "output_dir", "seed", "eval", "reuse")
    model: Any = None
    output_dir: Any = None
    seed: Any = None
    eval: Any = None
    reuse: Any = None

    def _check_phase1_pairs(self):
        return self

    @model_serializer(mode="wrap")
    def _written_only(self, handler, info):
        dumped = handler(self)
        return {k: v.model_dump(mode=info.mode, exclude_unset=True) if isinstance(v := getattr(self, k), BaseModel)
                else dumped[k] for k in dumped if k in self.model_fields_set}
