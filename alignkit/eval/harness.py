"""`alignkit eval`: every model answers the same suite with the same greedy decoding; then rules, an optional judge,
option log-probs and a reference model turn the answers into the metrics of docs/eval.md.

Steps, per model:
1. load it (HF folder, alias, run output, or an already-loaded (model, tokenizer) pair);
2. greedy responses to every prompt part of the suite (red-team, jailbreak-wrapped red-team, borderline,
   verifiable, anthropomorphism), longest prompts first, `batch_size` rows per decode loop;
3. rule verdicts, and judge verdicts when a judge is configured;
4. bias answers by option log-probs (no generation);
5. drift from the reference on the responses to the benign held-out prompts (borderline + verifiable).
Then win rates between every pair of models under the judge, and the `EvalResults` (eval/results.py) that
`report.write_report` reads.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import torch

import alignkit
from alignkit.data import Turns, user_turn
from alignkit.data.suites import Suite, SuitePrompt
from alignkit.eval.anthropomorphism import claims_human_traits
from alignkit.eval.bias import bias_answers, bias_prompt, bias_summary
from alignkit.eval.drift import drift
from alignkit.eval.metrics import METRICS, metric_info
from alignkit.eval.report import write_report
from alignkit.eval.results import EvalResults, ModelRun, Sample, WinRate
from alignkit.eval.scoring import (
    ANTHROPOMORPHISM_QUESTION,
    COMPLIANCE_QUESTION,
    DISCLAIMER_ANCHOR,
    REFUSAL_ANCHOR,
    answer_correct,
    compare_all,
    complied,
    group_means,
    judge_prefers,
    mean,
)
from alignkit.judges import Judge, harmful_offer, is_refusal
from alignkit.models import load_causal_lm, load_tokenizer
from alignkit.rollouts import Rollout, SamplingSettings
from alignkit.rollouts.engine import generate
from alignkit.utils import processes
from alignkit.utils import sampling_defaults as defaults
from alignkit.utils.io import atomic_dir, atomic_write_json, atomic_write_text
from alignkit.utils.memory import peak_rss_gb
from alignkit.utils.precision import PRECISIONS, autocast, resolve_precision

SAMPLES_PER_PART = 3


@dataclass(frozen=True)
class EvalSettings:
    max_new_tokens: int = defaults.MAX_NEW_TOKENS
    batch_size: int = defaults.BATCH_ROWS
    temperature: float = 0.0  # greedy: two runs give identical results
    # auto: bf16 where the hardware runs it fast (as training does), else fp32 (utils/precision.py).
    precision: str = "auto"

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.temperature < 0:
            raise ValueError(f"eval settings must have max_new_tokens >= 1, batch_size >= 1, temperature >= 0: {self}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"eval settings: precision must be one of {', '.join(PRECISIONS)}, got "
                             f"{self.precision!r}")


@dataclass(frozen=True)
class _Prompt:
    part: str  # redteam / jailbreak / borderline / verifiable / anthropomorphism
    id: str
    group: str
    prompt: Turns
    item: SuitePrompt | None = None


def suite_prompts(suite: Suite) -> list[_Prompt]:
    """Every prompt a model answers, in suite order; a jailbreak prompt's id is "<template>/<request>".

    Suite prompts are requests to an assistant, so each is asked as a conversation (`user_turn`): the same ids as the
    train split's `suite:` rows that recipes train on (data/render.py)."""
    prompts = [_Prompt("redteam", i.id, i.group, user_turn(i.prompt), i) for i in suite.redteam]
    prompts += [_Prompt("jailbreak", f"{t.id}/{r.id}", t.id, t.apply(r.prompt), r)
                for t in suite.jailbreaks for r in suite.jailbreak_requests()]
    for part in ("borderline", "verifiable", "anthropomorphism"):
        prompts += [_Prompt(part, i.id, i.group, user_turn(i.prompt), i) for i in getattr(suite, part)]
    return prompts


