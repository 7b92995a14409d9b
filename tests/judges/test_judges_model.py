"""Model-backed judges: the reward-model judge scores as the reward model does; the LM judge is order-symmetric."""

from __future__ import annotations

import math

import pytest
import torch

from alignkit.data import pad_batch, render_prompt_completion
from alignkit.judges import Judge
from alignkit.judges.model import LMJudge, RewardModelJudge
from alignkit.models import SequenceScores, load_score_model, load_tokenizer


def test_reward_model_judge_scores_like_the_model_and_compares_by_bradley_terry(tiny_dir):
    # A causal-LM directory gets a freshly initialised head, so share one model between judge and check.
    tok = load_tokenizer(tiny_dir)
    model = load_score_model(tiny_dir).eval()
    judge = RewardModelJudge(model, tokenizer=tok)
    assert isinstance(judge, Judge)
    prompts = ["add 2 and 3", [{"role": "user", "content": "hi"}]]
    completions = ["sure: 5", "hello!"]
    scores = judge.score(prompts, completions)
    expected = []
    for p, c in zip(prompts, completions):
        reply = c if isinstance(p, str) else [{"role": "assistant", "content": c}]
        batch = pad_batch([render_prompt_completion(tok, p, reply)], pad_id=tok.pad_token_id)
        with torch.no_grad():
            expected.append(float(SequenceScores(model)(batch["input_ids"], batch["attention_mask"])))
    assert scores == pytest.approx(expected, abs=1e-5)
    s_a, s_b = judge.score(["q", "q"], ["one", "two"])
    assert judge.compare("q", "one", "two") == pytest.approx(1 / (1 + math.exp(-(s_a - s_b))), abs=1e-6)


def test_lm_judge_averages_both_orders(tiny_dir):
    judge = LMJudge(tiny_dir)
    assert isinstance(judge, Judge)
    prompt, a, b = "Is the sky blue?", "Yes, on a clear day.", "No idea."
    forward = judge.option_probs(prompt, a, b)
    backward = judge.option_probs(prompt, b, a)
    assert float(forward.sum()) == pytest.approx(1.0) and float(backward.sum()) == pytest.approx(1.0)
    p = judge.compare(prompt, a, b)
    assert p == pytest.approx(0.5 * (float(forward[0]) + float(backward[1])), abs=1e-6)
    # Averaging both orders makes the judgement antisymmetric whatever the model's position bias.
    assert judge.compare(prompt, b, a) == pytest.approx(1 - p, abs=1e-6)
    assert judge.compare(prompt, a, a) == pytest.approx(0.5, abs=1e-6)


def _taught_ids(tok, prompt, first, second, question, answer, max_length=None):
    """The ids a feedback model is taught for one gold comparison (constitution.critique.comparison_sft_rows), as
    the SFT trainer renders them: (prompt + answer ids, loss mask)."""
    from alignkit.constitution.audit import GoldComparison
    from alignkit.constitution.critique import comparison_sft_rows
    from alignkit.data import parse_record
    from alignkit.train.common import render_sft

    class OnePrinciple:
        @staticmethod
        def principle(_):
            return type("P", (), {"comparison": question})()

    better = "a" if answer == "(A)" else "b"
    gold = GoldComparison("g", "p", prompt, first, second, better, "here")
    # Rows come as (better first, "(A)"), (better second, "(B)"): the one that shows `first` as (A).
    row = comparison_sft_rows([gold], OnePrinciple())[0 if answer == "(A)" else 1]
    (item,) = render_sft(tok, parse_record(row, "here", "sft"), max_length or 10**6, "x")
    return item.input_ids, item.loss_mask


@pytest.mark.parametrize("max_length", [None, 48])
def test_lm_judge_reads_the_option_at_the_ids_a_feedback_model_is_taught(tiny_tok, max_length):
    """Train on exactly what you judge: the ids the judge reads an option after are the taught ids up to the
    answer letter, and the option it reads is the taught letter's id (also when the question is cut)."""
    from alignkit.models.tiny import tiny_model

    judge = LMJudge(tiny_model(tiny_tok), tiny_tok, max_length=max_length)
    question = ("Is water wet?", "Yes, it is.", "No, never at all.", "Which reply is true?")
    asked, options = judge._question(*question)
    for letter, answer in enumerate(("(A)", "(B)")):
        ids, mask = _taught_ids(tiny_tok, *question, answer, max_length)
        assert ids[: len(asked)] == asked and ids[len(asked)] == options[letter]
        assert mask[len(asked)] == 1  # the letter is a trained token, not context
    if max_length is not None:
        assert len(asked) < max_length


def test_lm_judge_reads_the_letter_when_the_tokenizer_merges_it_with_the_bracket(tiny_tok):
    """A tokenizer that writes "(A" as one token: the judge compares those merged tokens, right after the
    generation prompt, because that is what the teaching rows train."""
    from alignkit.models.tiny import tiny_model

    merged = [200, 201]  # stand-ins for single "(A" / "(B" tokens
    tok = _MergingTokenizer(tiny_tok, merged)
    judge = LMJudge(tiny_model(tiny_tok), tok)
    question = ("Hi", "Hello.", "Go away.", "Which is kinder?")
    asked, options = judge._question(*question)
    assert options == merged
    assert tiny_tok.decode(asked).endswith("<|im_start|>assistant\n")  # no bracket left to read after
    ids, _ = _taught_ids(tok, *question, "(B)")
    assert ids[len(asked)] == merged[1] and ids[: len(asked)] == asked


class _MergingTokenizer:
    """Wraps the tiny tokenizer so that "(A" and "(B" encode as single tokens (as some BPE vocabularies do)."""

    def __init__(self, inner, merged):
        self.inner, self.merged = inner, merged

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, text, add_special_tokens=False, **kwargs):
        pieces = text.replace("(A", "\x00A\x00").replace("(B", "\x00B\x00").split("\x00")
        ids = []
        for piece in pieces:
            if piece in ("A", "B"):
                ids.append(self.merged["AB".index(piece)])
            elif piece:
                ids += self.inner(piece, add_special_tokens=False)["input_ids"]
        return {"input_ids": ids}


def test_lm_judge_batches_give_the_one_at_a_time_answers(tiny_tok):
    from alignkit.models.tiny import tiny_model

    judge = LMJudge(tiny_model(tiny_tok, tie_embeddings=False), tiny_tok, batch_size=3)
    items = [("Is water wet?", "Yes.", "No, never, not at all.", "Which is true?"),
             ("Hi", "Hello there, how can I help you today?", "Hey.", None),
             ([{"role": "user", "content": "2+2?"}], "4", "5", "Which is correct?"),
             ("A much longer question about the weather in spring and autumn?", "It varies.", "Rain.", None)]
    batched = judge.compare_orders_many(items)
    singles = [judge.compare_orders(*item) for item in items]  # batch of 2 (both orders), different padding
    for (b1, b2), (s1, s2) in zip(batched, singles):
        assert b1 == pytest.approx(s1, abs=1e-5) and b2 == pytest.approx(s2, abs=1e-5)
    assert judge.compare_many(items) == pytest.approx([(a + b) / 2 for a, b in batched])
    assert judge.score(["q", "r"], ["x", "y"]) == pytest.approx(judge.compare_many([("q", "x", ""), ("r", "y", "")]))
