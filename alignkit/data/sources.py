"""Read raw rows (plain dicts) from the places users keep datasets.

Each row comes with a location string used in error messages:

* ``.jsonl``  -> ``path:LINE`` (1-based, as editors count)
* ``.json``   -> ``path:[INDEX]`` (0-based list index)
* ``.csv``    -> ``path:LINE`` (1-based line where the record starts; the header is line 1)
* ``.parquet`` and ``save_to_disk`` folders -> ``path:row N`` (0-based, as ``dataset[N]``)
* hub datasets -> ``org/name:split row N``; a hub name or a ``save_to_disk`` folder may choose its subset (the
  dataset's config name) and split: ``org/name?subset=x&split=test`` (a config's ``{path, subset, split}`` is
  written so)
* ``builtin:NAME`` -> ``builtin:NAME:LINE``
* ``task:NAME?key=value&...`` (generated prompts with gold references, see ``alignkit.tasks``) -> ``task:...:#N``
* ``suite:PART?split=train`` (the train split of a built-in evaluation suite part, see ``suites.py``) -> ``suite:...:ID``

Rows are not validated here beyond "is it an object"; formats.py does that.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignkit.tasks import task_rows

from .errors import DataError, describe, read_utf8
from .render import user_turn
from .suites import suite_rows

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

BUILTIN_PREFIX = "builtin:"
TASK_PREFIX = "task:"
SUITE_PREFIX = "suite:"
_HUB_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")
_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")

# CSV has no types: these columns may hold JSON (lists of messages, rankings, scores).
_CSV_JSON_FIELDS = frozenset(
    {"messages", "prompt", "completion", "chosen", "rejected", "responses", "ranking", "scores"}
)
_CSV_NUMBER_FIELDS = frozenset({"rating", "margin"})
_CSV_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}

# A row is a dict, or the DataError that reading it produced. Readers yield errors instead of
# raising them so that load_records(skip_invalid=True) can step over a malformed line.
RowOrError = dict[str, Any] | DataError


def read_rows(source: str | Path, split: str | None = "train") -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(location, row)`` for every row of ``source``; raise DataError on a bad row."""
    for where, row in iter_rows(source, split):
        if isinstance(row, DataError):
            raise row
        yield where, row


# A source read as evaluation data without a split of its own: the first of these a dataset has.
EVAL_SPLITS = ("test", "validation", "eval")


def hub_options(text: str) -> tuple[str, dict[str, str]]:
    """`org/name?subset=x&split=y` (or a folder with the same query) -> (`org/name`, {"subset": x, "split": y})."""
    base, sep, query = text.partition("?")
    if not sep:
        return text, {}
    options: dict[str, str] = {}
    for part in query.split("&"):
        key, eq, value = part.partition("=")
        if key not in ("subset", "split") or not eq or not value:
            raise DataError(text, "options subset=NAME and split=NAME after '?'", describe(part))
        options[key] = value
    return base, options


def iter_rows(source: str | Path, split: str | None = "train") -> Iterator[tuple[str, RowOrError]]:
    """Like read_rows, but a row that cannot be read is yielded as its DataError. `split` None: evaluation data,
    the first of EVAL_SPLITS the source has (a split the source names itself wins over `split`)."""
    text = str(source)
    if isinstance(source, str) and text.startswith(BUILTIN_PREFIX):
        yield from _read_builtin(text[len(BUILTIN_PREFIX) :])
        return
    if isinstance(source, str) and text.startswith(TASK_PREFIX):
        yield from _read_task(text)
        return
    if isinstance(source, str) and text.startswith(SUITE_PREFIX):
        yield from suite_rows(text[len(SUITE_PREFIX) :])
        return
    base, options = hub_options(text) if isinstance(source, str) else (text, {})
    split = options.get("split", split)
    path = Path(base)
    if path.is_dir():
        if "subset" in options:
            raise DataError(text, "subset= only for a hub dataset (a saved folder holds one subset)",
                            options["subset"])
        yield from _read_saved_dataset(path, split)
    elif path.is_file() and not options:
        yield from _read_file(path, text, split)
    elif isinstance(source, str) and _looks_like_hub_name(base):
        yield from _read_hub(base, options.get("subset"), split)
    else:
        raise DataError(
            text,
            "an existing .jsonl/.json/.csv/.parquet file, a save_to_disk folder, "
            "a hub dataset name (org/name) or builtin:NAME",
            "no such file or directory",
        )


