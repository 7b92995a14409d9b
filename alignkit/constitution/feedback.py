"""The feedback model of Constitutional AI, whatever it is: the policy itself, another local model, an
OpenAI-compatible endpoint, or any judge.

It does two jobs. Phase 1 needs it to *write* (critiques and revisions: `generate`); phase 2 and the audit need it to
*compare* two responses under a principle with both orders apart (`judge.compare_orders`). A local model or an HTTP
endpoint does both; another judge (a reward model, a rule) can only compare, so a pipeline that asks it to critique
is refused with a message saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit.constitution.labels import judge_orders
from alignkit.eval.harness import EvalSettings, greedy_rollouts
from alignkit.judges.base import Judge
from alignkit.judges.factory import judge_from_spec
from alignkit.judges.model import LMJudge
from alignkit.models import load_causal_lm, load_tokenizer
from alignkit.utils import processes
from alignkit.utils.journal import Journal

# (conversations, each a list of {"role", "content"}, max_new_tokens) -> one reply each.
Generate = Callable[[list[list[dict]], int], list[str]]


@dataclass
class FeedbackModel:
    name: str
    judge: Judge
    generate: Generate | None = None
    # How many requests a journal asks at a time (`journaled`): an endpoint answers each request on its own, so
    # its answers are kept a few at a time; a local model answers all at once, batched as without a journal.
    chunk: int | None = None
    # Under a launcher, whether the journal hands its chunks out to the processes (an endpoint, which does not split
    # its work itself); a local model made with `shard` splits each call's batches over them instead.
    split_chunks: bool = False

    def require_generate(self) -> Generate:
        if self.generate is None:
            raise ValueError(f"the feedback model {self.name} can only compare responses; critique and revision need "
                             "one that writes text: a local model (path or alias), the policy, or an http endpoint")
        return self.generate


def local_feedback_model(model: str | Any, tokenizer=None, *, name: str | None = None, batch_size: int = 64,
                         max_length: int | None = None, judge_model: str | None = None,
                         precision: str = "auto", shard: bool = False) -> FeedbackModel:
    """A local causal LM: greedy replies for critiques and revisions, option log-probs for comparisons (questions cut
    to `max_length` tokens as its teaching cut them). `judge_model` (a path) compares instead, when each skill was
    taught to its own copy. It writes in `precision` (utils/precision.py). With `shard`, every process of the command asks it alike and each computes its block
    of every call's batches (the answers are one process's, on every process)."""
    tokenizer = tokenizer or load_tokenizer(model)

    # Loaded here, a model computes where this process does (its GPU, if any); one passed in stays where it is.
    module = load_causal_lm(model).to(processes.device()) if isinstance(model, str) else model
    comparer = module if judge_model is None else load_causal_lm(judge_model).to(processes.device())
    judge = LMJudge(comparer, tokenizer, batch_size=min(batch_size, 16), max_length=max_length,
                    shard=shard)

    def generate(conversations: list[list[dict]], max_new_tokens: int) -> list[str]:
        settings = EvalSettings(max_new_tokens=max_new_tokens, batch_size=batch_size, precision=precision)
        return greedy_rollouts(module, tokenizer, conversations, settings, shard=shard)[0]

    return FeedbackModel(name or (str(model) if judge_model is None else f"{model} + {judge_model}"), judge, generate)


def load_feedback_model(spec: str | dict, *, batch_size: int = 64, max_length: int | None = None,
                        precision: str = "auto", shard: bool = False) -> FeedbackModel:
    """`spec`: a model (alias, HF directory, .gguf, hub id), `{lm: MODEL}`, `{http: {base_url, model, ...}}` (an
    OpenAI-compatible endpoint) or any other judge spec (`{reward_model: DIR}`, ...; comparisons only). A local
    model's comparison questions are cut to `max_length` tokens (None: never) and it writes in `precision`. `shard`: every process of the
    command asks it alike, and the work is split over them (a local model's batches, an endpoint's journal
    chunks); another judge answers every question on every process."""
    if isinstance(spec, str):
        return local_feedback_model(spec, batch_size=batch_size, max_length=max_length, precision=precision,
                                    shard=shard)
    if isinstance(spec, dict) and set(spec) == {"lm"}:
        return local_feedback_model(spec["lm"], batch_size=batch_size, max_length=max_length, precision=precision,
                                    shard=shard)
    judge = judge_from_spec(spec)
    if isinstance(spec, dict) and "http" in spec:
        # An OpenAI-compatible endpoint: the judge's chat client (judges/chat_client.py) also writes.
        def generate(conversations: list[list[dict]], max_new_tokens: int) -> list[str]:
            return judge.client.chat_many(conversations, max_tokens=max_new_tokens)

        return FeedbackModel(judge.name, judge, generate, chunk=4 * judge.client.max_concurrency, split_chunks=shard)
    return FeedbackModel(getattr(judge, "name", type(judge).__name__), judge)


class JournaledJudge:
    """A judge whose comparisons (both orders) are answered through a `Journal`; anything else goes to the judge."""

    def __init__(self, judge: Judge, journal: Journal, chunk: int | None, shard: bool = False):
        self.judge, self.journal, self.chunk, self.shard = judge, journal, chunk, shard

    def compare_orders_many(self, items: list[tuple]) -> list[tuple[float, float]]:
        requests = [{"compare": list(item)} for item in items]
        answers = self.journal.map(lambda part: judge_orders(self.judge, [tuple(r["compare"]) for r in part]),
                                   requests, self.chunk, shard=self.shard)
        return [tuple(a) for a in answers]

    def __getattr__(self, name: str):
        return getattr(self.judge, name)


def journaled(feedback: FeedbackModel, path: str | Path) -> FeedbackModel:
    """`feedback` answering through the journal at `path`: a stage stopped half-way (killed, or its endpoint gone)
    asks again only what it had not been answered, and ends with the answers an uninterrupted run gets."""
    journal = Journal(path)
    inner = feedback.generate

    def generate(conversations: list[list[dict]], max_new_tokens: int) -> list[str]:
        requests = [{"generate": c, "max_new_tokens": max_new_tokens} for c in conversations]
        return journal.map(lambda part: inner([r["generate"] for r in part], max_new_tokens), requests,
                           feedback.chunk, shard=feedback.split_chunks)

    judge = JournaledJudge(feedback.judge, journal, feedback.chunk, feedback.split_chunks)
    return FeedbackModel(feedback.name, judge, None if inner is None else generate, feedback.chunk,
                         feedback.split_chunks)


__all__ = ["FeedbackModel", "Generate", "JournaledJudge", "journaled", "load_feedback_model", "local_feedback_model"]
