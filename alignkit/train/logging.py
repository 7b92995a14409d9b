"""Metrics: always to `metrics.jsonl` in the run directory, the source of truth; to tensorboard / wandb / trackio
when asked, with the same names and values.

Trackers are imported only when requested, so none of them is a dependency of the core package.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

from alignkit.utils.io import atomic_write_text, jsonl_lines
from alignkit.utils.secrets import redact


class MetricsLog:
    def __init__(self, output_dir: Path, report_to: list[str], config: dict, resume_step: int = 0):
        self.path = Path(output_dir) / "metrics.jsonl"
        if resume_step and self.path.exists():
            # Drop lines logged after the checkpoint we resume from (those steps are about to be redone), and a
            # last line cut short by a kill or a full disk.
            kept = [ln for ln in jsonl_lines(self.path.read_text(encoding="utf-8", errors="replace"))
                    if (row := _parsed(ln)) is not None and row.get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(k + "\n" for k in kept))
        elif self.path.exists():
            self.path.unlink()
        self._file = open(self.path, "a", encoding="utf-8")
        self._trackers = [_open_tracker(name, output_dir, config) for name in report_to]  # (log, close) pairs

    def log(self, step: int, metrics: dict[str, float]) -> None:
        plain = {k: _plain(v) for k, v in metrics.items()}
        self._file.write(json.dumps({"step": step, "time": round(time.time(), 3), **plain}) + "\n")
        self._file.flush()
        for log, _ in self._trackers:
            log(step, plain)

    def close(self) -> None:
        self._file.close()
        for _, close in self._trackers:
            close()


def _parsed(line: str) -> dict | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


def _plain(value):
    return float(value) if hasattr(value, "__float__") and not isinstance(value, (int, bool)) else value


def _open_tracker(name: str, output_dir: Path, config: dict) -> tuple[Callable, Callable]:
    """(log(step, metrics), close()) for one tracker; every tracker gets the same names and values as metrics.jsonl.

    The run is named after its output folder. wandb follows its own settings (`wandb login`, or `WANDB_MODE=offline`
    to write the run under `<output_dir>/wandb` for a later `wandb sync`); trackio writes to its local database
    (`TRACKIO_DIR`, default under the Hugging Face cache) and shows it with `trackio show --project alignkit`.
    """
    run_name, config = Path(output_dir).name, redact(config)
    if name == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"))

        def log_tb(step, metrics):
            for key, value in metrics.items():
                writer.add_scalar(key, float(value), step)
            writer.flush()

        return log_tb, writer.close
    if name == "wandb":
        import wandb

        run = wandb.init(dir=str(output_dir), project=os.environ.get("WANDB_PROJECT", "alignkit"), name=run_name,
                         config=config)
        return (lambda step, metrics: run.log(dict(metrics), step=step)), run.finish
    if name == "trackio":
        import trackio

        trackio.init(project=os.environ.get("TRACKIO_PROJECT", "alignkit"), name=run_name, config=config)
        return (lambda step, metrics: trackio.log(dict(metrics), step=step)), trackio.finish
    raise ValueError(f"unknown tracker {name!r}; valid: tensorboard, wandb, trackio")
