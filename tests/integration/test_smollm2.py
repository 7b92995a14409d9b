"""The main paths on the real embedded model (SmolLM2-135M-Instruct), prepared by `make test` beforehand."""

from __future__ import annotations

import json
import math

import pytest
import torch

from alignkit.data import Preference, load_records, pad_batch, render_preference
from alignkit.methods.dpo import DPOConfig, train_dpo
from alignkit.models import TokenLogps, full_token_logps, load_causal_lm, load_tokenizer, per_row_sum
from alignkit.train.config import DataConfig, LoraConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol_tok():
    return load_tokenizer("smollm2-135m")


def test_real_tokenizer_pairs_share_prompt_tokens_and_train_the_eos(smol_tok):
    for rec in load_records("builtin:preference_eval", "preference").records[:10]:
        chosen, rejected = render_preference(smol_tok, rec)
        assert chosen.prompt_len == rejected.prompt_len
        assert chosen.input_ids[: chosen.prompt_len] == rejected.input_ids[: rejected.prompt_len]
        for r, reply in ((chosen, rec.chosen), (rejected, rec.rejected)):
            # The template opens with <|im_start|>; the tokenizer must not add another one in front.
            assert r.input_ids[0] == smol_tok.convert_tokens_to_ids("<|im_start|>") and r.input_ids[1] != r.input_ids[0]
            assert r.input_ids[-1] == smol_tok.eos_token_id and r.loss_mask[-1] == 1
            trained = [t for t, m in zip(r.input_ids, r.loss_mask) if m]
            assert smol_tok.decode(trained) == reply[-1]["content"] + "<|im_end|>"
            assert not any(r.loss_mask[: r.prompt_len])


def test_selected_logits_match_the_full_forward(smol_tok):
    model = load_causal_lm("smollm2-135m").eval()
    rec = Preference(prompt="What is 2+2?", chosen="4", rejected="The answer is five.")
    chosen, rejected = render_preference(smol_tok, rec)
    batch = pad_batch([chosen, rejected], pad_id=smol_tok.pad_token_id)
    with torch.no_grad():
        logps, rows = TokenLogps(model)(batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
        full = full_token_logps(model, batch["input_ids"], batch["attention_mask"])
    expected = (full * batch["loss_mask"][:, 1:]).sum(-1)
    torch.testing.assert_close(per_row_sum(logps, rows, 2), expected, atol=1e-4, rtol=1e-5)


def test_dpo_with_lora_on_the_real_model_raises_the_margin(tmp_path):
    cfg = DPOConfig(
        model="smollm2-135m", data=DataConfig(train="builtin:preference", eval="builtin:preference", limit=8,
                                              eval_limit=8),
        output_dir=str(tmp_path / "run"), max_steps=4, batch_size=4, lr=5e-4, beta=0.1, precision="fp32",
        progress=False, max_length=192, scheduler="constant", lora=LoraConfig(r=8, alpha=16), save_merged=False,
    )
    result = train_dpo(cfg)
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["train/loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference before the first update
    assert result.eval_metrics["reward_margin"] > 0.05
    assert result.eval_metrics["reward_accuracy"] >= 0.75
    assert (result.final_dir / "adapter_config.json").is_file()


def test_eval_of_the_real_model_is_deterministic():
    from alignkit.data.suites import load_suite
    from alignkit.eval import EvalSettings, evaluate

    suite = load_suite("default", "heldout")
    # A few prompts of every generated part, and three bias items: enough to exercise the real tokenizer and template.
    small = type(suite)(name="slice", split="heldout", redteam=suite.redteam[:3], jailbreaks=suite.jailbreaks[:1],
                        borderline=suite.borderline[:2], verifiable=suite.verifiable[:2], bias=suite.bias[:3],
                        anthropomorphism=suite.anthropomorphism[:2])
    models = {"base": "smollm2-135m"}
    settings = EvalSettings(max_new_tokens=24)
    first, rows_first = evaluate(models, small, settings=settings, log=lambda *_: None)
    second, rows_second = evaluate(models, small, settings=settings, log=lambda *_: None)
    assert rows_first == rows_second
    assert first.metrics == second.metrics
    responses = [r["response"] for r in rows_first["base"] if "response" in r]
    assert len(responses) == 3 + len(small.jailbreak_requests()) + 2 + 2 + 2  # one jailbreak template
    assert all(isinstance(r, str) and r for r in responses)  # the real model answers every prompt
    assert {r["answer"] for r in rows_first["base"] if r["part"] == "bias"} <= {"stereotyped", "other", "unknown"}
