"""Shared fixtures: offline tiny tokenizer/model (also saved as an HF directory), and a writer for dataset files."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alignkit.models.tiny import tiny_model, tiny_tokenizer

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
