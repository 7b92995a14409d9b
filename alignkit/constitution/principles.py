"""The constitution: a human-readable YAML file of principles and worked exemplars (Bai et al. 2022, "Constitutional
AI"). The default one, written by the alignkit team, is `alignkit/data/builtin/constitution/default.yaml`; its header
documents the format.

`load_constitution` validates strictly (a CAI run must not start on a broken file); `lint` reports every problem it
finds at once, as `alignkit constitution lint FILE` prints them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import yaml

SOURCES = ("human-rights", "trust-and-safety", "dialogue-rules", "non-western", "helpfulness", "honesty")
KINDS = ("broad", "rule")
PRINCIPLE_FIELDS = ("id", "source", "kind", "critique", "revision", "comparison")
EXEMPLAR_FIELDS = ("id", "principle", "prompt", "response", "critique", "revision")
ALTERNATIVE_FIELDS = ("id", "reason", "offer")
DEFAULT_ALTERNATIVE = "default"


class ConstitutionError(ValueError):
    """A constitution file that cannot be used; the message lists every problem, each with its place in the file."""


@dataclass(frozen=True)
class Principle:
    id: str
    source: str
    kind: str
    critique: str
    revision: str
    comparison: str


@dataclass(frozen=True)
class Exemplar:
    id: str
    principle: str
    prompt: str
    response: str
    critique: str
    revision: str


@dataclass(frozen=True)
class Alternative:
    """What a refusal of a harmful request of one kind (`id`: a harm category, as the red-team prompts' `category`,
    or "default") says after declining: why, in a sentence, and the safe help it offers instead."""

    id: str
    reason: str
    offer: str


@dataclass(frozen=True)
class Constitution:
    name: str
    version: str
    description: str
    principles: tuple[Principle, ...]
    exemplars: tuple[Exemplar, ...]
    path: str
    alternatives: tuple[Alternative, ...] = ()

    def principle(self, principle_id: str) -> Principle:
        for p in self.principles:
            if p.id == principle_id:
                return p
        raise KeyError(f"{self.path}: no principle {principle_id!r}; ids: {[p.id for p in self.principles]}")

    def draw(self, rng: random.Random, k: int = 1) -> list[Principle]:
        """k principles drawn uniformly at random, without replacement (CAI draws a principle per critique/label)."""
        if not 1 <= k <= len(self.principles):
            raise ValueError(f"draw: k must be in 1..{len(self.principles)}, got {k}")
        return rng.sample(list(self.principles), k)

    def subset(self, principle_ids: list[str]) -> Constitution:
        """The same constitution restricted to some principles (an unknown id is an error naming it)."""
        return replace(self, principles=tuple(self.principle(pid) for pid in dict.fromkeys(principle_ids)))

    def exemplars_for(self, principle_id: str) -> list[Exemplar]:
        return [e for e in self.exemplars if e.principle == principle_id]

    def alternative_for(self, category: str | None) -> Alternative | None:
        """The safe alternative for a harm category, else the "default" one; None if the constitution has neither."""
        by_id = {a.id: a for a in self.alternatives}
        return by_id.get(category or DEFAULT_ALTERNATIVE, by_id.get(DEFAULT_ALTERNATIVE))


@dataclass(frozen=True)
class LintIssue:
    level: str  # "error" (the file cannot be used) or "warning"
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.level}: {self.message}"


def constitution_path(spec: str | Path = "default") -> Path:
    """A path to a constitution YAML, or the name of a built-in one ("default")."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml"):
        return path
    builtin = Path(str(resources.files("alignkit.data").joinpath("builtin", "constitution", f"{spec}.yaml")))
    if not builtin.is_file():
        raise ConstitutionError(f"{spec}: not a .yaml file and not a built-in constitution (built-in: default)")
    return builtin


