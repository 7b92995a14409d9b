"""One stage of `alignkit compare`, in a process of its own (`python -m alignkit.pipelines.compare_stage STAGE.json`):
train it, then write result.json with the final model and this process's peak memory. A comparison starts one per
stage, so each stage's memory is its own and a killed comparison leaves no stage running."""

from __future__ import annotations

import ctypes
import dataclasses
import json
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from alignkit.constitution.audit import FeedbackAuditError
from alignkit.methods import METHODS
from alignkit.pipelines.cai import run_cai
from alignkit.pipelines.cai_config import CAIConfig
from alignkit.utils import processes
from alignkit.utils.io import atomic_write_json
from alignkit.utils.memory import peak_rss_gb


@dataclass(frozen=True)
class TrainedStage:
    """A training stage of a recipe, trained in its own process: the model it gave (None where the recipe's own
    gate stopped it, saying why in `failed`) and that process's peak memory."""

    kind: str
    model: str | None
    peak_rss_gb: float
    failed: str | None = None


def die_with_parent() -> None:
    """In a stage's subprocess, before it starts (Linux): be killed when compare dies, however it dies, so that a
    killed comparison leaves no orphan still training in the folder its rerun is about to use."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def stage_main(spec_path: str) -> int:
    """One stage in this process (`python -m alignkit.pipelines.compare_stage STAGE.json`): train, then write result.json
    with the final model and this process's peak memory."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    folder = Path(spec_path).parent
    if spec["kind"] == "cai":
        try:
            manifest = run_cai(CAIConfig.model_validate(spec["config"]))
        except FeedbackAuditError as err:  # the recipe's own gate stopped it: an outcome of this seed, not a crash
            failed = TrainedStage("cai", None, round(peak_rss_gb(), 2), f"feedback audit: {err}")
            processes.on_main(atomic_write_json, folder / "result.json", dataclasses.asdict(failed))
            return 0
        model = manifest["final"]
    else:
        method = METHODS[spec["kind"]]
        model = str(method.train(method.config.model_validate(spec["config"])).final_dir)
    processes.on_main(atomic_write_json, folder / "result.json",
                      dataclasses.asdict(TrainedStage(spec["kind"], model, round(peak_rss_gb(), 2))))
    return 0


if __name__ == "__main__":
    sys.exit(stage_main(sys.argv[1]))
