"""Typed configuration: the shared parts every method's config is composed of (read by `config_loading.py`).

A method's config (in its module under `alignkit/methods/`) is one of the run configs below plus its own keys:
`TrainConfig` for the offline loop (demonstrations or preferences), `OnlineConfig` for the sample -> judge -> update
loop. Each is composed of parts — what is trained where (`RunTarget`), how the run is kept (`RunSettings`), the
optimizer (`Optimization`), offline batching (`OfflineBatching`), sampling (`Sampling`) — so a method has exactly the
keys that mean something to it. Nested keys use dots on the command line: `data.train=my.jsonl lora.r=16`.

A pipeline (`alignkit cai`, `compare`) sets the target of each of its stages itself; a stage's own keys are typed by
`stage_settings(Config)`: the same keys, defaults and checks, without the target, remembering which keys were written.
"""

from __future__ import annotations

import importlib.util
from typing import Any, ClassVar, Literal

from pydantic import (BaseModel, ConfigDict, Field, create_model, field_validator, model_serializer,
                      model_validator)
from pydantic.fields import FieldInfo

from alignkit.rollouts.sampler import SamplingSettings
from alignkit.utils import sampling_defaults as defaults
from alignkit.utils.secrets import secret_path


class ConfigError(ValueError):
    """A configuration problem, with the file and key it concerns."""


class Strict(BaseModel):
    # Errors never echo a value back (it may be a secret); the CLI names the field and the problem.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        """A config is written to disk (config.yaml, manifests, the model card), so it may not hold a secret: keys
        stay in environment variables, named by `api_key_env` (`utils/secrets.py`)."""
        found = secret_path(data)
        if found:
            raise ValueError(f"'{found}' holds a secret, and configs are written to disk: put it in an environment "
                             "variable and name that variable instead (api_key_env)")
        return data

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """A config that only changes a default (`lr: float = 5e-6`) keeps its parent's checks, so
        `lr=-1` fails as the config is read for every method, not in the optimizer after the model has loaded."""
        super().__pydantic_init_subclass__(**kwargs)
        changed = False
        for name, field in cls.__pydantic_fields__.items():
            parent = next((base.__pydantic_fields__[name] for base in cls.__mro__[1:]
                           if name in getattr(base, "__pydantic_fields__", {})), None)
            if not field.metadata and parent is not None and parent.metadata:
                cls.__pydantic_fields__[name], changed = FieldInfo.merge_field_infos(parent, field), True
        if changed:
            cls.model_rebuild(force=True)


class DataConfig(Strict):
    train: str = Field(description="training data: a file (.jsonl/.json/.csv/.parquet), a datasets dir, hub name, or "
                                   "builtin:NAME; a hub dataset's subset and split: {path: org/name, subset: x, split: "
                                   "train} (or org/name?subset=x&split=train)")
    eval: str | None = Field(default=None, description="evaluation data, same forms as train (a hub dataset or saved "
                                                       "folder without a split: its test, validation or eval split)")
    skip_invalid: bool = Field(default=False, description="skip bad records and report the count instead of failing")
    limit: int | None = Field(default=None, ge=1, description="use at most this many training records")
    eval_limit: int | None = Field(default=None, ge=1, description="use at most this many eval records")
    @field_validator("train", "eval", mode="before")
    @classmethod
    def _source_with_options(cls, value: Any) -> Any:
        """`{path: org/name, subset: x, split: y}` -> `org/name?subset=x&split=y`, the one form every reader takes."""
        unknown = sorted(set(value) - {"path", "subset", "split"}) if isinstance(value, dict) else None
        if unknown is None:
            return value
        if unknown or not isinstance(value.get("path"), str):
            raise ValueError("a data source as a mapping takes path (required), subset and split"
                             + (f"; not {', '.join(unknown)}" if unknown else ""))
        options = [f"{key}={value[key]}" for key in ("subset", "split") if value.get(key) is not None]
        return value["path"] + ("?" + "&".join(options) if options else "")

    transcripts: Literal["text", "chat"] = Field(
        default="text", description="Human/Assistant transcripts in string fields: text (trained as plain text; a "
                                    "pair's prompt is the transcript both share up to its last shared 'Assistant:') "
                                    "or chat (read as conversations, rendered with the chat template)")


class LoraConfig(Strict):
    r: int = Field(default=16, ge=1, description="LoRA rank")
    alpha: float = Field(default=32.0, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout on the LoRA path")
    target_modules: list[str] | str = Field(default="all-linear",
                                            description="modules that get adapters: all-linear or a list of names")


# ----------------------------------------------------------------------------------------------------- the parts
class RunTarget(Strict):
    """What is trained, on what, and where: set by a pipeline for each of its stages."""

    model: str = Field(default="smollm2-135m", description="alias, HF model directory, .gguf file, or hub id")
    data: DataConfig
    output_dir: str = Field(description="the run folder: config.yaml, metrics.jsonl, checkpoints/, summary.json and "
                                        "final/ (the model)")


class RunSettings(Strict):
    """How a run is seeded, kept on disk, logged and shown."""

    precision: Literal["auto", "fp32", "bf16"] = Field(default="auto",
                                                       description="auto: bf16 autocast where the CPU/GPU is fast "
                                                                   "at it, else fp32")
    seed: int = Field(default=0, description="seeds data order, initialisation and sampling")
    resume: Literal["auto", "never"] = Field(
        default="auto", description="auto: continue from the newest checkpoint in output_dir if there is one"
    )
    overwrite: bool = Field(default=False, description="allow replacing a finished run in output_dir")
    save_every: int = Field(default=0, ge=0, description="checkpoint every N steps (0 = only at the end)")
    keep_checkpoints: int = Field(default=2, ge=0, description="how many of the newest checkpoints to keep (TRL: "
                                                               "save_total_limit); 0: one while the run needs it, "
                                                               "none once it has finished")
    eval_every: int = Field(default=0, ge=0, description="evaluate every N steps (0 = at the end only)")
    log_every: int = Field(default=1, ge=1, description="write metrics every N steps")
    report_to: list[Literal["tensorboard", "wandb", "trackio"]] = Field(
        default_factory=list, description="trackers besides metrics.jsonl: tensorboard, wandb, trackio (a list, or "
                                          "TRL's string form: one name, names with commas, or none)")
    lora: LoraConfig | None = None
    save_merged: bool = Field(default=True, description="with LoRA, save the final model merged (else the adapter)")
    gradient_checkpointing: bool = Field(default=False,
                                         description="recompute each layer's activations in the backward pass instead "
                                                     "of keeping them: less memory, ~30% longer steps, same result")
    progress: bool = Field(default=True, description="show a progress bar with an ETA")

    @field_validator("report_to", mode="before")
    @classmethod
    def _trackers_as_list(cls, value: Any) -> Any:
        """TRL's forms: `report_to: tensorboard`, `"wandb,tensorboard"`, `none`."""
        if isinstance(value, str):
            names = [name.strip() for name in value.split(",") if name.strip()]
            return [] if [n.lower() for n in names] == ["none"] else names
        return value

    @field_validator("report_to")
    @classmethod
    def _trackers_installed(cls, value: list[str]) -> list[str]:
        """A tracker's package is looked for as the config is read, not after the model has loaded."""
        missing = [name for name in value if importlib.util.find_spec(name) is None]
        if missing:
            raise ValueError(f"{', '.join(missing)} not installed: pip install 'alignkit[{','.join(missing)}]' "
                             "(or leave it out of report_to)")
        return value


