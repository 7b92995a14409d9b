"""Online methods on two CPU processes (accelerate launch, gloo) compute the same training as one process with the
same global batch: PPO (shared and separate critic), GRPO and RLOO; and a SIGKILLed two-process run resumes to the
same end as an uninterrupted one, on two processes or on one.

Each process samples and scores its half of a step's prompts; the experience is gathered, so advantages, whitening,
the adaptive KL coefficient and the logged statistics are computed over the whole batch; each minibatch is split over
the processes and DDP sums the gradients. Each prompt samples from its own seeded stream, so both runs draw the same
responses: the losses, scores and KL coefficients agree step by step and the weights at the end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignkit.data import user_turn
from tests.train import launched

PROMPTS = [f"question number {i}" for i in range(8)]

RUNS = {
    # name: (command, its keys); each runs 3 iterations of 4 prompts x 2 samples, minibatches of 4 sequences.
    "ppo-shared": ("ppo", ["critic=shared", "minibatch_size=4", "ppo_epochs=2", "kl_target=0.5", "kl_coef=0.1"]),
    "ppo-separate": ("ppo", ["critic=separate", "minibatch_size=4", "ppo_epochs=2", "kl_coef=0.05"]),
    "grpo": ("grpo", ["kl_coef=0.05", "ppo_epochs=2", "minibatch_size=4"]),
    "rloo": ("rloo", ["kl_coef=0.05"]),
}


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("online-prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": user_turn(p)}) + "\n" for p in PROMPTS))
    return str(path)


def _args(command: str, keys: list[str], model: str, prompts: str, out: Path, steps: int = 3) -> list[str]:
    return ["-m", "alignkit.cli", command, f"model={model}", f"data.train={prompts}", f"output_dir={out}",
            f"max_steps={steps}", "prompts_per_step=4", "samples_per_prompt=2", "batch_size=2", "max_new_tokens=8",
            "lr=1e-3", "precision=fp32", "progress=false", "scheduler=constant", "judge={regex: '[a-m0-9]'}",
            "save_every=1", *keys]


TRAINING_KEYS = ("train/loss", "train/score", "train/kl_coef", "train/grad_norm", "train/kl")


def _assert_same_training(one: Path, two: Path, keys=TRAINING_KEYS) -> None:
    a, b = launched.metrics(one), launched.metrics(two)
    assert [m["step"] for m in a] == [m["step"] for m in b]
    for row_a, row_b in zip(a, b):
        for key in keys:
            if key in row_a:
                assert abs(row_a[key] - row_b[key]) < 1e-5, (key, row_a["step"], row_a[key], row_b[key])
    launched.assert_same_weights(one, two)


@pytest.mark.parametrize("name", list(RUNS))
def test_two_processes_match_one_process(name, tiny_dir, prompt_file, tmp_path):
    command, keys = RUNS[name]
    one, two = tmp_path / "one", tmp_path / "two"
    launched.run(_args(command, keys, tiny_dir, prompt_file, one), 1)
    launched.run(_args(command, keys, tiny_dir, prompt_file, two), 2)
    assert json.loads((two / "summary.json").read_text())["processes"] == 2
    _assert_same_training(one, two)
    rows = launched.metrics(one)
    # Not a comparison of two idle runs: the samples were scored differently and training moved the weights.
    assert len({round(m["train/score"], 6) for m in rows}) > 1 or 0 < rows[0]["train/score"] < 1
    launched.assert_moved(tiny_dir, one)
    if name == "ppo-shared":  # the adaptive coefficient moved, from the KL of the whole batch
        assert rows[-1]["train/kl_coef"] != 0.1


@pytest.mark.parametrize("resume_on", [2, 1], ids=["resumed-on-2", "resumed-on-1"])
def test_a_killed_two_process_run_resumes_to_the_uninterrupted_end(resume_on, tiny_dir, prompt_file, tmp_path):
    # Checkpoints hold nothing per process, so the run also resumes on another process count that divides its batch.
    command, keys = RUNS["grpo"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    launched.run(_args(command, keys, tiny_dir, prompt_file, whole, steps=4), 2)

    args = _args(command, keys, tiny_dir, prompt_file, killed, steps=4)
    launched.kill_after_checkpoint(launched.command(args, 2), launched.ENV, killed, step=2)
    launched.run(args, resume_on)  # the same command resumes
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["resumed_from_step"] >= 2 and summary["processes"] == resume_on
    _assert_same_training(whole, killed)
