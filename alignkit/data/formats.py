"""Validate raw rows and turn them into typed records.

Accepted row shapes are TRL's dataset formats, in standard form (plain strings) or
conversational form (lists of ``{"role", "content"}`` messages):

==================  ===========================================================
kind                fields
==================  ===========================================================
lm                  ``text`` or ``messages``
prompt_completion   ``prompt`` + ``completion``
sft                 either of the two above, decided per row
preference          ``prompt`` + ``chosen`` + ``rejected`` [+ ``margin``] [+ ``probability``, a soft label], or
                    ``chosen`` + ``rejected`` with the prompt in both (implicit prompt): full conversations, or
                    strings such as Human/Assistant transcripts (`transcripts.py`)
unpaired            ``prompt`` + ``completion`` + ``label``; preference rows become
                    two records (chosen -> True, rejected -> False)
reward              preference rows, ``prompt`` + ``responses`` + ``ranking``/``scores``,
                    or ``prompt`` + ``completion`` + ``rating``
prompt              ``prompt`` [+ ``reference``, gold data for a verifier; ``answer`` is
                    accepted as its synonym]: prompts for online methods
==================  ===========================================================

Other fields are ignored. A field holding ``null`` counts as missing, because columnar
formats (Parquet, datasets) fill absent fields with null. With ``transcripts="chat"``, string fields holding
Human/Assistant transcripts are read as conversations first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DataError, describe
from .records import (
    LMRecord,
    Preference,
    PromptCompletion,
    PromptOnly,
    Ranked,
    Rating,
    Record,
    Turns,
    Unpaired,
)
from .sources import iter_rows
from .suites import check_not_heldout
from .transcripts import split_shared_prompt, transcripts_as_conversations

ROLES = ("system", "user", "assistant", "tool")
KINDS = ("lm", "prompt_completion", "sft", "preference", "unpaired", "reward", "prompt")

_TURNS = "a non-empty string or list of messages"
# A huge, badly broken file should not fill memory with messages; ``skipped`` still counts them all.
_MAX_KEPT_ERRORS = 1000


@dataclass
class LoadResult:
    """What load_records kept, and what it skipped and why."""

    records: list[Record]
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- field checks


def _present(row: dict[str, Any], name: str) -> bool:
    return row.get(name) is not None


def _require(row: dict[str, Any], name: str, where: str, expected: str) -> Any:
    if not _present(row, name):
        raise DataError(where, expected, "nothing (the field is missing)", field=name)
    return row[name]


def _check_text(value: Any, where: str, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(where, "a non-empty string", describe(value), field=name)
    return value


def _check_number(value: Any, where: str, name: str) -> float:
    # bool is an int subclass in Python, but "true" is never a meaningful score.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(where, "a finite number", describe(value), field=name)
    return float(value)


def _check_messages(value: Any, where: str, name: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise DataError(where, "a non-empty list of messages", describe(value), field=name)
    for index, message in enumerate(value):
        _check_message(message, where, f"{name}[{index}]")
    return [dict(message) for message in value]


def _check_message(message: Any, where: str, name: str) -> None:
    if not isinstance(message, dict):
        raise DataError(where, "a message object with 'role' and 'content'", describe(message), field=name)
    role = message.get("role")
    if role not in ROLES:
        got = "nothing (the field is missing)" if role is None else describe(role)
        raise DataError(where, f"one of {', '.join(ROLES)}", got, field=f"{name}.role")
    if not isinstance(message.get("content"), str):
        raise DataError(where, "a string", describe(message.get("content")), field=f"{name}.content")


def _check_turns(value: Any, where: str, name: str) -> Turns:
    """A prompt-side value: non-empty text or a valid conversation."""
    if isinstance(value, list):
        return _check_messages(value, where, name)
    if isinstance(value, str) and value.strip():
        return value
    raise DataError(where, _TURNS, describe(value), field=name)


def _check_reply(value: Any, where: str, name: str) -> Turns:
    """A completion-side value: non-empty text, or messages ending in a non-empty assistant reply."""
    turns = _check_turns(value, where, name)
    if isinstance(turns, list):
        last = turns[-1]
        if last["role"] != "assistant":
            got = f"last role '{last['role']}'"
            raise DataError(where, "a conversation ending with an assistant message", got, field=name)
        if not last["content"].strip():
            field_name = f"{name}[{len(turns) - 1}].content"
            raise DataError(where, "a non-empty assistant reply", describe(last["content"]), field=field_name)
    return turns


def _check_same_form(where: str, prompt: Turns, replies: Iterable[tuple[str, Turns]]) -> None:
    """Prompt and replies must all be text or all be conversations; a mix cannot be rendered."""
    prompt_form = _form(prompt)
    for name, reply in replies:
        if _form(reply) != prompt_form:
            raise DataError(
                where,
                f"{prompt_form} like 'prompt'",
                _form(reply),
                field=name,
            )


def _form(turns: Turns) -> str:
    return "a list of messages" if isinstance(turns, list) else "a string"


# ---------------------------------------------------------------- one parser per format


def _parse_lm(row: dict[str, Any], where: str) -> list[Record]:
    if _present(row, "messages"):
        messages = _check_messages(row["messages"], where, "messages")
        if not any(message["role"] == "assistant" for message in messages):
            expected = "a conversation with at least one assistant message"
            raise DataError(where, expected, "none", field="messages")
        if messages[0]["role"] == "assistant":
            # Chat templates can only place an assistant turn after some context.
            expected = "a conversation that does not start with an assistant message"
            raise DataError(where, expected, "'assistant'", field="messages[0].role")
        return [LMRecord(messages, where=where)]
    if _present(row, "text"):
        return [LMRecord(_check_text(row["text"], where, "text"), where=where)]
    raise DataError(where, "a 'text' or 'messages' field", f"fields {sorted(row)}")


def _parse_prompt_completion(row: dict[str, Any], where: str) -> list[Record]:
    prompt, completion = _prompt_and_reply(row, where, "completion")
    return [PromptCompletion(prompt, completion, where=where)]


def _prompt_and_reply(row: dict[str, Any], where: str, reply_name: str) -> tuple[Turns, Turns]:
    prompt = _check_turns(_require(row, "prompt", where, _TURNS), where, "prompt")
    reply = _check_reply(_require(row, reply_name, where, _TURNS), where, reply_name)
    _check_same_form(where, prompt, [(reply_name, reply)])
    return prompt, reply


def _parse_sft(row: dict[str, Any], where: str) -> list[Record]:
    # 'completion' decides: some datasets (e.g. UltraChat) keep a 'prompt' beside full 'messages'.
    if _present(row, "completion"):
        return _parse_prompt_completion(row, where)
    if _present(row, "messages") or _present(row, "text"):
        return _parse_lm(row, where)
    if _present(row, "prompt"):
        return _parse_prompt_completion(row, where)
    raise DataError(where, "'text', 'messages', or 'prompt' + 'completion' fields", f"fields {sorted(row)}")


def _parse_preference(row: dict[str, Any], where: str) -> list[Record]:
    chosen = _check_reply(_require(row, "chosen", where, _TURNS), where, "chosen")
    rejected = _check_reply(_require(row, "rejected", where, _TURNS), where, "rejected")
    if _present(row, "prompt"):
        prompt = _check_turns(row["prompt"], where, "prompt")
    else:
        prompt, chosen, rejected = _split_implicit_prompt(chosen, rejected, where)
    _check_same_form(where, prompt, [("chosen", chosen), ("rejected", rejected)])
    margin = _check_number(row["margin"], where, "margin") if _present(row, "margin") else None
    probability = None
    if _present(row, "probability"):
        probability = _check_number(row["probability"], where, "probability")
        if not 0.0 <= probability <= 1.0:
            raise DataError(where, "a probability in [0, 1] (P(chosen is better))", describe(row["probability"]),
                            field="probability")
    return [Preference(prompt, chosen, rejected, margin, probability, where=where)]


def _split_implicit_prompt(chosen: Turns, rejected: Turns, where: str) -> tuple[Turns, Turns, Turns]:
    """Without a 'prompt' field, the prompt is what chosen and rejected share at the start: their first messages
    (conversations), or their first words (strings, see `transcripts.split_shared_prompt`)."""
    if isinstance(chosen, str) and isinstance(rejected, str):
        return split_shared_prompt(chosen, rejected, where)
    if not (isinstance(chosen, list) and isinstance(rejected, list)):
        raise DataError(
            where,
            "a 'prompt' ('chosen' and 'rejected' can hold an implicit prompt when both are strings or both are "
            "conversations)",
            "nothing (the field is missing)",
            field="prompt",
        )
    shared = 0
    while shared < min(len(chosen), len(rejected)) and _same_message(chosen[shared], rejected[shared]):
        shared += 1
    if shared == 0:
        expected = "'chosen' and 'rejected' to start with the same prompt messages"
        raise DataError(where, expected, "different first messages", field="prompt")
    for name, turns in (("chosen", chosen), ("rejected", rejected)):
        if shared == len(turns) or turns[shared]["role"] != "assistant":
            if shared == len(turns):
                got = "nothing after the shared prompt"
            else:
                got = f"role '{turns[shared]['role']}'"
            expected = "an assistant message right after the shared prompt"
            raise DataError(where, expected, got, field=f"{name}[{shared}]")
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _same_message(first: dict[str, Any], second: dict[str, Any]) -> bool:
    return first["role"] == second["role"] and first["content"] == second["content"]


def _parse_unpaired(row: dict[str, Any], where: str) -> list[Record]:
    if not _present(row, "completion") and (_present(row, "chosen") or _present(row, "rejected")):
        # As TRL does: a preference pair is one desirable and one undesirable example.
        pair = _parse_preference(row, where)[0]
        return [
            Unpaired(pair.prompt, pair.chosen, True, where=where),
            Unpaired(pair.prompt, pair.rejected, False, where=where),
        ]
    prompt, completion = _prompt_and_reply(row, where, "completion")
    label = _require(row, "label", where, "true or false")
    if not isinstance(label, bool):
        raise DataError(where, "true or false", describe(label), field="label")
    return [Unpaired(prompt, completion, label, where=where)]


def _parse_reward(row: dict[str, Any], where: str) -> list[Record]:
    if _present(row, "chosen") or _present(row, "rejected"):
        return _parse_preference(row, where)
    if _present(row, "responses"):
        return [_parse_ranked(row, where)]
    if _present(row, "rating"):
        prompt, completion = _prompt_and_reply(row, where, "completion")
        return [Rating(prompt, completion, _check_number(row["rating"], where, "rating"), where=where)]
    raise DataError(
        where,
        "'chosen' + 'rejected', 'responses' + 'ranking'/'scores', or 'completion' + 'rating' fields",
        f"fields {sorted(row)}",
    )


def _parse_ranked(row: dict[str, Any], where: str) -> Ranked:
    prompt = _check_turns(_require(row, "prompt", where, _TURNS), where, "prompt")
    raw = row["responses"]
    if not isinstance(raw, list) or len(raw) < 2:
        raise DataError(where, "a list of at least 2 responses", describe(raw), field="responses")
    responses = [_check_reply(value, where, f"responses[{index}]") for index, value in enumerate(raw)]
    _check_same_form(where, prompt, [(f"responses[{index}]", value) for index, value in enumerate(responses)])
    if _present(row, "ranking") == _present(row, "scores"):
        got = "both" if _present(row, "ranking") else "neither"
        raise DataError(where, "exactly one of 'ranking' or 'scores'", got)
    if _present(row, "ranking"):
        scores = _ranking_to_scores(row["ranking"], len(responses), where)
    else:
        scores = _check_scores(row["scores"], len(responses), where)
    return Ranked(prompt, responses, scores, where=where)


def _ranking_to_scores(ranking: Any, count: int, where: str) -> list[float]:
    """``ranking`` lists response indices best first; the best gets score count - 1."""
    expected = f"a permutation of 0..{count - 1} (indices into 'responses', best first)"
    if not isinstance(ranking, list) or not all(_is_index(index) for index in ranking):
        raise DataError(where, expected, describe(ranking), field="ranking")
    if sorted(ranking) != list(range(count)):
        raise DataError(where, expected, f"{ranking}", field="ranking")
    scores = [0.0] * count
    for place, index in enumerate(ranking):
        scores[index] = float(count - 1 - place)
    return scores


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_scores(scores: Any, count: int, where: str) -> list[float]:
    if not isinstance(scores, list) or len(scores) != count:
        expected = f"a list of {count} numbers, one per response"
        raise DataError(where, expected, describe(scores), field="scores")
    return [_check_number(value, where, f"scores[{index}]") for index, value in enumerate(scores)]


def _parse_prompt(row: dict[str, Any], where: str) -> list[Record]:
    prompt = _check_turns(_require(row, "prompt", where, _TURNS), where, "prompt")
    if isinstance(prompt, list) and prompt[-1]["role"] == "assistant":
        raise DataError(where, "a conversation ending with a non-assistant message", "'assistant'", field="prompt")
    reference = row["reference"] if _present(row, "reference") else row.get("answer")
    return [PromptOnly(prompt, reference, where=where)]


_PARSERS: dict[str, Callable[[dict[str, Any], str], list[Record]]] = {
    "lm": _parse_lm,
    "prompt_completion": _parse_prompt_completion,
    "sft": _parse_sft,
    "preference": _parse_preference,
    "unpaired": _parse_unpaired,
    "reward": _parse_reward,
    "prompt": _parse_prompt,
}


def _parser(kind: str) -> Callable[[dict[str, Any], str], list[Record]]:
    if kind not in _PARSERS:
        raise ValueError(f"unknown data kind {kind!r}; expected one of {', '.join(KINDS)}")
    return _PARSERS[kind]


# ---------------------------------------------------------------- public API


def parse_record(row: dict[str, Any], where: str, kind: str) -> list[Record]:
    """Validate one row as ``kind`` and return its records (usually one; an unpaired preference gives two)."""
    return _parser(kind)(row, where)


def load_records(
    source: str | Path,
    kind: str,
    *,
    skip_invalid: bool = False,
    split: str | None = "train",
    limit: int | None = None,
    transcripts: str = "text",
) -> LoadResult:
    """Read and validate ``source``.

    With ``skip_invalid`` False the first bad row raises DataError; with True bad rows
    (malformed lines included) are skipped, counted and described in ``errors``.
    ``limit`` caps the number of valid rows used. No valid rows at all is always an error.
    ``transcripts``: "text" keeps Human/Assistant transcripts as plain text; "chat" reads them as conversations.
    """
    if transcripts not in ("text", "chat"):
        raise ValueError(f"transcripts must be 'text' or 'chat', got {transcripts!r}")
    parse = _parser(kind)
    result = LoadResult(records=[])
    used_rows = 0
    for where, row in iter_rows(source, split):
        if limit is not None and used_rows >= limit:
            break
        try:
            if isinstance(row, DataError):
                raise row
            if transcripts == "chat":
                row = transcripts_as_conversations(row, where)
            records = parse(row, where)
            for record in records:
                # Held-out evaluation prompts never reach training, whatever file they were copied into.
                check_not_heldout(record)
            result.records.extend(records)
            used_rows += 1
        except DataError as error:
            if not skip_invalid:
                raise
            _note_skipped(result, error)
    if not result.records:
        raise _nothing_valid(source, kind, result)
    return result


def _note_skipped(result: LoadResult, error: DataError) -> None:
    result.skipped += 1
    if len(result.errors) < _MAX_KEPT_ERRORS:
        result.errors.append(str(error))


def _nothing_valid(source: str | Path, kind: str, result: LoadResult) -> DataError:
    if not result.skipped:
        return DataError(str(source), f"at least one {kind} record", "no rows")
    return DataError(
        str(source),
        f"at least one valid {kind} record",
        f"{result.skipped} invalid rows; first: {result.errors[0]}",
    )
