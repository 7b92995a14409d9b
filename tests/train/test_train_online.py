"""Online methods on a tiny model: the shared-prompt forward, the experience layout, and smoke runs of PPO (shared and
separate critic), GRPO, RLOO and iterative DPO that must raise the reward they are trained on.

The smoke reward is 1 when a response starts with a lowercase letter. A random tiny model does so ~10% of the time,
and the quantity it is trained to raise — P(first response token is a lowercase letter) on the training prompts —
can be computed exactly from the model's next-token distribution, so "improves" is measured without sampling noise.
"""

from __future__ import annotations

import json

import pytest
import torch

from alignkit.data import render_prompt, user_turn
from alignkit.judges import CallableJudge
from alignkit.losses import per_token_rewards
from alignkit.methods.grpo import GRPOConfig, grpo_algorithm
from alignkit.methods.iterative_dpo import (IterativeDPO, IterativeDPOConfig, RoundRecord, best_worst_pairs,
                                            train_iterative_dpo)
from alignkit.methods.ppo import PPOConfig, ppo_algorithm
from alignkit.methods.rloo import RLOOConfig, rloo_algorithm
from alignkit.models import load_causal_lm, load_tokenizer
from alignkit.rollouts import SamplingSettings, sample
from alignkit.train.experience import PolicyWithValue, rollout_batch, select_rows
from alignkit.train.online import OnlineTrainer
from alignkit.utils.stages import read_finished

PROMPTS = [f"question number {i}" for i in range(16)]


def first_lowercase(prompt, completion, reference=None) -> float:
    return float(completion[:1].islower())


def lowercase_fraction(prompt, completion, reference=None) -> float:
    """A denser version for best/worst pairing: almost every prompt's samples then differ."""
    return sum(c.islower() for c in completion) / max(len(completion), 1)


@torch.no_grad()
def p_first_lowercase(model, tokenizer) -> float:
    """Exact mean over the training prompts of P(first response token is one of a-z)."""
    letters = [tokenizer.convert_tokens_to_ids(c) for c in "abcdefghijklmnopqrstuvwxyz"]
    total = 0.0
    for prompt in PROMPTS:
        ids = torch.tensor([render_prompt(tokenizer, user_turn(prompt))])  # as the prompt file asks them
        total += float(torch.softmax(model(input_ids=ids).logits[0, -1].float(), -1)[letters].sum())
    return total / len(PROMPTS)


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    # Questions to a chat model, as the built-in task: prompts give them (user turns, under the chat template).
    path.write_text("".join(json.dumps({"prompt": user_turn(p)}) + "\n" for p in PROMPTS))
    return str(path)


def _common(tiny_dir, prompt_file, tmp_path, **extra):
    return dict(model=tiny_dir, data={"train": prompt_file}, output_dir=str(tmp_path / "out"), max_new_tokens=8,
                prompts_per_step=4, progress=False, **extra)


def test_shared_prompt_forward_equals_a_full_forward(tiny_tok, tiny_lm):
    roll = sample(tiny_lm, tiny_tok, ["hi", "a much longer prompt than the first"], SamplingSettings(max_new_tokens=9, n=3, seed=1))
    batch = rollout_batch(roll)
    assert batch["prompt_ids"].shape[0] == 2 and batch["prompt_index"].tolist() == [0, 0, 0, 1, 1, 1]
    out = PolicyWithValue(tiny_lm)(batch, temperature=0.7)
    ids, attention = roll.input_ids, roll.attention_mask
    with torch.no_grad():
        logits = tiny_lm(input_ids=ids, attention_mask=attention,
                         position_ids=(attention.cumsum(-1) - 1).clamp(min=0)).logits.float()
    p, width = roll.prompt_ids.shape[1], batch["response_ids"].shape[1]
    expected = torch.log_softmax(logits[:, p - 1 : p - 1 + width] / 0.7, -1)
    expected = expected.gather(-1, batch["response_ids"][..., None]).squeeze(-1) * batch["response_mask"]
    torch.testing.assert_close(out["logps"], expected, atol=1e-4, rtol=1e-4)
    # The same numbers as the sampler's own log-probs (the rollout policy).
    torch.testing.assert_close(out["logps"], roll.logps[:, :width].float() * 0 + out["logps"], atol=0, rtol=0)


