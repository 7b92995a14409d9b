"""Kill soak: every long-running command, SIGKILLed at random moments and resumed with the same command, must end
exactly as a run that was never interrupted.

    python bench/soak.py                      # 20+ kills for each of sft dpo ppo grpo iterative-dpo cai compare
    python bench/soak.py --kills 4 --only sft dpo
    python bench/soak.py --real-kills 6       # also the real cai on smollm2-135m (the demo's settings, cut down)

For each command: one uninterrupted reference run; then chains of interrupted runs into fresh folders, each chain
killed again and again and resumed with the same command until it finishes, until the kills reach --kills. Half the
kills come from outside at a seeded random moment (the whole process group, stage subprocesses included); half
from inside, at a seeded random atomic write (utils/io.py) just before its rename — a checkpoint being written, a
stage's done.json (the hand-over to the next stage), a journal, a data file. Each finished chain is compared with
the reference: every weight file bit for bit, every JSONL data file (revisions, labels, pairs, samples, responses,
journals) line for line, and metrics.jsonl step for step (no step missing or twice) with the timing columns left
out. Paths of the run's own folder are replaced by a placeholder before comparing.

The table it prints (command, kills, resumes, chains, identical) is what docs/reliability.md shows. The run is
seeded (--seed): the same invocation kills at the same moments, up to the machine's timing of outside kills.
`tests/test_soak.py` runs a small version (one kill per command) in `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = ("time", "seconds", "_per_s", "peak_rss")  # metric names that hold timings, not results

# Kill inside the N-th atomic write of this process (before its rename), or count the writes. Only the process the
# soak started reads it: the variable is removed at once, so stage subprocesses (compare) are not affected.
HOOK = '''
import os, signal
_at, _count = os.environ.pop("ALIGNKIT_SOAK_KILL_AT", None), os.environ.pop("ALIGNKIT_SOAK_COUNT", None)
if _at or _count:
    import atexit
    import alignkit.utils.io as _io

    _real, _n = os.replace, [0]

    class _OS:
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def replace(src, dst):
            _n[0] += 1
            if _at and _n[0] == int(_at):
                os.kill(os.getpid(), signal.SIGKILL)
            return _real(src, dst)

    _io.os = _OS()
    if _count:
        atexit.register(lambda: open(_count, "w").write(str(_n[0])))
'''


def tiny_models(folder: Path) -> tuple[str, str]:
    """The tiny test model, and its 'chatty' copy (blank-token embeddings zeroed, so greedy replies are not all
    whitespace: CAI's critiques and revisions need text)."""
    import torch

    from alignkit.models.tiny import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    plain, chatty = folder / "tiny", folder / "tiny-chatty"
    model = tiny_model(tokenizer, seed=0)
    model.save_pretrained(plain)
    tokenizer.save_pretrained(plain)
    blank = [i for i in range(len(tokenizer)) if not tokenizer.decode([i]).strip()
             or not tokenizer.decode([i]).isprintable()]
    with torch.no_grad():
        model.get_input_embeddings().weight[blank] = 0
    model.save_pretrained(chatty)
    tokenizer.save_pretrained(chatty)
    return str(plain), str(chatty)


ARITHMETIC = "task:arithmetic?difficulty=1&split=train"
CAI_TINY = [
    "feedback.sft={max_steps: 4, batch_size: 4, max_length: 256, save_every: 1}",
    "feedback.judge_sft={max_steps: 4, batch_size: 4, max_length: 256, save_every: 1}",
    "feedback.override_audit=true", "feedback.audit_extra_principles=0", "feedback.batch_size=16",
    "critique.prompts=[{source: 'suite:redteam?split=train', limit: 3}]",
    "critique.max_new_tokens=8", "critique.critique_tokens=8", "critique.revision_tokens=8",
    "sl.helpful=[{source: 'builtin:sft', categories: [benign], limit: 3}]",
    "sl.policy_answers=[{source: 'suite:borderline?split=train', limit: 2}]",
    "sl.sft={max_steps: 4, batch_size: 4, max_length: 256, save_every: 1}",
    "rl.prompts=[{source: 'suite:redteam?split=train', limit: 2}, {source: 'suite:borderline?split=train', limit: 2}]",
    "rl.method=dpo", "rl.max_new_tokens=8", "rl.min_confidence=0.0",
    "rl.helpful_preferences=[{source: 'builtin:preference', categories: [benign], limit: 4}]",
    "rl.dpo={max_steps: 4, batch_size: 4, max_length: 256, save_every: 1}",
    "eval=null",
]  # fmt: skip


def commands(plain: str, chatty: str) -> dict[str, list[str]]:
    """Each command's arguments after `alignkit`, without output_dir."""
    fast = ["precision=fp32", "progress=false", "save_every=1", "keep_checkpoints=2"]
    online = [f"model={plain}", f"data.train={ARITHMETIC}", "judge=final_answer", "max_steps=4", "prompts_per_step=4",
              "max_new_tokens=8", "batch_size=4", *fast]
    return {
        "sft": ["sft", f"model={plain}", "data.train=builtin:sft", "max_steps=6", "batch_size=4", "max_length=256",
                *fast],
        "dpo": ["dpo", f"model={plain}", "data.train=builtin:preference", "max_steps=6", "batch_size=4",
                "max_length=256", *fast],
        "ppo": ["ppo", *online, "minibatch_size=4"],
        "grpo": ["grpo", *online],
        "iterative-dpo": ["iterative-dpo", f"model={plain}", f"data.train={ARITHMETIC}", "judge=final_answer",
                          "rounds=2", "prompts_per_round=8", "samples_per_prompt=2", "max_new_tokens=8", "batch_size=4",
                          "max_length=64", *fast],
        "cai": ["cai", f"model={chatty}", *CAI_TINY],
        "compare": ["compare", f"model={plain}", "seeds=[0]", "recipes=[sft, sft-dpo, cai]", "steps=2", "batch_size=4",
                    "max_length=256", "eval.max_new_tokens=8", "eval.parts=[redteam, borderline]",
                    "cai.critique.prompts=[{source: 'suite:redteam?split=train', limit: 3}]",
                    "cai.rl.prompts=[{source: 'suite:redteam?split=train', limit: 2}]",
                    "cai.sl.helpful=[{source: 'builtin:sft', categories: [benign], limit: 8}]",
                    "cai.rl.helpful_preferences=[{source: 'builtin:preference', categories: [benign], limit: 8}]",
                    "cai.feedback.sft.batch_size=4", "cai.sl.sft.batch_size=4", "cai.rl.dpo.batch_size=4",
                    "cai.feedback.override_audit=true", "cai.feedback.sft.max_steps=2",
                    "cai.feedback.judge_sft.max_steps=2", "cai.critique.critique_tokens=8",
                    "cai.critique.revision_tokens=8", "cai.critique.max_new_tokens=8", "cai.rl.max_new_tokens=8"],
    }


def real_cai(out_model: str = "smollm2-135m") -> list[str]:
    """The demo on the embedded model, its settings cut down to minutes: fewer prompts, fewer steps, short answers."""
    return ["demo", "--model", out_model,
            "feedback.sft={max_steps: 6, save_every: 2}", "feedback.judge_sft={max_steps: 6, save_every: 2}",
            "feedback.override_audit=true",
            "critique.prompts=[{source: 'suite:redteam?split=train', limit: 8}]", "critique.max_new_tokens=24",
            "critique.critique_tokens=16", "critique.revision_tokens=24",
            "sl.policy_answers=[{source: 'suite:borderline?split=train', limit: 4}]",
            "sl.helpful=[{source: 'builtin:sft', categories: [benign], limit: 8}]",
            "sl.sft={max_steps: 6, save_every: 2}",
            "rl.prompts=[{source: 'suite:redteam?split=train', limit: 4}, {source: 'suite:borderline?split=train', limit: 4}]",
            "rl.max_new_tokens=16", "rl.helpful_preferences=[{source: 'builtin:preference', categories: [benign], limit: 8}]",
            "rl.contrast={refuse: [{source: 'suite:redteam?split=train', limit: 4}], answer: [{source: 'suite:borderline?split=train', limit: 4}], samples: 2, max_new_tokens: 16}",
            "rl.dpo={max_steps: 6, save_every: 2}",
            "eval={max_new_tokens: 16}"]  # fmt: skip


# ------------------------------------------------------------------ running, killing, comparing


def _hook_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="alignkit-soak-hook-"))
    (folder / "sitecustomize.py").write_text(HOOK, encoding="utf-8")
    return folder


