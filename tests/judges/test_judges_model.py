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


def test_lm_judge_rejects_multi_token_option_labels(tiny_dir):
    class Tok:
        def __call__(self, text, add_special_tokens=False):
            return type("E", (), {"input_ids": [1, 2]})()

    with pytest.raises(ValueError, match="not a single token"):
        LMJudge(tiny_dir, tokenizer=Tok())


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
