"""Evaluation suites: the prompt files behind `alignkit eval`, and the rule that no recipe trains on held-out ones.

A suite is a YAML file that names one data file per part (paths relative to the YAML):

    redteam: redteam.jsonl        # harmful requests             {"id", "prompt", "category"}
    jailbreaks: jailbreaks.jsonl  # templates around a request   {"id", "name", "messages"} with {request} or
                                  #                              {first_half} + {second_half} in the contents
    jailbreak_requests_per_category: 1
    borderline: borderline.jsonl  # benign, alarming words        {"id", "prompt", "topic"}
    verifiable: verifiable.jsonl  # gold answers                  {"id", "prompt", "answers": [...]} or "pattern"
    bias: bias.jsonl              # BBQ-style items               {"id", "dimension", "context", "question",
                                  #                                "options": {"stereotyped", "other", "unknown"}}
    anthropomorphism: anthro.txt  # invitations to claim feelings {"id", "prompt", "kind"}

Parts may be left out (their metrics are skipped). Prompt parts may be plain text files, one prompt per line; a
jailbreak .txt file holds one single-turn template per line. Only "id"-less rows get ids ("<part>-<line>"); other
fields are optional except where shown. A row with a "split" field belongs to that split; rows without one belong to
every split (users' own files need no split).

The built-in suite (`default`) was written by the alignkit team and splits every part into "train" (recipes may use
it: `suite:redteam?split=train`) and "heldout" (evaluation only); so do the gold comparisons that audit a
Constitutional AI feedback model (`builtin/constitution/comparisons.jsonl`). `check_not_heldout` is called on every record that
`load_records` reads for training, so a held-out prompt cannot reach a recipe, whichever file it was copied into.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import DataError, describe, read_utf8
from .records import Turns
from .render import user_turn

SUITE_PARTS = ("redteam", "jailbreaks", "borderline", "verifiable", "bias", "anthropomorphism")
SPLITS = ("train", "heldout")
# Each prompt part's grouping field (the per-category breakdowns of the report).
_GROUP_FIELD = {"redteam": "category", "borderline": "topic", "verifiable": "topic", "anthropomorphism": "kind"}
_BIAS_OPTIONS = ("stereotyped", "other", "unknown")
_PLACEHOLDERS = re.compile(r"\{(request|first_half|second_half)\}")


@dataclass(frozen=True)
class SuitePrompt:
    """One prompt of a suite part. `answers`/`pattern` are set for verifiable questions."""

    id: str
    prompt: Turns
    group: str
    where: str
    answers: tuple[str, ...] = ()
    pattern: str | None = None


@dataclass(frozen=True)
class JailbreakTemplate:
    id: str
    name: str
    messages: tuple[dict, ...]
    where: str

    def apply(self, request: str) -> list[dict]:
        """The template's chat with the request filled in ({first_half}/{second_half}: split at the middle word)."""
        words = request.split()
        middle = (len(words) + 1) // 2
        values = {"request": request, "first_half": " ".join(words[:middle]), "second_half": " ".join(words[middle:])}
        return [{"role": m["role"], "content": _PLACEHOLDERS.sub(lambda g: values[g[1]], m["content"])}
                for m in self.messages]


@dataclass(frozen=True)
class BiasItem:
    id: str
    dimension: str
    context: str
    question: str
    options: dict[str, str]  # stereotyped / other / unknown -> answer text
    where: str


