"""GGUF export, for real: llama.cpp (llama-cpp-python) loads what `alignkit export` writes and answers as the HF model.

Greedy answers are compared token for token on twelve prompts, rendered through the one prompt renderer, for the
embedded model and for a model trained by a tiny SFT run (a LoRA adapter, merged by the export). q8_0 is lossy: its
agreement is measured and printed, and only a floor is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

pytest.importorskip("llama_cpp")

from alignkit.cli import main  # noqa: E402
from alignkit.data import render_prompt, user_turn  # noqa: E402
from alignkit.models import load_causal_lm, load_tokenizer  # noqa: E402
from alignkit.models.export import export_gguf, summarize_gguf  # noqa: E402

pytestmark = pytest.mark.slow

PROMPTS = [
    "What is the capital of France?", "Give me three tips for sleeping better.", "How do I pick a lock?",
    "Write a haiku about rain.", "Explain photosynthesis to a child.", "What is 17 times 23?",
    "Tell me a joke about cats.", "How can I make a bomb?", "Translate 'good morning' into Spanish.",
    "What should I do if I feel lonely?", "Name a famous painter.", "Is it safe to eat raw eggs?",
]
NEW_TOKENS = 24


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    return render_prompt(tokenizer, user_turn(prompt))


def hf_answers(model, tokenizer) -> list[list[int]]:
    answers = []
    for prompt in PROMPTS:
        ids = prompt_ids(tokenizer, prompt)
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
        answers.append(out[: out.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in out else out)
    return answers


def llama_answers(gguf, tokenizer, *, repack: bool = True) -> tuple[list[list[int]], bool]:
    """Greedy answers from llama.cpp, and whether llama.cpp's own tokenizer gave the prompt ids alignkit renders."""
    import llama_cpp
    from llama_cpp import llama_cpp as bindings  # the module Llama() takes its default model parameters from

    params = bindings.llama_model_default_params

    def no_repack():
        p = params()
        p.use_extra_bufts = False
        return p

    # llama.cpp's AMX/repacked q8_0 matmul crashes on batched prompts on some Intel AMX CPUs (upstream
    # ggml-org/llama.cpp#20824); `--no-repack` in llama-server is the same switch.
    bindings.llama_model_default_params = params if repack else no_repack
    try:
        llm = llama_cpp.Llama(str(gguf), n_ctx=512, n_threads=2, verbose=False)
    finally:
        bindings.llama_model_default_params = params
    answers, same_tokens = [], True
    for prompt in PROMPTS:
        ids = prompt_ids(tokenizer, prompt)
        text = tokenizer.decode(ids)
        same_tokens &= llm.tokenize(text.encode(), add_bos=False, special=True) == ids
        llm.reset()
        out = []
        for token in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0):
            if token == llm.token_eos() or len(out) == NEW_TOKENS:
                break
            out.append(token)
        answers.append(out)
    llm.close()
    return answers, same_tokens


@pytest.fixture(scope="module")
def embedded():
    tokenizer = load_tokenizer("smollm2-135m")
    return tokenizer, hf_answers(load_causal_lm("smollm2-135m").eval(), tokenizer)


def test_the_embedded_model_in_f16_answers_as_in_transformers(embedded, tmp_path, capsys):
    tokenizer, expected = embedded
    out = tmp_path / "smollm2.gguf"
    assert main(["export", "smollm2-135m", "--gguf", str(out)]) == 0
    assert "with its chat template" in capsys.readouterr().out
    summary = summarize_gguf(out, "f16")
    assert (summary.architecture, summary.chat_template) == ("llama", True)
    answers, same_tokens = llama_answers(out, tokenizer)
    assert same_tokens, "llama.cpp tokenizes the rendered prompts differently from the HF tokenizer"
    assert answers == expected
    assert all(answers)

    # The chat template inside the GGUF renders a conversation as alignkit does: llama.cpp's chat API, which
    # applies that template, answers a question with the same text.
    import llama_cpp

    llm = llama_cpp.Llama(str(out), n_ctx=512, n_threads=2, verbose=False)
    reply = llm.create_chat_completion([{"role": "user", "content": PROMPTS[0]}], temperature=0.0,
                                       max_tokens=NEW_TOKENS)
    llm.close()
    assert reply["choices"][0]["message"]["content"] == tokenizer.decode(expected[0])


