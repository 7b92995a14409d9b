"""Two CPU processes (accelerate launch, gloo) compute the same training as one process with the same global batch."""

from __future__ import annotations

import json
from pathlib import Path

from tests.train import launched


def _args(method: str, model: str, data: str, out: Path, batch: int, accum: int, steps: int = 4) -> list[str]:
    return [
        "-m", "alignkit.cli", method, f"model={model}", f"data.train={data}", f"output_dir={out}", f"max_steps={steps}",
        f"batch_size={batch}", f"grad_accum={accum}", "lr=1e-3", "precision=fp32", "max_length=64", "progress=false",
        "scheduler=constant",
    ]


def _one_and_two(method: str, model: str, data: str, tmp_path: Path, one: tuple[int, int], two: tuple[int, int],
                 steps: int = 4) -> tuple[Path, Path]:
    """The same run in one process (batch, accum = `one`) and in two gloo processes (per process: `two`)."""
    out_one, out_two = tmp_path / "one", tmp_path / "two"
    launched.run(_args(method, model, data, out_one, *one, steps=steps), 1)
    launched.run(_args(method, model, data, out_two, *two, steps=steps), 2)
    assert json.loads((out_two / "summary.json").read_text())["processes"] == 2
    return out_one, out_two


def test_two_processes_match_one_process(tiny_dir, sft_file, tmp_path):
    one, two = _one_and_two("sft", tiny_dir, sft_file, tmp_path, one=(2, 2), two=(2, 1))

    # Same global batch (4 examples) split differently: the token-normalised loss, every logged statistic (over
    # the examples of both processes) and the weights agree.
    assert len(launched.metrics(one)) == 4
    launched.assert_same_metrics(one, two)
    launched.assert_same_weights(one, two)
    launched.assert_moved(tiny_dir, one)


def test_kto_reference_point_is_taken_over_all_processes(tiny_dir, pref_file, tmp_path):
    """z0 (the mismatched-pair KL estimate) of two processes with 2 examples each is the one of 4 examples in one
    process: per process it would be the mean of 2 rows, and the losses, which all shift by z0, would differ."""
    one, two = _one_and_two("kto", tiny_dir, pref_file, tmp_path, one=(4, 1), two=(2, 1), steps=6)
    kl_one = [row["train/kl"] for row in launched.metrics(one)]
    assert max(kl_one) > 1e-4, kl_one  # z0 left its clamp at 0, so the comparison is not between zeros
    launched.assert_same_metrics(one, two)
    launched.assert_same_weights(one, two)
