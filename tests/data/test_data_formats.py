"""Every dataset format, standard and conversational, from every source type, becomes the right records."""

import json
import re

import pytest

from alignkit.data import (
    DataError,
    LMRecord,
    Preference,
    PromptCompletion,
    Ranked,
    Rating,
    Unpaired,
    load_records,
    parse_record,
)


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


SYSTEM = {"role": "system", "content": "Be kind."}

# (kind, rows, expected records); "category" is an extra field that must be ignored.
CASES = {
    "lm-standard": ("lm", [{"text": "The sky is blue.", "category": "x"}], [LMRecord("The sky is blue.")]),
    "lm-conversational": (
        "lm",
        [{"messages": [user("Hi"), assistant("Hello")]}],
        [LMRecord([user("Hi"), assistant("Hello")])],
    ),
    "prompt_completion-standard": (
        "prompt_completion",
        [{"prompt": "2+2=", "completion": "4"}],
        [PromptCompletion("2+2=", "4")],
    ),
    "prompt_completion-conversational": (
        "prompt_completion",
        [{"prompt": [SYSTEM, user("2+2?")], "completion": [assistant("4")]}],
        [PromptCompletion([SYSTEM, user("2+2?")], [assistant("4")])],
    ),
    "sft-mixed": (
        "sft",
        [{"prompt": "Q", "completion": "A", "text": None}, {"prompt": None, "completion": None, "text": "Just text"}],
        [PromptCompletion("Q", "A"), LMRecord("Just text")],
    ),
    "preference-standard": (
        "preference",
        [
            {"prompt": "Sky?", "chosen": "Blue", "rejected": "Green", "margin": 1.5},
            {"prompt": "Grass?", "chosen": "Green", "rejected": "Red", "margin": None},
        ],
        [Preference("Sky?", "Blue", "Green", 1.5), Preference("Grass?", "Green", "Red")],
    ),
    "preference-conversational": (
        "preference",
        [{"prompt": [user("Sky?")], "chosen": [assistant("Blue")], "rejected": [assistant("Green")]}],
        [Preference([user("Sky?")], [assistant("Blue")], [assistant("Green")])],
    ),
    "preference-implicit": (
        "preference",
        [
            {
                "chosen": [SYSTEM, user("Sky?"), assistant("Blue")],
                "rejected": [SYSTEM, user("Sky?"), assistant("Green")],
            }
        ],
        [Preference([SYSTEM, user("Sky?")], [assistant("Blue")], [assistant("Green")])],
    ),
    "unpaired-standard": (
        "unpaired",
        [{"prompt": "Sky?", "completion": "Blue", "label": True}, {"prompt": "Sky?", "completion": "Red", "label": False}],
        [Unpaired("Sky?", "Blue", True), Unpaired("Sky?", "Red", False)],
    ),
    "unpaired-conversational": (
        "unpaired",
        [{"prompt": [user("Sky?")], "completion": [assistant("Red")], "label": False}],
        [Unpaired([user("Sky?")], [assistant("Red")], False)],
    ),
    "unpaired-from-preference": (
        "unpaired",
        [{"prompt": "Sky?", "chosen": "Blue", "rejected": "Green"}],
        [Unpaired("Sky?", "Blue", True), Unpaired("Sky?", "Green", False)],
    ),
    "reward-ranking-standard": (
        "reward",
        [{"prompt": "Sky?", "responses": ["Green", "Blue", "Grey"], "ranking": [1, 2, 0]}],
        [Ranked("Sky?", ["Green", "Blue", "Grey"], [0.0, 2.0, 1.0])],
    ),
    "reward-scores-conversational": (
        "reward",
        [{"prompt": [user("Sky?")], "responses": [[assistant("Blue")], [assistant("Red")]], "scores": [0.5, -1.0]}],
        [Ranked([user("Sky?")], [[assistant("Blue")], [assistant("Red")]], [0.5, -1.0])],
    ),
    "reward-rating-standard": (
        "reward",
        [{"prompt": "Sky?", "completion": "Blue", "rating": 4.5}],
        [Rating("Sky?", "Blue", 4.5)],
    ),
    "reward-rating-conversational": (
        "reward",
        [{"prompt": [user("Sky?")], "completion": [assistant("Blue")], "rating": 3}],
        [Rating([user("Sky?")], [assistant("Blue")], 3.0)],
    ),
    "reward-preference": (
        "reward",
        [{"prompt": "Sky?", "chosen": "Blue", "rejected": "Green"}],
        [Preference("Sky?", "Blue", "Green")],
    ),
}