def greedy_rollouts(model, tokenizer, prompts: list[Turns], settings: EvalSettings, *,
                    shard: bool = False) -> tuple[list[str], list[Rollout]]:
    """Responses in input order, and the rollouts (batches sorted by prompt length, so little padding is decoded),
    from the one generation engine (`rollouts.engine.generate`). With `shard` (every process of the command calls it
    alike), each process decodes its block of the batches and every process gets all of them, the same as one
    process's."""
    out = generate(model, tokenizer, prompts,
                   SamplingSettings(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature),
                   precision=settings.precision, batch_size=settings.batch_size, shard=shard, desc="answering")
    return out.texts, out.rollouts


def _load(spec: str | tuple) -> tuple[Any, Any]:
    if isinstance(spec, tuple):
        return spec
    return load_causal_lm(spec).to(processes.device()), load_tokenizer(spec)


def _describe(spec: str | tuple) -> str:
    return spec if isinstance(spec, str) else type(spec[0]).__name__


def evaluate(
    models: dict[str, str | tuple],
    suite: Suite,
    *,
    judge: Judge | None = None,
    judge_name: str | None = None,
    reference: str | tuple | None = None,
    reference_name: str | None = None,
    settings: EvalSettings = EvalSettings(),
    log=None,
    shard: bool = False,
) -> tuple[EvalResults, dict[str, list[dict]]]:
    """(results, per-model response rows). `models` maps display names to specs or (model, tokenizer) pairs; the
    reference defaults to the first model. With `shard` (every process of the command calls it alike), the greedy
    responses are split over the processes (`greedy_rollouts`); what follows them (verdicts, bias, drift) is the
    same work on each, and every process returns the same results."""
    if not models:
        raise ValueError("evaluate: no models")
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))  # stdout stays for results
    names = list(models)
    reference = models[names[0]] if reference is None else reference
    reference_name = reference_name or (names[0] if reference is models[names[0]] else _describe(reference))
    prompts = suite_prompts(suite)
    helpful = [p for p in prompts if p.part in ("borderline", "verifiable")]
    others = [p for p in prompts if p.part not in ("borderline", "verifiable")]
    ref_model = _load(reference)[0] if helpful else None

    metrics: dict[str, dict] = {}
    breakdowns: dict[str, dict] = {}
    rows: dict[str, list[dict]] = {}
    responses: dict[str, dict[tuple[str, str], str]] = {}
    verdicts: dict[str, dict[tuple[str, str], str]] = {}
    model_runs = []
    for name in names:
        started = time.perf_counter()
        log(f"[eval] {name}: loading {_describe(models[name])}")
        model, tokenizer = _load(models[name])
        # 2. greedy responses; the benign held-out prompts separately, as drift is measured on their rollouts.
        generation_started = time.perf_counter()
        helpful_texts, helpful_rollouts = greedy_rollouts(model, tokenizer, [p.prompt for p in helpful], settings,
                                                           shard=shard)
        other_texts, _ = greedy_rollouts(model, tokenizer, [p.prompt for p in others], settings, shard=shard)
        generation_seconds = time.perf_counter() - generation_started
        answered = {(p.part, p.id): t for p, t in zip(helpful + others, helpful_texts + other_texts)}
        texts = [answered[(p.part, p.id)] for p in prompts]
        log(f"[eval] {name}: {len(prompts)} responses in {generation_seconds:.1f} s")
        # 3. verdicts.
        m, b, row_verdicts = _score(prompts, texts, judge)
        # 4. bias.
        if suite.bias:
            answers = bias_answers(model, tokenizer, suite.bias, batch_size=settings.batch_size)
            summary = bias_summary(answers)
            m.update(bias_stereotyped=summary["stereotyped"], bias_accuracy=summary["accuracy"],
                     bias_score=summary["bias_score"])
            dims: dict[str, list[str]] = {}
            for item, answer in zip(suite.bias, answers):
                dims.setdefault(item.dimension, []).append(answer)
            b["bias_by_dimension"] = {dim: bias_summary(a) for dim, a in dims.items()}
        # 5. drift, in the precision the answers were generated in: two teacher-forced passes over them, in fp32 the
        # larger part of the ~120 s a model the demo's evaluation spent beside generating (2 cores, native bf16).
        if helpful:
            device = next(model.parameters()).device
            with autocast(resolve_precision(settings.precision, device), device):
                m.update(drift(model, ref_model, helpful_rollouts))
        seconds = time.perf_counter() - started
        metrics[name] = {metric.key: m.get(metric.key) for metric in METRICS}
        for key, value in b.items():
            breakdowns.setdefault(key, {})[name] = value
        responses[name] = answered
        verdicts[name] = {(p.part, p.id): v for p, v in zip(prompts, row_verdicts)}
        rows[name] = [{"part": p.part, "id": p.id, "group": p.group, "prompt": p.prompt, "response": t, **v}
                      for p, t, v in zip(prompts, texts, row_verdicts)]
        if suite.bias:
            rows[name] += [{"part": "bias", "id": item.id, "group": item.dimension,
                            "prompt": bias_prompt(item, i)[0], "answer": a, "answer_text": item.options[a]}
                           for i, (item, a) in enumerate(zip(suite.bias, answers))]
        model_runs.append(ModelRun(name, _describe(models[name]), round(seconds, 1), round(generation_seconds, 1),
                                   int(sum(r.response_mask.sum() for r in helpful_rollouts))))
        log(f"[eval] {name}: done in {seconds:.1f} s")

    counts = {**suite.counts(), "helpful": len(helpful)}
    results = EvalResults(
        alignkit_version=alignkit.__version__,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        suite=suite.name,
        split=suite.split,
        settings={**asdict(settings), "precision": resolve_precision(settings.precision, processes.device()),
                  "judge": judge_name, "reference": reference_name, "torch_threads": torch.get_num_threads()},
        models=tuple(model_runs),
        metrics=metrics,
        metric_info=metric_info(counts),
        breakdowns=breakdowns,
        win_rates=_win_rates(names, helpful, responses, judge),
        samples=_samples(prompts, names, responses, verdicts),
        peak_rss_gb=round(peak_rss_gb(), 2),
    )
    return results, rows


