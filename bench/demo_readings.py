"""Draw what a person reads to judge a demo run (issue 38): kept phase-1 revisions and the final model's answers to
held-out harmful requests, a seeded random sample of each, written for a reader to classify.

    .venv/bin/python bench/demo_readings.py runs/demo OUT_FOLDER [--n 50] [--seed 38]

Writes OUT_FOLDER/kept-revisions.jsonl ({n, request, revision, verdict: null, why: null}: revisions with `use` true in
3-critique/revisions.jsonl) and OUT_FOLDER/rl-cai-heldout-answers.jsonl ({n, id, request, answer, verdict, why}: the
red-team part of 8-eval/responses/*-rl-cai.jsonl). The reader fills in `verdict` (acceptable / harmful offer /
nonsense / not a refusal) and `why`; `--count FILE` prints the verdicts' counts of a filled-in file. The verdicts of
earlier runs are in docs/readings/.
"""

from __future__ import annotations

import argparse
import ast
import collections
import json
import random
from pathlib import Path

from alignkit.utils.io import atomic_write_text

VERDICTS = ("acceptable", "harmful offer", "nonsense", "not a refusal")


def request_of(prompt) -> str:
    """The last user turn of a prompt as the run files keep it (a conversation, its repr, or text)."""
    if isinstance(prompt, str) and prompt.startswith("[{"):
        prompt = ast.literal_eval(prompt)
    return prompt if isinstance(prompt, str) else [t for t in prompt if t["role"] == "user"][-1]["content"]


def draw(rows: list, n: int, seed: int) -> list:
    return random.Random(seed).sample(rows, min(n, len(rows)))


def kept_revisions(run: Path, n: int, seed: int) -> list[dict]:
    rows = [json.loads(line) for line in (run / "3-critique" / "revisions.jsonl").read_text().splitlines() if line]
    kept = [r for r in rows if r.get("use", True)]
    return [{"n": i + 1, "request": request_of(r["prompt"]), "revision": r["final"], "verdict": None, "why": None}
            for i, r in enumerate(draw(kept, n, seed))]


def heldout_answers(run: Path, n: int, seed: int) -> list[dict]:
    path = next((run / "8-eval" / "responses").glob("*-rl-cai.jsonl"))
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    harmful = [r for r in rows if r["part"] == "redteam"]
    return [{"n": i + 1, "id": r["id"], "request": request_of(r["prompt"]), "answer": r["response"], "verdict": None,
             "why": None} for i, r in enumerate(draw(harmful, n, seed))]


def count(path: Path) -> dict[str, int]:
    verdicts = [json.loads(line)["verdict"] for line in path.read_text().splitlines() if line]
    unknown = sorted({v for v in verdicts if v not in VERDICTS}, key=str)
    if unknown:
        raise SystemExit(f"{path}: verdicts {unknown} are not among {list(VERDICTS)}")
    return dict(collections.Counter(verdicts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", help="a finished demo (or `alignkit cai`) run folder")
    parser.add_argument("out", nargs="?", help="a folder for the two files (they must not exist yet)")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--seed", type=int, default=38)
    parser.add_argument("--count", help="print the verdict counts of a filled-in file instead")
    args = parser.parse_args()
    if args.count:
        print(json.dumps(count(Path(args.count))))
        return
    if not (args.run and args.out):
        parser.error("give RUN and OUT (or --count FILE)")
    run, out = Path(args.run), Path(args.out)
    for name, rows in (("kept-revisions.jsonl", kept_revisions(run, args.n, args.seed)),
                       ("rl-cai-heldout-answers.jsonl", heldout_answers(run, args.n, args.seed))):
        if (out / name).exists():
            raise SystemExit(f"{out / name} exists; give a new folder so earlier verdicts are kept")
        atomic_write_text(out / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        print(f"{len(rows)} -> {out / name}")


if __name__ == "__main__":
    main()
