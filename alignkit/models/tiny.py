"""Tiny offline tokenizer and model for tests.

Everything here is built in code: no files, no downloads. The tokenizer shares
SmolLM2-135M-Instruct's special token ids and chat template, so code tested
against it behaves the same on the real model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

# Order fixes the ids: 0 = <|endoftext|>, 1 = <|im_start|>, 2 = <|im_end|>, as in SmolLM2.
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)

# Mirrors SmolLM2-135M-Instruct's ChatML template character for character (its newlines are real
# newlines inside the Jinja strings), default system prompt included.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
    "trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _byte_vocab() -> dict[str, int]:
    """Special tokens first, then one token per byte in byte-level (GPT-2) alphabet order."""
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    return vocab


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE without merges: every UTF-8 byte is one token, so any text round-trips."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(vocab=_byte_vocab(), merges=[], unk_token=ENDOFTEXT))
    # No prefix space, so decoding returns exactly the encoded text.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(
        [AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS]
    )
    # No post-processor: like SmolLM2, encoding never adds BOS/EOS by itself.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=ENDOFTEXT,
        bos_token=IM_START,
        eos_token=IM_END,
        pad_token=IM_END,
        model_max_length=512,
    )
    tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    return tokenizer


def tiny_model(
    tokenizer: PreTrainedTokenizerFast | None = None,
    *,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    seed: int = 0,
    tie_embeddings: bool = True,
) -> LlamaForCausalLM:
    """Randomly initialised fp32 Llama; the same seed gives the same weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tie_embeddings,
        dtype="float32",
    )
    # Seed a private generator state only for construction, leaving the caller's RNG untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.to(torch.float32).eval()