def _looks_like_hub_name(text: str) -> bool:
    return bool(_HUB_NAME.match(text)) and not text.endswith(_FILE_SUFFIXES)


def _read_file(path: Path, label: str, split: str | None) -> Iterator[tuple[str, RowOrError]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path, label)
    if suffix == ".json":
        return _read_json(path, label, split)
    if suffix == ".csv":
        return _read_csv(path, label)
    if suffix == ".parquet":
        return _read_parquet(path, label)
    raise DataError(label, "a file ending in .jsonl, .json, .csv or .parquet", f"'{suffix}'")


def _as_object(where: str, value: Any) -> RowOrError:
    if isinstance(value, dict):
        return value
    return DataError(where, "a JSON object", describe(value))


def _read_jsonl(path: Path, label: str) -> Iterator[tuple[str, RowOrError]]:
    # Binary lines, decoded one by one, so a bad byte spoils only its own line.
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{label}:{number}"
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                yield where, DataError(where, "UTF-8 text", f"undecodable bytes ({error.reason})")
                continue
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                yield where, DataError(
                    where, "one JSON object per line", f"invalid JSON ({error.msg} at column {error.colno})"
                )
                continue
            except RecursionError:
                yield where, DataError(where, "one JSON object per line", "JSON nested too deeply to read")
                continue
            yield where, _as_object(where, value)


