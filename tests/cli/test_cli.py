"""The command line: training commands, config errors, generate and chat."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from alignkit.cli import main


def test_train_command_with_overrides_writes_final_model(tiny_dir, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(8)))
    out = tmp_path / "run"
    code = main(["sft", f"model={tiny_dir}", f"data.train={data}", f"output_dir={out}", "max_steps=2",
                 "precision=fp32", "progress=false"])
    assert code == 0
    stdout = capsys.readouterr().out
    summary = json.loads(stdout[stdout.rindex('{\n  "final"'):])
    assert summary["steps"] == 2 and summary["final"] == str(out / "final")
    assert (out / "final" / "config.json").is_file() and (out / "final" / "tokenizer.json").is_file()
    assert (out / "final" / "chat_template.jinja").is_file() or "chat_template" in (
        out / "final" / "tokenizer_config.json").read_text()


def test_unknown_key_exits_2_with_the_valid_keys(tmp_path, capsys):
    code = main(["dpo", f"output_dir={tmp_path}", "data.train=x.jsonl", "bta=0.1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown key 'bta'" in err and "beta" in err


def test_bad_data_exits_2_naming_file_line_and_field(tiny_dir, tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}) + "\n"
                    + json.dumps({"prompt": "p", "chosen": 3, "rejected": "r"}) + "\n")
    code = main(["dpo", f"model={tiny_dir}", f"data.train={data}", f"output_dir={tmp_path / 'run'}", "progress=false"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{data}:2" in err and "'chosen'" in err


def test_generate_is_deterministic_and_refuses_to_overwrite(tiny_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello\n" + json.dumps({"prompt": [{"role": "user", "content": "hi"}]}) + "\n\nbye\n")
    outs = []
    for name in ("a.jsonl", "b.jsonl"):
        out = tmp_path / name
        assert main(["generate", tiny_dir, "--prompts", str(prompts), "--out", str(out), "--max-new-tokens", "8"]) == 0
        outs.append([json.loads(line) for line in out.read_text().splitlines()])
    assert outs[0] == outs[1]
    # The tiny model has a chat template: each prompt is asked as a conversation, and written as asked.
    assert [row["prompt"] for row in outs[0]] == [[{"role": "user", "content": text}] for text in ("hello", "hi", "bye")]
    assert all(isinstance(row["response"], str) for row in outs[0])
    before = (tmp_path / "a.jsonl").read_text()
    capsys.readouterr()
    # Refused as every command refuses what it was given: `alignkit X: error: ...`, exit status 2.
    assert main(["generate", tiny_dir, "--prompts", str(prompts), "--out", str(tmp_path / "a.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "alignkit generate: error:" in err and "exists; pass --overwrite" in err
    assert (tmp_path / "a.jsonl").read_text() == before


def test_generate_reports_a_malformed_prompt_line(tiny_dir, tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "ok"}\n{"prompt": \n')
    assert main(["generate", tiny_dir, "--prompts", str(prompts)]) == 2
    assert f"alignkit generate: error: {prompts}:2" in capsys.readouterr().err


def test_chat_answers_each_line_and_quits(tiny_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "alignkit.cli", "chat", tiny_dir, "--max-new-tokens", "4"],
        input="hello\n/reset\nagain\n/exit\n", capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("model> ") == 2


def test_chat_streams_the_reply_it_would_give_in_one_piece(tiny_dir):
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.rollouts import SamplingSettings, generate, stream

    tokenizer, model = load_tokenizer(tiny_dir), load_causal_lm(tiny_dir)
    conversation = [{"role": "user", "content": "hello there"}]
    pieces: list[str] = []
    greedy = SamplingSettings(max_new_tokens=12, temperature=0.0)
    reply = stream(model, tokenizer, conversation, pieces.append, greedy).text
    assert len(pieces) > 1, "the reply came in one piece: nothing was streamed"
    assert "".join(pieces).strip() == reply
    assert reply == generate(model, tokenizer, [conversation], greedy).texts[0]

    proc = subprocess.run([sys.executable, "-m", "alignkit.cli", "chat", tiny_dir, "--max-new-tokens", "12"],
                          input="hello there\n/exit\n", capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"model> {reply}\n" in proc.stdout


def test_generate_asks_a_chat_model_as_a_conversation_unless_raw(tiny_dir, tmp_path):
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.rollouts import SamplingSettings, generate

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello there\n")
    tokenizer, model = load_tokenizer(tiny_dir), load_causal_lm(tiny_dir)
    greedy = SamplingSettings(max_new_tokens=8, temperature=0.0)
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]
    expected = {"default": ([{"role": "user", "content": "hello there"}], []), "raw": ("hello there", ["--raw"]),
                "system": (system, ["--system", "Be brief."])}
    for name, (prompt, flags) in expected.items():
        out = tmp_path / f"{name}.jsonl"
        assert main(["generate", tiny_dir, "--prompts", str(prompts), "--out", str(out), "--max-new-tokens", "8",
                     *flags]) == 0
        row = json.loads(out.read_text())
        assert row["prompt"] == prompt, name
        assert row["response"] == generate(model, tokenizer, [prompt], greedy).texts[0], name
    assert main(["generate", tiny_dir, "--prompts", str(prompts), "--raw", "--system", "x"]) == 2


def test_generate_and_chat_help_show_the_defaults(capsys):
    for command in ("generate", "chat"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--top-p" in text and "--system" in text and "(default: 0.0)" in text, command


def test_chat_marks_a_reply_cut_at_the_token_limit(tiny_dir):
    proc = subprocess.run([sys.executable, "-m", "alignkit.cli", "chat", tiny_dir, "--max-new-tokens", "3"],
                          input="hello there\n/exit\n", capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[cut at 3 tokens: --max-new-tokens]" in proc.stdout


def test_ctrl_c_in_chat_stops_the_reply_and_the_chat_goes_on(tiny_dir):
    """A real SIGINT to a real `alignkit chat` in the middle of a long reply: the reply stops, the prompt comes
    back, the next line is answered, and there is no traceback."""
    proc = subprocess.Popen([sys.executable, "-u", "-m", "alignkit.cli", "chat", tiny_dir, "--max-new-tokens",
                             "100000", "--temperature", "1.0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=0)
    try:
        proc.stdin.write("tell me a long story\n")
        proc.stdin.flush()
        seen = ""
        while "model> " not in seen or len(seen.split("model> ", 1)[1]) < 20:  # the reply is being streamed
            piece = proc.stdout.read(1)
            assert piece, proc.stderr.read()[-2000:]
            seen += piece
        proc.send_signal(signal.SIGINT)
        proc.stdin.write("/exit\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert " [stopped]\nyou> " in seen + out and "Traceback" not in err and "KeyboardInterrupt" not in err


def test_help_lists_every_command_on_one_line_and_each_commands_keys(capsys):
    import pytest

    from alignkit.methods import METHODS

    with pytest.raises(SystemExit):
        main(["--help"])
    lines = capsys.readouterr().out.splitlines()
    commands = [*METHODS, "cai", "compare", "prepare", "export", "generate", "chat", "eval", "report", "constitution",
                "demo"]
    for command in commands:
        line = next((ln for ln in lines if ln.split()[:1] == [command]), None)
        assert line is not None and len(line.split()) > 1, f"{command}: no one-line summary in --help"

    with pytest.raises(SystemExit):
        main(["dpo", "--help"])
    text = capsys.readouterr().out
    rows = {ln.split()[0]: ln.split(maxsplit=2)[1:] for ln in text.splitlines() if ln.startswith("  ") and ln.split()}
    assert rows["beta"][0] == "0.1" and "KL" in rows["beta"][1]
    assert rows["loss"][0] == "sigmoid" and rows["lora.r"][0] == "16" and rows["data.train"][0] == "(required)"
    assert "AdamW" in rows["lr"][1] and rows["lr"][0] == "5e-06"  # DPO's own default, its parent's meaning
    with pytest.raises(SystemExit):
        main(["cai", "--help"])
    assert "feedback.sft.KEY" in capsys.readouterr().out


def test_a_run_says_where_its_outputs_go_and_how_to_evaluate_it(tiny_dir, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(4)))
    out = tmp_path / "run"
    assert main(["sft", f"model={tiny_dir}", f"data.train={data}", f"output_dir={out}", "max_steps=1",
                 "progress=false"]) == 0
    err = capsys.readouterr().err
    assert f"-> {out}/ (config.yaml, metrics.jsonl" in err
    command = err.strip().splitlines()[-1]
    assert command == f"evaluate it: alignkit eval base={tiny_dir} sft={out / 'final'} --out {out / 'eval'}"


def test_eval_runs_parts_and_a_limited_sample_of_the_suite(tiny_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", f"tiny={tiny_dir}", "--parts", "redteam,borderline", "--limit", "4", "--out", str(out),
                 "--max-new-tokens", "4"]) == 0
    results = json.loads((out / "results.json").read_text())
    text = json.dumps(results)
    assert "default (parts redteam,borderline; at most 4 per part)" in text
    metrics = json.loads(capsys.readouterr().out)["metrics"]["tiny"]
    assert "asr" in metrics and "over_refusal" in metrics and "jailbreak_asr" not in metrics
    rows = [json.loads(line) for line in next((out / "responses").glob("*.jsonl")).read_text().splitlines()]
    assert len(rows) == 8


def test_a_command_writing_to_a_log_shows_no_library_bars(tiny_dir, tmp_path):
    """Away from a terminal (a log, a pipe) transformers' loading bar is not drawn, as alignkit's own bars are not."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    done = subprocess.run([sys.executable, "-m", "alignkit.cli", "generate", tiny_dir, "--prompts", str(prompts),
                           "--max-new-tokens", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["prompt"] and "Loading weights" not in done.stderr, done.stderr


