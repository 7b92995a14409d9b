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

from alignkit.utils import processes
from alignkit.utils.io import jsonl_lines


def request_key(request: Any) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


class Journal:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.answers: dict[str, Any] = {}
        if self.path.is_file():
            for line in jsonl_lines(self.path.read_text(encoding="utf-8", errors="replace")):
                try:
                    entry = json.loads(line)
                    self.answers[entry["key"]] = entry["answer"]
                except (ValueError, KeyError, TypeError):
                    continue  # the last line of a killed run

    def record(self, keys: Sequence[str], answers: Sequence[Any]) -> None:
        """Append answers and make them durable before going on (under a launcher the main process writes the file;
        every process keeps the answers)."""
        if processes.is_main():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write("".join(json.dumps({"key": k, "answer": a}, ensure_ascii=False) + "\n"
                                     for k, a in zip(keys, answers)))
                handle.flush()
                os.fsync(handle.fileno())
        self.answers.update(zip(keys, answers))

    def map(self, ask: Callable[[list], list], requests: list, chunk: int | None = None, *,
            shard: bool = False) -> list:
        """`ask(requests)` answered through the journal, in chunks of `chunk` requests (None: all at once) at fixed
        positions, so that a resumed run asks exactly the chunks an uninterrupted one would have asked; a chunk is
        recorded as soon as it is answered.

        Under a launcher every process calls it alike. Without `shard` each asks every chunk (for an `ask` that
        splits its work over the processes itself); with `shard` the unanswered chunks are handed out one a process
        at a time and every answer is gathered (for an `ask` that does not: an endpoint)."""
        keys = [request_key(r) for r in requests]
        size = max(1, chunk or len(requests))
        parts = [range(start, min(start + size, len(requests))) for start in range(0, len(requests), size)]
        pending = [part for part in parts if not all(keys[i] in self.answers for i in part)]
        step = processes.world() if shard else 1
        for first in range(0, len(pending), step):
            wave, me = pending[first : first + step], processes.rank() if shard else 0
            answered = [self._ask(ask, requests, wave[me])] if me < len(wave) else []
            for part, answers in processes.gathered(answered) if shard else answered:
                self.record([keys[i] for i in part], answers)
        return [self.answers[k] for k in keys]

    @staticmethod
    def _ask(ask: Callable[[list], list], requests: list, part: range) -> tuple[range, list]:
        answers = ask([requests[i] for i in part])
        if len(answers) != len(part):
            raise RuntimeError(f"{len(part)} requests were answered with {len(answers)} answers")
        return part, [_plain(a) for a in answers]


def _plain(answer: Any) -> Any:
    """An answer as JSON keeps it (tuples become lists)."""
    return json.loads(json.dumps(answer))


__all__ = ["Journal", "request_key"]
