"""The generation engine (rollouts/engine.py, rollouts/cache.py): greedy tokens as transformers' `generate` gives them,
a cache written in place that grows when it must, per-prompt sampling streams whatever the batching, bf16 copies."""

from __future__ import annotations

import pytest
import torch

from alignkit.rollouts import HFGenerateBackend, SamplingSettings, generate, sample
from alignkit.rollouts.cache import InPlaceLayer, in_place_cache
from alignkit.rollouts.engine import bf16_copy


def test_in_place_cache_grows_past_its_room_and_keeps_what_it_holds():
    layer = InPlaceLayer(capacity=2)
    steps = [torch.randn(3, 2, n, 4) for n in (2, 1, 3)]
    for part in steps:
        keys, values = layer.update(part, part * 2)
    whole = torch.cat(steps, dim=-2)
    assert layer.get_seq_length() == 6 and layer.capacity >= 6
    assert torch.equal(keys, whole) and torch.equal(values, whole * 2)
    layer.batch_select_indices(torch.tensor([2, 0]))
    assert torch.equal(layer.keys, whole[[2, 0]]) and torch.equal(layer.values, whole[[2, 0]] * 2)
    layer.crop(-2)
    assert torch.equal(layer.keys, whole[[2, 0], :, :4])


def test_in_place_cache_decodes_what_the_growing_cache_decodes(tiny_tok, tiny_lm):
    ids = torch.tensor([tiny_tok("a short prompt")["input_ids"]])
    with torch.no_grad():
        reference = tiny_lm(input_ids=ids, use_cache=True)
        ours = tiny_lm(input_ids=ids, cache=in_place_cache(tiny_lm, capacity=1), use_cache=True)
        for _ in range(3):
            token = reference.logits[:, -1:].argmax(-1)
            reference = tiny_lm(input_ids=token, cache=reference.cache, use_cache=True)
            ours = tiny_lm(input_ids=token, cache=ours.cache, use_cache=True)
            torch.testing.assert_close(ours.logits, reference.logits, rtol=0, atol=0)


def test_sampled_responses_do_not_depend_on_the_batching(tiny_tok, tiny_lm):
    prompts = ["hello", "a much longer prompt than the others", "x", "bye now"]
    settings = SamplingSettings(max_new_tokens=8, n=2, temperature=1.0, seed=5)
    one = generate(tiny_lm, tiny_tok, prompts, settings, precision="fp32", batch_size=None, sort=False).texts
    many = generate(tiny_lm, tiny_tok, prompts, settings, precision="fp32", batch_size=2).texts
    assert one == many
    assert one != generate(tiny_lm, tiny_tok, prompts, SamplingSettings(max_new_tokens=8, n=2, seed=6),
                           precision="fp32").texts


def test_bf16_copy_leaves_the_model_alone_and_keeps_tied_weights(tiny_lm):
    before = {k: v.clone() for k, v in tiny_lm.state_dict().items()}
    copy = bf16_copy(tiny_lm)
    assert all(p.dtype == torch.bfloat16 for p in copy.parameters())
    assert all(torch.equal(v, before[k]) and v.dtype == before[k].dtype for k, v in tiny_lm.state_dict().items())
    if tiny_lm.config.tie_word_embeddings:
        assert copy.get_input_embeddings().weight is copy.get_output_embeddings().weight


@pytest.mark.slow
def test_greedy_fp32_gives_transformers_generate_tokens_on_the_embedded_model():
    """Today's greedy outputs in fp32: the same batch decodes to the same tokens as transformers' `generate`."""
    from alignkit.data.suites import load_suite
    from alignkit.eval.harness import suite_prompts
    from alignkit.models import load_causal_lm, load_tokenizer

    tokenizer, model = load_tokenizer("smollm2-135m"), load_causal_lm("smollm2-135m").eval()
    prompts = [p.prompt for p in suite_prompts(load_suite("default", split="heldout"))]
    batch = prompts[:3] + prompts[-3:] + prompts[80:82]  # red-team, anthropomorphism, jailbreak-wrapped
    settings = SamplingSettings(max_new_tokens=24, temperature=0.0)
    ours = generate(model, tokenizer, batch, settings, precision="fp32", batch_size=None, sort=False).rollouts[0]
    theirs = sample(model, tokenizer, batch, settings, backend=HFGenerateBackend())
    assert torch.equal(ours.response_ids, theirs.response_ids[:, : ours.response_ids.shape[1]])
    assert ours.texts == theirs.texts


def _shared_prompts(tok):
    opening = "a long shared opening that every prompt of the batch starts with, " * 2
    template = "then a template that some of them share before their own request: "
    ids = [tok(opening + template + "one")["input_ids"], tok(opening + template + "another request")["input_ids"],
           tok(opening + "something else entirely")["input_ids"], tok(opening)["input_ids"]]
    return ids


def test_shared_prefill_plans_one_prefix_and_a_group(tiny_tok):
    from alignkit.rollouts.prefill import plan

    ids = _shared_prompts(tiny_tok)
    shared, group_of, lengths = plan(ids)
    assert shared == len(ids[3]) - 1  # all share the shortest prompt, which keeps its last token for itself
    assert group_of[0] == group_of[1] != group_of[2]
    assert lengths[group_of[0]] > 0 and lengths[group_of[2]] == 0


def test_shared_prefill_gives_the_logits_and_tokens_of_whole_prompts(tiny_tok, tiny_lm):
    """Computing shared parts once sees every token at its own position after exactly its own prefix."""
    from alignkit.data import pad_batch
    from alignkit.models.forward import position_ids
    from alignkit.rollouts.prefill import prefill

    ids = _shared_prompts(tiny_tok)
    batch = pad_batch([(p, [0] * len(p)) for p in ids], tiny_tok.pad_token_id, side="left")
    prompt_ids, prompt_mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        whole = tiny_lm(input_ids=prompt_ids, attention_mask=prompt_mask,
                        position_ids=position_ids(prompt_mask)).logits[:, -1]
        cache, layout, logits = prefill(tiny_lm, prompt_ids, prompt_mask, 4, tiny_tok.pad_token_id)
    assert layout.shape[1] < prompt_ids.shape[1] + len(ids[3])  # the layout holds each shared part once
    assert layout.sum(-1).tolist() == prompt_mask.sum(-1).tolist()
    torch.testing.assert_close(logits, whole, rtol=1e-5, atol=1e-5)
    settings = SamplingSettings(max_new_tokens=6, temperature=0.0)
    texts = [tiny_tok.decode(p) for p in ids]
    ours = sample(tiny_lm, tiny_tok, texts, settings)
    theirs = sample(tiny_lm, tiny_tok, texts, settings, backend=HFGenerateBackend())
    assert torch.equal(ours.response_ids, theirs.response_ids[:, : ours.response_ids.shape[1]])


def test_the_bf16_copy_is_made_once_per_version_of_the_weights(tiny_lm):
    from alignkit.rollouts.engine import bf16_weights

    first = bf16_weights(tiny_lm)
    assert bf16_weights(tiny_lm) is first
    with torch.no_grad():
        next(tiny_lm.parameters()).add_(1.0)  # an optimizer step changes weights in place
    second = bf16_weights(tiny_lm)
    assert second is not first
    torch.testing.assert_close(next(second.parameters()).float(), next(tiny_lm.parameters()), rtol=1e-2, atol=1e-2)