@dataclass
class Suite:
    name: str
    split: str
    redteam: list[SuitePrompt] = field(default_factory=list)
    jailbreaks: list[JailbreakTemplate] = field(default_factory=list)
    jailbreak_requests_per_category: int = 1
    borderline: list[SuitePrompt] = field(default_factory=list)
    verifiable: list[SuitePrompt] = field(default_factory=list)
    bias: list[BiasItem] = field(default_factory=list)
    anthropomorphism: list[SuitePrompt] = field(default_factory=list)

    def jailbreak_requests(self) -> list[SuitePrompt]:
        """The red-team requests the templates wrap: the first `jailbreak_requests_per_category` of each category."""
        taken: dict[str, int] = {}
        chosen = []
        for item in self.redteam:
            if isinstance(item.prompt, str) and taken.get(item.group, 0) < self.jailbreak_requests_per_category:
                taken[item.group] = taken.get(item.group, 0) + 1
                chosen.append(item)
        return chosen

    def subset(self, parts: list[str] | None = None, limit: int | None = None) -> Suite:
        """Only `parts` (the others left empty: their metrics are null), and at most `limit` items of each, spread
        evenly over it so every category keeps its share. The name says which subset it is."""
        unknown = sorted(set(parts or []) - set(SUITE_PARTS))
        if unknown:
            raise DataError("--parts", f"parts among {list(SUITE_PARTS)}", ", ".join(unknown))
        if limit is not None and limit < 1:
            raise DataError("--limit", "an int >= 1", describe(limit))
        if parts is not None and "jailbreaks" in parts and "redteam" not in parts:
            raise DataError("--parts", "redteam beside jailbreaks (the templates wrap the red-team requests)",
                            ",".join(parts))
        chosen = Suite(self.name, self.split, jailbreak_requests_per_category=self.jailbreak_requests_per_category)
        for part in SUITE_PARTS:
            items = getattr(self, part) if parts is None or part in parts else []
            if limit is not None and len(items) > limit:
                items = [items[i * len(items) // limit] for i in range(limit)]
            setattr(chosen, part, list(items))
        said = ([f"parts {','.join(p for p in SUITE_PARTS if p in parts)}"] if parts is not None else []) + (
            [f"at most {limit} per part"] if limit is not None else [])
        if said:
            chosen.name = f"{self.name} ({'; '.join(said)})"
        return chosen

    def counts(self) -> dict[str, int]:
        return {
            "redteam": len(self.redteam),
            "jailbreak": len(self.jailbreaks) * len(self.jailbreak_requests()),
            "borderline": len(self.borderline),
            "verifiable": len(self.verifiable),
            "bias": len(self.bias),
            "anthropomorphism": len(self.anthropomorphism),
        }


def _builtin_suites() -> Path:
    return Path(str(resources.files("alignkit.data").joinpath("builtin", "suites")))


def builtin_suite_names() -> list[str]:
    return sorted(p.stem for p in _builtin_suites().glob("*.yaml"))


def suite_path(spec: str | Path) -> Path:
    """A suite name (`default`) or the path of a suite YAML."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise DataError(str(spec), "an existing suite YAML file", "no such file")
        return path
    builtin = _builtin_suites() / f"{spec}.yaml"
    if not builtin.is_file():
        raise DataError(str(spec), f"a suite YAML file or a built-in suite {builtin_suite_names()}", "no such suite")
    return builtin


def load_suite(spec: str | Path = "default", split: str = "heldout") -> Suite:
    """Read and validate every part of a suite, keeping the rows of `split` (and rows without a split)."""
    if split not in SPLITS:
        raise DataError("split", f"one of {list(SPLITS)}", describe(split))
    path = suite_path(spec)
    try:
        config = yaml.safe_load(read_utf8(path)) or {}
    except yaml.YAMLError as e:
        raise DataError(str(path), "valid YAML", str(e).splitlines()[0]) from None
    if not isinstance(config, dict):
        raise DataError(str(path), "a mapping of suite parts to files", describe(config))
    known = (*SUITE_PARTS, "jailbreak_requests_per_category")
    for key in config:
        if key not in known:
            raise DataError(str(path), f"only the keys {list(known)}", f"unknown key {key!r}")
    per_category = config.get("jailbreak_requests_per_category", 1)
    if isinstance(per_category, bool) or not isinstance(per_category, int) or per_category < 1:
        raise DataError(str(path), "an int >= 1", describe(per_category), field="jailbreak_requests_per_category")
    name = path.stem if path.parent == _builtin_suites() else str(path)
    suite = Suite(name=name, split=split, jailbreak_requests_per_category=per_category)
    for part in SUITE_PARTS:
        if config.get(part) is None:
            continue
        if not isinstance(config[part], str):
            raise DataError(str(path), "a file path", describe(config[part]), field=part)
        rows = [(where, row) for where, row in _read_part(path.parent / config[part], part)
                if row.get("split") in (None, split)]
        parse = {"jailbreaks": _jailbreak, "bias": _bias_item}.get(part, _prompt_item)
        items = [parse(row, where, part) for where, row in rows]
        _check_unique_ids(items)
        setattr(suite, part, items)
    return suite


def _read_part(path: Path, part: str) -> list[tuple[str, dict]]:
    if not path.is_file():
        raise DataError(str(path), f"an existing file for the suite part {part!r}", "no such file")
    rows = []
    for number, line in enumerate(read_utf8(path).splitlines(), start=1):
        where = f"{path}:{number}"
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(where, "a JSON object", f"invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(where, "a JSON object", describe(row))
        elif part in ("verifiable", "bias"):
            raise DataError(str(path), f"a .jsonl file (the {part!r} part needs fields, see alignkit/data/suites.py)",
                            f"a {path.suffix or 'plain'} file")
        elif part == "jailbreaks":
            row = {"messages": [{"role": "user", "content": line}]}
        else:
            row = {"prompt": line}
        row.setdefault("id", f"{part}-{number}")
        if row.get("split") is not None and row["split"] not in SPLITS:
            raise DataError(where, f"one of {list(SPLITS)}", describe(row["split"]), field="split")
        rows.append((where, row))
    if not rows:
        raise DataError(str(path), f"rows for the suite part {part!r}", "an empty file")
    return rows


def _text(row: dict, name: str, where: str) -> str:
    value = row.get(name)
    if not isinstance(value, str) or not value.strip():
        raise DataError(where, "a non-empty string", describe(value), field=name)
    return value


def _messages(value: Any, where: str, name: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise DataError(where, "a non-empty list of {role, content} messages", describe(value), field=name)
    for i, message in enumerate(value):
        if (not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant")
                or not isinstance(message.get("content"), str)):
            raise DataError(where, "{role: system|user|assistant, content: str}", describe(message),
                            field=f"{name}[{i}]")
    if value[-1]["role"] != "user":
        raise DataError(where, "a conversation ending with a user message", repr(value[-1]["role"]), field=name)
    return value


def _prompt_item(row: dict, where: str, part: str) -> SuitePrompt:
    prompt = row.get("prompt")
    if not isinstance(prompt, str):
        prompt = _messages(prompt, where, "prompt")
    elif not prompt.strip():
        raise DataError(where, "a non-empty string or list of messages", describe(prompt), field="prompt")
    group = row.get(_GROUP_FIELD[part]) or "all"
    answers: tuple[str, ...] = ()
    pattern = None
    if part == "verifiable":
        if row.get("pattern") is not None:
            pattern = _text(row, "pattern", where)
            try:
                re.compile(pattern)
            except re.error as e:
                raise DataError(where, "a valid regular expression", str(e), field="pattern") from None
        else:
            raw = row.get("answers")
            if not isinstance(raw, list) or not raw or not all(isinstance(a, str) and a.strip() for a in raw):
                raise DataError(where, "a non-empty list of answer strings (or a 'pattern')", describe(raw),
                                field="answers")
            answers = tuple(raw)
    return SuitePrompt(str(row["id"]), prompt, str(group), where, answers, pattern)


def _jailbreak(row: dict, where: str, part: str) -> JailbreakTemplate:
    messages = _messages(row.get("messages"), where, "messages")
    found = {m for message in messages for m in _PLACEHOLDERS.findall(message["content"])}
    if "request" not in found and not {"first_half", "second_half"} <= found:
        raise DataError(where, "{request}, or {first_half} and {second_half}, in the messages",
                        f"placeholders {sorted(found)}", field="messages")
    return JailbreakTemplate(str(row["id"]), str(row.get("name") or row["id"]), tuple(messages), where)


def _bias_item(row: dict, where: str, part: str) -> BiasItem:
    options = row.get("options")
    if not isinstance(options, dict) or set(options) != set(_BIAS_OPTIONS):
        raise DataError(where, f"an object with exactly the keys {list(_BIAS_OPTIONS)}", describe(options),
                        field="options")
    for key in _BIAS_OPTIONS:
        _text(options, key, where)
    if len(set(options.values())) != 3:
        raise DataError(where, "three different answers", describe(options), field="options")
    return BiasItem(str(row["id"]), _text(row, "dimension", where), _text(row, "context", where),
                    _text(row, "question", where), dict(options), where)


def _check_unique_ids(items: list) -> None:
    seen: dict[str, str] = {}
    for item in items:
        if item.id in seen:
            raise DataError(item.where, "a unique id", f"{item.id!r}, already used at {seen[item.id]}", field="id")
        seen[item.id] = item.where


# ------------------------------------------------------------------ the held-out rule


def _normalise(text: str) -> str:
    # Case, spacing and closing punctuation do not make a prompt new; operators and digits do ("7 + 5" vs "7 - 5").
    return " ".join(text.lower().split()).strip(" .?!")


# Shorter held-out texts must match a training text exactly; longer ones are also found inside a longer one (e.g. a
# held-out request wrapped in a jailbreak template). Short ones would match by accident inside unrelated text.
_CONTAINMENT_MIN_CHARS = 30


@cache
def _heldout_index() -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    """(normalised held-out text -> 'part id', the long ones as a tuple for containment checks)."""
    suite = load_suite("default", "heldout")
    texts: dict[str, str] = {}
    for part in ("redteam", "borderline", "verifiable", "anthropomorphism"):
        for item in getattr(suite, part):
            for message in _user_texts(item.prompt):
                texts[_normalise(message)] = f"{part} {item.id}"
    for item in suite.bias:
        texts[_normalise(item.context)] = f"bias {item.id}"
    for template in suite.jailbreaks:
        for message in template.messages:
            # The template's fixed wording, without the slot, identifies it.
            for piece in _PLACEHOLDERS.split(message["content"])[::2]:
                if len(_normalise(piece)) >= _CONTAINMENT_MIN_CHARS * 2:
                    texts[_normalise(piece)] = f"jailbreaks {template.id}"
    # The held-out gold comparisons that audit a Constitutional AI feedback model are evaluation data too.
    comparisons = Path(str(resources.files("alignkit.data").joinpath("builtin", "constitution", "comparisons.jsonl")))
    if comparisons.is_file():
        for line in comparisons.read_text(encoding="utf-8").splitlines():
            row = json.loads(line) if line.strip() else {}
            if row.get("split") == "heldout":
                texts[_normalise(row["prompt"])] = f"constitution comparison {row['id']}"
    long = tuple((text, label) for text, label in texts.items() if len(text) >= _CONTAINMENT_MIN_CHARS)
    return texts, long


def _user_texts(turns: Any) -> list[str]:
    if isinstance(turns, str):
        return [turns]
    if isinstance(turns, list):
        return [m["content"] for m in turns if isinstance(m, dict) and isinstance(m.get("content"), str)
                and m.get("role") in ("user", "system")]
    return []


def heldout_match(text: str) -> str | None:
    """'part id' of the built-in held-out item that `text` is or contains, else None."""
    exact, long = _heldout_index()
    normalised = _normalise(text)
    if normalised in exact:
        return exact[normalised]
    for heldout, label in long:
        if heldout in normalised:
            return label
    return None


def check_not_heldout(record: Any) -> None:
    """Raise DataError when a training record's prompt or messages hold a built-in held-out evaluation prompt."""
    # LMRecord keeps a row's 'text' or 'messages' in its `text` attribute.
    for name in ("prompt", "messages", "text"):
        value = getattr(record, name, None)
        for text in _user_texts(value):
            label = heldout_match(text)
            if label is not None:
                raise DataError(
                    getattr(record, "where", ""),
                    "no prompt from alignkit's held-out evaluation suite (training on it would contaminate "
                    "`alignkit eval`; the suite's train split may be used: suite:PART?split=train)",
                    f"the held-out {label}", field="messages" if name == "text" and isinstance(value, list) else name,
                )


def suite_rows(spec: str) -> list[tuple[str, dict]]:
    """Rows of `suite:PART?split=train` for training: {"prompt" (a conversation), "reference"?, "group"} (held-out
    split refused)."""
    part, _, query = spec.partition("?")
    options = dict(pair.partition("=")[::2] for pair in query.split("&") if pair)
    unknown = sorted(set(options) - {"split", "suite"})
    if unknown:
        raise DataError(f"suite:{spec}", "options split=train and suite=NAME", f"unknown options {unknown}")
    split = options.get("split", "train")
    if split != "train":
        raise DataError(f"suite:{spec}", "split=train (held-out suite rows are for evaluation only)", repr(split))
    prompt_parts = ("redteam", "borderline", "verifiable", "anthropomorphism")
    if part not in prompt_parts:
        raise DataError(f"suite:{spec}", f"one of the prompt parts {list(prompt_parts)}", repr(part))
    suite = load_suite(options.get("suite", "default"), split)
    rows = []
    for item in getattr(suite, part):
        # A request to an assistant: a conversation, as the evaluation asks it (data/render.py's one prompt rule).
        row: dict[str, Any] = {"prompt": user_turn(item.prompt), "group": item.group, "id": item.id}
        if item.answers:
            row["reference"] = list(item.answers)
        rows.append((f"suite:{spec}:{item.id}", row))
    return rows
