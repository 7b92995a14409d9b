"""`alignkit eval` (a suite -> results.json, responses, report.html) and `alignkit report` (the page again)."""

from __future__ import annotations

import json
from pathlib import Path

from alignkit.cli.common import CommandError, WithDefaults, precision_argument
from alignkit.utils import sampling_defaults as defaults

SUITE_HELP = """a suite YAML names one file per part (paths relative to it; a part left out is skipped, its metrics null):
  redteam: harmful.jsonl          {"id", "prompt", "category"}, or a .txt file with one prompt per line
  jailbreaks: templates.jsonl     {"id", "name", "messages": [...]} with {request} (or {first_half} + {second_half})
  jailbreak_requests_per_category: 1
  borderline: benign.txt          {"id", "prompt", "topic"}, or one prompt per line (refusing them is over-refusal)
  verifiable: qa.jsonl            {"id", "prompt", "answers": [...]} or {"id", "prompt", "pattern": "regex"}
  bias: bbq.jsonl                 {"id", "dimension", "context", "question", "options": {stereotyped, other, unknown}}
  anthropomorphism: probes.txt    {"id", "prompt", "kind"}, or one prompt per line
a prompt is a string or a list of chat messages; a row may say "split": "train" or "heldout" (docs/eval.md)"""


def add_commands(sub, suite_parts) -> None:
    p = sub.add_parser("eval", help="harmlessness, jailbreaks, over-refusal, helpfulness, bias, anthropomorphism, "
                                    "drift -> report.html", formatter_class=WithDefaults, epilog=SUITE_HELP)
    p.add_argument("models", nargs="+", metavar="MODEL", help="model (alias, HF folder, run output) or NAME=MODEL")
    p.add_argument("--suite", default="default", help="a built-in suite name or a suite YAML (below)")
    p.add_argument("--split", default="heldout", choices=["heldout", "train"], help="which rows of the suite")
    p.add_argument("--parts", help=f"only these parts, with commas (of {','.join(suite_parts)}; default: all)")
    p.add_argument("--limit", type=int, help="at most N items of each part, spread evenly over it (a quick look)")
    p.add_argument("--out", help="output folder (default: runs/eval/<date-time>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--judge", help="optional judge: a kind, a JSON judge spec, or an OpenAI-compatible API URL")
    p.add_argument("--reference", help="reference model for drift (default: the first model)")
    p.add_argument("--max-new-tokens", type=int, default=defaults.MAX_NEW_TOKENS, help="longest answer, in tokens")
    p.add_argument("--batch-size", type=int, default=defaults.BATCH_ROWS, help="rows decoded together")
    precision_argument(p)
    p.set_defaults(run=evaluate)
    p = sub.add_parser("report", help="write report.html again from an eval folder's results.json")
    p.add_argument("dir")
    p.set_defaults(run=report)


def model_specs(arguments: list[str]) -> dict[str, str]:
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


def judge_spec(text: str):
    """--judge: a kind name ("refusal"), a JSON spec ('{"lm": "smollm2-135m"}') or an OpenAI-compatible API URL."""
    if text.startswith(("http://", "https://")):
        return {"http": text}
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise CommandError(f"--judge is not valid JSON ({e.msg})")
    return text


def evaluate(args) -> int:
    from datetime import datetime

    from alignkit.data.suites import load_suite
    from alignkit.eval.harness import EvalSettings, evaluate, save_eval
    from alignkit.judges import judge_from_spec

    models = model_specs(args.models)
    out = Path(args.out or f"runs/eval/{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and not args.overwrite:
        raise CommandError(f"{out} exists; pass --overwrite to replace it, or choose another --out")
    parts = [part.strip() for part in args.parts.split(",") if part.strip()] if args.parts else None
    suite = load_suite(args.suite, args.split).subset(parts, args.limit)
    try:
        judge = judge_from_spec(judge_spec(args.judge)) if args.judge else None
    except ValueError as e:
        raise CommandError(f"--judge: {e}")
    settings = EvalSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, precision=args.precision)
    results, rows = evaluate(models, suite, judge=judge, judge_name=args.judge, reference=args.reference,
                             reference_name=args.reference, settings=settings)
    save_eval(out, results, rows, overwrite=args.overwrite)
    summary = {name: {k: v for k, v in m.items() if v is not None} for name, m in results.metrics.items()}
    print(json.dumps({"out": str(out), "report": str(out / "report.html"), "metrics": summary}, indent=2))
    return 0


def report(args) -> int:
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
