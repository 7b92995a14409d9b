"""Fuzzed input: every data source and format, every record kind, suites and constitution files.

Rows are drawn by hypothesis from the fields the formats know, with wrong types, missing and extra fields, empty and
whitespace strings, huge strings, NaN and infinite numbers, duplicate ids, malformed lines and invalid UTF-8. Whatever
comes, reading ends in one of two ways: records, or the project's own error (DataError / ConstitutionError) naming
the file and the line (and the field where there is one) — never an exception from inside a library. With
`skip_invalid` every row is either used or skipped: the two counts add up to the rows in the file. Runs are
derandomized, so CI sees the same cases every time.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignkit.constitution import ConstitutionError, load_constitution
from alignkit.data import DataError, load_records
from alignkit.data.formats import KINDS
from alignkit.data.suites import load_suite

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FIELDS = ("text", "messages", "prompt", "completion", "chosen", "rejected", "margin", "probability", "label",
          "responses", "ranking", "scores", "rating", "reference", "answer", "id", "split", "origin", "extra")
HUGE = "x" * 200_000  # past csv's default field limit (131072) and any sensible message

text = st.one_of(st.text(max_size=12), st.sampled_from(["", "   ", "\n", HUGE, "Human: hi\n\nAssistant: hello",
                                                        "\x00\ud7ff", "é" * 3]))
number = st.one_of(st.integers(-3, 10), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([math.nan, math.inf, -math.inf]))
scalar = st.one_of(st.none(), st.booleans(), number, text)
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", "robot", ""]),
                                 "content": st.one_of(text, st.none(), st.integers())})
value = st.recursive(st.one_of(scalar, st.lists(message, max_size=3)),
                     lambda inner: st.one_of(st.lists(inner, max_size=3),
                                             st.dictionaries(st.sampled_from(FIELDS), inner, max_size=3)),
                     max_leaves=6)
VALID = [  # rows that some kind accepts, so the fuzz also reaches the paths after a good row
    {"text": "a demonstration"},
    {"prompt": "q?", "completion": "a."},
    {"prompt": "q?", "chosen": "good", "rejected": "bad"},
    {"chosen": "\n\nHuman: hi\n\nAssistant: good", "rejected": "\n\nHuman: hi\n\nAssistant: bad"},
    {"prompt": "q?", "completion": "a.", "label": True},
    {"prompt": "q?", "responses": ["a", "b"], "ranking": [1, 0]},
    {"prompt": "q?", "completion": "a.", "rating": 3.5},
    {"prompt": [{"role": "user", "content": "q?"}], "reference": "4"},
]
row = st.one_of(st.dictionaries(st.sampled_from(FIELDS), value, max_size=5), st.sampled_from(VALID))
row_or_junk = st.one_of(row, row, row, scalar, st.lists(scalar, max_size=2))


def _location(path: Path) -> re.Pattern:
    # file:LINE, file:[INDEX], file:row N or file[split]:row N; a whole-file problem names the file alone
    return re.compile(re.escape(str(path)) + r"(\[\w+\])?(:(\d+|\[\d+\]|row \d+))?(: |$)")


def check(path: Path, kind: str, rows_in_file: int | None) -> None:
    """The two ways reading may end, in strict mode and with skip_invalid."""
    strict = None
    try:
        load_records(path, kind)
    except DataError as error:
        assert _location(path).match(str(error)), str(error)[:300]
        strict = str(error)
    try:
        result = load_records(path, kind, skip_invalid=True)
    except DataError as error:
        # Only what is not a row's fault gets past skip_invalid: a file unreadable as a whole (the same error as
        # without it), or a file in which no row was usable.
        assert str(error) == strict or "no rows" in str(error) or "invalid rows" in str(error), str(error)[:300]
    else:
        if rows_in_file is not None and kind != "unpaired":  # unpaired: a preference row gives two records
            assert len(result.records) + result.skipped == rows_in_file


def write_jsonl(folder: Path, rows: list, tail: bytes) -> tuple[Path, int]:
    path = folder / "data.jsonl"
    lines = [json.dumps(r).encode() for r in rows]
    path.write_bytes(b"".join(line + b"\n" for line in lines) + tail)
    return path, len(rows) + sum(1 for line in tail.splitlines() if line.strip())


def write_json(folder: Path, rows: list) -> tuple[Path, int]:
    path = folder / "data.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path, len(rows)


def write_csv(folder: Path, rows: list) -> tuple[Path, int | None]:
    path = folder / "data.csv"
    dicts = [r for r in rows if isinstance(r, dict)]
    columns = list(dict.fromkeys(k for r in dicts for k in r)) or ["text"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for r in dicts:
            writer.writerow(["" if r.get(c) is None else r[c] if isinstance(r.get(c), str) else json.dumps(r[c])
                             for c in columns])
    return path, None  # csv folds some rows into others (blank lines, quoting): no exact count to compare


def _stringified(rows: list) -> list[dict]:
    """Columnar formats need one type per column: every value as its JSON text, and non-object rows dropped."""
    return [{k: json.dumps(v) if not isinstance(v, str) else v for k, v in r.items()} for r in rows
            if isinstance(r, dict)]


def write_parquet(folder: Path, rows: list) -> tuple[Path, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / "data.parquet"
    table = _stringified(rows)
    pq.write_table(pa.Table.from_pylist(table) if table else pa.table({"text": pa.array([], pa.string())}), path)
    return path, len(table)


def write_dataset(folder: Path, rows: list) -> tuple[Path, int]:
    from datasets import Dataset

    path = folder / "dataset"
    table = _stringified(rows) or []
    columns = sorted({k for r in table for k in r}) or ["text"]
    Dataset.from_dict({c: [r.get(c) for r in table] for c in columns}).save_to_disk(str(path))
    return path, len(table)


@pytest.fixture
def folder():
    path = Path(tempfile.mkdtemp(prefix="alignkit-fuzz-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


TAILS = st.sampled_from([b"", b"{not json\n", b"\xff\xfe broken bytes\n", b'{"prompt": "cut off', b"[1, 2]\n",
                         b"\n\n", b'{"prompt": NaN, "completion": Infinity}\n'])


@FUZZ
@given(rows=st.lists(row_or_junk, max_size=6), tail=TAILS, kind=st.sampled_from(KINDS))
def test_jsonl(rows, tail, kind):
    with tempfile.TemporaryDirectory() as tmp:
        path, count = write_jsonl(Path(tmp), rows, tail)
        check(path, kind, count)


@FUZZ
@given(rows=st.lists(row_or_junk, max_size=6), kind=st.sampled_from(KINDS))
def test_json(rows, kind):
    with tempfile.TemporaryDirectory() as tmp:
        path, count = write_json(Path(tmp), rows)
        check(path, kind, count)


@FUZZ
@given(rows=st.lists(row, max_size=6), kind=st.sampled_from(KINDS))
def test_csv(rows, kind):
    with tempfile.TemporaryDirectory() as tmp:
        path, count = write_csv(Path(tmp), rows)
        check(path, kind, count)


@FUZZ
@given(rows=st.lists(row, max_size=6), kind=st.sampled_from(KINDS))
def test_parquet(rows, kind):
    with tempfile.TemporaryDirectory() as tmp:
        path, count = write_parquet(Path(tmp), rows)
        check(path, kind, count)


@settings(FUZZ, max_examples=15)
@given(rows=st.lists(row, max_size=4), kind=st.sampled_from(KINDS))
def test_datasets_folder(rows, kind):
    with tempfile.TemporaryDirectory() as tmp:
        path, count = write_dataset(Path(tmp), rows)
        check(path, kind, count)


BROKEN_FILES = {  # whole files that are not what their name says
    ".jsonl": [b"\xff\xfe\x00", b"\x00" * 10, b'{"a": 1}\r\n\x1a'],
    ".json": [b"", b"\xff\xfe\x00", b"{", b"[1, 2", b'{"rows": 3}', b"null", b"NaN", b"[" * 2000 + b"]" * 2000],
    ".csv": [b"\xff\xfe\x00text\n", b"text\n\"unclosed\n", b'text\n"' + b"y" * 200_000 + b'"\n', b"\x00\x00\n"],
    ".parquet": [b"", b"PAR1", b"PAR1" + b"\x00" * 64 + b"PAR1", b"not parquet at all"],
}


@pytest.mark.parametrize("suffix, content", [(s, c) for s, cs in BROKEN_FILES.items() for c in cs])
@pytest.mark.parametrize("kind", ["sft", "preference", "prompt"])
def test_broken_whole_files(suffix, content, kind, folder):
    path = folder / f"data{suffix}"
    path.write_bytes(content)
    check(path, kind, None)


def test_broken_datasets_folders(folder):
    for name, files in {"no-state": {"x.arrow": b"junk"},
                        "bad-state": {"state.json": b"{broken", "dataset_info.json": b"{}"},
                        "bad-arrow": {"state.json": json.dumps({"_data_files": [{"filename": "data.arrow"}]}).encode(),
                                      "dataset_info.json": b"{}", "data.arrow": b"not arrow"},
                        "bad-dict": {"dataset_dict.json": b'{"splits": ["train"]}'}}.items():
        path = folder / name
        path.mkdir()
        for file, content in files.items():
            (path / file).write_bytes(content)
        check(path, "sft", None)


# ------------------------------------------------------------------ suites


SUITE_ROW = st.dictionaries(st.sampled_from(("id", "prompt", "category", "split", "harmful", "reference",
                                             "dimension", "group", "template", "messages", "extra")),
                            value, max_size=5)


PARTS = ("redteam", "borderline", "verifiable", "jailbreaks", "bias", "anthropomorphism")


@FUZZ
@given(part=st.sampled_from(PARTS), file=st.sampled_from(["part.jsonl", "part.txt"]),
       rows=st.lists(st.one_of(SUITE_ROW, SUITE_ROW, scalar), max_size=5), tail=TAILS, duplicate=st.booleans())
def test_suite_parts(part, file, rows, tail, duplicate):
    """A well-formed suite file pointing at one fuzzed part file."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if duplicate and rows and isinstance(rows[0], dict):
            rows = rows + [dict(rows[0])]  # the same id twice
        lines = [json.dumps(r).encode() if file.endswith(".jsonl") else str(r).encode() for r in rows]
        (folder / file).write_bytes(b"".join(line + b"\n" for line in lines) + tail)
        path = folder / "suite.yaml"
        path.write_text(yaml.safe_dump({part: file}), encoding="utf-8")
        for split in ("heldout", "train"):
            try:
                load_suite(path, split)
            except DataError as error:
                assert str(error).startswith(str(folder)), str(error)[:300]


