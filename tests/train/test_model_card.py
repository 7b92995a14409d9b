"""The model card in every final/: it names the run's data and who wrote it, its results and the exact command and
config, in the hub's format, and never an absolute path of the machine or a secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from alignkit.cli import main
from alignkit.train.card import add_sections, portable
from alignkit.utils.secrets import redact

SECRET = "sk-test-4f9a1c2e7b"


def read_card(final: Path) -> tuple[dict, str]:
    text = (final / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def assert_shareable(text: str, *private: str) -> None:
    for value in (SECRET, str(Path.home()), *private):
        assert value not in text, f"{value!r} in the card"
    assert "/tmp/" not in text and "/work/" not in text and "/root" not in text


def test_the_card_of_a_tiny_sft_run_names_its_data_results_and_command(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_TEST_API_KEY", SECRET)
    data = tmp_path / "demos.jsonl"
    rows = [{"prompt": f"say {i}", "completion": f"ok {i}", "origin": "human demonstration" if i % 3 else "AI revision"}
            for i in range(12)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "runs" / "sft-card"
    code = main(["sft", f"model={tiny_dir}", f"data.train={data}", "data.eval=builtin:sft_eval", "data.eval_limit=4",
                 f"output_dir={out}", "max_steps=3", "batch_size=4", "progress=false", "lr=1e-3"])
    assert code == 0
    front, body = read_card(out / "final")
    assert front["library_name"] == "transformers" and front["pipeline_tag"] == "text-generation"
    assert front["tags"] == ["alignkit", "sft"]
    assert "base_model" not in front  # a local folder has no hub name
    # The data, and who wrote it: counted from the rows' origin field; the built-in eval set is the team's.
    assert f"`<...>/{tmp_path.parent.name}/{tmp_path.name}/demos.jsonl`" in body and "human demonstration: 8, AI revision: 4" in body
    assert "`builtin:sft_eval` | people (the alignkit team; built-in dataset)" in body
    # The results of the evaluation that ran, as summary.json has them.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval"] and all(f"| {k} | {v:.4g} |" in body for k, v in summary["eval"].items())
    assert f"| lr | {summary['train']['lr']:.4g} |" in body and "| lr | 0.0000 |" not in body  # a small lr shows
    assert "3 optimizer steps" in body
    # The exact command and config, without this machine's paths.
    assert "alignkit sft model=<...>/" in body and "max_steps=3" in body
    config = yaml.safe_load(body.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert config["method"] == "sft" and config["max_steps"] == 3 and config["data"]["train"].endswith(f"/{tmp_path.name}/demos.jsonl")
    assert_shareable((out / "final" / "README.md").read_text(), str(tmp_path), tiny_dir)


def test_an_adapter_card_an_embedded_base_and_paths_under_the_working_directory(tiny_dir, tmp_path, monkeypatch):
    from alignkit.methods.sft import SFTConfig
    from alignkit.train.card import model_card

    monkeypatch.chdir(tmp_path)
    cfg = SFTConfig(model="smollm2-135m", data={"train": "data/demos.jsonl"}, output_dir=str(tmp_path / "runs" / "a"),
                    lora={"r": 4, "alpha": 8}, save_merged=False)
    card = model_card("sft", cfg, steps=2, precision="fp32", seconds=1.0, train_metrics={"loss": 1.5},
                      eval_metrics={}, adapter=True)
    front, body = card.split("---\n", 2)[1:]
    front = yaml.safe_load(front)
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and front["library_name"] == "peft"
    assert "lora" in front["tags"] and "LoRA adapter" in body and "No evaluation ran" in body
    assert "output_dir: ./runs/a" in body  # under the working directory: relative
    assert_shareable(card, str(tmp_path))


def test_secrets_are_redacted_and_urls_left_alone(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", SECRET)
    assert redact({"judge": {"http": {"api_key": SECRET, "api_key_env": "MY_SERVICE_TOKEN"}}, "password": "x"}) == {
        "judge": {"http": {"api_key": "<redacted>", "api_key_env": "MY_SERVICE_TOKEN"}}, "password": "<redacted>"}
    text = portable(f"see http://127.0.0.1:8080/v1 with {SECRET} and /home/someone/data/x.jsonl, ./rel/y")
    assert text == "see http://127.0.0.1:8080/v1 with <redacted> and <...>/someone/data/x.jsonl, ./rel/y"


def test_a_pipeline_adds_its_sections_before_reproduce():
    card = "---\ntags:\n- alignkit\n---\n\n# run\n\nbody\n\n## Reproduce\n\ncmd\n"
    out = add_sections(card, ["## Constitution\n\n- p1"], title="demo", front={"base_model": "org/m"})
    front, body = out.split("---\n", 2)[1:]
    assert yaml.safe_load(front) == {"tags": ["alignkit"], "base_model": "org/m"}
    assert body.index("## Constitution") < body.index("## Reproduce") and "\n# demo\n" in body


@pytest.mark.parametrize("method", ["grpo"])
def test_an_online_card_says_what_the_run_generated(method, tiny_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"count {i}"}) + "\n" for i in range(4)))
    out = tmp_path / "g"
    assert main([method, f"model={tiny_dir}", f"data.train={prompts}", f"output_dir={out}", "max_steps=1",
                 "prompts_per_step=2", "samples_per_prompt=2", "max_new_tokens=4", "judge=refusal", "progress=false",
                 "batch_size=4"]) == 0
    _, body = read_card(out / "final")
    assert "| during the run | responses sampled from the policy (2 per prompt), scored by the judge `refusal` | AI |" \
        in body
    assert_shareable(body, str(tmp_path))
