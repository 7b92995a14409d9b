"""Shared fixtures: offline tiny tokenizer/model (also saved as an HF directory), a writer for dataset files, and a
real OpenAI-compatible server (llama.cpp's, on the embedded GGUF) for the HTTP judge."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alignkit.models.tiny import tiny_model, tiny_tokenizer
from alignkit.utils.processes import free_port

# Formats write_data can produce; "disk" and "diskdict" are datasets' save_to_disk folders.
DATA_FORMATS = ("jsonl", "json", "csv", "parquet", "disk", "diskdict")


@pytest.fixture(scope="session")
def tiny_tok():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tiny-model")
    tokenizer = tiny_tokenizer()
    tiny_model(tokenizer, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture
def tiny_lm(tiny_tok):
    # Function scope: tests may train it, and a fresh one costs milliseconds.
    return tiny_model(tiny_tok)


def _csv_cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else str(value)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(name for row in rows for name in row))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_cell(row.get(name)) for name in columns])


def _write(directory: Path, rows: list[dict[str, Any]], fmt: str, name: str) -> Path:
    if fmt == "jsonl":
        path = directory / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    elif fmt == "json":
        path = directory / f"{name}.json"
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif fmt == "csv":
        path = directory / f"{name}.csv"
        _write_csv(path, rows)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = directory / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif fmt in ("disk", "diskdict"):
        from datasets import Dataset, DatasetDict

        path = directory / name
        dataset = Dataset.from_list(rows)
        (DatasetDict({"train": dataset}) if fmt == "diskdict" else dataset).save_to_disk(str(path))
    else:
        raise ValueError(f"unknown format {fmt!r}; use one of {DATA_FORMATS}")
    return path


@pytest.fixture
def write_data(tmp_path: Path) -> Callable[..., Path]:
    """``write_data(rows, fmt, name="data") -> path`` writes rows as a dataset in ``fmt`` under tmp_path."""

    def write(rows: list[dict[str, Any]], fmt: str = "jsonl", name: str = "data") -> Path:
        return _write(tmp_path, rows, fmt, name)

    return write


# ------------------------------------------------------------------ a real llama.cpp server

SERVER_START_LIMIT_S = 180.0


def _embedded_gguf() -> Path:
    from alignkit.models.loading import EMBEDDED, _embedded_gguf_path

    return _embedded_gguf_path(EMBEDDED["smollm2-135m"])


@pytest.fixture
def unused_port() -> int:
    return free_port()


# `python -m llama_cpp.server` with two of its defaults changed, both by patching, as the server exposes no setting:
# - llama.cpp's weight repacking ("extra buffer types") off. On CPUs with AMX (Sapphire Rapids) llama.cpp repacks the
#   Q4 weights for AMX and then segfaults in ggml_backend_amx_mul_mat on the first completion (llama.cpp issue 20824,
#   still open; measured here with llama-cpp-python 0.3.36: exit 139 with repacking, answers without).
# - every completion from an empty KV cache. llama-cpp-python keeps the previous request's KV cache and evaluates only
#   the part of a new prompt after the longest common prefix, so an answer depends on what was asked before it. One
#   server serves every real-server test of a session; in CI, after the audit and eval tests had used it, the judge's
#   two orders of one question stopped summing to 1 (1.0096) and a rating question was answered "I'm sorry for your
#   loss, but" (an unrelated earlier prompt's context); each of these tests alone passed. From an empty cache an
#   answer is a function of its request only, which is what the determinism tests below ask of a judge.
SERVER_SCRIPT = """
import runpy
from llama_cpp import Llama
from llama_cpp import llama_cpp as lib
default_params = lib.llama_model_default_params
def without_repacking():
    params = default_params()
    params.use_extra_bufts = False
    return params
lib.llama_model_default_params = without_repacking
generate = Llama.generate
def generate_from_an_empty_cache(self, tokens, *args, **kwargs):
    self.reset()
    return generate(self, tokens, *args, **kwargs)
