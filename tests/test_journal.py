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


def _process(rank: int, world: int, init: str, folder: str) -> None:
    """One of two gloo processes: a journal asked with its chunks handed out, and a batch_map."""
    import json
    from pathlib import Path

    import torch.distributed as dist

    from alignkit.utils import processes

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        asked: list[list[int]] = []

        def ask(part):
            asked.append(list(part))
            return [x * 10 for x in part]

        answers = Journal(Path(folder) / "journal.jsonl").map(ask, list(range(10)), chunk=2, shard=True)
        mapped = processes.batch_map(lambda start: [[start, processes.rank()]], 7, 2, "test", shard=True)
        (Path(folder) / f"process-{rank}.json").write_text(json.dumps({"answers": answers, "asked": asked,
                                                                       "mapped": mapped}))
    finally:
        dist.destroy_process_group()


def test_under_two_processes_each_asks_its_share_of_the_chunks_and_the_main_one_writes(tmp_path):
    """`shard=True` (an endpoint's journal under a launcher): the chunks still unanswered are handed out one a
    process at a time, every process gets every answer, and the journal holds each answer once."""
    import json

    import torch.multiprocessing as mp

    path = tmp_path / "journal.jsonl"
    Journal(path).map(lambda part: [x * 10 for x in part], [2, 3])  # one chunk answered before: not asked again
    mp.spawn(_process, args=(2, f"file://{tmp_path / 'init'}", str(tmp_path)), nprocs=2)
    runs = [json.loads((tmp_path / f"process-{r}.json").read_text()) for r in range(2)]
    assert [run["answers"] for run in runs] == [[x * 10 for x in range(10)]] * 2
    assert runs[0]["asked"] == [[0, 1], [6, 7]] and runs[1]["asked"] == [[4, 5], [8, 9]]
    assert len(path.read_text().splitlines()) == 10
    assert Journal(path).map(lambda part: pytest.fail("asked again"), list(range(10)), chunk=2) == [
        x * 10 for x in range(10)]
    # batch_map: 4 batches of 7 items, two a process, every result on both, in batch order.
    assert [run["mapped"] for run in runs] == [[[0, 0], [2, 0], [4, 1], [6, 1]]] * 2