# The formats tests/conftest.py's write_data fixture can write.
DATA_FORMATS = ("jsonl", "json", "csv", "parquet", "disk", "diskdict")


@pytest.mark.parametrize("fmt", DATA_FORMATS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_each_format_from_each_source(case, fmt, write_data):
    kind, rows, expected = CASES[case]
    path = write_data(rows, fmt)
    result = load_records(path, kind)
    assert result.records == expected
    assert (result.skipped, result.errors) == (0, [])


@pytest.mark.parametrize(
    "fmt, first, second",
    [
        ("jsonl", "data.jsonl:1", "data.jsonl:2"),
        ("json", "data.json:[0]", "data.json:[1]"),
        ("csv", "data.csv:2", "data.csv:3"),
        ("parquet", "data.parquet:row 0", "data.parquet:row 1"),
        ("disk", "data:row 0", "data:row 1"),
        ("diskdict", "data[train]:row 0", "data[train]:row 1"),
    ],
)
def test_records_know_where_they_came_from(fmt, first, second, write_data):
    path = write_data([{"text": "one"}, {"text": "two"}], fmt)
    records = load_records(path, "lm").records
    assert [record.where for record in records] == [str(path.parent / first), str(path.parent / second)]


def test_implicit_prompt_is_longest_common_prefix():
    row = {
        "chosen": [user("A"), assistant("B"), user("C"), assistant("good")],
        "rejected": [user("A"), assistant("B"), user("C"), assistant("bad"), user("more"), assistant("x")],
    }
    (record,) = parse_record(row, "here:1", "preference")
    assert record.prompt == [user("A"), assistant("B"), user("C")]
    assert record.chosen == [assistant("good")]
    assert record.rejected == [assistant("bad"), user("more"), assistant("x")]
    assert record.where == "here:1"


def test_sft_prefers_messages_when_a_prompt_column_sits_beside_them():
    row = {"prompt": "Hi", "prompt_id": "1", "messages": [user("Hi"), assistant("Hello")]}
    assert parse_record(row, "x:1", "sft") == [LMRecord([user("Hi"), assistant("Hello")])]


def test_multi_message_completion_is_accepted():
    completion = [assistant("calling"), {"role": "tool", "content": "42"}, assistant("It is 42")]
    (record,) = parse_record({"prompt": [user("?")], "completion": completion}, "x:1", "prompt_completion")
    assert record.completion == completion


def test_ranking_is_converted_to_scores_best_highest():
    row = {"prompt": "p", "responses": ["a", "b", "c", "d"], "ranking": [3, 0, 2, 1]}
    (record,) = parse_record(row, "x:1", "reward")
    assert record.scores == [2.0, 0.0, 1.0, 3.0]


def test_limit_caps_rows(write_data):
    path = write_data([{"text": f"row {index}"} for index in range(5)])
    assert [record.text for record in load_records(path, "lm", limit=2).records] == ["row 0", "row 1"]


def test_dataset_dict_split_is_selected_and_missing_split_is_named(write_data):
    path = write_data([{"text": "hello"}], "diskdict")
    assert load_records(path, "lm", split="train").records == [LMRecord("hello")]
    with pytest.raises(DataError, match=r"split named 'test'.*\['train'\]"):
        load_records(path, "lm", split="test")


def test_unknown_kind_is_rejected(write_data):
    with pytest.raises(ValueError, match="unknown data kind 'dpo'.*preference"):
        load_records(write_data([{"text": "x"}]), "dpo")


def test_preference_soft_label_probability(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b", "probability": 0.75}) + "\n")
    assert load_records(path, "preference").records[0].probability == 0.75
    for bad, expected in ((1.5, "a probability in [0, 1]"), ("high", "a finite number")):
        path.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b", "probability": bad}) + "\n")
        with pytest.raises(DataError, match=rf"p.jsonl:1: field 'probability': expected {re.escape(expected)}"):
            load_records(path, "preference")