def _read_json(path: Path, label: str, split: str | None) -> Iterator[tuple[str, RowOrError]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise DataError(
            f"{label}:{error.lineno}", "valid JSON", f"invalid JSON ({error.msg} at column {error.colno})"
        ) from None
    except UnicodeDecodeError as error:
        raise DataError(label, "UTF-8 text", f"undecodable bytes ({error.reason})") from None
    except RecursionError:
        raise DataError(label, "valid JSON", "JSON nested too deeply to read") from None
    rows = _json_row_list(document, label, split)
    for index, value in enumerate(rows):
        where = f"{label}:[{index}]"
        yield where, _as_object(where, value)


def _json_row_list(document: Any, label: str, split: str | None) -> list[Any]:
    """A .json file holds a list of rows, or an object with that list under the split or "data"."""
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        for key in (*(EVAL_SPLITS if split is None else (split,)), "data"):
            if isinstance(document.get(key), list):
                return document[key]
    raise DataError(
        label,
        f"a JSON list of objects, or an object with such a list under '{split or '/'.join(EVAL_SPLITS)}' or 'data'",
        describe(document) if not isinstance(document, dict) else f"an object with keys {sorted(document)}",
    )


# A cell may hold a long document: csv's default cap (131072 characters per field) would refuse it.
_CSV_FIELD_LIMIT = 1 << 30


def _read_csv(path: Path, label: str) -> Iterator[tuple[str, RowOrError]]:
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    reader = csv.DictReader(io.StringIO(read_utf8(path, label), newline=""))
    try:
        if reader.fieldnames is None:
            return
        # Reading fieldnames consumed the header, so line_num now points at its last line.
        last_line = reader.line_num
        for cells in reader:
            # A quoted cell may span lines; point at the line where the record starts.
            where = f"{label}:{last_line + 1}"
            last_line = reader.line_num
            yield where, _csv_row(cells)
    except csv.Error as error:
        raise DataError(f"{label}:{reader.line_num}", "valid CSV", str(error)) from None


def _csv_row(cells: dict[str | None, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, text in cells.items():
        # Surplus cells have no name and short rows leave None; an empty cell is how CSV says
        # "this row has no such field" (e.g. no margin), so it counts as missing too.
        if name is None or not text:
            continue
        row[name] = _csv_value(name, text)
    return row


def _csv_value(name: str, text: str) -> Any:
    """Give a CSV cell the type its column needs; leave it as text when it does not parse."""
    stripped = text.strip()
    if name == "label":
        return _CSV_BOOLEANS.get(stripped.lower(), text)
    if name in _CSV_NUMBER_FIELDS:
        try:
            return float(stripped)
        except ValueError:
            return text
    if name in _CSV_JSON_FIELDS and stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return text
    return text


def _read_parquet(path: Path, label: str) -> Iterator[tuple[str, RowOrError]]:
    import pyarrow.parquet as pq

    index = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches():
            for row in batch.to_pylist():
                yield f"{label}:row {index}", row
                index += 1
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid / ArrowIOError for a file it cannot read
        raise DataError(f"{label}:row {index}" if index else label, "a readable Parquet file",
                        f"{type(error).__name__}: {str(error)[:200]}") from None


def _read_saved_dataset(path: Path, split: str | None) -> Iterator[tuple[str, RowOrError]]:
    if not ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        raise DataError(
            str(path),
            "a folder written by datasets' save_to_disk",
            "a folder without state.json or dataset_dict.json",
        )
    from datasets import DatasetDict, load_from_disk

    label = str(path)
    try:
        dataset = load_from_disk(str(path))
    except Exception as error:  # noqa: BLE001 - datasets raises many kinds for a folder it cannot read back
        raise DataError(label, "a folder that datasets' load_from_disk reads back",
                        f"{type(error).__name__}: {str(error)[:200]}") from None
    if isinstance(dataset, DatasetDict):
        split = _choose_split(label, split, list(dataset))
        dataset = dataset[split]
        label = f"{path}[{split}]"
    for index, row in enumerate(dataset):
        yield f"{label}:row {index}", row


def _choose_split(label: str, split: str | None, splits: list[str]) -> str:
    wanted = EVAL_SPLITS if split is None else (split,)
    found = next((name for name in wanted if name in splits), None)
    if found is None:
        expected = f"a split named '{split}'" if split else f"an evaluation split ({', '.join(EVAL_SPLITS)})"
        raise DataError(label, expected + " (choose one with ?split=NAME or split: NAME)", f"splits {sorted(splits)}")
    return found


def _read_hub(name: str, subset: str | None, split: str | None) -> Iterator[tuple[str, RowOrError]]:
    from datasets import DatasetDict, load_dataset

    label = name if subset is None else f"{name}?subset={subset}"
    try:
        dataset = load_dataset(name, subset, split=split)
    except Exception as error:  # noqa: BLE001 - any failure here means "not loadable"; say why.
        raise DataError(
            label, "a local path or a loadable hub dataset", f"{type(error).__name__}: {error}"
        ) from error
    if isinstance(dataset, DatasetDict):  # split None: the evaluation split it has
        split = _choose_split(label, split, list(dataset))
        dataset = dataset[split]
    for index, row in enumerate(dataset):
        yield f"{label}:{split} row {index}", row


def _builtin_folder() -> Traversable:
    return resources.files("alignkit.data").joinpath("builtin")


def builtin_names() -> list[str]:
    """Names usable as ``builtin:NAME``."""
    folder = _builtin_folder()
    if not folder.is_dir():
        return []
    return sorted(entry.name[: -len(".jsonl")] for entry in folder.iterdir() if entry.name.endswith(".jsonl"))


def _read_builtin(name: str) -> Iterator[tuple[str, RowOrError]]:
    label = f"{BUILTIN_PREFIX}{name}"
    entry = _builtin_folder().joinpath(f"{name}.jsonl")
    if not entry.is_file():
        raise DataError(label, f"one of the built-in datasets {builtin_names()}", "no such dataset")
    # as_file gives a real path even when the package is installed zipped.
    with resources.as_file(entry) as path:
        yield from _read_jsonl(path, label)


def _read_task(spec: str) -> Iterator[tuple[str, RowOrError]]:
    """Rows ``{"prompt" (a user turn), "reference"}`` of a generated task, e.g.
    ``task:arithmetic?difficulty=2&split=eval``."""
    try:
        rows = task_rows(spec[len(TASK_PREFIX) :])
    except ValueError as e:
        raise DataError(spec, "task:NAME?key=value&... naming a built-in task and its options", str(e)) from None
    for index, row in enumerate(rows):
        # A task's questions are put to an assistant, so each is a user turn: sampled and trained under the chat
        # template alike (render.py's one prompt rule).
        yield f"{spec}:#{index}", {**row, "prompt": user_turn(row["prompt"])}
