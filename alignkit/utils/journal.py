"""A journal of answered requests: what a slow or remote model already answered, kept on disk as the answers come, so
that a stage stopped half-way (a killed process, a feedback server that went away) asks only what is left.

Each line holds a request's key (a hash of the request) and its answer; a line cut short by a kill is ignored. The
answers are reused only for the same request, so a journal left by other inputs answers nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def request_key(request: Any) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


class Journal:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.answers: dict[str, Any] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    self.answers[entry["key"]] = entry["answer"]
                except (ValueError, KeyError, TypeError):
                    continue  # the last line of a killed run

    def record(self, keys: Sequence[str], answers: Sequence[Any]) -> None:
        """Append answers and make them durable before going on."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps({"key": k, "answer": a}, ensure_ascii=False) + "\n"
                                 for k, a in zip(keys, answers)))
            handle.flush()
            os.fsync(handle.fileno())
        self.answers.update(zip(keys, answers))

    def map(self, ask: Callable[[list], list], requests: list, chunk: int | None = None) -> list:
        """`ask(requests)` answered through the journal, in chunks of `chunk` requests (None: all at once) at fixed
        positions, so that a resumed run asks exactly the chunks an uninterrupted one would have asked; a chunk is
        recorded as soon as it is answered."""
        keys = [request_key(r) for r in requests]
        size = max(1, chunk or len(requests))
        for start in range(0, len(requests), size):
            part = range(start, min(start + size, len(requests)))
            if all(keys[i] in self.answers for i in part):
                continue
            answers = ask([requests[i] for i in part])
            if len(answers) != len(part):
                raise RuntimeError(f"{len(part)} requests were answered with {len(answers)} answers")
            self.record([keys[i] for i in part], [_plain(a) for a in answers])
        return [self.answers[k] for k in keys]


def _plain(answer: Any) -> Any:
    """An answer as JSON keeps it (tuples become lists)."""
    return json.loads(json.dumps(answer))


__all__ = ["Journal", "request_key"]
