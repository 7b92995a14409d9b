"""Bad input gives errors that name the file, the line, the field and what was expected."""

import json

import pytest

from alignkit.data import DataError, load_records, parse_record


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


GOOD = {
    "lm": {"text": "fine"},
    "prompt_completion": {"prompt": "p", "completion": "c"},
    "sft": {"prompt": "p", "completion": "c"},
    "preference": {"prompt": "p", "chosen": "c", "rejected": "r"},
    "unpaired": {"prompt": "p", "completion": "c", "label": True},
    "reward": {"prompt": "p", "completion": "c", "rating": 1.0},
}

# (kind, bad row, field named in the error, other text the error must contain)
BAD_ROWS = {
    "lm-missing": ("lm", {"txt": "typo"}, None, "'text' or 'messages'"),
    "lm-empty-text": ("lm", {"text": ""}, "text", "got an empty string"),
    "lm-bad-role": ("lm", {"messages": [user("hi"), {"role": "bot", "content": "x"}]}, "messages[1].role", "'bot'"),
    "lm-content-not-string": ("lm", {"messages": [user("hi"), {"role": "assistant", "content": 3}]},
                              "messages[1].content", "expected a string, got int"),
    "lm-no-assistant": ("lm", {"messages": [user("hi")]}, "messages", "at least one assistant message"),
    "pc-missing-completion": ("prompt_completion", {"prompt": "p"}, "completion", "missing"),
    "pc-empty-completion": ("prompt_completion", {"prompt": "p", "completion": ""}, "completion", "empty string"),
    "pc-completion-ends-with-user": ("prompt_completion", {"prompt": [user("a")], "completion": [user("b")]},
                                     "completion", "ending with an assistant message"),
    "pc-empty-assistant-reply": ("prompt_completion", {"prompt": [user("a")], "completion": [assistant("")]},
                                 "completion[0].content", "a non-empty assistant reply, got an empty string"),
    "pc-mixed-forms": ("prompt_completion", {"prompt": "a", "completion": [assistant("b")]},
                       "completion", "a string like 'prompt'"),
    "sft-nothing": ("sft", {"question": "?"}, None, "'prompt' + 'completion'"),
    "pref-missing-rejected": ("preference", {"prompt": "p", "chosen": "c"}, "rejected", "missing"),
    "pref-chosen-int": ("preference", {"prompt": "p", "chosen": 7, "rejected": "r"}, "chosen",
                        "expected a non-empty string or list of messages, got int"),
    "pref-empty-rejected": ("preference", {"prompt": "p", "chosen": "c", "rejected": "  "}, "rejected",
                            "whitespace-only"),
    "pref-margin-bool": ("preference", {"prompt": "p", "chosen": "c", "rejected": "r", "margin": True},
                         "margin", "a finite number, got bool True"),
    "pref-implicit-standard": ("preference", {"chosen": "c", "rejected": "r"}, "prompt", "starting with the same words"),
    "pref-implicit-mixed": ("preference", {"chosen": "c", "rejected": [user("a"), assistant("b")]}, "prompt",
                            "both are strings or both are conversations"),
    "pref-implicit-no-shared": ("preference", {"chosen": [user("a"), assistant("b")],
                                               "rejected": [user("x"), assistant("y")]}, "prompt", "same prompt"),
    "pref-implicit-not-assistant": ("preference", {"chosen": [user("a"), assistant("b")],
                                                   "rejected": [user("a"), user("b"), assistant("c")]},
                                    "rejected[1]", "role 'user'"),
    "unpaired-label-maybe": ("unpaired", {"prompt": "p", "completion": "c", "label": "maybe"}, "label",
                             "true or false, got str 'maybe'"),
    "unpaired-label-missing": ("unpaired", {"prompt": "p", "completion": "c"}, "label", "missing"),
    "reward-rating-string": ("reward", {"prompt": "p", "completion": "c", "rating": "high"}, "rating",
                             "a finite number, got str 'high'"),
    "reward-ranking-not-permutation": ("reward", {"prompt": "p", "responses": ["a", "b", "c"], "ranking": [0, 0, 1]},
                                       "ranking", "permutation of 0..2"),
    "reward-scores-length": ("reward", {"prompt": "p", "responses": ["a", "b"], "scores": [1.0]}, "scores",
                             "a list of 2 numbers"),
    "reward-one-response": ("reward", {"prompt": "p", "responses": ["a"], "scores": [1.0]}, "responses",
                            "at least 2"),
    "reward-ranking-and-scores": ("reward", {"prompt": "p", "responses": ["a", "b"], "ranking": [0, 1],
                                             "scores": [1, 0]}, None, "exactly one of 'ranking' or 'scores'"),
    "reward-unknown-shape": ("reward", {"prompt": "p", "answer": "a"}, None, "'completion' + 'rating'"),
}


