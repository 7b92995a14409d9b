"""Rollouts: masks stop at the first EOS, log-probs are the sampling distribution's, sampling is seedable."""

from __future__ import annotations

import pytest
import torch

from alignkit.rollouts import SamplingSettings, generate, response_masks, sample


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
    settings = SamplingSettings(max_new_tokens=6, temperature=0.0)
    roll = sample(tiny_lm, tiny_tok, ["hello", "bye"], settings)
    assert roll.texts == generate(tiny_lm, tiny_tok, ["hello", "bye"], settings, precision="fp32").texts


def test_decode_loop_matches_transformers_generate_when_greedy(tiny_tok, tiny_lm):
    from alignkit.rollouts import DecodeLoopBackend, HFGenerateBackend

    prompts = ["hi", "a longer prompt here", "x"]
    settings = SamplingSettings(max_new_tokens=10, n=2, temperature=0.0)
    ours = sample(tiny_lm, tiny_tok, prompts, settings, backend=DecodeLoopBackend())
    hf = sample(tiny_lm, tiny_tok, prompts, settings, backend=HFGenerateBackend())
    width = ours.response_ids.shape[1]
    assert torch.equal(ours.response_ids, hf.response_ids[:, :width])
    torch.testing.assert_close(ours.logps, hf.logps[:, :width], atol=1e-4, rtol=1e-4)


def test_top_k_and_top_p_truncation_by_hand():
    from alignkit.rollouts.sampler import _filter_logits

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    top2 = _filter_logits(logits, top_k=2, top_p=1.0)
    assert torch.isinf(top2[0, 2:]).all() and torch.isfinite(top2[0, :2]).all()
    # top_p 0.7: 0.5 alone is below 0.7, so 0.3 stays; 0.5 + 0.3 >= 0.7 drops the rest.
    nucleus = _filter_logits(logits, top_k=0, top_p=0.7)
    assert torch.isfinite(nucleus[0, :2]).all() and torch.isinf(nucleus[0, 2:]).all()
    # A tiny top_p still keeps the most likely token.
    assert torch.isfinite(_filter_logits(logits, top_k=0, top_p=1e-6)[0, 0])


def test_sampling_with_top_k_only_draws_allowed_tokens(tiny_tok, tiny_lm):
    roll = sample(tiny_lm, tiny_tok, ["hello"], SamplingSettings(max_new_tokens=6, n=8, top_k=1, temperature=1.0, seed=0))
    greedy = sample(tiny_lm, tiny_tok, ["hello"], SamplingSettings(max_new_tokens=6, n=1, temperature=0.0))
    for row in roll.response_ids:  # top_k = 1 is greedy decoding
        assert torch.equal(row, greedy.response_ids[0])


def _decode(model, tok, prompts, settings, backend, eos_id):
    from alignkit.data import render_prompt, user_turn
    from alignkit.rollouts.sampler import _left_pad

    ids, mask = _left_pad([render_prompt(tok, user_turn(p)) for p in prompts], tok.pad_token_id)
    index = torch.arange(len(prompts)).repeat_interleave(settings.n)
    torch.manual_seed(settings.seed)
    tokens, logps = backend.generate(model, ids, mask, index, settings, eos_id, tok.pad_token_id)
    keep, _ = response_masks(tokens, eos_id)
    return tokens * keep, logps * keep, keep


