"""Configs: every shipped recipe validates, unknown keys are named with the valid ones, overrides parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignkit.methods import METHODS
from alignkit.methods.dpo import DPOConfig
from alignkit.methods.sft import SFTConfig
from alignkit.pipelines.cai_config import CAIConfig
from alignkit.pipelines.compare import CompareConfig
from alignkit.train.config import ConfigError, load_config, parse_overrides

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_every_method_has_a_shipped_config():
    names = {p.stem for p in CONFIGS}
    assert set(METHODS) <= names


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.stem not in ("cai", "compare")], ids=lambda p: p.name)
def test_shipped_config_validates(path):
    # configs/<method>.yaml or configs/<method>_<variant>.yaml
    cfg = load_config(METHODS[path.stem.split("_")[0]].config, path)
    assert cfg.output_dir.startswith("runs/")
    assert cfg.data.train


def test_shipped_cai_config_validates():
    cfg = load_config(CAIConfig, CONFIGS[0].parent / "cai.yaml")
    assert cfg.output_dir.startswith("runs/") and cfg.rl.method == "ppo" and cfg.feedback.train


def test_shipped_compare_config_validates():
    cfg = load_config(CompareConfig, CONFIGS[0].parent / "compare.yaml")
    assert cfg.output_dir.startswith("runs/") and len(cfg.recipes) == 8 and len(cfg.seeds) >= 2


def test_unknown_key_lists_valid_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output_dir: x\ndata: {train: a.jsonl}\nbetta: 0.2\n")
    with pytest.raises(ConfigError) as err:
        load_config(DPOConfig, path)
    message = str(err.value)
    assert str(path) in message and "'betta'" in message
    assert "beta" in message and "max_steps" in message and "lora" in message


def test_unknown_nested_key_is_named_with_its_section(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(SFTConfig, None, ["output_dir=x", "data.train=a.jsonl", "data.trian=b.jsonl"])
    assert "'data.trian'" in str(err.value)
    assert "under data" in str(err.value) and "skip_invalid" in str(err.value)


def test_overrides_win_over_the_file_and_parse_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output_dir: x\ndata: {train: a.jsonl}\nbeta: 0.1\nlr: 1.0e-6\n")
    cfg = load_config(DPOConfig, path, ["beta=0.3", "lora.r=4", "report_to=[tensorboard]", "data.eval=b.jsonl"])
    assert cfg.beta == 0.3 and cfg.lr == 1e-6 and cfg.lora.r == 4
    assert cfg.report_to == ["tensorboard"] and cfg.data.eval == "b.jsonl" and cfg.data.train == "a.jsonl"


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError) as err:
        load_config(SFTConfig, None, ["output_dir=x", "data.train=a.jsonl", "batch_size=big"])
    assert "'batch_size'" in str(err.value)


def test_missing_required_key_is_named():
    with pytest.raises(ConfigError) as err:
        load_config(SFTConfig, None, ["output_dir=x"])
    assert "'data'" in str(err.value)


def test_robust_dpo_requires_label_smoothing():
    with pytest.raises(ConfigError) as err:
        load_config(DPOConfig, None, ["output_dir=x", "data.train=a", "loss=robust"])
    assert "label_smoothing" in str(err.value)


def test_override_syntax_errors():
    with pytest.raises(ConfigError):
        parse_overrides(["novalue"])
    assert parse_overrides(["a.b.c=1", "x=[1, 2]", "y=true"]) == {"a": {"b": {"c": 1}}, "x": [1, 2], "y": True}