def write_jsonl(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_error_names_file_line_and_field(case, tmp_path):
    kind, bad, field, detail = BAD_ROWS[case]
    path = write_jsonl(tmp_path / "train.jsonl", [json.dumps(GOOD[kind]), json.dumps(bad)])
    with pytest.raises(DataError) as caught:
        load_records(path, kind)
    message = str(caught.value)
    assert message.startswith(f"{path}:2: ")
    assert caught.value.where == f"{path}:2"
    assert caught.value.field == field
    if field is not None:
        assert f"field '{field}'" in message
    assert detail in message


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_skip_invalid_counts_bad_rows_and_keeps_good_ones(case, tmp_path):
    kind, bad, _, detail = BAD_ROWS[case]
    good = json.dumps(GOOD[kind])
    path = write_jsonl(tmp_path / "train.jsonl", [good, json.dumps(bad), "{not json", good])
    result = load_records(path, kind, skip_invalid=True)
    assert len(result.records) == 2
    assert result.skipped == 2
    assert result.errors[0].startswith(f"{path}:2: ") and detail in result.errors[0]
    assert result.errors[1].startswith(f"{path}:3: ") and "invalid JSON" in result.errors[1]


def test_exact_message_for_wrong_type():
    with pytest.raises(DataError) as caught:
        parse_record({"prompt": "p", "chosen": 3, "rejected": "r"}, "data/train.jsonl:12", "preference")
    assert str(caught.value) == (
        "data/train.jsonl:12: field 'chosen': expected a non-empty string or list of messages, got int"
    )
    assert caught.value.expected == "a non-empty string or list of messages"


def test_malformed_json_line_names_file_line_and_json_error(tmp_path):
    path = write_jsonl(tmp_path / "prefs.jsonl", ['{"text": "ok"}', "", '{"text": "unterminated}'])
    with pytest.raises(DataError, match=r"prefs\.jsonl:3: expected one JSON object per line, got invalid JSON \("):
        load_records(path, "lm")


def test_json_line_that_is_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ['{"text": "ok"}', "[1, 2]"])
    with pytest.raises(DataError, match=r"d\.jsonl:2: expected a JSON object, got a list of length 2"):
        load_records(path, "lm")


def test_all_invalid_is_an_error_even_when_skipping(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", ['{"prompt": "p", "chosen": 1, "rejected": "r"}', "oops"])
    with pytest.raises(DataError) as caught:
        load_records(path, "preference", skip_invalid=True)
    message = str(caught.value)
    assert message.startswith(f"{path}: expected at least one valid preference record, got 2 invalid rows")
    assert f"first: {path}:1: field 'chosen'" in message


def test_empty_file_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(DataError, match=r"empty\.jsonl: expected at least one lm record, got no rows"):
        load_records(path, "lm")


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet"])
def test_bad_rows_in_other_sources_are_located(fmt, write_data):
    rows = [{"prompt": "p", "completion": "c", "label": True}, {"prompt": "p", "completion": "", "label": False}]
    path = write_data(rows, fmt)
    where = {"json": f"{path}:[1]", "csv": f"{path}:3", "parquet": f"{path}:row 1"}[fmt]
    with pytest.raises(DataError) as caught:
        load_records(path, "unpaired")
    assert str(caught.value).startswith(f"{where}: field 'completion': expected ")
    assert load_records(path, "unpaired", skip_invalid=True).skipped == 1


def test_csv_label_strings_and_bad_values(tmp_path):
    path = tmp_path / "kto.csv"
    path.write_text(
        "prompt,completion,label,rating\np,a,true,1\np,b,0,2\np,c,maybe,3\np,d,TRUE,x\n", encoding="utf-8"
    )
    result = load_records(path, "unpaired", skip_invalid=True)
    assert [record.label for record in result.records] == [True, False, True]
    assert result.errors == [f"{path}:4: field 'label': expected true or false, got str 'maybe'"]
    with pytest.raises(DataError, match=r"kto\.csv:5: field 'rating': expected a finite number, got str 'x'"):
        load_records(path, "reward")


def test_json_label_must_be_a_real_boolean():
    with pytest.raises(DataError, match="field 'label': expected true or false, got str 'true'"):
        parse_record({"prompt": "p", "completion": "c", "label": "true"}, "x.json:[0]", "unpaired")