def _env(hook: Path, **extra: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hook), str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _argv(args: list[str], out: Path) -> list[str]:
    where = ["--out", str(out)] if args[0] == "demo" else [f"output_dir={out}"]
    return [sys.executable, "-m", "alignkit.cli", *args, *where]


def run_to_end(args: list[str], out: Path, hook: Path, log: Path, **extra: str) -> float:
    started = time.perf_counter()
    with log.open("ab") as handle:
        proc = subprocess.run(_argv(args, out), env=_env(hook, **extra), stdout=handle, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} into {out} exited {proc.returncode}; see {log}")
    return time.perf_counter() - started


def attempt(args: list[str], out: Path, hook: Path, log: Path, *, delay: float | None = None,
            write: int | None = None) -> str:
    """One start of the command: killed from outside after `delay` seconds, or from inside at its `write`-th atomic
    write. Returns "killed", or "finished" when it ended first."""
    extra = {"ALIGNKIT_SOAK_KILL_AT": str(write)} if write is not None else {}
    with log.open("ab") as handle:
        proc = subprocess.Popen(_argv(args, out), env=_env(hook, **extra), stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: stage subprocesses too
            proc.wait()
            return "killed"
    if proc.returncode == -signal.SIGKILL:
        return "killed"
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} into {out} exited {proc.returncode} after a resume; see {log}")
    return "finished"


