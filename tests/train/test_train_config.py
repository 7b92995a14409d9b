"""Configs: every shipped recipe validates, unknown keys are named with the valid ones, overrides parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignkit.methods import METHODS
from alignkit.methods.dpo import DPOConfig
from alignkit.methods.sft import SFTConfig
from alignkit.pipelines.cai_config import CAIConfig
from alignkit.pipelines.compare import CompareConfig
from alignkit.train.config import ConfigError
from alignkit.train.config_loading import load_config, parse_overrides

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
    with pytest.raises(ConfigError, match=r"override 'data.eval=\{path:': its value is not valid YAML"):
        parse_overrides(["data.eval={path:"])  # a shell split a value with spaces
    assert parse_overrides(["a.b.c=1", "x=[1, 2]", "y=true"]) == {"a": {"b": {"c": 1}}, "x": [1, 2], "y": True}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_checks_numbers_as_the_config_is_read(name):
    """A method config that only changes a default (`lr: float = 5e-6`) keeps its parent's check: lr=-1 and 0 steps
    fail as the config is read, never in the optimizer after the model has loaded."""
    base = ["output_dir=x", "data.train=a.jsonl"]
    for bad, key in (("lr=-1", "'lr'"), ("lr=0", "'lr'"), ("max_steps=0", "'max_steps'"),
                     ("max_steps=-2", "'max_steps'"), ("warmup_ratio=1.5", "'warmup_ratio'")):
        with pytest.raises(ConfigError) as err:
            load_config(METHODS[name].config, None, base + [bad])
        assert key in str(err.value), (name, bad, str(err.value))


def test_trl_names_are_read_as_ours():
    cfg = load_config(DPOConfig, None, ["output_dir=x", "data.train=a.jsonl", "learning_rate=3e-6",
                                        "per_device_train_batch_size=2", "gradient_accumulation_steps=4",
                                        "num_train_epochs=2", "save_total_limit=1", "lr_scheduler_type=linear"])
    assert (cfg.lr, cfg.batch_size, cfg.grad_accum, cfg.epochs, cfg.keep_checkpoints, cfg.scheduler) == (
        3e-6, 2, 4, 2.0, 1, "linear")
    cai = load_config(CAIConfig, None, ["output_dir=x", "rl.dpo.learning_rate=3e-6"])
    assert cai.rl.dpo.lr == 3e-6 and cai.rl.dpo.written() == {"lr": 3e-6}
    with pytest.raises(ConfigError) as err:
        load_config(DPOConfig, None, ["output_dir=x", "data.train=a.jsonl", "learning_rate=3e-6", "lr=1e-6"])
    assert "'learning_rate'" in str(err.value) and "'lr'" in str(err.value)


def test_a_command_line_key_overrides_the_files_under_either_name(tmp_path):
    """configs/sft.yaml says `lr:`; `learning_rate=...` on the command line replaces it (it was refused as a key
    given twice), and `lr=...` replaces a file's `learning_rate:`."""
    ours, trl = tmp_path / "ours.yaml", tmp_path / "trl.yaml"
    ours.write_text("output_dir: x\ndata: {train: a.jsonl}\nlr: 1.0e-5\nbatch_size: 8\n")
    trl.write_text("output_dir: x\ndata: {train: a.jsonl}\nlearning_rate: 1.0e-5\nper_device_train_batch_size: 8\n")
    cfg = load_config(SFTConfig, ours, ["learning_rate=2.5e-6", "per_device_train_batch_size=2"])
    assert (cfg.lr, cfg.batch_size) == (2.5e-6, 2)
    cfg = load_config(SFTConfig, trl, ["lr=2.5e-6", "batch_size=2"])
    assert (cfg.lr, cfg.batch_size) == (2.5e-6, 2)
    assert load_config(SFTConfig, trl, []).lr == 1e-5


def test_a_bad_value_is_named_with_where_it_came_from(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("output_dir: x\ndata: {train: a.jsonl}\nlr: -1\n")
    with pytest.raises(ConfigError) as err:
        load_config(SFTConfig, path, ["max_steps=0"])
    assert f"{path}: 'lr'" in str(err.value) and "command line: 'max_steps'" in str(err.value), str(err.value)
    with pytest.raises(ConfigError) as err:  # a section set on the command line
        load_config(SFTConfig, path, ["lr=1e-5", "lora={r: 0}"])
    assert "command line: 'lora.r'" in str(err.value), str(err.value)


def test_a_near_miss_key_is_answered_with_the_nearest():
    with pytest.raises(ConfigError) as err:
        load_config(DPOConfig, None, ["output_dir=x", "data.train=a.jsonl", "bta=0.2"])
    assert "did you mean 'beta'?" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(SFTConfig, None, ["output_dir=x", "data.train=a.jsonl", "data.trian=b.jsonl"])
    assert "'data.trian'; did you mean 'data.train'?" in str(err.value)
    with pytest.raises(ConfigError) as err:  # a TRL name mistyped
        load_config(SFTConfig, None, ["output_dir=x", "data.train=a.jsonl", "lerning_rate=1e-5"])
    assert "did you mean 'learning_rate'?" in str(err.value)


def test_report_to_takes_trl_forms():
    base = ["output_dir=x", "data.train=a.jsonl"]
    assert load_config(SFTConfig, None, base + ["report_to=tensorboard"]).report_to == ["tensorboard"]
    assert load_config(SFTConfig, None, base + ["report_to=wandb,tensorboard"]).report_to == ["wandb", "tensorboard"]
    assert load_config(SFTConfig, None, base + ["report_to=none"]).report_to == []
    assert load_config(SFTConfig, None, base + ["report_to=[trackio]"]).report_to == ["trackio"]


def test_a_missing_tracker_is_named_with_its_extra_as_the_config_is_read(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(
        name, *a))
    with pytest.raises(ConfigError) as err:
        load_config(SFTConfig, None, ["output_dir=x", "data.train=a.jsonl", "report_to=tensorboard"])
    assert "'report_to'" in str(err.value) and "pip install 'alignkit[tensorboard]'" in str(err.value)


def test_keep_checkpoints_0_leaves_no_optimizer_state_behind_a_finished_run(tiny_dir, tmp_path):
    """TRL's save_total_limit is keep_checkpoints; 0 keeps one while the run may need to resume from it and none once
    it has finished (a finished 135M run otherwise keeps two optimizer states, about 1.5 GB each)."""
    from alignkit.cli import main

    data = tmp_path / "d.jsonl"
    data.write_text("".join(f'{{"prompt": "q{i}", "completion": "a{i}"}}\n' for i in range(8)))
    base = ["sft", f"model={tiny_dir}", f"data.train={data}", "max_steps=4", "batch_size=2", "save_every=1",
            "progress=false"]
    assert main(base + [f"output_dir={tmp_path / 'none'}", "save_total_limit=0"]) == 0
    assert (tmp_path / "none" / "final" / "model.safetensors").is_file()
    assert not (tmp_path / "none" / "checkpoints").exists()
    assert main(base + [f"output_dir={tmp_path / 'two'}"]) == 0
    assert len(list((tmp_path / "two" / "checkpoints").iterdir())) == 2
