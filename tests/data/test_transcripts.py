"""String preference pairs with the prompt inside them (Human/Assistant transcripts and plain text), read as TRL
reads them (the shared start is the prompt) but cut where a reply starts, and read as conversations on request.
The rows are this team's, in the shape of the best-known public preference sets."""

from __future__ import annotations

import json

import pytest

from alignkit.data import DataError, load_records, parse_record
from alignkit.data.transcripts import split_shared_prompt, transcript_messages

HISTORY = ("\n\nHuman: My tomato plants have yellow leaves at the bottom. Why?"
           "\n\nAssistant: Often it is older leaves giving their nitrogen to new growth, or too much water."
           "\n\nHuman: How can I tell which one it is?\n\nAssistant:")
GOOD = " Check the soil an inch down: if it is wet a day after watering, water less; if it is dry, feed them."
BAD = " Just pull the plants out and buy new ones."
ROW = {"chosen": HISTORY + GOOD, "rejected": HISTORY + BAD}


def test_a_transcript_pair_splits_after_the_last_shared_assistant_turn():
    (record,) = parse_record(ROW, "hh.jsonl:1", "preference")
    assert record.prompt == HISTORY and record.chosen == GOOD and record.rejected == BAD
    # The pieces are the whole text: prompt + reply is what the row says, so its tokens are the row's.
    assert record.prompt + record.chosen == ROW["chosen"] and record.prompt + record.rejected == ROW["rejected"]


def test_replies_that_start_alike_are_not_cut_inside_the_shared_words():
    # Both replies start with " Sure": TRL's character prefix would take that into the prompt.
    chosen = HISTORY + " Sure, look at the soil first."
    rejected = HISTORY + " Sure, spray them with vinegar."
    prompt, good, bad = split_shared_prompt(chosen, rejected, "x:1")
    assert prompt == HISTORY and good == " Sure, look at the soil first." and bad == " Sure, spray them with vinegar."
    # Plain text without turns: the last whitespace both share.
    prompt, good, bad = split_shared_prompt("Q: What is 6 times 7? A: 42", "Q: What is 6 times 7? A: 41", "x:2")
    assert (prompt, good, bad) == ("Q: What is 6 times 7? A:", " 42", " 41")
    prompt, good, bad = split_shared_prompt("The capital is Paris.", "The capital is Parma.", "x:3")
    assert (prompt, good, bad) == ("The capital is", " Paris.", " Parma.")


@pytest.mark.parametrize(
    "chosen, rejected, field, message",
    [
        ("Paris.", "Berlin.", "prompt", "starting with the same words"),
        ("\n\nHuman: Hi\n\nAssistant: Hello", "\n\nHuman: Hey\n\nAssistant: Hello", "prompt",
         "share the transcript up to an 'Assistant:' turn"),
        (HISTORY + GOOD, HISTORY + "  ", "rejected", "a reply after the shared prompt"),
    ],
)  # fmt: skip
def test_pairs_without_a_shared_prompt_name_the_row_and_field(chosen, rejected, field, message):
    with pytest.raises(DataError, match=message) as info:
        parse_record({"chosen": chosen, "rejected": rejected}, "hh.jsonl:7", "preference")
    assert str(info.value).startswith(f"hh.jsonl:7: field '{field}'")


def test_transcripts_read_as_conversations_when_asked(tmp_path):
    path = tmp_path / "hh.jsonl"
    path.write_text(json.dumps(ROW) + "\n" + json.dumps({"prompt": HISTORY, "chosen": GOOD, "rejected": BAD}) + "\n")
    as_text, as_chat = (load_records(path, "preference", transcripts=mode).records for mode in ("text", "chat"))
    assert as_text[0].prompt == HISTORY and as_text[1].prompt == HISTORY  # implicit or explicit: the same prompt
    for record in as_chat:
        assert [m["role"] for m in record.prompt] == ["user", "assistant", "user"]
        assert record.prompt[0]["content"] == "My tomato plants have yellow leaves at the bottom. Why?"
    assert as_chat[0].chosen == [{"role": "assistant", "content": GOOD.strip()}]
    assert as_chat[0].rejected == [{"role": "assistant", "content": BAD.strip()}]
    # Beside a transcript prompt, a plain-text reply is the assistant's message.
    assert as_chat[1].chosen == as_chat[0].chosen and as_chat[1].prompt == as_chat[0].prompt
    path.write_text(json.dumps(ROW) + "\n")
    with pytest.raises(ValueError, match="transcripts must be"):
        load_records(path, "preference", transcripts="html")


def test_transcript_messages_refuses_what_is_not_a_transcript():
    assert transcript_messages("Human: Hi\n\nAssistant: Hello!", "x:1", "chosen") == [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    for text, message in [("Hello\n\nHuman: Hi\n\nAssistant: x", "starting with 'Human:'"),
                          ("\n\nHuman: Hi\n\nAssistant:  \n\nHuman: Still there?\n\nAssistant: Yes", "empty Assistant"),
                          ("\n\nAssistant: Hi\n\nHuman: x", "starting with 'Human:'")]:
        with pytest.raises(DataError, match=message):
            transcript_messages(text, "x:1", "chosen")


def test_a_dpo_run_trains_on_transcript_pairs(tiny_dir, tmp_path):
    from alignkit.methods import METHODS
    from alignkit.train.config_loading import load_config

    path = tmp_path / "hh.jsonl"
    rows = [ROW, {"chosen": "\n\nHuman: Name a prime.\n\nAssistant: 7.", "rejected": "\n\nHuman: Name a prime."
                  "\n\nAssistant: 9."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = METHODS["dpo"]
    for mode in ("text", "chat"):
        cfg = load_config(spec.config, None, [f"model={tiny_dir}", f"data.train={path}", f"data.transcripts={mode}",
                                              f"output_dir={tmp_path / mode}", "max_steps=1", "batch_size=2",
                                              "progress=false"])
        result = spec.train(cfg)
        assert result.steps == 1 and (result.final_dir / "config.json").is_file()