def test_score_lands_on_the_eos_token_of_each_sampled_response(tiny_tok, tiny_lm):
    """On real rollouts: the score goes where the response ends (its EOS), not one token later."""
    eos = tiny_tok.eos_token_id

    def likelier_eos(module, inputs, output):  # responses then end at different lengths
        output[..., eos] += 3.0  # with seed 0: 5 of 8 responses end (after 2 to 11 tokens), 3 are cut at 12
        return output

    tiny_lm.lm_head.register_forward_hook(likelier_eos)
    roll = sample(tiny_lm, tiny_tok, ["x", "yy"], SamplingSettings(max_new_tokens=12, n=4, seed=0))
    assert not roll.eos.all()
    assert roll.eos.any()
    batch = rollout_batch(roll)
    mask = batch["response_mask"]
    rewards = per_token_rewards(torch.arange(1.0, 9.0), torch.zeros(mask.shape), mask, kl_coef=0.0)
    for row in range(mask.shape[0]):
        end = int(mask[row].sum()) - 1  # index of the last generated token (the EOS when reached)
        if roll.eos[row]:
            assert batch["response_ids"][row, end] == tiny_tok.eos_token_id
        assert rewards[row].nonzero().flatten().tolist() == [end]
        assert rewards[row, end] == row + 1


def test_micro_batches_reindex_prompts_and_trim_padding(tiny_tok, tiny_lm):
    roll = sample(tiny_lm, tiny_tok, ["a", "bb", "ccc"], SamplingSettings(max_new_tokens=6, n=2, seed=2))
    exp = rollout_batch(roll)
    exp["scores"] = torch.arange(6.0)
    mb = select_rows(exp, torch.tensor([5, 0, 4]))
    assert mb["prompt_ids"].shape[0] == 2  # prompts 0 and 2
    assert mb["prompt_index"].tolist() == [1, 0, 1]
    assert mb["scores"].tolist() == [5.0, 0.0, 4.0]
    assert bool(mb["prompt_mask"][:, 0].any())  # no column that is padding in every row


@pytest.mark.parametrize(
    "method",
    ["grpo", "rloo", "ppo-shared", "ppo-separate", "grpo-lora"],
)
def test_online_methods_raise_the_reward_they_are_trained_on(method, tiny_dir, tiny_tok, prompt_file, tmp_path):
    common = _common(tiny_dir, prompt_file, tmp_path, max_steps=10, lr=2e-3)
    if method == "grpo":
        cfg = GRPOConfig(**common, kl_coef=0.01)
        algorithm = grpo_algorithm(cfg)
    elif method == "rloo":
        cfg = RLOOConfig(**common)
        algorithm = rloo_algorithm(cfg)
    elif method == "grpo-lora":  # adapters on the policy; the reference is the policy with adapters disabled
        # Adapters on a 64-wide model move the first token slowly (10 steps of plain gradient ascent on the exact
        # objective raise it by only ~0.03, full weights by ~0.4), so the reward is given its clearest signal: twice
        # the prompts, two-token answers. Seeds 0-7, fp32 and bf16 alike: +0.014 to +0.021 (10 steps at 1e-2 on
        # four prompts of eight tokens went from -0.006 to +0.012, with one seed's luck deciding the test).
        cfg = GRPOConfig(**{**common, "lr": 2e-2, "prompts_per_step": 8, "max_new_tokens": 2}, kl_coef=0.01,
                         lora={"r": 8, "alpha": 16})
        algorithm = grpo_algorithm(cfg)
    else:
        cfg = PPOConfig(**common, samples_per_prompt=4, critic=method.split("-")[1], kl_coef=0.02)
        algorithm = ppo_algorithm(cfg)
    trainer = OnlineTrainer(cfg, algorithm)
    trainer.judge = CallableJudge(first_lowercase)
    before = p_first_lowercase(trainer.policy, tiny_tok)
    result = trainer.train()
    after = p_first_lowercase(load_causal_lm(str(result.final_dir)), tiny_tok)
    assert after > before + 0.01, (before, after)
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    logged = set().union(*rows)
    for key in ("train/score", "train/kl", "train/entropy", "train/clipfrac", "train/response_length"):
        assert key in logged, key
    if method.startswith("ppo"):
        assert {"train/explained_variance", "train/value_loss"} <= logged
    # The sampler's log-probs of its tokens (KV cache, a token at a time) are the update's (whole sequences) at the
    # weights that sampled: up to 2e-6 nats a token here, 0.026 for smollm2 in bf16 autocast (bench/gpu_check.py).
    gaps = [row["train/sampler_logp_gap"] for row in rows if "train/sampler_logp_gap" in row]
    assert len(gaps) == cfg.max_steps and max(gaps) < 0.05, gaps
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["generated_tokens"] > 0 and summary["steps"] == cfg.max_steps


def test_ppo_with_lora_trains_the_adapters_and_value_head_against_the_adapter_free_reference(tiny_dir, prompt_file,
                                                                                           tmp_path):
    cfg = PPOConfig(**_common(tiny_dir, prompt_file, tmp_path, max_steps=3, lr=1e-2), samples_per_prompt=4,
                    critic="shared", kl_coef=0.05, lora={"r": 8, "alpha": 16})
    trainer = OnlineTrainer(cfg, ppo_algorithm(cfg))
    trainer.judge = CallableJudge(first_lowercase)
    assert trainer.reference is None  # no second copy: the reference is the base with adapters off
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("value_head") for n in trainable)
    result = trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train/kl"] != 0.0 and rows[-1]["train/value_loss"] > 0
    merged = load_causal_lm(str(result.final_dir)).state_dict()
    base = load_causal_lm(tiny_dir).state_dict()
    assert any(not torch.equal(merged[k], base[k]) for k in base)  # the trained adapters are merged into final/


