"""The kill soak's small version (bench/soak.py has the full one): every long-running command is SIGKILLed once,
inside a seeded atomic write (a checkpoint, a stage's hand-over, a data file: the same moment on every machine),
resumed with the same command, and must end exactly as an uninterrupted run — weights bit for bit, data files line
for line, metrics step for step."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _soak_module():
    spec = importlib.util.spec_from_file_location("soak", ROOT / "bench" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


soak = _soak_module()


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    work = tmp_path_factory.mktemp("soak")
    return work, soak.tiny_models(work), soak._hook_dir()


@pytest.mark.parametrize("name", ["sft", "dpo", "ppo", "grpo", "iterative-dpo", "cai", "compare"])
def test_one_kill_and_resume_ends_as_an_uninterrupted_run(name, setting):
    work, (plain, chatty), hook = setting
    result = soak.soak(name, soak.commands(plain, chatty)[name], work, 1, random.Random(name), hook,
                       inside_only=True)
    assert result.kills == 1 and result.problems == [], result.problems
