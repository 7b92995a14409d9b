"""Raw row reading: locations, typing of CSV cells, and clear errors for unreadable sources."""

import csv
import json

import pytest

from alignkit.data import DataError, LMRecord, Preference, builtin_names, load_records, read_rows, render_many, sources


def test_jsonl_rows_and_locations_skip_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n', encoding="utf-8")
    assert list(read_rows(path)) == [(f"{path}:1", {"a": 1}), (f"{path}:3", {"a": 2})]


def test_read_rows_raises_on_malformed_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n{"a": \n', encoding="utf-8")
    rows = read_rows(path)
    assert next(rows) == (f"{path}:1", {"a": 1})
    with pytest.raises(DataError, match=r"d\.jsonl:2: expected one JSON object per line, got invalid JSON"):
        next(rows)


def test_json_object_with_rows_under_split_or_data(tmp_path):
    for key in ("train", "data"):
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps({key: [{"text": "hi"}], "meta": {}}), encoding="utf-8")
        assert list(read_rows(path)) == [(f"{path}:[0]", {"text": "hi"})]


def test_json_without_row_list_is_explained(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"rows": []}', encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.json: expected a JSON list of objects.*'train' or 'data', got an object"):
        list(read_rows(path))


def test_invalid_json_file_names_its_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n{"text": "a"},\n{"text": }\n]', encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.json:3: expected valid JSON, got invalid JSON"):
        load_records(path, "lm")


def test_csv_parses_json_cells_numbers_and_multiline_records(tmp_path):
    path = tmp_path / "d.csv"
    question = {"role": "user", "content": "Q"}
    chosen = json.dumps([question, {"role": "assistant", "content": "A"}])
    rejected = json.dumps([question, {"role": "assistant", "content": "B"}])
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["chosen", "rejected", "margin", "note"])
        writer.writerow([chosen, rejected, "0.5", "[not json\nspanning two lines"])
        writer.writerow([chosen, rejected, "", "x"])
    rows = list(read_rows(path))
    assert [where for where, _ in rows] == [f"{path}:2", f"{path}:4"]
    first = rows[0][1]
    assert first["margin"] == 0.5 and first["note"] == "[not json\nspanning two lines"
    assert "margin" not in rows[1][1]
    records = load_records(path, "preference").records
    assert records[0] == Preference(
        [question], [{"role": "assistant", "content": "A"}], [{"role": "assistant", "content": "B"}], 0.5
    )
    assert records[1].margin is None


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "train.jsonl"
    with pytest.raises(DataError, match=rf"{missing}: expected an existing .*got no such file or directory"):
        load_records(missing, "lm")


def test_unsupported_suffix_and_plain_folder(tmp_path):
    (tmp_path / "d.txt").write_text("hi", encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.txt: expected a file ending in \.jsonl.*got '\.txt'"):
        load_records(tmp_path / "d.txt", "lm")
    with pytest.raises(DataError, match="expected a folder written by datasets' save_to_disk"):
        load_records(tmp_path, "lm")


def test_builtin_reads_packaged_jsonl(tmp_path, monkeypatch):
    (tmp_path / "greetings.jsonl").write_text('{"text": "hello"}\n{"text": ""}\n', encoding="utf-8")
    monkeypatch.setattr(sources, "_builtin_folder", lambda: tmp_path)
    assert builtin_names() == ["greetings"]
    result = load_records("builtin:greetings", "lm", skip_invalid=True)
    assert result.records == [LMRecord("hello")]
    assert result.records[0].where == "builtin:greetings:1"
    assert result.errors == ["builtin:greetings:2: field 'text': expected a non-empty string, got an empty string"]
    with pytest.raises(DataError, match=r"builtin:nope: expected one of the built-in datasets \['greetings'\]"):
        load_records("builtin:nope", "lm")


@pytest.mark.parametrize("name", builtin_names())
def test_packaged_builtins_are_valid_data(name, tiny_tok):
    _, first = next(read_rows(f"builtin:{name}"))
    kinds = (("label", "unpaired"), ("chosen", "preference"), ("responses", "reward"), ("rating", "reward"))
    kind = next((kind for field, kind in kinds if field in first), "sft")
    result = load_records(f"builtin:{name}", kind)
    assert result.records and result.skipped == 0
    rendered = render_many(tiny_tok, result.records, max_length=256)
    assert len(rendered.items) == len(result.records)


def test_hub_names_go_to_load_dataset_lazily(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, subset, split):
        calls.append((name, subset, split))
        if name == "org/broken":
            raise ConnectionError("offline")
        return [{"text": "from the hub"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    records = load_records("org/name", "lm", split="test").records
    assert calls == [("org/name", None, "test")]
    assert records == [LMRecord("from the hub")] and records[0].where == "org/name:test row 0"
    with pytest.raises(DataError, match=r"org/broken: expected a local path or a loadable hub dataset, got Connection"):
        load_records("org/broken", "lm")


def _saved_hub_dataset(root):
    """A stand-in for the hub, offline: datasets saved with save_to_disk, one folder per (name, subset)."""
    import datasets

    for subset in ("en", "fr"):
        datasets.DatasetDict({
            split: datasets.Dataset.from_list([{"text": f"{subset} {split} {i}"} for i in range(3)])
            for split in ("train", "test")
        }).save_to_disk(str(root / subset))
    return root


def test_a_hub_dataset_chooses_its_subset_and_split_and_eval_data_reads_its_test_split(tmp_path, monkeypatch):
    import datasets

    from alignkit.methods.sft import SFTConfig
    from alignkit.train.common import load_splits
    from alignkit.train.config_loading import load_config

    hub = _saved_hub_dataset(tmp_path / "hub")

    def offline_load_dataset(name, subset, split=None):
        assert name == "org/name"
        saved = datasets.load_from_disk(str(hub / (subset or "en")))
        return saved if split is None else saved[split]

    monkeypatch.setattr(datasets, "load_dataset", offline_load_dataset)
    config = tmp_path / "c.yaml"
    config.write_text("output_dir: x\ndata:\n  train: {path: org/name, subset: fr, split: train}\n"
                      "  eval: {path: org/name, subset: fr}\n")
    cfg = load_config(SFTConfig, config)
    assert cfg.data.train == "org/name?subset=fr&split=train" and cfg.data.eval == "org/name?subset=fr"
    train, evaluation = load_splits(cfg, "lm")
    assert [r.text for r in train] == ["fr train 0", "fr train 1", "fr train 2"]
    assert [r.text for r in evaluation] == ["fr test 0", "fr test 1", "fr test 2"], "eval data reads the test split"
    assert train[0].where == "org/name?subset=fr:train row 0"

    # A saved folder: its split chosen the same way; eval without a split takes test, never train.
    folder = str(hub / "en")
    cfg = load_config(SFTConfig, None, ["output_dir=x", f"data.train={{path: {folder}, split: test}}",
                                        f"data.eval={folder}"])
    train, evaluation = load_splits(cfg, "lm")
    assert [r.text for r in train] == [r.text for r in evaluation] == ["en test 0", "en test 1", "en test 2"]
    with pytest.raises(DataError, match=r"a split named 'dev'.*got splits \['test', 'train'\]"):
        load_records(f"{folder}?split=dev", "lm")
    with pytest.raises(DataError, match="subset= only for a hub dataset"):
        load_records(f"{folder}?subset=fr", "lm")
    with pytest.raises(DataError, match="options subset=NAME and split=NAME"):
        load_records("org/name?revision=main", "lm")