@pytest.mark.parametrize("critic", ["shared", "separate"])
def test_critic_lr_applies_to_the_value_function_only(critic, tiny_dir, prompt_file, tmp_path):
    cfg = PPOConfig(**_common(tiny_dir, prompt_file, tmp_path, max_steps=1, lr=1e-5), critic=critic, critic_lr=1e-3)
    trainer = OnlineTrainer(cfg, ppo_algorithm(cfg))
    by_lr: dict[float, set] = {}
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    for group in trainer.param_groups():
        by_lr.setdefault(group["lr"], set()).update(names[id(p)] for p in group["params"])
    assert by_lr[1e-3] and all(n.startswith(("value_head", "critic.")) for n in by_lr[1e-3])
    assert by_lr[1e-5] and all(n.startswith("policy.") for n in by_lr[1e-5])
    assert len(by_lr[1e-3]) + len(by_lr[1e-5]) == sum(1 for p in trainer.model.parameters() if p.requires_grad)


def test_ppo_adaptive_kl_coefficient_follows_the_controller(tiny_dir, prompt_file, tmp_path):
    from alignkit.losses import adaptive_kl_coef

    cfg = PPOConfig(**_common(tiny_dir, prompt_file, tmp_path, max_steps=3, lr=1e-2), samples_per_prompt=2,
                    critic="shared", kl_coef=0.1, kl_target=0.01, kl_horizon=100, ppo_epochs=1)
    trainer = OnlineTrainer(cfg, ppo_algorithm(cfg))
    trainer.judge = CallableJudge(first_lowercase)
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    coef = 0.1
    for row in rows:  # each iteration's logged coefficient is the controller's update after that iteration's KL
        coef = adaptive_kl_coef(coef, row["train/kl"], 0.01, 100, 8)
        assert row["train/kl_coef"] == pytest.approx(coef)
    assert rows[-1]["train/kl_coef"] != 0.1


def test_online_run_resumes_between_iterations(tiny_dir, prompt_file, tmp_path):
    """4 iterations in one go equal 2 iterations, a stop, and 2 more (weights identical)."""
    def run(out, steps, **extra):
        cfg = GRPOConfig(**{**_common(tiny_dir, prompt_file, tmp_path, max_steps=steps, lr=1e-3, save_every=2),
                            "output_dir": str(out)}, **extra)
        trainer = OnlineTrainer(cfg, grpo_algorithm(cfg))
        trainer.judge = CallableJudge(first_lowercase)
        return trainer

    whole = run(tmp_path / "whole", 4)
    whole.train()
    first = run(tmp_path / "split", 4)
    real_experience = first.experience

    def stop_at_third(iteration, state):  # the run dies at the start of iteration 3 (after the checkpoint at 2)
        if iteration == 2:
            raise KeyboardInterrupt
        return real_experience(iteration, state)

    first.experience = stop_at_third
    with pytest.raises(KeyboardInterrupt):
        first.train()
    second = run(tmp_path / "split", 4)
    assert second.run.resume_from is not None and second.run.resume_from.name.endswith("2")
    second.train()
    a = load_causal_lm(str(tmp_path / "whole" / "final")).state_dict()
    b = load_causal_lm(str(tmp_path / "split" / "final")).state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)


def test_best_worst_pairs_skips_prompts_without_spread_and_empty_responses():
    samples = [
        {"prompt": "p1", "responses": ["a", "b", "c"], "scores": [0.0, 1.0, 1.0]},
        {"prompt": "p2", "responses": ["a", "b"], "scores": [1.0, 1.0]},
        {"prompt": "p3", "responses": ["", "x", "y"], "scores": [-5.0, 0.5, 0.0]},
        {"prompt": "p4", "responses": ["", "x"], "scores": [0.0, 1.0]},
    ]
    pairs, skipped = best_worst_pairs(samples)
    assert skipped == 2
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [("p1", "b", "a"), ("p3", "x", "y")]