Llama.generate = generate_from_an_empty_cache
runpy.run_module("llama_cpp.server", run_name="__main__")
"""


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory) -> str:
    """Start `python -m llama_cpp.server` (patched, see above) on the embedded model; yield its base URL (".../v1"); stop it.

    llama-cpp-python is a test dependency that `make install` builds, so in CI (the `CI` variable set) its absence
    is a failure; elsewhere the real-server tests are skipped.
    """
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None:
        message = "llama-cpp-python[server] is not installed (make install adds it through the test extra)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [
        sys.executable, "-c", SERVER_SCRIPT,
        "--model", str(_embedded_gguf()),
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "2048",
        # One thread: with two, llama.cpp's spinning thread barrier slowed requests 10-20x whenever anything else
        # ran on this 2-core machine (measured: 0.5 s vs 6-12 s per question).
        "--n_threads", "1",
    ]  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    # The log goes to a file, not a pipe, so a chatty server can never block on a full pipe buffer.
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    started = time.monotonic()
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"llama.cpp server exited with code {process.returncode} before answering; command: "
                    f"{' '.join(command)}\n--- its output ---\n{_tail(log_path)}"
                )
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
                    if response.status == 200 and json.loads(response.read()).get("data") is not None:
                        break
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() - started > SERVER_START_LIMIT_S:
                pytest.fail(
                    f"llama.cpp server did not answer GET {base_url}/models within {SERVER_START_LIMIT_S:.0f} s\n"
                    f"--- its output ---\n{_tail(log_path)}"
                )
            time.sleep(0.25)
        print(f"\nllama.cpp server ready at {base_url} after {time.monotonic() - started:.1f} s")
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _tail(path: Path, chars: int = 4000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-chars:] or "(no output)"


# ------------------------------------------------------------------ train on exactly what you sample


def prompt_rows(ids, mask) -> set[tuple[int, ...]]:
    """The unpadded rows of a (left- or right-) padded batch of prompt ids."""
    return {tuple(row[m.bool()].tolist()) for row, m in zip(ids.cpu(), mask.cpu())}


class Recorder:
    """What a run's models were sampled from and trained on, as it happens (the `recorder` fixture)."""

    def __init__(self):
        self.sampled: set[tuple[int, ...]] = set()  # prompt rows a rollout backend decoded from
        self.trained: list[tuple[Any, tuple[int, ...]]] = []  # (prompt, its ids) for every trainer rendering
        self.updated: set[tuple[int, ...]] = set()  # prompt rows an online update's forward pass conditioned on

    def trained_ids(self, prompt) -> set[tuple[int, ...]]:
        return {ids for p, ids in self.trained if p == prompt}


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    """Records both sides of "the ids a model is trained to continue from are the ids it is sampled with": every
    prompt row any rollout backend decodes from (sampling, evaluation, `alignkit generate`, the CAI stages), every
    prompt a trainer renders with its replies (SFT, DPO, the reward and preference models all go through
    render_responses), and every prompt row an online method's update conditions on."""
    from alignkit.data import render
    from alignkit.rollouts.sampler import DecodeLoopBackend, HFGenerateBackend
    from alignkit.train import experience

    rec = Recorder()
    for cls in (DecodeLoopBackend, HFGenerateBackend):
        def generate(self, model, prompt_ids, prompt_mask, *args, _original=cls.generate, **kwargs):
            rec.sampled |= prompt_rows(prompt_ids, prompt_mask)
            return _original(self, model, prompt_ids, prompt_mask, *args, **kwargs)

        monkeypatch.setattr(cls, "generate", generate)
    render_responses = render.render_responses

    def recorded_render(tokenizer, prompt, responses, max_length=None, *, where=""):
        out = render_responses(tokenizer, prompt, responses, max_length, where=where)
        rec.trained.append((prompt, tuple(out[0].input_ids[: out[0].prompt_len])))
        return out

    monkeypatch.setattr(render, "render_responses", recorded_render)
    response_states = experience.response_states

    def recorded_states(model, prompt_ids, prompt_mask, *args, **kwargs):
        rec.updated |= prompt_rows(prompt_ids, prompt_mask)
        return response_states(model, prompt_ids, prompt_mask, *args, **kwargs)

    monkeypatch.setattr(experience, "response_states", recorded_states)
    return rec
