"""What asks for sharded training, and the launcher settings alignkit refuses rather than ignores (the sharded runs
themselves: tests/train/test_fsdp.py)."""

from __future__ import annotations

import pytest

from alignkit.train import sharding
from alignkit.train.run import RunError

FSDP = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "WORLD_SIZE": "2",
        "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT", "FSDP_OFFLOAD_PARAMS": "false",
        "FSDP_ACTIVATION_CHECKPOINTING": "false"}


def _env(monkeypatch, **values):
    for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "WORLD_SIZE", "FSDP_VERSION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_the_fsdp_config_on_several_processes_asks_for_sharding(monkeypatch):
    _env(monkeypatch, **FSDP)
    assert sharding.requested()
    _env(monkeypatch, **{**FSDP, "WORLD_SIZE": "1"})  # one process: nothing to shard over
    assert not sharding.requested()
    _env(monkeypatch, WORLD_SIZE="2")  # plain DDP
    assert not sharding.requested()


@pytest.mark.parametrize("setting, value, message", [
    ("FSDP_VERSION", "1", "fsdp_version: 2"),
    ("FSDP_OFFLOAD_PARAMS", "true", "offload"),
    ("FSDP_ACTIVATION_CHECKPOINTING", "true", "gradient_checkpointing=true"),
    ("FSDP_STATE_DICT_TYPE", "SHARDED_STATE_DICT", "FULL_STATE_DICT"),
])
def test_settings_alignkit_does_not_apply_are_refused(monkeypatch, setting, value, message):
    _env(monkeypatch, **{**FSDP, setting: value})
    with pytest.raises(RunError, match=message):
        sharding.requested()


def test_deepspeed_is_refused_with_the_way_to_shard(monkeypatch):
    _env(monkeypatch, ACCELERATE_USE_DEEPSPEED="true", WORLD_SIZE="2")
    with pytest.raises(RunError, match="configs/accelerate/fsdp.yaml"):
        sharding.requested()


def test_the_blocks_are_the_models_decoder_layers_or_the_configs_classes(monkeypatch, tiny_lm):
    monkeypatch.delenv("FSDP_TRANSFORMER_CLS_TO_WRAP", raising=False)
    assert [type(b).__name__ for b in sharding.blocks(tiny_lm)] == ["LlamaDecoderLayer"] * 2
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "LlamaMLP, LlamaAttention")
    assert sorted(type(b).__name__ for b in sharding.blocks(tiny_lm)) == ["LlamaAttention"] * 2 + ["LlamaMLP"] * 2
