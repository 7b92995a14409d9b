"""The model card (`README.md`) every `final/` carries: what the model is, made from what, by whom, and how well.

The card follows the Hugging Face hub's format: YAML front matter (base model, library, tags, hub datasets) and a
Markdown body with the data and who wrote it, the training settings, the evaluation results when an evaluation ran,
and the exact command and config that reproduce the run. It is written into `final/` with the weights, in the same
atomic step.

Who wrote the data is read from the data itself where it is recorded: built-in datasets are written by people (the
alignkit team); a row's `origin` field (the Constitutional AI stages write one: "AI revision", "human
demonstration", "AI label", ...) is counted per file; online methods add the responses the policy sampled during the
run and what scored them. A card is meant to be shared, so it never holds an absolute path of the machine (paths are
written relative to the working directory or `$ALIGNKIT_HOME`, else by their last three parts) or a secret (keys named like
`api_key`, `token`, `secret` or `password`, and the values of such environment variables, are replaced).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

import alignkit
from alignkit.data.sources import BUILTIN_PREFIX
from alignkit.models.loading import EMBEDDED, _looks_like_hub_id, alignkit_home
from alignkit.utils.io import jsonl_lines
from alignkit.utils.secrets import redact, redact_env

# An absolute path inside free text: a "/" not preceded by a word character, ":" or "/" (so URLs are left alone).
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~$>])/(?:[^\s/'\"`|,;)\]]+/)*[^\s/'\"`|,;)\]]+")

_command: list[str] | None = None


def record_command(argv: list[str]) -> None:
    """The command line this process runs (the CLI calls this); the card's "reproduce" section shows it."""
    global _command
    _command = list(argv)


def portable(text: str) -> str:
    """`text` with every absolute path of this machine made relative (to the working directory or $ALIGNKIT_HOME),
    or else cut to its last three parts, and with the values of secret environment variables replaced."""
    text = redact_env(text)
    prefixes = [(str(Path.cwd().resolve()), "."), (str(alignkit_home().resolve()), "$ALIGNKIT_HOME")]
    for prefix, short in sorted(prefixes, key=lambda p: -len(p[0])):
        text = re.sub(re.escape(prefix) + r"(?=/|\b)", short, text)
    # What is left is outside both: only its last three parts are kept (enough to tell `4-sl/run/final` apart).
    return _ABSOLUTE_PATH.sub(lambda m: "<...>/" + "/".join(m.group(0).split("/")[-3:]), text)


def _authors(spec: str | None) -> str:
    """Who wrote a data source, from what it records."""
    if spec is None:
        return ""
    if spec.startswith(BUILTIN_PREFIX):
        return "people (the alignkit team; built-in dataset)"
    path = Path(spec)
    if path.is_file() and path.suffix in (".jsonl", ".json"):
        try:
            text = path.read_text(encoding="utf-8")
            rows = ([json.loads(line) for line in jsonl_lines(text) if line.strip()] if path.suffix == ".jsonl"
                    else json.loads(text))
        except (OSError, ValueError):
            rows = []
        origins = Counter(r.get("origin") for r in rows if isinstance(r, dict) and r.get("origin"))
        if origins:
            return ", ".join(f"{origin}: {count}" for origin, count in origins.most_common())
    if path.exists():
        return "not recorded in the data (a file given to the run)"
    return "the dataset's authors (hub dataset)" if "/" in spec and not spec.startswith((".", "/")) else "not recorded"


def _base_model(spec: str) -> str | None:
    """The base model as the hub names it, when it has a hub name."""
    if spec in EMBEDDED:
        return EMBEDDED[spec].hub_id
    return spec if _looks_like_hub_id(spec) and not Path(spec).exists() else None


def _version() -> str:
    return alignkit.__version__


def _table(metrics: dict[str, Any]) -> list[str]:
    rows = ["| metric | value |", "|---|---|"]
    rows += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    return rows


def model_card(method: str, cfg, *, steps: int, precision: str, seconds: float, train_metrics: dict,
               eval_metrics: dict, adapter: bool, generated: str | None = None) -> str:
    """The card of a training run's final model. `generated`: what the run itself produced and trained on (online
    methods: the sampled responses and what scored them)."""
    data = cfg.data
    base = _base_model(cfg.model)
    hub_datasets = [s for s in (data.train, data.eval) if s and _authors(s).startswith("the dataset's authors")]
    front = {
        **({"base_model": base} if base else {}),
        "library_name": "peft" if adapter else "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["alignkit", method] + (["lora"] if cfg.lora is not None else []),
        **({"datasets": hub_datasets} if hub_datasets else {}),
    }
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {Path(cfg.output_dir).name}", "",
             f"Trained with alignkit {_version()}, method `{method}`, from `{cfg.model}`"
             + (f" ({base})" if base and base != cfg.model else "") + "."
             + (" This folder holds a LoRA adapter; `alignkit export` or PEFT merges it into its base." if adapter
                else ""), "",
             "## Data", "", "| split | source | written by |", "|---|---|---|",
             f"| train | `{data.train}` | {_authors(data.train)} |"]
    if data.eval:
        lines.append(f"| eval | `{data.eval}` | {_authors(data.eval)} |")
    if generated:
        lines.append(f"| during the run | {generated} | AI |")
    lines += ["", "## Training", "",
              f"{steps} optimizer steps in {seconds:.0f} s, {precision}, lr {cfg.lr}, seed {cfg.seed}"
              + (f", LoRA r={cfg.lora.r} alpha={cfg.lora.alpha}" if cfg.lora is not None else "") + ".", ""]
    if train_metrics:
        lines += ["Last training step:", "", *_table(train_metrics), ""]
    lines += ["## Evaluation", ""]
    lines += (["On the run's eval split after training:", "", *_table(eval_metrics), ""] if eval_metrics
              else ["No evaluation ran in this run (`alignkit eval` measures the model on the held-out suite).", ""])
    command = " ".join(_command) if _command else "not recorded (trained from Python, not the command line)"
    config = yaml.safe_dump({"method": method, **redact(cfg.model_dump(mode="json"))}, sort_keys=False)
    lines += ["## Reproduce", "", "```", command, "```", "", "Config:", "", "```yaml", config.strip(), "```", ""]
    return portable("\n".join(lines))


def add_sections(card: str, sections: list[str], *, title: str | None = None, front: dict | None = None) -> str:
    """`card` with Markdown `sections` inserted before its "Reproduce" section, its title and front matter updated:
    a pipeline adds what it knows to the card of the run whose model it hands on."""
    _, header, body = card.split("---\n", 2)
    matter = {**yaml.safe_load(header), **(front or {})}
    if title is not None:
        body = re.sub(r"^\n# .*$", f"\n# {title}", body, count=1, flags=re.MULTILINE)
    head, marker, tail = body.partition("\n## Reproduce\n")
    body = head.rstrip() + "\n\n" + "\n\n".join(s.strip() for s in sections) + "\n" + marker + tail
    return portable(f"---\n{yaml.safe_dump(matter, sort_keys=False)}---\n{body}")
