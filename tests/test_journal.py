"""utils/journal.py: answers kept as they come, reused only for the same request, asked again only where missing."""

from __future__ import annotations

import pytest

from alignkit.utils.journal import Journal


def test_a_stopped_map_asks_only_the_chunks_it_had_not_answered(tmp_path):
    path = tmp_path / "journal.jsonl"
    asked: list[list[int]] = []

    def ask(part):
        asked.append(list(part))
        if 5 in part and len(asked) < 4:  # the third chunk fails the first time (an endpoint going away)
            raise ConnectionError("gone")
        return [x * 10 for x in part]

    with pytest.raises(ConnectionError):
        Journal(path).map(ask, list(range(8)), chunk=2)
    assert asked == [[0, 1], [2, 3], [4, 5]]
    assert Journal(path).map(ask, list(range(8)), chunk=2) == [x * 10 for x in range(8)]
    assert asked[3:] == [[4, 5], [6, 7]]  # chunks at fixed positions: the answered ones were not asked again
    assert len(path.read_text().splitlines()) == 8  # each answer once


def test_a_line_cut_short_is_ignored_and_other_requests_are_not_answered_from_the_journal(tmp_path):
    path = tmp_path / "journal.jsonl"
    Journal(path).map(lambda part: [f"a-{x}" for x in part], ["p", "q"])
    with path.open("a") as handle:
        handle.write('{"key": "abc", "answ')  # a kill in the middle of a line
    journal = Journal(path)
    assert journal.map(lambda part: pytest.fail("asked again"), ["p", "q"]) == ["a-p", "a-q"]
    # A chunk with anything unanswered is asked whole, as an uninterrupted run asks it.
    assert journal.map(lambda part: [f"b-{x}" for x in part], ["q", "r"]) == ["b-q", "b-r"]
    assert journal.map(lambda part: [f"c-{x}" for x in part], ["q", "r", "p"], chunk=1) == ["b-q", "b-r", "a-p"]
    with pytest.raises(RuntimeError, match="2 requests were answered with 1 answers"):
        Journal(tmp_path / "other.jsonl").map(lambda part: part[:1], ["x", "y"])