class Optimization(Strict):
    """AdamW, its schedule and the length of the run."""

    max_steps: int = Field(default=-1, ge=-1, description="optimizer steps; -1 = run `epochs` epochs")
    epochs: float = Field(default=1.0, gt=0, description="passes over the training data when max_steps is -1")
    lr: float = Field(default=1e-5, gt=0, description="AdamW peak learning rate")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay (matrices only)")
    warmup_ratio: float = Field(default=0.0, ge=0, le=1,
                                description="share of the steps spent warming the learning rate up linearly")
    scheduler: Literal["cosine", "linear", "constant"] = Field(default="cosine",
                                                               description="learning-rate shape after warmup")
    max_grad_norm: float | None = Field(default=1.0, gt=0,
                                        description="clip the gradient norm to this (null: no clipping)")
    skip_nonfinite: bool = Field(default=False,
                                 description="skip (and count) an update whose loss or gradient is NaN/inf instead "
                                             "of stopping the run at it")

    @field_validator("max_steps")
    @classmethod
    def _some_steps(cls, value: int) -> int:
        if value == 0:
            raise ValueError("0 steps trains nothing: give a positive count, or -1 to run `epochs` epochs")
        return value


class OfflineBatching(Strict):
    """How the offline loop cuts a dataset into steps."""

    batch_size: int = Field(default=4, ge=1, description="examples per micro-batch per process")
    eval_batch_size: int | None = Field(default=None, ge=1,
                                        description="examples per evaluation batch (default: batch_size)")
    grad_accum: int = Field(default=1, ge=1, description="micro-batches per optimizer step")
    max_length: int = Field(default=512, ge=8,
                            description="token budget per sequence; prompts are cut from the left and the count is "
                                        "reported")
    group_by_length: bool = Field(
        default=False, description="put examples of similar length in the same batch (less padding to compute over); "
                                   "batches are still visited in random order")