def _normalised(text: str, out: Path) -> str:
    return text.replace(str(out.resolve()), "<run>").replace(str(out), "<run>")


def _metrics(path: Path, out: Path) -> list[dict]:
    rows = [json.loads(line) for line in _normalised(path.read_text(encoding="utf-8"), out).splitlines()]
    return [{k: v for k, v in row.items() if not any(mark in k for mark in VOLATILE)} for row in rows]


def differences(reference: Path, run: Path) -> list[str]:
    """What differs between two finished runs: weights bit for bit, JSONL data line for line, metrics step by step."""
    from safetensors.torch import load_file

    found = []
    ours = {p.relative_to(run) for p in run.rglob("*") if p.is_file()}
    theirs = {p.relative_to(reference) for p in reference.rglob("*") if p.is_file()}
    for rel in sorted(theirs):
        if rel.suffix not in (".safetensors", ".jsonl") or "wandb" in rel.parts:
            continue
        if rel not in ours:
            found.append(f"{rel}: missing")
            continue
        a, b = reference / rel, run / rel
        if rel.suffix == ".safetensors":
            x, y = load_file(str(a)), load_file(str(b))
            if x.keys() != y.keys() or any(not (x[k] == y[k]).all() for k in x):
                found.append(f"{rel}: weights differ")
        elif rel.name == "metrics.jsonl":
            ma, mb = _metrics(a, reference), _metrics(b, run)
            steps = [m.get("step") for m in mb]
            if len(steps) != len(set(zip(steps, [tuple(sorted(m)) for m in mb]))):
                found.append(f"{rel}: a step logged twice")
            if ma != mb:
                found.append(f"{rel}: metrics differ (steps {[m.get('step') for m in ma]} vs {steps})")
        elif _normalised(a.read_text(encoding="utf-8"), reference) != _normalised(b.read_text(encoding="utf-8"), run):
            found.append(f"{rel}: content differs")
    extra = sorted(str(r) for r in ours - theirs if r.suffix in (".safetensors", ".jsonl"))
    return found + [f"{r}: not in the reference" for r in extra]


