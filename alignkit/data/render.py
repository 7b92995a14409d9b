"""The one place that turns records into token ids and loss masks.

Conversational data goes through the tokenizer's chat template. Trained spans are found by
rendering growing prefixes of the conversation and diffing the text: an assistant turn's
trained text is ``template(conv[:j+1])`` minus ``template(conv[:j], add_generation_prompt=True)``,
i.e. its content plus the end-of-turn token. Any template that renders earlier turns the same
way regardless of what follows works; one that does not gets a clear error instead of a
silently wrong mask.

Prompt and completion text are tokenized separately (``add_special_tokens=False``; the
template already holds any BOS), so every completion of one prompt (chosen, rejected,
ranked responses) starts from exactly the same prompt tokens.

Standard (plain text) data: ``[BOS] + prompt + completion + EOS``, where BOS is added only if
the tokenizer adds one by itself when encoding (never twice), and EOS is not added again if
the text already ends with it.

One rule for prompts, everywhere (``render_prompt``): the token ids a model is trained to
continue from are the ids it is sampled, evaluated and judged with. A plain-string prompt stays
plain text (``[BOS] + text``, no chat template) when trained *and* when sampled; a conversation
goes through the chat template with the generation prompt. A request meant for a chat model is
therefore stored as a conversation (``user_turn``): the built-in prompt sets (``suite:``,
``task:``), the evaluation suites, the judges' questions and every pipeline that samples a chat
model do so, and train on the replies in the same form (``reply_to``).

Truncation (only when ``max_length`` is given): the prompt is cut from the left, keeping its
last tokens, which are the ones closest to the reply. A completion is cut from the right
only if it would not fit even next to a prompt shortened to ``min(prompt length,
max_length // 4)`` tokens: a quarter of the budget keeps enough context for the reply to be
about something, while leaving three quarters for the tokens that are actually trained.
A BOS that the tokenizer adds itself survives prompt cuts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from alignkit.utils.io import UnsafeFileError

from .records import LMRecord, Preference, PromptCompletion, Ranked, Rating, Record, Turns, Unpaired

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase as Tokenizer

# Share of max_length a prompt may always keep when its completion is too long; see module doc.
PROMPT_KEEP_DIVISOR = 4


@dataclass
class Rendered:
    """One token sequence; ``loss_mask[i] == 1`` means token ``i`` is a training target."""

    input_ids: list[int]
    loss_mask: list[int]
    prompt_len: int
    truncated: bool = False

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.loss_mask):
            raise ValueError(f"{len(self.input_ids)} input ids but {len(self.loss_mask)} loss mask entries")

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class RenderResult:
    """Rendered records (one item per record, a tuple for preference/ranked) and a truncation count."""

    items: list[Rendered | tuple[Rendered, ...]]
    truncated: int
    max_length: int | None

    def summary(self) -> str:
        """E.g. ``12 of 160 examples truncated to max_length=256``."""
        return f"{self.truncated} of {len(self.items)} examples truncated to max_length={self.max_length}"


@dataclass
class _Completion:
    """Completion-side tokens with their own mask (a tool message inside a completion is untrained)."""

    ids: list[int]
    mask: list[int]


# ---------------------------------------------------------------- tokenizer helpers


def _encode(tokenizer: Tokenizer, text: str) -> list[int]:
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _eos_id(tokenizer: Tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token; set one so the model can learn where replies end")
    return int(tokenizer.eos_token_id)


def _auto_bos(tokenizer: Tokenizer) -> list[int]:
    """``[bos_id]`` if the tokenizer puts BOS in front when encoding normally, else ``[]``."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    probe = tokenizer("a")["input_ids"]
    return [int(bos)] if probe and probe[0] == bos else []


def _special_ids(tokenizer: Tokenizer) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    ids.update(index for index, token in tokenizer.added_tokens_decoder.items() if token.special)
    return ids


def _is_blank(tokenizer: Tokenizer, token_id: int) -> bool:
    return not tokenizer.decode([token_id]).strip()