def test_a_quiet_run_shows_no_library_bars_saves_readable_weights_and_a_failed_one_leaves_no_trace(tiny_dir,
                                                                                                   tmp_path):
    import os
    import stat

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(8)))
    command = [sys.executable, "-m", "alignkit.cli", "sft", f"model={tiny_dir}", f"data.train={data}",
               "max_steps=1", "progress=false"]
    quiet = subprocess.run(command + [f"output_dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=300,
                           preexec_fn=lambda: os.umask(0o022))
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "Loading weights" not in quiet.stderr and "Writing model shards" not in quiet.stderr
    assert stat.S_IMODE((tmp_path / "run" / "final" / "model.safetensors").stat().st_mode) == 0o644

    failed = subprocess.run(command + [f"output_dir={tmp_path / 'failed'}", "batch_size=16"], capture_output=True,
                            text=True, timeout=300)
    assert failed.returncode == 2 and "fewer than one optimizer step" in failed.stderr
    assert not (tmp_path / "failed").exists(), "a run that never began leaves no folder holding only its lock"
    assert "->" not in failed.stderr, "nor does it say where outputs it never writes go"


def test_the_next_command_after_a_run_of_every_command_that_trains():
    """After a run the command line says how to measure what it made: a policy is evaluated, a scorer is trained
    against; `alignkit cai` is no method of the table and gets the evaluation (a KeyError once)."""
    from pathlib import Path

    from alignkit.cli import _next_command
    from alignkit.methods import METHODS

    for name in [*METHODS, "cai"]:
        said = _next_command(name, "start", Path("runs/x/final"))
        assert said.startswith("use it: alignkit ppo" if name == "reward" else "evaluate it: alignkit eval"), name
