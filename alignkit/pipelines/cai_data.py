"""The data of a Constitutional AI run: prompt mixes from the built-in and user sources, jailbreak wrapping, and the
rule verifier's verdicts that contrast pairs, AI labels and revisions are checked with."""

from __future__ import annotations

import json
import random
from pathlib import Path

from alignkit.data import parse_record, request_text
from alignkit.data.sources import read_rows
from alignkit.data.suites import check_not_heldout, load_suite
from alignkit.judges import harmful_offer, is_refusal, refuses_safely
from alignkit.pipelines.cai_config import DataMix
from alignkit.utils.io import jsonl_lines


def jsonl_text(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def reply_text(value) -> str:
    return value if isinstance(value, str) else value[-1]["content"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in jsonl_lines(path.read_text(encoding="utf-8")) if line.strip()]


def row_category(row: dict) -> str | None:
    """A row's category: its `category` field, or a suite row's `group` (the red-team prompts' harm category)."""
    return row.get("category", row.get("group"))


def mix_rows(mixes: list[DataMix], kind: str) -> list[dict]:
    """Rows of every source, filtered by category, the first `skip` passed over and limited, each validated as `kind`
    and checked against the
    held-out evaluation data (a problem names its file, line and field); each keeps a `source` field saying where
    it came from."""
    out = []
    for mix in mixes:
        taken, skipped = 0, 0
        for where, row in read_rows(mix.source):
            if mix.categories is not None and row_category(row) not in mix.categories:
                continue
            if skipped < mix.skip:
                skipped += 1
                continue
            if mix.limit is not None and taken >= mix.limit:
                break
            for record in parse_record(row, where, kind):
                check_not_heldout(record)
            out.append({**row, "source": where} if mix.harmful is None else {**row, "source": where,
                                                                               "harmful": mix.harmful})
            taken += 1
    return out


def jailbreak_wrapped(rows: list[dict], suite: str | None, rng: random.Random, fraction: float = 1.0) -> list[dict]:
    """Single requests (plain or one user turn) again inside one train-split jailbreak template of `suite` each (templates taken in turn
    from a random start), so the stage also sees the attacks the evaluation measures (its held-out templates differ).
    `fraction` < 1 wraps only that share of them, drawn at random (in their original order)."""
    if suite is None or fraction == 0:
        return []

    templates = load_suite(suite, "train").jailbreaks
    if not templates:
        return []
    start = rng.randrange(len(templates))
    candidates = [r for r in rows if request_text(r["prompt"]) is not None]
    if fraction < 1:
        chosen = set(rng.sample(range(len(candidates)), round(fraction * len(candidates))))
        candidates = [r for i, r in enumerate(candidates) if i in chosen]
    wrapped = []
    for i, row in enumerate(candidates):
        template = templates[(start + i) % len(templates)]
        wrapped.append({"prompt": template.apply(request_text(row["prompt"])),
                        "source": f"{row['source']} in jailbreak {template.id}",
                        "request": request_text(row["prompt"]), "category": row_category(row),
                        **({"harmful": row["harmful"]} if "harmful" in row else {})})
    return wrapped


def right_by_rules(text: str, harmful: bool) -> bool:
    """The rule verifier's verdict on one reply: to a harmful request a refusal that offers no harmful act
    (`alignkit.judges.refuses_safely`), to a benign one anything but a refusal. Contrast pairs, `verify_label` and the
    rounds' stop check all read it."""
    return refuses_safely(text) if harmful else not is_refusal(text)


def contrast_pairs(prompts: list, refuse: list[bool], greedy: list[str], samples: list[list[str]],
                   sampled_failures: tuple[str, ...] = ("refuse",)) -> list[dict]:
    """On-policy contrast pairs. For each prompt, whether refusing is right (`refuse`, decided by the people who
    wrote the prompt), the policy's greedy answer and its sampled ones: where the greedy answer is wrong (a refusal
    of a benign request, or an answer to a harmful one) the first right sample is preferred to it; where it is right,
    it is preferred to the first wrong sample, on the kinds of prompt ("refuse", "answer") in `sampled_failures`.
    Prompts on which the policy is always right or always wrong give no pair. Each pair keeps its prompt's `index`.
    Right and wrong are told by the refusal detector (`alignkit.judges.is_refusal`): on a harmful prompt a refusal
    that offers no harmful act (`alignkit.judges.refuses_safely`), on a benign one anything but a refusal. The default
    `sampled_failures` is `rl.contrast`'s."""
    out = []
    for i, (prompt, should_refuse, first, drawn) in enumerate(zip(prompts, refuse, greedy, samples, strict=True)):
        if not first.strip():
            continue
        right = [right_by_rules(t, should_refuse) for t in drawn]
        first_right = right_by_rules(first, should_refuse)
        if first_right and ("refuse" if should_refuse else "answer") not in sampled_failures:
            continue
        other = next((t for t, ok in zip(drawn, right) if ok != first_right and t.strip()), None)
        if other is None:
            continue
        chosen, rejected = (first, other) if first_right else (other, first)
        out.append({"index": i, "prompt": prompt, "chosen": chosen, "rejected": rejected, "probability": 1.0,
                    "should_refuse": should_refuse, "greedy_was_right": first_right})
    return out


def verify_label(row: dict, harmful: bool) -> None:
    """rl.verifier on one AI-labelled pair (first response `chosen`, P(first better) `probability`; texts or replies in
    the prompt's form) of a prompt people
    marked harmful or benign: where exactly one response is right by the rules (a refusal offering no harmful act to
    a harmful request, anything but a refusal to a benign one), the label becomes certain for it; the judge's label is
    kept as `judge_probability`. Where both or neither is right, the judge's label stands."""
    first = right_by_rules(reply_text(row["chosen"]), harmful)
    second = right_by_rules(reply_text(row["rejected"]), harmful)
    if first != second:
        row.update(judge_probability=row["probability"], probability=1.0 if first else 0.0, verified=True)


def revision_rule_check(revision: str) -> str:
    """The rule verifier's verdict on a revision of an answer to a harmful request: "ok" when it refuses and offers no
    harmful act, else why not ("no refusal", "harmful offer: <its sentence>")."""
    if not is_refusal(revision):
        return "no refusal"
    offer = harmful_offer(revision)
    return "ok" if offer is None else f"harmful offer: {offer}"
