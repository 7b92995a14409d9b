"""Preference pairs as plain strings with the prompt inside them, the shape of the best-known public preference sets:
``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": "\\n\\nHuman: ...\\n\\nAssistant: ..."}``.

`split_shared_prompt` finds the prompt as the text both strings start with, as TRL does (the longest common
prefix), but cut where a reply can start rather than inside a word: in a Human/Assistant transcript after the last
``Assistant:`` both share, otherwise at the last whitespace both share. The replies keep their leading space, so the
prompt's tokens and the reply's are those of the whole text.

`transcript_messages` reads such a transcript as a conversation (``Human`` -> user, ``Assistant`` -> assistant), for
data configured with ``transcripts: chat``: then the chat template renders it, like any conversation.
"""

from __future__ import annotations

import os
import re
from typing import Any

from .errors import DataError, describe

HUMAN, ASSISTANT = "Human:", "Assistant:"
# A turn starts a transcript or follows a blank line: "\n\nHuman: " / "\n\nAssistant: ".
_TURN = re.compile(r"(?:\A\s*|\n\n)(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}
# The fields of a row that may hold a transcript.
TRANSCRIPT_FIELDS = ("prompt", "chosen", "rejected", "completion", "text")
REPLY_FIELDS = ("chosen", "rejected", "completion")


def is_transcript(text: Any) -> bool:
    """A string that starts with a ``Human:`` turn and has an ``Assistant:`` turn after a blank line."""
    return isinstance(text, str) and text.lstrip().startswith(HUMAN) and f"\n\n{ASSISTANT}" in text


def split_shared_prompt(chosen: str, rejected: str, where: str) -> tuple[str, str, str]:
    """(prompt, chosen reply, rejected reply) of two strings that start with the same prompt."""
    shared = os.path.commonprefix([chosen, rejected])
    if is_transcript(chosen) and is_transcript(rejected):
        marker = f"\n\n{ASSISTANT}"
        end = shared.rfind(marker)
        if end < 0:
            raise DataError(where, "'chosen' and 'rejected' to share the transcript up to an 'Assistant:' turn",
                            f"they part at character {len(shared)}: {describe(shared[-60:])}", field="prompt")
        cut = end + len(marker)
    else:
        cut = max(shared.rfind(" "), shared.rfind("\n"), shared.rfind("\t"))
        if cut <= 0:
            raise DataError(where, "a 'prompt', or 'chosen' and 'rejected' starting with the same words",
                            f"no shared start ({describe(chosen[:40])} vs {describe(rejected[:40])})", field="prompt")
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not text[cut:].strip():
            raise DataError(where, "a reply after the shared prompt", "nothing after it", field=name)
    return chosen[:cut], chosen[cut:], rejected[cut:]


def transcript_messages(text: str, where: str, field: str) -> list[dict[str, str]]:
    """A Human/Assistant transcript as messages. A trailing empty ``Assistant:`` (a prompt waiting for its reply)
    is left out; any other empty turn, or text before the first turn, is an error."""
    turns = list(_TURN.finditer(text))
    if not turns or turns[0].start() != 0 or turns[0].group(1) != "Human":
        raise DataError(where, "a transcript starting with 'Human:'", describe(text[:40]), field=field)
    messages = []
    for i, turn in enumerate(turns):
        end = turns[i + 1].start() if i + 1 < len(turns) else len(text)
        content = text[turn.end():end].strip()
        role = _ROLES[turn.group(1)]
        if not content:
            if i == len(turns) - 1 and role == "assistant":
                break
            raise DataError(where, "text in every turn of the transcript", f"an empty {turn.group(1)} turn "
                            f"(turn {i + 1})", field=field)
        messages.append({"role": role, "content": content})
    return messages


def transcripts_as_conversations(row: dict[str, Any], where: str) -> dict[str, Any]:
    """The row with each transcript field read as messages (`transcripts: chat`); beside a transcript prompt, a reply
    in plain text is the assistant's message. Rows without transcripts are unchanged."""
    if not isinstance(row, dict) or not any(is_transcript(row.get(name)) for name in TRANSCRIPT_FIELDS):
        return row
    out = {key: transcript_messages(value, where, key) if key in TRANSCRIPT_FIELDS and is_transcript(value)
           else value for key, value in row.items()}
    if is_transcript(row.get("prompt")):
        for key in REPLY_FIELDS:
            if isinstance(out.get(key), str) and out[key].strip():
                out[key] = [{"role": "assistant", "content": out[key].strip()}]
    return out


__all__ = ["is_transcript", "split_shared_prompt", "transcript_messages", "transcripts_as_conversations"]