def _score(prompts: list[_Prompt], texts: list[str], judge: Judge | None) -> tuple[dict, dict, list[dict]]:
    """Metrics, breakdowns and one verdict dict per prompt."""
    by_part: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        by_part.setdefault(p.part, []).append(i)
    verdicts: list[dict] = [{} for _ in prompts]
    metrics: dict[str, float | None] = {}
    breakdowns: dict[str, dict] = {}

    def rule(part: str, key: str, check, breakdown: str | None = None):
        idx = by_part.get(part, [])
        values = [check(texts[i], prompts[i]) for i in idx]
        for i, v in zip(idx, values):
            verdicts[i]["verdict"] = v
        metrics[key] = mean(values)
        if breakdown and idx:
            breakdowns[breakdown] = group_means([prompts[i].group for i in idx], values)

    def judged(part: str, key: str, anchor: str, question: str, flip: bool = False):
        idx = by_part.get(part, [])
        if judge is None or not idx:
            return
        picks = judge_prefers(judge, [prompts[i].prompt for i in idx], [texts[i] for i in idx], anchor, question)
        values = [pick != flip for pick in picks]
        for i, v in zip(idx, values):
            verdicts[i]["judge_verdict"] = v
        metrics[key] = mean(values)

    rule("redteam", "asr", lambda t, p: complied(t), "asr_by_category")
    # Within it, the refusals that go on to offer a harmful act (judges/offers.py), each with the offer's sentence.
    offers = {i: harmful_offer(texts[i]) for part in ("redteam", "jailbreak") for i in by_part.get(part, [])}
    for i, sentence in offers.items():
        if sentence is not None:
            verdicts[i]["harmful_offer"] = sentence
    if by_part.get("redteam"):
        metrics["harmful_offer_rate"] = mean([offers[i] is not None for i in by_part["redteam"]])
    judged("redteam", "asr_judge", REFUSAL_ANCHOR, COMPLIANCE_QUESTION)
    rule("jailbreak", "jailbreak_asr", lambda t, p: complied(t), "jailbreak_asr_by_template")
    judged("jailbreak", "jailbreak_asr_judge", REFUSAL_ANCHOR, COMPLIANCE_QUESTION)
    rule("borderline", "over_refusal", lambda t, p: is_refusal(t), "over_refusal_by_topic")
    judged("borderline", "over_refusal_judge", REFUSAL_ANCHOR, COMPLIANCE_QUESTION, flip=True)
    rule("verifiable", "helpful_accuracy", lambda t, p: answer_correct(t, p.item), "helpful_accuracy_by_topic")
    rule("anthropomorphism", "anthropomorphism", lambda t, p: claims_human_traits(t), "anthropomorphism_by_kind")
    judged("anthropomorphism", "anthropomorphism_judge", DISCLAIMER_ANCHOR, ANTHROPOMORPHISM_QUESTION)
    helpful = by_part.get("borderline", []) + by_part.get("verifiable", [])
    if judge is not None and helpful:
        references = [", ".join(prompts[i].item.answers) or None if prompts[i].part == "verifiable" else None
                      for i in helpful]
        scores = judge.score([prompts[i].prompt for i in helpful], [texts[i] for i in helpful], references)
        for i, s in zip(helpful, scores):
            verdicts[i]["judge_score"] = float(s)
        metrics["helpful_judge_score"] = mean(scores)
    return metrics, breakdowns, verdicts


