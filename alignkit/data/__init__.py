"""Training data: files -> validated records -> token ids with loss masks -> padded batches."""

from .collate import pad_batch
from .errors import DataError
from .formats import KINDS, ROLES, LoadResult, load_records, parse_record
from .records import LMRecord, Preference, PromptCompletion, PromptOnly, Ranked, Rating, Record, Turns, Unpaired
from .render import (
    PROMPT_KEEP_DIVISOR,
    Rendered,
    RenderResult,
    render_many,
    render_messages,
    render_preference,
    render_prompt,
    render_prompt_completion,
    render_record,
    render_responses,
    reply_to,
    request_text,
    user_turn,
)
from .sources import builtin_names, read_rows

__all__ = [
    "KINDS",
    "PROMPT_KEEP_DIVISOR",
    "ROLES",
    "DataError",
    "LMRecord",
    "LoadResult",
    "Preference",
    "PromptCompletion",
    "PromptOnly",
    "Ranked",
    "Rating",
    "Record",
    "RenderResult",
    "Rendered",
    "Turns",
    "Unpaired",
    "builtin_names",
    "load_records",
    "pad_batch",
    "parse_record",
    "read_rows",
    "render_many",
    "render_messages",
    "render_preference",
    "render_prompt",
    "render_prompt_completion",
    "render_record",
    "render_responses",
    "reply_to",
    "request_text",
    "user_turn",
]