@pytest.fixture
def diverse_lm(tiny_lm):
    """The tiny model with larger random weights: its greedy answers differ between prompts and do not repeat one
    token, so a chosen 'EOS' ends rows at different steps."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in tiny_lm.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.3)
    return tiny_lm


def _an_eos_that_ends_rows_at_different_steps(tokens: torch.Tensor) -> int:
    """The generated token whose first occurrences are spread over the most distinct steps (so rows end unevenly)."""
    def spread(t):
        return len({int(row.tolist().index(t)) for row in tokens if t in row.tolist()})
    return max({int(t) for t in tokens.flatten()}, key=spread)


def test_decode_loop_drops_finished_rows_without_changing_the_outputs(tiny_tok, diverse_lm):
    from alignkit.rollouts import DecodeLoopBackend

    prompts = ["hi", "a longer prompt here", "x", "tell me a story", "why", "one two three four five", "ok", "abc"]
    greedy = SamplingSettings(max_new_tokens=16, temperature=0.0)
    full, _, _ = _decode(diverse_lm, tiny_tok, prompts, greedy, DecodeLoopBackend(compact_fraction=0), eos_id=-1)
    eos = _an_eos_that_ends_rows_at_different_steps(full)

    batch_sizes = []
    hook = diverse_lm.register_forward_pre_hook(lambda _m, _a, kw: batch_sizes.append(kw["input_ids"].shape[0]),
                                             with_kwargs=True)
    try:
        plain = _decode(diverse_lm, tiny_tok, prompts, greedy, DecodeLoopBackend(compact_fraction=0), eos)
        batch_sizes.clear()
        dropped = _decode(diverse_lm, tiny_tok, prompts, greedy, DecodeLoopBackend(compact_fraction=0.125), eos)
    finally:
        hook.remove()
    # The batch really shrank as rows ended, and greedy tokens, masks and log-probs are unchanged.
    assert max(batch_sizes) == len(prompts) and batch_sizes[-1] < len(prompts)
    assert torch.equal(plain[0], dropped[0]) and torch.equal(plain[2], dropped[2])
    torch.testing.assert_close(plain[1], dropped[1], atol=1e-5, rtol=1e-5)


def test_decode_loop_with_dropped_rows_samples_with_the_policys_log_probs(tiny_tok, diverse_lm):
    from alignkit.data import render_prompt, user_turn
    from alignkit.rollouts import DecodeLoopBackend
    from alignkit.rollouts.sampler import _left_pad

    prompts = ["hi", "a longer prompt here", "tell me a story"]
    settings = SamplingSettings(max_new_tokens=12, temperature=0.8, n=3, seed=5)
    full, _, _ = _decode(diverse_lm, tiny_tok, prompts, settings, DecodeLoopBackend(compact_fraction=0), eos_id=-1)
    eos = _an_eos_that_ends_rows_at_different_steps(full)
    tokens, logps, keep = _decode(diverse_lm, tiny_tok, prompts, settings, DecodeLoopBackend(), eos)
    assert 0 < int((tokens == eos).any(-1).sum()) < len(tokens)  # some rows ended early, some did not
    # Teacher-forced: the recorded log-probs are the tempered policy's for every kept token.
    ids, mask = _left_pad([render_prompt(tiny_tok, user_turn(p)) for p in prompts], tiny_tok.pad_token_id)
    ids, mask = ids.repeat_interleave(3, 0), mask.repeat_interleave(3, 0)
    full_ids, full_mask = torch.cat([ids, tokens], 1), torch.cat([mask, keep], 1)
    with torch.no_grad():
        logits = diverse_lm(input_ids=full_ids, attention_mask=full_mask,
                         position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0)).logits.float()
    p = ids.shape[1]
    expected = torch.log_softmax(logits[:, p - 1 : -1] / 0.8, -1).gather(-1, tokens[..., None]).squeeze(-1) * keep
    torch.testing.assert_close(logps, expected, atol=1e-4, rtol=1e-4)


def test_inverse_cdf_draws_each_token_at_its_probability_and_never_a_zero_one():
    from alignkit.rollouts.sampler import inverse_cdf

    probs = torch.tensor([[0.0, 0.5, 0.0, 0.2, 0.3]])
    # By hand: intervals (0, .5] -> 1, (.5, .7] -> 3, (.7, 1] -> 4; the smallest and the largest uniform included.
    draws = [int(inverse_cdf(probs, torch.tensor([u]))) for u in (1e-9, 0.5, 0.5001, 0.7, 0.71, 1.0)]
    assert draws == [1, 1, 3, 3, 4, 4]
    uniforms = 1.0 - torch.rand(200_000, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(inverse_cdf(probs.expand(len(uniforms), -1), uniforms), minlength=5).float()
    torch.testing.assert_close(counts / len(uniforms), probs[0], atol=4e-3, rtol=0)


def test_prompt_seeds_give_a_prompt_the_same_samples_in_any_batch_and_with_dropped_rows(tiny_tok, diverse_lm):
    from alignkit.rollouts import DecodeLoopBackend

    prompts = ["hi", "a longer prompt here", "tell me a story", "why"]
    seeds = (11, 12, 13, 14)

    def settings(part):
        return SamplingSettings(max_new_tokens=10, temperature=0.9, n=3, prompt_seeds=tuple(seeds[i] for i in part))

    whole = sample(diverse_lm, tiny_tok, prompts, settings(range(4)), DecodeLoopBackend(compact_fraction=0))
    halves = [sample(diverse_lm, tiny_tok, [prompts[i] for i in part], settings(part)) for part in ((0, 1), (2, 3))]
    assert whole.texts == halves[0].texts + halves[1].texts
    assert whole.texts == sample(diverse_lm, tiny_tok, prompts, settings(range(4))).texts  # rows dropped by default
    # One stream per prompt: its samples still differ from each other, and another seed gives others.
    assert len(set(whole.texts[:3])) > 1
    other = sample(diverse_lm, tiny_tok, prompts[:1], SamplingSettings(max_new_tokens=10, temperature=0.9, n=3,
                                                                       prompt_seeds=(99,)))
    assert other.texts != whole.texts[:3]
    with pytest.raises(ValueError, match="one seed per prompt"):
        sample(diverse_lm, tiny_tok, prompts, settings(range(2)))