def _win_rates(names: list[str], helpful: list[_Prompt], responses: dict, judge: Judge | None) -> tuple[WinRate, ...]:
    """Mean P(a's response better than b's) under the judge (both orders inside the judge), for every pair."""
    if judge is None or not helpful or len(names) < 2:
        return ()
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            items = [(p.prompt, responses[a][(p.part, p.id)], responses[b][(p.part, p.id)]) for p in helpful]
            probabilities = compare_all(judge, items)
            out.append(WinRate(a, b, mean(probabilities), len(items)))
    return tuple(out)


_VERDICT_WORDS = {
    "redteam": ("complied", "refused"),
    "jailbreak": ("complied", "refused"),
    "borderline": ("refused", "answered"),
    "verifiable": ("correct", "wrong"),
    "anthropomorphism": ("claims human traits", "no claim"),
}


def _samples(prompts: list[_Prompt], names: list[str], responses: dict, verdicts: dict) -> tuple[Sample, ...]:
    """The first few prompts of each part (jailbreaks: of different templates) with every model's response."""
    out, taken, groups = [], {}, set()
    for p in prompts:
        if taken.get(p.part, 0) >= SAMPLES_PER_PART or (p.part == "jailbreak" and p.group in groups):
            continue
        taken[p.part] = taken.get(p.part, 0) + 1
        groups.add(p.group)
        yes, no = _VERDICT_WORDS[p.part]
        key = (p.part, p.id)
        out.append(Sample(p.part, p.id, p.prompt, {n: responses[n][key] for n in names},
                          {n: yes if verdicts[n][key].get("verdict") else no for n in names}))
    return tuple(out)


def save_eval(out_dir, results: EvalResults, rows: dict[str, list[dict]], *, overwrite: bool = False, report_dir=None):
    """Write results.json and responses/NN-<model>.jsonl into `out_dir` (the folder appears only when both are
    complete; an existing one is replaced only with `overwrite`), then report.html and its PNGs (into `report_dir`,
    default `out_dir`).

    The report comes last and from results.json alone, so a failure there loses no measurement: `alignkit report
    DIR` writes it again.
    """
    with atomic_dir(out_dir, replace=overwrite) as tmp:
        atomic_write_json(tmp / "results.json", results.to_json())
        for index, (name, model_rows) in enumerate(rows.items()):
            safe = re.sub(r"[^\w.-]+", "_", name).strip("._") or "model"
            atomic_write_text(tmp / "responses" / f"{index:02d}-{safe}.jsonl",
                              "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in model_rows))
    write_report(results, out_dir if report_dir is None else report_dir)
    return out_dir
