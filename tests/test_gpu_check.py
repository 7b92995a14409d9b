"""bench/gpu_check.py on the CPU (`--device cpu --small`), so that the GPU check cannot rot between the times a GPU
is at hand: SFT, DPO and GRPO in bf16 agree with the same steps in fp32, and TRL's rows are measured beside them.

Its code is the point here, not the embedded model's numbers: every row trains a tiny random Llama that speaks the
embedded model's tokenizer (so the check's data, lengths and chat template are the real ones), which halves the
test's time (72 s against 135 s; nine processes, each mostly imports)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_and_passes_on_the_cpu(tmp_path):
    from alignkit.models import load_tokenizer
    from alignkit.models.tiny import tiny_model

    model = tmp_path / "tiny-smollm2-vocabulary"
    tokenizer = load_tokenizer("smollm2-135m")
    tiny_model(tokenizer, seed=0).save_pretrained(model)
    tokenizer.save_pretrained(model)
    out = tmp_path / "check.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--small",
                           "--steps", "2", "--model", str(model), "--json", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["problems"] == []
    rows = {(r["case"], r["impl"]): r for r in report["results"]}
    assert set(rows) == {(case, impl) for case in ("sft", "dpo", "grpo")
                         for impl in ("alignkit", "alignkit fp32 on CPU", "trl")}
    for (case, impl), row in rows.items():
        assert row["s_per_step"] > 0 and row["peak_gb"] > 0, (case, impl)
        if impl != "trl":
            assert len(row["losses"]) == 2, (case, impl)
    assert "check passed" in done.stdout and f"model {model}" in done.stdout
