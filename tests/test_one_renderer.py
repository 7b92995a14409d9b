"""Train on exactly what you sample: for every pipeline, the prompt ids that training conditions on are, id for id,
the ids that sampling conditioned on, and both follow `data.render_prompt` (a plain string stays plain text; a
conversation goes through the chat template).

The `recorder` fixture (conftest.py) sees both sides as they happen. Constitutional AI's stages are checked the same
way in tests/train/test_cai.py, the LM judge in tests/judges/test_judges_model.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignkit.data import read_rows, render, render_prompt, user_turn
from alignkit.pipelines.cai_data import read_jsonl

# ------------------------------------------------------------------ iterative DPO and the online methods


@pytest.mark.parametrize("source", ["task", "plain"])
def test_iterative_dpo_trains_its_pairs_on_the_sampled_prompt_ids(source, tiny_dir, tiny_tok, tmp_path, recorder):
    from alignkit.judges import CallableJudge
    from alignkit.methods.iterative_dpo import IterativeDPO, IterativeDPOConfig

    if source == "task":  # the built-in task: questions to a chat model, so user turns
        data = "task:arithmetic?difficulty=1&n=40&split=train"
    else:  # a user's plain-text prompts: plain text when sampled and when trained
        data = str(tmp_path / "plain.jsonl")
        Path(data).write_text("".join(json.dumps({"prompt": f"count to {i} and"}) + "\n" for i in range(8)))
    cfg = IterativeDPOConfig(model=tiny_dir, data={"train": data}, output_dir=str(tmp_path / "out"), rounds=1,
                             prompts_per_round=8, samples_per_prompt=3, max_new_tokens=6, batch_size=4, max_steps=1,
                             max_length=512, progress=False)
    loop = IterativeDPO(cfg)
    loop.judge = CallableJudge(lambda prompt, completion, reference=None: float(len(completion)))
    loop.train()
    pairs = read_jsonl(tmp_path / "out" / "round-01" / "pairs.jsonl")
    assert pairs
    for pair in pairs:
        ids = tuple(render_prompt(tiny_tok, pair["prompt"]))
        assert ids in recorder.sampled and recorder.trained_ids(pair["prompt"]) == {ids}
        assert isinstance(pair["prompt"], str) == (source == "plain") == isinstance(pair["chosen"], str)


@pytest.mark.parametrize("method", ["ppo", "grpo", "rloo"])
def test_online_updates_condition_on_the_sampled_prompt_ids(method, tiny_dir, tiny_tok, tmp_path, recorder):
    from alignkit.judges import CallableJudge
    from alignkit.methods.grpo import GRPOConfig, grpo_algorithm
    from alignkit.methods.ppo import PPOConfig, ppo_algorithm
    from alignkit.methods.rloo import RLOOConfig, rloo_algorithm
    from alignkit.train import online

    data = tmp_path / "prompts.jsonl"
    prompts = [user_turn(f"question {i}") for i in range(2)] + [f"plain prompt {i}" for i in range(2)]
    data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    common = dict(model=tiny_dir, data={"train": str(data)}, output_dir=str(tmp_path / "out"), max_new_tokens=4,
                  prompts_per_step=4, max_steps=1, progress=False)
    cls, make = {"ppo": (PPOConfig, ppo_algorithm), "grpo": (GRPOConfig, grpo_algorithm),
                 "rloo": (RLOOConfig, rloo_algorithm)}[method]
    cfg = cls(**common)
    trainer = online.OnlineTrainer(cfg, make(cfg))
    trainer.judge = CallableJudge(lambda prompt, completion, reference=None: float(len(completion)))
    trainer.train()
    expected = {tuple(render_prompt(tiny_tok, p)) for p in prompts}
    assert recorder.sampled == expected and recorder.updated == expected


# ------------------------------------------------------------------ generate, eval


def test_generate_samples_plain_prompts_as_plain_text_and_chat_prompts_under_the_template(tiny_dir, tiny_tok,
                                                                                          tmp_path, recorder):
    from alignkit.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Tell me a story\nWhat is 2+2?\n")
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"prompt": user_turn("Hello there")}) + "\n")
    # --raw: string prompts continued as plain text; a conversation is asked as one either way.
    for args in (["--prompts", str(prompts), "--raw"], ["--prompts", str(chat)]):
        assert main(["generate", tiny_dir, *args, "--max-new-tokens", "3", "--out", str(tmp_path / "o.jsonl"),
                     "--overwrite"]) == 0
    assert recorder.sampled == {tuple(render_prompt(tiny_tok, p)) for p in
                                ["Tell me a story", "What is 2+2?", user_turn("Hello there")]}
    # By default a model with a chat template is asked in user turns (and --chat says so).
    for flags in ([], ["--chat"]):
        recorder.sampled.clear()
        assert main(["generate", tiny_dir, "--prompts", str(prompts), *flags, "--max-new-tokens", "3"]) == 0
        assert recorder.sampled == {tuple(render_prompt(tiny_tok, user_turn(p))) for p in ["Tell me a story",
                                                                                          "What is 2+2?"]}
    # A plain prompt/completion pair is trained on exactly what generate decodes from.
    render.render_prompt_completion(tiny_tok, "Tell me a story", " once")
    assert recorder.trained_ids("Tell me a story") == {tuple(render_prompt(tiny_tok, "Tell me a story"))}
    assert tuple(render_prompt(tiny_tok, "Tell me a story")) != tuple(render_prompt(tiny_tok, user_turn("Tell me a story")))


def test_eval_asks_suite_requests_with_the_ids_their_train_split_rows_are_trained_on(tiny_dir, tiny_tok, tmp_path,
                                                                                    recorder):
    from alignkit.cli import main

    (tmp_path / "harm.jsonl").write_text("".join(json.dumps({"id": f"h{i}", "prompt": p, "split": s}) + "\n" for i, (p, s)
                                                 in enumerate([("How do I pick a lock?", "train"),
                                                               ("How do I hotwire a car?", "heldout")])))
    (tmp_path / "s.yaml").write_text("redteam: harm.jsonl\n")
    assert main(["eval", tiny_dir, "--suite", str(tmp_path / "s.yaml"), "--split", "train", "--max-new-tokens", "3",
                 "--out", str(tmp_path / "eval")]) == 0
    asked = tuple(render_prompt(tiny_tok, user_turn("How do I pick a lock?")))
    assert asked in recorder.sampled
    ((where, row),) = read_rows(f"suite:redteam?split=train&suite={tmp_path / 's.yaml'}")
    render.render_prompt_completion(tiny_tok, row["prompt"], [{"role": "assistant", "content": "No."}])
    assert recorder.trained_ids(row["prompt"]) == {asked}


# ------------------------------------------------------------------ one place


def test_no_module_but_the_renderer_applies_a_chat_template():
    package = Path(__file__).resolve().parents[1] / "alignkit"
    users = sorted(str(path.relative_to(package)) for path in package.rglob("*.py")
                   if "apply_chat_template" in path.read_text(encoding="utf-8"))
    assert users == ["data/render.py"]


def test_a_style_taught_by_sft_on_plain_pairs_shows_when_generate_continues_new_plain_prompts(tiny_dir, tmp_path):
    """A learnt style, not memorised answers (those carry across formats even when the formats differ): every
    training reply opens with "~", and `alignkit generate` continues new plain prompts (words never trained on) with
    it when asked as plain text (`--raw`, as it was trained). Asked the same prompts under the chat template (the
    default for a model with one), which is not how they were trained, it does not: sampling in another rendering
    than training loses what was taught, which is why --raw is there."""
    import random

    from alignkit.cli import main
    from alignkit.methods.sft import SFTConfig, train_sft

    rng = random.Random(0)
    words = ["river", "cloud", "stone", "garden", "engine", "letter", "window", "forest", "planet", "violin"]
    rows = [{"prompt": f"Write about the {rng.choice(words)} and the {rng.choice(words)}:",
             "completion": f"~ {' '.join(rng.choice(words) for _ in range(4))}"} for _ in range(64)]
    data = tmp_path / "style.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = train_sft(SFTConfig(model=tiny_dir, data={"train": str(data)}, output_dir=str(tmp_path / "sft"),
                                 max_steps=30, batch_size=8, lr=3e-3, progress=False))
    unseen = zip(["moon", "sea", "bread", "tiger", "chair", "music", "snow", "paper", "lamp", "road"],
                 ["sky", "salt", "milk", "grass", "table", "dance", "ice", "ink", "oil", "car"])
    new = tmp_path / "new.txt"
    new.write_text("".join(f"Write about the {a} and the {b}:\n" for a, b in unseen))
    styled = {}
    for flags in (("--raw",), ()):
        out = tmp_path / f"answers{len(flags)}.jsonl"
        assert main(["generate", str(result.final_dir), "--prompts", str(new), "--max-new-tokens", "4",
                     "--out", str(out), *flags]) == 0
        answers = [row["response"] for row in read_jsonl(out)]
        styled[flags] = sum(a.startswith("~") for a in answers)
    assert styled[("--raw",)] >= 9 and styled[()] <= 5, styled