def _template(tokenizer: Tokenizer, messages: list[dict[str, Any]], *, generation_prompt: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("conversational data needs a tokenizer with a chat_template")
    from jinja2.exceptions import SecurityError

    try:  # transformers renders templates in jinja's ImmutableSandboxedEnvironment
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except SecurityError as err:
        name = getattr(tokenizer, "name_or_path", "") or "this tokenizer"
        raise UnsafeFileError(f"the chat template of {name} reaches outside jinja's sandbox ({err}); refused, as "
                              "a template that runs code would") from None
    return str(text)


def _require_prefix(prefix: str, text: str, where: str, what: str) -> None:
    if not text.startswith(prefix):
        head = f"{where}: " if where else ""
        raise ValueError(
            f"{head}the chat template renders {what} differently once more messages follow, so the trained "
            f"tokens cannot be separated from the rest (expected the text to continue {prefix[-60:]!r}, "
            f"but at that point it reads {text[max(0, len(prefix) - 60) : len(prefix)]!r})"
        )


# ---------------------------------------------------------------- conversations -> pieces


def _assistant_pieces(
    tokenizer: Tokenizer,
    conversation: list[dict[str, Any]],
    first: int,
    rendered: str,
    where: str,
) -> list[tuple[str, bool]]:
    """Text after ``rendered``, as (text, trained) pieces, up to the end of the last assistant turn.

    Assistant turns at index ``first`` or later are trained; everything else is context.
    """
    pieces: list[tuple[str, bool]] = []
    for index in range(first, len(conversation)):
        if conversation[index]["role"] != "assistant":
            continue
        if index == 0:
            raise ValueError(f"{where}: a conversation cannot start with an assistant message")
        before = _template(tokenizer, conversation[:index], generation_prompt=True)
        after = _template(tokenizer, conversation[: index + 1], generation_prompt=False)
        _require_prefix(rendered, before, where, "the earlier messages")
        _require_prefix(before, after, where, f"message {index} with its generation prompt")
        pieces.append((before[len(rendered) :], False))
        pieces.append((after[len(before) :], True))
        rendered = after
    return pieces


def _tokenize_pieces(tokenizer: Tokenizer, pieces: Iterable[tuple[str, bool]]) -> _Completion:
    """Tokenize each piece on its own.

    In trained pieces, whitespace after the end-of-turn token stays untrained.
    """
    special = _special_ids(tokenizer)
    ids: list[int] = []
    mask: list[int] = []
    for text, trained in pieces:
        piece = _encode(tokenizer, text)
        trained_len = _end_of_turn(tokenizer, piece, special) if trained else 0
        ids.extend(piece)
        mask.extend([1] * trained_len + [0] * (len(piece) - trained_len))
    return _Completion(ids, mask)


def _end_of_turn(tokenizer: Tokenizer, ids: list[int], special: set[int]) -> int:
    """Length of ``ids`` without the whitespace-only tokens that follow its last special token.

    ChatML writes "<|im_end|>\\n"; the newline is layout, not something the model must say.
    """
    end = len(ids)
    while end > 0 and ids[end - 1] not in special and _is_blank(tokenizer, ids[end - 1]):
        end -= 1
    return end if end > 0 and ids[end - 1] in special else len(ids)


def _end_with_eos(tokenizer: Tokenizer, completion: _Completion, enders: set[int]) -> _Completion:
    """Drop untrained blank tokens at the end; add a trained EOS unless the last token is in ``enders``."""
    ids, mask = list(completion.ids), list(completion.mask)
    while ids and not mask[-1] and _is_blank(tokenizer, ids[-1]):
        ids.pop()
        mask.pop()
    if not ids or ids[-1] not in enders:
        ids.append(_eos_id(tokenizer))
        mask.append(1)
    return _Completion(ids, mask)


def _text_tokens(tokenizer: Tokenizer, text: str) -> _Completion:
    """Plain text, all trained, ending with exactly one EOS."""
    ids = _encode(tokenizer, text)
    return _end_with_eos(tokenizer, _Completion(ids, [1] * len(ids)), {_eos_id(tokenizer)})


def _conversation_tokens(tokenizer: Tokenizer, pieces: list[tuple[str, bool]]) -> _Completion:
    """Tokenized pieces ending with the template's end-of-turn token (any special token counts)."""
    return _end_with_eos(tokenizer, _tokenize_pieces(tokenizer, pieces), _special_ids(tokenizer))


# ---------------------------------------------------------------- prompt / completion parts


def render_prompt(tokenizer: Tokenizer, prompt: Turns) -> list[int]:
    """The token ids a model continues from when it replies to ``prompt``: the one rule of the module doc.

    Training (every ``render_*`` below), sampling (``rollouts``), evaluation and the LM judge all call this, so a
    prompt is the same ids wherever it is used. A string is plain text after the BOS the tokenizer adds itself (if
    any); a list of messages is the chat template with the generation prompt.
    """
    if isinstance(prompt, str):
        return _auto_bos(tokenizer) + _encode(tokenizer, prompt)
    return _encode(tokenizer, _template(tokenizer, prompt, generation_prompt=True))


def user_turn(prompt: Turns) -> list[dict[str, Any]]:
    """A request to a chat model as a conversation: a string becomes one user message; a conversation is kept."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(message) for message in prompt]


def reply_to(prompt: Turns, text: str) -> Turns:
    """A reply in the prompt's form: plain text after a plain prompt, an assistant message after a conversation, so
    a sampled reply is trained on exactly the prompt ids it was sampled from."""
    return text if isinstance(prompt, str) else [{"role": "assistant", "content": text}]


def request_text(prompt: Turns) -> str | None:
    """The request of a plain prompt or of a conversation that is one user message; None for anything longer."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and prompt[0].get("role") == "user" and isinstance(prompt[0].get("content"), str):
        return prompt[0]["content"]
    return None



def _completion(tokenizer: Tokenizer, prompt: Turns, completion: Turns, where: str) -> _Completion:
    if isinstance(prompt, str) != isinstance(completion, str):
        raise ValueError(f"{where}: prompt and completion must both be text or both be lists of messages")
    if isinstance(completion, str):
        return _text_tokens(tokenizer, completion)
    prompt_text = _template(tokenizer, prompt, generation_prompt=True)
    full_text = _template(tokenizer, prompt + completion, generation_prompt=False)
    _require_prefix(prompt_text, full_text, where, "the prompt")
    pieces = _assistant_pieces(tokenizer, prompt + completion, len(prompt), prompt_text, where)
    return _conversation_tokens(tokenizer, pieces)


# ---------------------------------------------------------------- truncation


def _fit(
    tokenizer: Tokenizer,
    prompt: list[int],
    completions: list[_Completion],
    max_length: int | None,
) -> tuple[list[int], list[_Completion], list[bool]]:
    """Apply the truncation policy of the module doc; one prompt cut serves every completion."""
    unchanged = (prompt, completions, [False] * len(completions))
    longest = max(len(completion.ids) for completion in completions)
    if max_length is None or len(prompt) + longest <= max_length:
        return unchanged
    bos = _auto_bos(tokenizer)
    head = bos if bos and prompt[:1] == bos else []
    budget = max_length - len(head)
    if budget < 2:
        raise ValueError(f"max_length={max_length} leaves no room for a prompt and a completion")
    body = prompt[len(head) :]
    completion_budget = budget - min(len(body), budget // PROMPT_KEEP_DIVISOR)
    cut = [_cut_right(completion, completion_budget) for completion in completions]
    keep = budget - max(len(completion.ids) for completion in cut)
    prompt_cut = keep < len(body)
    body = body[len(body) - keep :] if prompt_cut else body
    flags = [prompt_cut or len(new.ids) < len(old.ids) for new, old in zip(cut, completions)]
    return head + body, cut, flags


def _cut_right(completion: _Completion, length: int) -> _Completion:
    return _Completion(completion.ids[:length], completion.mask[:length])


def _join(prompt: list[int], completion: _Completion, truncated: bool) -> Rendered:
    return Rendered(
        input_ids=prompt + completion.ids,
        loss_mask=[0] * len(prompt) + completion.mask,
        prompt_len=len(prompt),
        truncated=truncated,
    )


# ---------------------------------------------------------------- public API


def render_prompt_completion(
    tokenizer: Tokenizer,
    prompt: Turns,
    completion: Turns,
    max_length: int | None = None,
    *,
    where: str = "",
) -> Rendered:
    """Prompt (untrained) followed by completion (trained, ending with EOS / end-of-turn)."""
    return render_responses(tokenizer, prompt, [completion], max_length, where=where)[0]


def render_responses(
    tokenizer: Tokenizer,
    prompt: Turns,
    responses: Sequence[Turns],
    max_length: int | None = None,
    *,
    where: str = "",
) -> list[Rendered]:
    """Several completions of one prompt; all share the same prompt tokens, truncated or not."""
    prompt_ids = render_prompt(tokenizer, prompt)
    completions = [_completion(tokenizer, prompt, response, where) for response in responses]
    prompt_ids, completions, flags = _fit(tokenizer, prompt_ids, completions, max_length)
    return [_join(prompt_ids, completion, flag) for completion, flag in zip(completions, flags)]


def render_preference(
    tokenizer: Tokenizer, record: Preference, max_length: int | None = None
) -> tuple[Rendered, Rendered]:
    """(chosen, rejected) with identical prompt tokens."""
    chosen, rejected = render_responses(
        tokenizer, record.prompt, [record.chosen, record.rejected], max_length, where=record.where
    )
    return chosen, rejected


def render_messages(
    tokenizer: Tokenizer,
    messages: Turns,
    max_length: int | None = None,
    *,
    where: str = "",
) -> Rendered:
    """Language-modelling record: every assistant turn of a conversation is trained, or all of a plain text.

    The sequence ends after the last assistant turn; ``prompt_len`` counts the tokens before the
    first trained one. Too-long sequences are cut from the right.
    """
    if isinstance(messages, str):
        rendered = _join(_auto_bos(tokenizer), _text_tokens(tokenizer, messages), False)
    else:
        tokens = _conversation_tokens(tokenizer, _assistant_pieces(tokenizer, messages, 0, "", where))
        first_trained = tokens.mask.index(1) if 1 in tokens.mask else len(tokens.mask)
        rendered = Rendered(tokens.ids, tokens.mask, first_trained, False)
    if max_length is None or len(rendered) <= max_length:
        return rendered
    return Rendered(
        rendered.input_ids[:max_length],
        rendered.loss_mask[:max_length],
        min(rendered.prompt_len, max_length),
        True,
    )


def render_record(
    tokenizer: Tokenizer, record: Record, max_length: int | None = None
) -> Rendered | tuple[Rendered, ...]:
    """Render any record.

    Returns a Rendered, or a tuple: (chosen, rejected) for Preference, one per response for Ranked.
    """
    if isinstance(record, LMRecord):
        return render_messages(tokenizer, record.text, max_length, where=record.where)
    if isinstance(record, Preference):
        return render_preference(tokenizer, record, max_length)
    if isinstance(record, Ranked):
        responses = render_responses(tokenizer, record.prompt, record.responses, max_length, where=record.where)
        return tuple(responses)
    if isinstance(record, (PromptCompletion, Unpaired, Rating)):
        return render_prompt_completion(
            tokenizer, record.prompt, record.completion, max_length, where=record.where
        )
    raise TypeError(f"cannot render {type(record).__name__}")


def render_many(
    tokenizer: Tokenizer, records: Iterable[Record], max_length: int | None = None
) -> RenderResult:
    """Render every record and count those that lost tokens to max_length."""
    items = [render_record(tokenizer, record, max_length) for record in records]
    truncated = sum(
        any(part.truncated for part in item) if isinstance(item, tuple) else item.truncated for item in items
    )
    return RenderResult(items, truncated, max_length)