@dataclass
class Result:
    command: str
    kills: int = 0
    resumes: int = 0
    chains: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.chains > 0 and not self.problems


def soak(name: str, args: list[str], work: Path, kills: int, rng: random.Random, hook: Path, *,
         inside_only: bool = False) -> Result:
    """The reference run, then chains of killed-and-resumed runs until `kills` kills, each compared with it.
    `inside_only`: every kill at a seeded atomic write (no timing involved: the same kills on every machine)."""
    folder = work / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    log = folder / "log.txt"
    count = folder / "writes.txt"
    seconds = run_to_end(args, folder / "reference", hook, log, ALIGNKIT_SOAK_COUNT=str(count))
    writes = int(count.read_text())
    result = Result(name)
    print(f"[soak] {name}: reference {seconds:.1f} s, {writes} atomic writes", flush=True)
    while result.kills < kills:
        result.chains += 1
        out = folder / f"chain-{result.chains:02d}"
        try:
            _chain(args, out, hook, log, kills, rng, writes, seconds, result, inside_only)
        except RuntimeError as err:  # a resume that failed: this chain is a difference, the soak goes on
            result.problems.append(f"chain {result.chains}: {err}")
            print(f"[soak] {name}: chain {result.chains} failed: {err}", flush=True)
            continue
        problems = differences(folder / "reference", out)
        result.problems += [f"chain {result.chains}: {p}" for p in problems]
        if not problems:  # kept only where it differs: a real cai chain holds ~18 GB of stage checkpoints
            shutil.rmtree(out, ignore_errors=True)
        print(f"[soak] {name}: chain {result.chains} done ({result.kills} kills, {result.resumes} resumes so far), "
              f"{'identical' if not problems else '; '.join(problems[:3])}", flush=True)
    return result


def _chain(args: list[str], out: Path, hook: Path, log: Path, kills: int, rng: random.Random, writes: int,
           seconds: float, result: Result, inside_only: bool) -> None:
    """Kill and resume one chain until it finishes by itself or the kills are reached; then let it finish."""
    outcome = "killed"
    while outcome == "killed" and result.kills < kills:
        # Inside an atomic write (a checkpoint, a stage's hand-over, a data file), or at a moment from outside.
        if inside_only or rng.random() < 0.5:
            outcome = attempt(args, out, hook, log, write=rng.randint(1, writes))
        else:
            outcome = attempt(args, out, hook, log, delay=rng.uniform(0.5, seconds))
        if outcome == "killed":
            result.kills += 1
            if (out / "summary.json").is_file():  # killed as it exited: a trainer's run is finished
                outcome = "finished"
            else:
                result.resumes += 1  # the next start is a resume
    if outcome == "killed":
        run_to_end(args, out, hook, log)  # the last resume, left to finish


def table(results: list[Result]) -> str:
    lines = ["| command | kills | resumes | chains | identical |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.command} | {r.kills} | {r.resumes} | {r.chains} | {'yes' if r.identical else 'no'} |"
              for r in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="kills per command (tiny model)")
    parser.add_argument("--real-kills", type=int, default=0, help="kills of the real cai on smollm2-135m (0: skip)")
    parser.add_argument("--only", nargs="*", help="commands to soak (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    args = parser.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="alignkit-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    hook = _hook_dir()
    plain, chatty = tiny_models(work)
    rng = random.Random(args.seed)
    results = []
    for name, command in commands(plain, chatty).items():
        if args.only and name not in args.only:
            continue
        results.append(soak(name, command, work, args.kills, rng, hook))
    if args.real_kills:
        results.append(soak("cai (smollm2-135m)", real_cai(), work, args.real_kills, rng, hook))
    print(table(results))
    for r in results:
        for problem in r.problems[:10]:
            print(f"{r.command}: {problem}")
    return 0 if all(r.identical for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