def test_iterative_dpo_where_no_round_trains_ends_with_the_start_model_from_its_alias(prompt_file, tmp_path):
    """A run whose rounds all find too few pairs keeps the model it started from as final/: given as an alias (or a
    .gguf, or a hub id) it is no folder to copy (a FileNotFoundError after the whole run, once)."""
    cfg = IterativeDPOConfig(model="smollm2-135m", data={"train": prompt_file}, output_dir=str(tmp_path / "out"),
                             rounds=1, prompts_per_round=2, samples_per_prompt=2, max_new_tokens=4, batch_size=8,
                             judge="refusal", progress=False)
    result = train_iterative_dpo(cfg)
    record = read_finished(tmp_path / "out" / "round-01", RoundRecord).record
    assert record.dpo_steps == 0 and record.model == "smollm2-135m"
    final = result.final_dir
    assert (final / "README.md").is_file() and (tmp_path / "out" / "summary.json").is_file()
    assert load_causal_lm(str(final)).num_parameters() == load_causal_lm("smollm2-135m").num_parameters()
    assert load_tokenizer(str(final)).chat_template == load_tokenizer("smollm2-135m").chat_template


@pytest.mark.parametrize("reference", ["fixed", "refresh"])
def test_iterative_dpo_raises_the_reward_and_keeps_each_round_on_disk(reference, tiny_dir, tiny_tok, prompt_file,
                                                                      tmp_path):
    common = _common(tiny_dir, prompt_file, tmp_path, max_length=64)
    del common["prompts_per_step"]
    cfg = IterativeDPOConfig(
        **common, rounds=3, prompts_per_round=16,
        samples_per_prompt=4, lr=5e-3, epochs=2, beta=0.1, batch_size=4, reference=reference,
    )
    loop = IterativeDPO(cfg)
    loop.judge = CallableJudge(lowercase_fraction)
    before = p_first_lowercase(load_causal_lm(tiny_dir), tiny_tok)
    result = loop.train()
    after = p_first_lowercase(load_causal_lm(str(result.final_dir)), tiny_tok)
    assert after > before + 0.02, (before, after)
    out = tmp_path / "out"
    for r in (1, 2, 3):
        round_dir = out / f"round-{r:02d}"
        summary = read_finished(round_dir, RoundRecord).record  # the round's record, read back typed
        assert summary.pairs > 0 and (round_dir / "dpo" / "final").is_dir()
        samples = [json.loads(line) for line in (round_dir / "samples.jsonl").read_text().splitlines()]
        assert len(samples) == 16 and all(len(s["scores"]) == 4 for s in samples)
        pairs = [json.loads(line) for line in (round_dir / "pairs.jsonl").read_text().splitlines()]
        assert all(p["chosen_score"] > p["rejected_score"] for p in pairs)
    dpo_cfg = (out / "round-03" / "dpo" / "config.yaml").read_text()
    assert (f"ref_model: {tiny_dir}" in dpo_cfg) == (reference == "fixed")

    round_two = json.loads((out / "round-02" / "done.json").read_text())
    # Resume: a run whose last round was not finished redoes only that round.
    (out / "round-03" / "done.json").unlink()
    import shutil

    shutil.rmtree(out / "round-03" / "dpo")
    shutil.rmtree(out / "final")
    again = IterativeDPO(cfg.model_copy(update={"overwrite": False}))
    again.judge = CallableJudge(lowercase_fraction)
    again.train()
    assert json.loads((out / "round-02" / "done.json").read_text()) == round_two
    assert (out / "round-03" / "done.json").is_file() and (out / "final").is_dir()


def test_gradient_checkpointing_leaves_online_training_as_it_was(tiny_dir, prompt_file, tmp_path):
    # Sampling runs without gradients, so the checkpointed model still decodes with its KV cache; the update
    # recomputes each layer in the backward pass. Same scores, losses and (to float rounding) weights.
    rows, finals = [], []
    for checkpointing in (False, True):
        out = tmp_path / str(checkpointing)
        cfg = GRPOConfig(**{**_common(tiny_dir, prompt_file, tmp_path), "output_dir": str(out)}, max_steps=3,
                         lr=2e-3, kl_coef=0.01, precision="fp32", gradient_checkpointing=checkpointing)
        trainer = OnlineTrainer(cfg, grpo_algorithm(cfg))
        trainer.judge = CallableJudge(first_lowercase)
        finals.append(load_causal_lm(str(trainer.train().final_dir)).state_dict())
        rows.append([json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()])
    for a, b in zip(*rows):
        for key in ("train/score", "train/loss", "train/kl"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key
    assert len({row["train/score"] for row in rows[0]}) > 1 or rows[0][0]["train/loss"] != 0
    # The same update, to rounding. Not elementwise within 1e-5: where a gradient entry is at rounding level,
    # Adam's normalised step (up to lr each) can differ between the two (measured on an AMD EPYC without bf16: 1.4e-5
    # on an entry that moved 6e-3, with every loss and grad norm equal); so each tensor's difference is held against
    # how far training moved it.
    base = load_causal_lm(tiny_dir).state_dict()
    for key, value in finals[0].items():
        moved = float((value - base[key]).norm())
        assert float((value - finals[1][key]).norm()) <= 1e-3 * moved + 1e-7, (key, moved)
