"""Prompt-only data for online methods: the `prompt` kind, and generated tasks as `task:NAME?...` sources."""

from __future__ import annotations

import json

import pytest

from alignkit.data import DataError, PromptOnly, load_records


def test_prompt_kind_reads_prompts_with_optional_reference(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [
        {"prompt": "2+2?", "reference": "4"},
        {"prompt": [{"role": "user", "content": "hi"}]},
        {"prompt": "3+3?", "answer": 6},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = load_records(str(path), "prompt").records
    assert records == [PromptOnly("2+2?", "4"), PromptOnly([{"role": "user", "content": "hi"}], None), PromptOnly("3+3?", 6)]
    assert records[2].where == f"{path}:3"


def test_prompt_kind_rejects_a_conversation_ending_with_the_assistant(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}) + "\n")
    with pytest.raises(DataError, match=r"p.jsonl:1: field 'prompt'"):
        load_records(str(path), "prompt")


def test_task_source_gives_disjoint_train_and_eval_splits_with_gold_answers():
    train = load_records("task:arithmetic?difficulty=2&n=200&split=train", "prompt").records
    held = load_records("task:arithmetic?difficulty=2&n=200&split=eval", "prompt").records
    assert len(train) == 160 and len(held) == 40
    # Each prompt is a user turn (a question to an assistant: data/render.py's one prompt rule).
    assert all(len(r.prompt) == 1 and r.prompt[0]["role"] == "user" for r in train + held)
    assert not {r.prompt[0]["content"] for r in train} & {r.prompt[0]["content"] for r in held}
    assert all(r.reference.lstrip("-").isdigit() for r in train + held)
    assert held[0].where == "task:arithmetic?difficulty=2&n=200&split=eval:#0"
    # Deterministic: the same spec gives the same prompts.
    assert load_records("task:arithmetic?difficulty=2&n=200&split=eval", "prompt").records == held


@pytest.mark.parametrize(
    "spec, message",
    [
        ("task:nope", "unknown task 'nope'"),
        ("task:arithmetic?dificulty=1", r"unknown option\(s\) \['dificulty'\]"),
        ("task:arithmetic?difficulty=x", "bad option value"),
        ("task:arithmetic?split=test", "split must be train, eval or all"),
    ],
)
def test_bad_task_specs_say_what_is_wrong(spec, message):
    with pytest.raises(DataError, match=message):
        load_records(spec, "prompt")