@FUZZ
@given(config=st.one_of(st.dictionaries(st.sampled_from(("redteam", "borderline", "verifiable", "jailbreaks", "bias",
                                                        "anthropomorphism", "jailbreak_requests_per_category",
                                                        "other")),
                                        st.one_of(st.just("part.jsonl"), st.just("part.txt"), scalar), max_size=3),
                        scalar),
       rows=st.lists(st.one_of(SUITE_ROW, scalar), max_size=5), tail=TAILS, duplicate=st.booleans())
def test_suites(config, rows, tail, duplicate):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if duplicate and rows and isinstance(rows[0], dict):
            rows = rows + [dict(rows[0])]  # the same id twice
        (folder / "part.jsonl").write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows) + tail)
        (folder / "part.txt").write_bytes(b"\n".join(str(r).encode() for r in rows) + tail)
        path = folder / "suite.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        try:
            load_suite(path, "heldout")
        except DataError as error:
            assert str(error).startswith(str(folder)), str(error)[:300]


# ------------------------------------------------------------------ constitutions


PRINCIPLE = st.dictionaries(st.sampled_from(("id", "source", "kind", "critique", "revision", "comparison", "extra")),
                            st.one_of(scalar, st.sampled_from(["harm-1", "human-rights", "broad", "rule"])),
                            max_size=7)


@FUZZ
@given(document=st.one_of(
    st.fixed_dictionaries({"name": scalar, "principles": st.one_of(st.lists(st.one_of(PRINCIPLE, scalar), max_size=3),
                                                                   scalar),
                           "exemplars": st.one_of(st.lists(st.one_of(PRINCIPLE, scalar), max_size=2), scalar)}),
    scalar, st.lists(scalar, max_size=2)),
    raw=st.sampled_from([None, b"\xff\xfe", b"name: [unclosed", b"\t- tab", b"a: b: c", b"!!python/object:os.system x"]))
def test_constitutions(document, raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "constitution.yaml"
        if raw is None:
            path.write_text(yaml.safe_dump(document), encoding="utf-8")
        else:
            path.write_bytes(raw)
        try:
            load_constitution(path)
        except ConstitutionError as error:
            assert all(line.startswith(str(path)) for line in str(error).splitlines()), str(error)[:300]