class Sampling(Strict):
    """How responses are sampled from the policy."""

    max_new_tokens: int = Field(default=defaults.MAX_NEW_TOKENS, ge=1, description="longest sampled response, in tokens")
    temperature: float = Field(default=defaults.TEMPERATURE, gt=0,
                               description="sampling temperature (log-probs use the same)")
    top_p: float = Field(default=defaults.TOP_P, gt=0, le=1,
                         description="nucleus sampling: keep the smallest set of tokens with this much probability")
    top_k: int = Field(default=defaults.TOP_K, ge=0, description="sample among the k likeliest tokens (0: all)")

    def sampling_settings(self, *, n: int = 1, seed: int = 0,
                          prompt_seeds: tuple[int, ...] | None = None) -> SamplingSettings:
        """This section as the generation engine's settings (the one place a config's sampling keys are read)."""
        return SamplingSettings(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                                top_k=self.top_k, n=n, seed=seed, prompt_seeds=prompt_seeds)


class TrainConfig(RunTarget, RunSettings, Optimization, OfflineBatching):
    """A run of the offline loop (`train/loop.py`): every offline method's config is this plus its own keys."""


class OnlineConfig(RunTarget, RunSettings, Optimization, Sampling):
    """A run of the online loop (`train/online.py`), shared by PPO, GRPO and RLOO.

    `data.train` / `data.eval` hold prompts (kind `prompt`: a `prompt` and an optional `reference` for verifiers),
    e.g. `task:arithmetic?difficulty=1&split=train`. `max_steps` counts iterations (rollout batches); without it,
    `epochs` passes over the training prompts.
    """

    # Keys of the offline loop that do not exist here, with the reason, for the error a user gets.
    absent_keys: ClassVar[dict[str, str]] = {
        "grad_accum": "online methods accumulate over minibatch_size / batch_size instead",
        "group_by_length": "online methods train on the batch they just sampled, in its order",
        "max_length": "online methods bound responses by max_new_tokens",
    }

    judge: str | dict = Field(default="final_answer", description="what scores a response: a judge spec (see judges)")
    prompts_per_step: int = Field(default=8, ge=1, description="prompts per rollout batch")
    samples_per_prompt: int = Field(default=1, ge=1, description="responses sampled per prompt")
    ppo_epochs: int = Field(default=1, ge=1, description="passes over each rollout batch")
    minibatch_size: int | None = Field(default=None, ge=1, description="sequences per optimizer step; default: the whole batch")
    clip_range: float = Field(default=0.2, gt=0, description="PPO clip range of the probability ratio")
    kl_coef: float = Field(default=0.05, ge=0, description="weight of the KL penalty to the reference")
    kl_estimator: Literal["k1", "k2", "k3"] = Field(default="k1",
                                                    description="estimator of the KL to the reference: k1 (log "
                                                                "ratio), k2 (squared), k3 (unbiased, non-negative)")
    ref_model: str | None = Field(default=None, description="reference policy; default: the starting model")
    eval_max_new_tokens: int | None = Field(default=None, ge=1, description="default: max_new_tokens")
    batch_size: int = Field(default=8, ge=1, description="sequences per micro-batch")
    eval_batch_size: int | None = Field(default=None, ge=1,
                                        description="examples per evaluation batch (default: batch_size)")
    lr: float = Field(default=1e-6, gt=0, description="AdamW peak learning rate")
    scheduler: Literal["cosine", "linear", "constant"] = Field(default="constant",
                                                               description="learning-rate shape after warmup")


# ------------------------------------------------------------------------------------------ a pipeline's stages
class WrittenOnly(Strict):
    """Settings that remember which keys were written: dumped, they hold only those."""

    @model_serializer(mode="wrap")
    def _written_only(self, handler):
        # So that a dumped config read back (a run's saved config, a stage handed to another process) leaves every
        # other key to the pipeline, as the original did.
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}


class StageSettings(WrittenOnly):
    """Base of `stage_settings(Config)`: a trainer's keys as a pipeline stage takes them."""

    owned: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _refuse_owned(cls, values):
        if isinstance(values, dict):
            taken = sorted(set(values) & set(cls.owned))
            if taken:
                raise ValueError(f"{', '.join(taken)}: set by the pipeline for this stage, not here")
        return values

    def written(self) -> dict[str, Any]:
        """The keys written for this stage, as plain values (what the pipeline lays over its own settings)."""
        return self.model_dump(mode="json")


_STAGE_CLASSES: dict[tuple[type, tuple[str, ...]], type] = {}


def stage_settings(cls: type[BaseModel], owned: tuple[str, ...] = ("model", "data", "output_dir")) -> type:
    """The typed settings of a pipeline stage that trains with `cls`: every key of `cls` with its default and checks,
    except `owned` (the pipeline's), which are refused; unset keys stay unset."""
    key = (cls, owned)
    if key not in _STAGE_CLASSES:
        # The owned keys become optional here (the pipeline supplies them) and are refused when written.
        optional = {name: (Any, None) for name in owned}
        stage = create_model(cls.__name__.removesuffix("Config") + "Stage", __base__=(StageSettings, cls), **optional)
        stage.owned = owned
        _STAGE_CLASSES[key] = stage
    return _STAGE_CLASSES[key]
