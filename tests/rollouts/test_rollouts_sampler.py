"""Rollouts: masks stop at the first EOS, log-probs are the sampling distribution's, sampling is seedable."""

from __future__ import annotations

import pytest
import torch

from alignkit.rollouts import SamplingSettings, generate_responses, response_masks, sample


def test_response_mask_covers_tokens_up_to_and_including_the_first_eos():
    eos = 2
    response = torch.tensor([[5, 6, 2, 7, 2], [5, 6, 7, 8, 9], [2, 4, 4, 4, 4]])
    mask, reached = response_masks(response, eos)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert reached.tolist() == [True, False, True]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logps_are_those_of_the_tempered_policy(tiny_tok, tiny_lm, temperature):
    settings = SamplingSettings(max_new_tokens=10, n=2, temperature=temperature, seed=3)
    roll = sample(tiny_lm, tiny_tok, ["hello", "a longer prompt"], settings)
    assert roll.response_ids.shape[0] == 4 and roll.prompt_index.tolist() == [0, 0, 1, 1]
    # Teacher-forced check: one full forward over prompt + response gives the same per-token log-probs.
    ids, attention = roll.input_ids, roll.attention_mask
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = tiny_lm(input_ids=ids, attention_mask=attention, position_ids=positions).logits.float()
    p = roll.prompt_ids.shape[1]
    predicted = torch.log_softmax(logits[:, p - 1 : -1] / temperature, -1)
    expected = predicted.gather(-1, roll.response_ids[..., None]).squeeze(-1) * roll.response_mask
    torch.testing.assert_close(roll.logps, expected, atol=1e-4, rtol=1e-4)
    assert bool((roll.logps <= 0).all())


def test_sampling_is_reproducible_for_a_seed_and_varies_across_seeds(tiny_tok, tiny_lm):
    prompts = ["hello there"]
    a = sample(tiny_lm, tiny_tok, prompts, SamplingSettings(max_new_tokens=8, n=4, seed=0))
    b = sample(tiny_lm, tiny_tok, prompts, SamplingSettings(max_new_tokens=8, n=4, seed=0))
    c = sample(tiny_lm, tiny_tok, prompts, SamplingSettings(max_new_tokens=8, n=4, seed=1))
    assert torch.equal(a.response_ids, b.response_ids) and a.texts == b.texts
    assert not torch.equal(a.response_ids, c.response_ids)
    # n samples of one prompt differ from each other (random weights, temperature 1).
    assert len({tuple(r.tolist()) for r in a.response_ids}) > 1


def test_sampling_does_not_disturb_the_callers_random_state(tiny_tok, tiny_lm):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    sample(tiny_lm, tiny_tok, ["x"], SamplingSettings(max_new_tokens=4, seed=9))
    assert torch.equal(torch.rand(3), expected)


def test_greedy_rollout_matches_plain_generation(tiny_tok, tiny_lm):
    roll = sample(tiny_lm, tiny_tok, ["hello", "bye"], SamplingSettings(max_new_tokens=6, temperature=0.0))
    assert roll.texts == generate_responses(tiny_lm, tiny_tok, ["hello", "bye"], max_new_tokens=6)
