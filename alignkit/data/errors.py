"""The one exception type for bad training data, and `read_utf8`, the text read that raises it.

They live in their own module so that the readers (sources.py, suites.py) and the validators (formats.py) can use
them without importing each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_MAX_SHOWN_TEXT = 40


class DataError(ValueError):
    """Bad input data, located precisely enough to fix it by hand.

    ``str(error)`` reads like ``data/train.jsonl:12: field 'chosen': expected a non-empty
    string or list of messages, got int``.
    """

    def __init__(
        self, where: str, expected: str, got: str | None = None, *, field: str | None = None
    ) -> None:
        self.where = where
        self.field = field
        self.expected = expected
        self.got = got
        parts = [where] if where else []
        if field is not None:
            parts.append(f"field '{field}'")
        detail = f"expected {expected}"
        if got is not None:
            detail += f", got {got}"
        parts.append(detail)
        super().__init__(": ".join(parts))


def describe(value: Any) -> str:
    """Short description of a wrong value for an error message: its type, and text if short."""
    if value is None:
        return "null"
    if isinstance(value, str):
        if not value.strip():
            return "an empty string" if not value else "a whitespace-only string"
        shown = value if len(value) <= _MAX_SHOWN_TEXT else value[:_MAX_SHOWN_TEXT] + "..."
        return f"str {shown!r}"
    if isinstance(value, bool):
        return f"bool {value}"
    if isinstance(value, (list, tuple)):
        return f"a list of length {len(value)}" if value else "an empty list"
    return type(value).__name__


def read_utf8(path: Path, label: str | None = None) -> str:
    """The whole file as text; invalid UTF-8 is an error naming the line it is on."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(f"{label or path}:{line}", "UTF-8 text", f"undecodable bytes ({error.reason})") from None
