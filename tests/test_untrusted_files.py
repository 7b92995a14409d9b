"""Untrusted files: a downloaded model, checkpoint or chat template cannot run code, and secrets stay out of configs.

Each payload here would create a marker file if it ran; the tests check the refusal and that the marker never appears.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignkit.utils.io import UnsafeFileError

ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this runs `touch MARKER`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_the_source_loads_pickles_only_as_weights_and_never_trusts_remote_code():
    """Grep-proof: one torch.load in the package, with weights_only=True; no pickle, no trust_remote_code=True."""
    loads, offences = [], []
    for path in sorted((ROOT / "alignkit").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(ROOT)
        loads += [f"{where}: {m.group(0)}" for m in re.finditer(r"torch\.load\([^)]*\)", text)]
        for pattern in (r"weights_only\s*=\s*False", r"\bpickle\.loads?\(", r"trust_remote_code\s*=\s*True",
                        r"\bdill\b", r"\bjoblib\.load", r"yaml\.load\(", r"yaml\.unsafe_load"):
            offences += [f"{where}: {m.group(0)}" for m in re.finditer(pattern, text)]
    assert loads == ["alignkit/utils/io.py: torch.load(path, weights_only=True)"]
    assert offences == []


def _checkpointed_run(tiny_dir, out: Path):
    from alignkit.methods.sft import SFTConfig, train_sft

    def cfg():
        return SFTConfig(model=tiny_dir, data={"train": "builtin:sft"}, output_dir=str(out), max_steps=2, batch_size=4,
                         precision="fp32", progress=False, max_length=512, save_every=1)

    train_sft(cfg())
    # Make it an unfinished run again: resuming reads the checkpoint of step 1.
    for name in ("final", "summary.json"):
        target = out / name
        subprocess.run(["rm", "-rf", str(target)], check=True)
    return cfg


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng.pt"])
def test_a_pickled_payload_in_a_checkpoint_is_refused(name, tiny_dir, tmp_path):
    from alignkit.methods.sft import train_sft

    out = tmp_path / "run"
    cfg = _checkpointed_run(tiny_dir, out)
    checkpoint = out / "checkpoints" / "step-00000001"
    marker = tmp_path / "ran"
    torch.save({"state": Payload(marker)}, checkpoint / name)
    with pytest.raises(UnsafeFileError, match=re.escape(f"{checkpoint / name}: holds Python objects besides")):
        train_sft(cfg())
    assert not marker.exists()


def test_a_checkpoint_without_payload_resumes(tiny_dir, tmp_path):
    from alignkit.methods.sft import train_sft

    cfg = _checkpointed_run(tiny_dir, tmp_path / "run")
    assert train_sft(cfg()).resumed_from == 1  # optimizer, schedule and every RNG state load as plain values


def test_a_model_folder_with_pickled_weights_is_refused(tiny_dir, tmp_path):
    from alignkit.models.loading import load_causal_lm, load_score_model
    from alignkit.models.tiny import tiny_model, tiny_tokenizer

    folder, marker = tmp_path / "model", tmp_path / "ran"
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer)
    model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    torch.save({**model.state_dict(), "extra": Payload(marker)}, folder / "pytorch_model.bin")
    for load in (load_causal_lm, load_score_model):
        with pytest.raises(UnsafeFileError, match="its weights are a pickle holding Python objects"):
            load(str(folder))
    assert not marker.exists()

    # The same from the command line: exit 2 and the reason, before any training.
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "alignkit.cli", "sft", f"model={folder}", "data.train=builtin:sft",
                           f"output_dir={out}", "max_steps=1"], capture_output=True, text=True)
    assert proc.returncode == 2 and "its weights are a pickle holding Python objects" in proc.stderr
    assert not marker.exists() and not (out / "final").exists()


def _remote_code_model(folder: Path, marker: Path, model_type: str) -> None:
    from alignkit.models.tiny import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tiny_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type=model_type, auto_map={"AutoConfig": "custom.CustomConfig",
                                                   "AutoModelForCausalLM": "custom.CustomLM"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "custom.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        f"class CustomConfig(LlamaConfig):\n    model_type = {model_type!r}\n"
        "class CustomLM(LlamaForCausalLM):\n    config_class = CustomConfig\n")


def test_a_models_own_code_runs_only_when_the_user_trusts_it(tmp_path, monkeypatch):
    from alignkit.models.loading import load_causal_lm

    # A known architecture with custom code beside it: loaded as the built-in one, its code never runs.
    known, marker = tmp_path / "known", tmp_path / "ran-known"
    _remote_code_model(known, marker, "llama")
    assert type(load_causal_lm(str(known))).__name__ == "LlamaForCausalLM"
    assert not marker.exists()

    # An architecture only its own code defines: refused, naming the switch.
    custom, marker = tmp_path / "custom", tmp_path / "ran-custom"
    _remote_code_model(custom, marker, "alignkit-test-custom")
    with pytest.raises(UnsafeFileError, match="needs its own Python code .* ALIGNKIT_TRUST_REMOTE_CODE=1"):
        load_causal_lm(str(custom))
    assert not marker.exists()

    # The user's switch: now the folder's code runs (the marker shows it did).
    monkeypatch.setenv("ALIGNKIT_TRUST_REMOTE_CODE", "1")
    assert type(load_causal_lm(str(custom))).__name__ == "CustomLM"
    assert marker.exists()


def test_a_chat_template_that_reaches_outside_the_sandbox_is_refused(tiny_tok, tmp_path):
    from alignkit.data.render import render_prompt

    marker = tmp_path / "ran"
    tokenizer = tiny_tok.__class__.from_pretrained(_saved(tiny_tok, tmp_path / "tok"))
    tokenizer.chat_template = ("{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}"
                               "{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(UnsafeFileError, match="reaches outside jinja's sandbox"):
        render_prompt(tokenizer, [{"role": "user", "content": "hi"}])
    assert not marker.exists()


def _saved(tokenizer, folder: Path) -> str:
    tokenizer.save_pretrained(folder)
    return str(folder)


SECRET = "sk-alignkit-test-0123456789abcdef"


def test_a_config_refuses_a_secret_before_anything_is_written(tmp_path):
    """Configs are written to disk (config.yaml, manifests, model cards), so none may hold a key: every config kind
    refuses one, naming the field and never echoing the value."""
    from alignkit.methods import METHODS
    from alignkit.pipelines.cai_config import CAIConfig
    from alignkit.pipelines.compare import CompareConfig
    from alignkit.train.config import ConfigError
    from alignkit.train.config_loading import load_config

    judge = {"http": {"base_url": "http://127.0.0.1:1/v1", "api_key": SECRET}}
    kinds = {name: spec.config for name, spec in METHODS.items()} | {"cai": CAIConfig, "compare": CompareConfig}
    for name, config in kinds.items():
        # A key no config has is refused by name; a secret inside a free-form spec (a judge) by its path.
        overrides = [f"output_dir={tmp_path / name}", f"hf_token={SECRET}"]
        if "judge" in config.model_fields:
            overrides = [f"output_dir={tmp_path / name}", "data.train=builtin:sft", f"judge={json.dumps(judge)}"]
        with pytest.raises(ConfigError) as err:
            load_config(config, None, overrides)
        expected = "'judge.http.api_key' holds a secret" if "judge" in config.model_fields else "unknown key 'hf_token'"
        assert expected in str(err.value) and SECRET not in str(err.value), name
        assert not (tmp_path / name).exists()
    from alignkit.methods.grpo import GRPOConfig

    with pytest.raises(Exception) as err:  # a library user's own pydantic error: no value in it either
        GRPOConfig(model="m", data={"train": "builtin:sft"}, judge=judge, output_dir=str(tmp_path / "x"))
    assert "'judge.http.api_key' holds a secret" in str(err.value) and SECRET not in str(err.value)

    proc = subprocess.run([sys.executable, "-m", "alignkit.cli", "grpo", "model=smollm2-135m",
                           f"output_dir={tmp_path / 'cli'}", "judge.http.base_url=http://127.0.0.1:1/v1",
                           f"judge.http.api_key={SECRET}"], capture_output=True, text=True)
    assert proc.returncode == 2 and "holds a secret" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr and not (tmp_path / "cli").exists()


def test_judge_spec_errors_and_redaction_never_show_a_key():
    from alignkit.judges import judge_from_spec
    from alignkit.utils.secrets import redact

    with pytest.raises(ValueError) as err:
        judge_from_spec({"http": "http://h/v1", "api_key": SECRET})
    assert "unknown options ['api_key']" in str(err.value) and SECRET not in str(err.value)
    # Names that merely contain "token" are settings, not secrets.
    assert redact({"max_new_tokens": 64, "generated_tokens": 3, "hf_token": SECRET, "api_key_env": "MY_KEY"}) == {
        "max_new_tokens": 64, "generated_tokens": 3, "hf_token": "<redacted>", "api_key_env": "MY_KEY"}


def test_output_file_names_from_user_input_stay_inside_the_output_folder(tmp_path):
    """Model names come from the command line (`name=path`) and become file names: a name with path parts cannot
    write outside the evaluation's folder."""
    from alignkit.eval.harness import save_eval
    from alignkit.eval.results import EvalResults

    out = tmp_path / "eval"
    save_eval(out, EvalResults(), {"../../escaped": [{"a": 1}], "/abs/olute": [{"a": 2}]})
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.jsonl"))
    assert written == ["eval/responses/00-escaped.jsonl", "eval/responses/01-abs_olute.jsonl"]
