"""Rendering: shared prompt tokens, exact loss masks, EOS handling and explicit truncation."""

import pytest
from tokenizers.processors import TemplateProcessing

from alignkit.data import (
    LMRecord,
    Preference,
    PromptCompletion,
    Ranked,
    Rating,
    Unpaired,
    render_many,
    render_messages,
    render_preference,
    render_prompt_completion,
    render_record,
)
from alignkit.models.tiny import tiny_tokenizer

IM_START, IM_END = 1, 2


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def trained_text(tok, rendered):
    return tok.decode([token for token, keep in zip(rendered.input_ids, rendered.loss_mask) if keep])


def prompt_tokens(rendered):
    return rendered.input_ids[: rendered.prompt_len]


CONVERSATIONAL = Preference([user("What colour is the sky?")], [assistant("Blue, mostly.")], [assistant("Green")])
STANDARD = Preference("Q: What colour is the sky?\nA:", " Blue, mostly.", " Green")


@pytest.mark.parametrize("record", [CONVERSATIONAL, STANDARD], ids=["conversational", "standard"])
def test_chosen_and_rejected_share_exact_prompt_tokens(tiny_tok, record):
    chosen, rejected = render_preference(tiny_tok, record)
    assert chosen.prompt_len == rejected.prompt_len > 0
    assert prompt_tokens(chosen) == prompt_tokens(rejected)
    assert chosen.input_ids[chosen.prompt_len :] != rejected.input_ids[rejected.prompt_len :]
    assert not any(chosen.loss_mask[: chosen.prompt_len]) and all(chosen.loss_mask[chosen.prompt_len :])


def test_conversational_completion_trains_exactly_reply_and_end_of_turn(tiny_tok):
    chosen, rejected = render_preference(tiny_tok, CONVERSATIONAL)
    for rendered, reply in ((chosen, "Blue, mostly."), (rejected, "Green")):
        assert trained_text(tiny_tok, rendered) == reply + "<|im_end|>"
        assert rendered.input_ids[-1] == IM_END and rendered.loss_mask[-1] == 1
        assert not rendered.truncated
    full = tiny_tok.apply_chat_template([user("What colour is the sky?"), assistant("Green")], tokenize=False)
    assert tiny_tok.decode(rejected.input_ids) == full.rstrip("\n")
    assert tiny_tok.decode(prompt_tokens(rejected)).endswith("<|im_start|>assistant\n")


def test_no_doubled_bos(tiny_tok):
    rendered = render_prompt_completion(tiny_tok, [user("hi")], [assistant("yo")])
    assert rendered.input_ids[0] == IM_START and rendered.input_ids[1] != IM_START
    standard = render_prompt_completion(tiny_tok, "hi", " yo")
    assert IM_START not in standard.input_ids


def bos_adding_tokenizer(template=None):
    """The tiny tokenizer, changed to add BOS on every encode, as e.g. Llama tokenizers do."""
    tok = tiny_tokenizer()
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<|im_start|> $A", pair="<|im_start|> $A $B", special_tokens=[("<|im_start|>", IM_START)]
    )
    if template is not None:
        tok.chat_template = template
    return tok


def test_bos_adding_tokenizer_gets_exactly_one_bos_even_after_truncation():
    tok = bos_adding_tokenizer("{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}"
                               "{% if m['role'] == 'assistant' %}<|im_end|>{% endif %}{% endfor %}"
                               "{% if add_generation_prompt %}[assistant]{% endif %}")
    assert tok("x")["input_ids"][0] == IM_START
    standard = render_prompt_completion(tok, "a long prompt " * 5, "done")
    assert standard.input_ids.count(IM_START) == 1 and standard.input_ids[0] == IM_START
    cut = render_prompt_completion(tok, "a long prompt " * 5, "done", max_length=20)
    assert cut.truncated and len(cut) == 20
    assert cut.input_ids[0] == IM_START and cut.input_ids.count(IM_START) == 1
    assert tok.decode(cut.input_ids[1 : cut.prompt_len]) == ("a long prompt " * 5)[-(cut.prompt_len - 1) :]
    chat = render_prompt_completion(tok, [user("hi")], [assistant("yo")])
    assert chat.input_ids.count(IM_START) == 1 and trained_text(tok, chat) == "yo<|im_end|>"


def test_standard_rendering_appends_and_trains_eos(tiny_tok):
    rendered = render_prompt_completion(tiny_tok, "2+2=", "4")
    assert tiny_tok.decode(rendered.input_ids) == "2+2=4<|im_end|>"
    assert rendered.prompt_len == 4 and rendered.loss_mask == [0, 0, 0, 0, 1, 1]
    already = render_prompt_completion(tiny_tok, "2+2=", "4<|im_end|>")
    assert already.input_ids == rendered.input_ids


def test_plain_text_lm_trains_everything_and_ends_with_eos(tiny_tok):
    rendered = render_messages(tiny_tok, "Hello there")
    assert tiny_tok.decode(rendered.input_ids) == "Hello there<|im_end|>"
    assert all(rendered.loss_mask) and rendered.prompt_len == 0