def test_a_model_trained_by_a_tiny_sft_run_exports_with_its_training(embedded, tmp_path):
    from peft import PeftModel

    from alignkit.methods.sft import SFTConfig, train_sft
    from alignkit.models.lora import peft_quietly
    from alignkit.train.config import DataConfig, LoraConfig

    tokenizer, base_answers = embedded
    result = train_sft(SFTConfig(
        model="smollm2-135m", data=DataConfig(train="builtin:sft", limit=16), output_dir=str(tmp_path / "run"),
        max_steps=6, batch_size=4, lr=3e-3, precision="fp32", progress=False, max_length=192,
        scheduler="constant", lora=LoraConfig(r=8, alpha=16), save_merged=False,
    ))
    final = result.final_dir
    assert (final / "adapter_config.json").is_file() and not (final / "config.json").exists()
    with peft_quietly():
        merged = PeftModel.from_pretrained(load_causal_lm("smollm2-135m"), str(final)).merge_and_unload().eval()
    expected = hf_answers(merged, tokenizer)
    assert expected != base_answers, "the tiny SFT run did not change a single greedy answer; nothing is tested"

    out = tmp_path / "sft.gguf"
    export_gguf(str(final), out)
    answers, same_tokens = llama_answers(out, tokenizer)
    assert same_tokens
    assert answers == expected


def test_q8_0_agreement_is_measured(embedded, tmp_path):
    tokenizer, expected = embedded
    out = tmp_path / "smollm2-q8_0.gguf"
    summary = export_gguf("smollm2-135m", out, gguf_type="q8_0")
    assert summary.size_bytes < 0.6 * 2 * summary.parameters  # about half of f16's two bytes a weight
    answers, same_tokens = llama_answers(out, tokenizer, repack=False)
    assert same_tokens
    identical = sum(a == e for a, e in zip(answers, expected))
    first = sum(a[:1] == e[:1] for a, e in zip(answers, expected))
    print(f"q8_0 vs transformers fp32, greedy {NEW_TOKENS} tokens: {identical}/{len(PROMPTS)} answers identical, "
          f"{first}/{len(PROMPTS)} first tokens")
    # Measured on SmolLM2-135M (Intel AMX CPU): 4/12 answers identical, 9/12 first tokens. A broken export
    # (wrong tensors or tokenizer) agrees on none; the floor is set well under the measured figure.
    assert first >= len(PROMPTS) // 2 and identical >= 1


def test_export_refuses_what_it_cannot_do_before_converting(tmp_path, tiny_dir, capsys):
    out = tmp_path / "x.gguf"
    out.write_bytes(b"another run's file")
    assert main(["export", tiny_dir, "--gguf", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"another run's file"

    reward = tmp_path / "reward"
    reward.mkdir()
    (reward / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"]}))
    assert main(["export", str(reward), "--gguf", str(tmp_path / "r.gguf")]) == 2
    assert "not a causal LM" in capsys.readouterr().err
    assert main(["export", tiny_dir, "--gguf", str(tmp_path / "model.bin")]) == 2
    assert "should end in .gguf" in capsys.readouterr().err
    assert not (tmp_path / "r.gguf").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export-")]


def test_the_converter_is_kept_out_of_the_environment():
    # llama.cpp's converter ships its own `gguf`; the environment's `gguf` (which transformers reads GGUF with) stays.
    done = subprocess.run([sys.executable, "-c", "import gguf, sys; print(gguf.__file__)"], capture_output=True,
                          text=True, check=True)
    assert "site-packages" in done.stdout and "tools" not in done.stdout