def lint(spec: str | Path = "default") -> tuple[Constitution | None, list[LintIssue]]:
    """Every problem of a constitution file: missing or empty fields, unknown sources or kinds, duplicate ids,
    exemplars citing no known principle (never used), principles without an exemplar (warning)."""
    path = constitution_path(spec)
    label = str(path)
    if not path.is_file():
        return None, [LintIssue("error", label, "no such file")]
    data = path.read_bytes()
    try:
        document = yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        return None, [LintIssue("error", f"{label}:{line}", f"not UTF-8 text (undecodable bytes: {e.reason})")]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{label}:{mark.line + 1}" if mark is not None else label
        return None, [LintIssue("error", where, f"not valid YAML ({getattr(e, 'problem', None) or e})")]
    if not isinstance(document, dict):
        return None, [LintIssue("error", label, "expected a mapping with name, principles and exemplars")]
    issues: list[LintIssue] = []
    unknown = sorted(set(document) - {"name", "version", "description", "principles", "exemplars",
                                  "alternatives"})
    if unknown:
        issues.append(LintIssue("error", label, f"unknown top-level keys {unknown}"))
    if not isinstance(document.get("name"), str) or not document["name"].strip():
        issues.append(LintIssue("error", label, "field 'name': missing or empty"))

    principles = _entries(document, "principles", PRINCIPLE_FIELDS, label, issues, Principle)
    for i, p in principles:
        if p.source not in SOURCES:
            issues.append(LintIssue("error", f"{label}: principles[{i}] ({p.id})",
                                    f"field 'source': {p.source!r} is not one of {list(SOURCES)}"))
        if p.kind not in KINDS:
            issues.append(LintIssue("error", f"{label}: principles[{i}] ({p.id})",
                                    f"field 'kind': {p.kind!r} is not one of {list(KINDS)}"))
    exemplars = _entries(document, "exemplars", EXEMPLAR_FIELDS, label, issues, Exemplar, required=False)
    principle_ids = {p.id for _, p in principles}
    for i, e in exemplars:
        if e.principle not in principle_ids:
            issues.append(LintIssue("error", f"{label}: exemplars[{i}] ({e.id})",
                                    f"unused exemplar: it cites the principle {e.principle!r}, which does not exist"))
    cited = {e.principle for _, e in exemplars}
    for i, p in principles:
        if p.id not in cited:
            issues.append(LintIssue("warning", f"{label}: principles[{i}] ({p.id})", "no exemplar cites this principle"))
    alternatives = _entries(document, "alternatives", ALTERNATIVE_FIELDS, label, issues, Alternative, required=False)
    if alternatives and DEFAULT_ALTERNATIVE not in {a.id for _, a in alternatives}:
        issues.append(LintIssue("warning", f"{label}: alternatives", f"no '{DEFAULT_ALTERNATIVE}' entry: a request of "
                                "a category without its own entry gets no alternative"))
    if any(issue.level == "error" for issue in issues):
        return None, issues
    constitution = Constitution(
        name=document["name"], version=str(document.get("version", "")), description=str(document.get("description", "")),
        principles=tuple(p for _, p in principles), exemplars=tuple(e for _, e in exemplars), path=label,
        alternatives=tuple(a for _, a in alternatives),
    )
    return constitution, issues


def _entries(document: dict, key: str, fields: tuple[str, ...], label: str, issues: list[LintIssue], cls,
             required: bool = True) -> list[tuple[int, object]]:
    raw = document.get(key)
    if raw is None and not required:
        return []
    if not isinstance(raw, list) or (required and not raw):
        issues.append(LintIssue("error", label, f"field '{key}': expected a non-empty list"))
        return []
    entries, seen = [], {}
    for i, entry in enumerate(raw):
        where = f"{label}: {key}[{i}]"
        if not isinstance(entry, dict):
            issues.append(LintIssue("error", where, f"expected a mapping with {list(fields)}"))
            continue
        where = f"{where} ({entry.get('id', '?')})"
        problems = [f for f in fields if not isinstance(entry.get(f), str) or not entry[f].strip()]
        for f in problems:
            issues.append(LintIssue("error", where, f"field '{f}': missing or empty"))
        extra = sorted(set(entry) - set(fields))
        if extra:
            issues.append(LintIssue("error", where, f"unknown fields {extra}; expected {list(fields)}"))
        if problems or extra:
            continue
        if entry["id"] in seen:
            issues.append(LintIssue("error", where, f"duplicate id {entry['id']!r} (first at {key}[{seen[entry['id']]}])"))
            continue
        seen[entry["id"]] = i
        entries.append((i, cls(**{f: entry[f].strip() for f in fields})))
    return entries


def load_constitution(spec: str | Path = "default") -> Constitution:
    """The validated constitution; ConstitutionError listing every error otherwise (warnings do not stop it)."""
    constitution, issues = lint(spec)
    if constitution is None:
        raise ConstitutionError("\n".join(str(i) for i in issues if i.level == "error"))
    return constitution