def test_multi_turn_trains_only_assistant_turns(tiny_tok):
    messages = [
        {"role": "system", "content": "Be terse."},
        user("First?"),
        assistant("One."),
        user("Second?"),
        assistant("Two."),
    ]
    rendered = render_messages(tiny_tok, messages)
    assert trained_text(tiny_tok, rendered) == "One.<|im_end|>Two.<|im_end|>"
    assert tiny_tok.decode(rendered.input_ids) == tiny_tok.apply_chat_template(messages, tokenize=False).rstrip("\n")
    assert rendered.input_ids[-1] == IM_END and rendered.loss_mask[-1] == 1
    assert tiny_tok.decode(rendered.input_ids[: rendered.prompt_len]).endswith("First?<|im_end|>\n<|im_start|>assistant\n")
    untrained = tiny_tok.decode([t for t, keep in zip(rendered.input_ids, rendered.loss_mask) if not keep])
    assert "Second?" in untrained and "One." not in untrained


def test_multi_message_completion_trains_only_assistant_messages(tiny_tok):
    completion = [assistant("call(weather)"), {"role": "tool", "content": "sunny"}, assistant("It is sunny.")]
    rendered = render_prompt_completion(tiny_tok, [user("Weather?")], completion)
    assert trained_text(tiny_tok, rendered) == "call(weather)<|im_end|>It is sunny.<|im_end|>"
    assert rendered.input_ids[-1] == IM_END


def test_render_record_dispatches_every_record_type(tiny_tok):
    prompt, reply = [user("Hi")], [assistant("Hello")]
    single = [LMRecord(prompt + reply), PromptCompletion(prompt, reply), Unpaired(prompt, reply, False),
              Rating(prompt, reply, 2.0)]
    for record in single:
        assert trained_text(tiny_tok, render_record(tiny_tok, record)) == "Hello<|im_end|>"
    ranked = render_record(tiny_tok, Ranked("Q:", [" a", " bb", " ccc"], [1.0, 2.0, 0.0]))
    assert len(ranked) == 3 and len({tuple(prompt_tokens(item)) for item in ranked}) == 1
    assert [trained_text(tiny_tok, item) for item in ranked] == [" a<|im_end|>", " bb<|im_end|>", " ccc<|im_end|>"]


def test_long_prompt_is_cut_from_the_left(tiny_tok):
    prompt = [user("word " * 40)]
    full = render_prompt_completion(tiny_tok, prompt, [assistant("ok")])
    cut = render_prompt_completion(tiny_tok, prompt, [assistant("ok")], max_length=64)
    assert cut.truncated and not full.truncated and len(cut) == 64
    assert prompt_tokens(cut) == prompt_tokens(full)[-cut.prompt_len :]
    assert cut.input_ids[cut.prompt_len :] == full.input_ids[full.prompt_len :]
    assert trained_text(tiny_tok, cut) == "ok<|im_end|>"


def test_long_completion_is_cut_from_the_right_keeping_a_quarter_for_the_prompt(tiny_tok):
    prompt = [user("Tell me a story.")]
    full = render_prompt_completion(tiny_tok, prompt, [assistant("once upon a time " * 20)])
    cut = render_prompt_completion(tiny_tok, prompt, [assistant("once upon a time " * 20)], max_length=100)
    assert cut.truncated and len(cut) == 100
    assert cut.prompt_len == 100 // 4
    assert prompt_tokens(cut) == prompt_tokens(full)[-25:]
    assert cut.input_ids[cut.prompt_len :] == full.input_ids[full.prompt_len : full.prompt_len + 75]
    assert cut.input_ids[-1] != IM_END


def test_short_prompt_is_kept_whole_when_completion_is_cut(tiny_tok):
    cut = render_prompt_completion(tiny_tok, "Hi", " " + "x" * 50, max_length=20)
    assert cut.prompt_len == 2 and len(cut) == 20 and cut.truncated


def test_preference_pair_shares_prompt_after_truncation(tiny_tok):
    record = Preference([user("context " * 30)], [assistant("a long answer " * 10)], [assistant("short")])
    chosen, rejected = render_preference(tiny_tok, record, max_length=120)
    assert chosen.truncated and rejected.truncated
    assert chosen.prompt_len == rejected.prompt_len
    assert prompt_tokens(chosen) == prompt_tokens(rejected)
    assert len(chosen) == 120 and len(rejected) < 120
    assert trained_text(tiny_tok, rejected) == "short<|im_end|>"


def test_lm_records_are_cut_from_the_right(tiny_tok):
    messages = [user("question " * 10), assistant("answer " * 10)]
    full = render_messages(tiny_tok, messages)
    cut = render_messages(tiny_tok, messages, max_length=50)
    assert cut.truncated and cut.input_ids == full.input_ids[:50] and cut.loss_mask == full.loss_mask[:50]


def test_render_many_counts_truncated_examples(tiny_tok):
    records = [PromptCompletion("p", "short"), PromptCompletion("p", "long " * 20),
               Preference("p", "fine", "too long " * 20)]
    result = render_many(tiny_tok, records, max_length=16)
    assert result.truncated == 2
    assert result.summary() == "2 of 3 examples truncated to max_length=16"
    assert isinstance(result.items[2], tuple)


def test_template_that_rewrites_history_is_refused():
    tok = tiny_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}{% if loop.last %}LAST {% endif %}{{ m['content'] }}<|im_end|>{% endfor %}"
        "{% if add_generation_prompt %}GO{% endif %}"
    )
    with pytest.raises(ValueError, match=r"data\.jsonl:7: the chat template renders .* differently"):
        render_prompt_completion(tok, [user("hi")], [assistant("yo")], where="data.jsonl:7")
