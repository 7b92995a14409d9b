"""Judges backed by a neural model: a trained reward model, and a local LM asked a multiple-choice question.

The LM judge follows the Constitutional AI paper's feedback-model recipe (Bai et al. 2022, sec. 4.1): the comparison
is posed as a multiple-choice question, the probability of each option is its next-token probability normalised over
the options, and the question is asked in both orders and averaged, which cancels position bias (measured strong for
the 135M model: see shared GUIDE). Its labels still need auditing on gold comparisons before they are trusted.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from alignkit.data import Turns, pad_batch, render_prompt_completion, render_responses, reply_to, user_turn
from alignkit.judges.base import check_batch
from alignkit.judges.prompts import COMPARISON_TEMPLATE, DEFAULT_QUESTION, conversation_text
from alignkit.models import SequenceScores, load_causal_lm, load_score_model, load_tokenizer
from alignkit.models.forward import position_ids
from alignkit.utils import processes
from alignkit.utils.progress import batches


class RewardModelJudge:
    """Scores from a trained reward model (`alignkit reward` output); compare = Bradley-Terry sigmoid(r_a - r_b)."""

    def __init__(self, model: str | Any, tokenizer=None, *, max_length: int = 512, batch_size: int = 8):
        if tokenizer is None and not isinstance(model, str):
            raise ValueError("RewardModelJudge: pass the tokenizer along with a model object")
        self.model = load_score_model(model) if isinstance(model, str) else model
        self.tokenizer = tokenizer or load_tokenizer(model)
        self.scorer = SequenceScores(self.model).eval()
        self.max_length = max_length
        self.batch_size = batch_size

    @torch.no_grad()
    def score(self, prompts: list[Turns], completions: list[str], references: list | None = None) -> list[float]:
        check_batch("RewardModelJudge", prompts, completions, references)
        device = next(self.model.parameters()).device
        out: list[float] = []
        for start in batches(len(prompts), self.batch_size, "scoring"):
            rendered = [
                render_prompt_completion(self.tokenizer, p, reply_to(p, c), max_length=self.max_length)
                for p, c in zip(prompts[start : start + self.batch_size], completions[start : start + self.batch_size])
            ]
            batch = pad_batch(rendered, pad_id=self.tokenizer.pad_token_id)
            out.extend(self.scorer(batch["input_ids"].to(device), batch["attention_mask"].to(device)).tolist())
        return out

    def compare(self, prompt: Turns, a: str, b: str, principle: str | None = None, reference: Any = None) -> float:
        s_a, s_b = self.score([prompt, prompt], [a, b])
        return 1.0 / (1.0 + math.exp(-(s_a - s_b)))


class LMJudge:
    """A local causal LM answering "(A) or (B)?"; P(option) from next-token log-probs, both orders averaged.

    score() is not defined by a comparison-only judge in absolute terms; it returns each completion's probability of
    being preferred over an empty reply ("" as B), which ranks completions of one prompt consistently.

    With `shard`, every process of the command asks it the same questions and each answers its block of the
    batches (`processes.batch_map`): the same probabilities as one process, on every process.
    """

    def __init__(self, model: str | Any, tokenizer=None, *, question: str = DEFAULT_QUESTION, batch_size: int = 16,
                 max_length: int | None = None, shard: bool = False):
        if tokenizer is None and not isinstance(model, str):
            raise ValueError("LMJudge: pass the tokenizer along with a model object")
        self.model = load_causal_lm(model) if isinstance(model, str) else model
        self.tokenizer = tokenizer or load_tokenizer(model)
        self.question = question
        self.batch_size = batch_size
        # The same cut a feedback model's training applied to these questions (data/render.py), so that it is
        # asked exactly what it was taught.
        self.max_length = max_length
        self.shard = shard

    def _question(self, prompt: Turns, first: str, second: str, principle: str | None) -> tuple[list[int], list[int]]:
        """(ids the option is read after, [id of "A", id of "B"] there).

        The question is a user turn and the answers "(A)" / "(B)" are the assistant's reply, rendered by the one
        renderer exactly as a feedback model is taught them (constitution/critique.py: comparison_sft_rows): the
        ids are the prompt plus the two renderings' common start, and the options are the first ids where they
        differ. Whether the tokenizer writes "(" and "A" apart or "(A" as one token, the judge reads the token that
        training taught."""
        text = COMPARISON_TEMPLATE.format(
            conversation=conversation_text(prompt), question=principle or self.question, first=first, second=second
        )
        conversation = user_turn(text)
        answers = render_responses(self.tokenizer, conversation, [reply_to(conversation, f"({o})") for o in "AB"],
                                   self.max_length)
        a, b = (r.input_ids for r in answers)
        split = next(i for i in range(min(len(a), len(b))) if a[i] != b[i])
        return a[:split], [a[split], b[split]]

    @torch.no_grad()
    def option_probs_many(self, questions: list[tuple]) -> torch.Tensor:
        """[N, 2]: [P(A), P(B)] for each (prompt, first, second, principle), the options' next-token probabilities
        renormalised over the two; `batch_size` questions per forward pass, left-padded."""
        device = next(self.model.parameters()).device
        self.model.eval()
        asked = [self._question(*q) for q in questions]
        encoded = [ids for ids, _ in asked]
        options = torch.tensor([pair for _, pair in asked])
        # Similar lengths share a batch, so little padding is computed over.
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))

        def ask(start: int) -> list[tuple[list[int], torch.Tensor]]:
            rows = order[start : start + self.batch_size]
            chunk = [encoded[i] for i in rows]
            batch = pad_batch([(seq, [1] * len(seq)) for seq in chunk], self.tokenizer.pad_token_id, side="left")
            ids, mask = batch["input_ids"], batch["attention_mask"]
            logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                                position_ids=position_ids(mask).to(device), logits_to_keep=1).logits[:, -1].float()
            picked = logits.gather(-1, options[rows].to(device))
            return [(rows, torch.softmax(picked, -1).cpu())]

        out = torch.empty(len(encoded), 2)
        for rows, probs in processes.batch_map(ask, len(order), self.batch_size, "judging", shard=self.shard):
            out[rows] = probs
        return out

    def option_probs(self, prompt: Turns, first: str, second: str, principle: str | None = None) -> torch.Tensor:
        """[P(A), P(B)] for one ordering."""
        return self.option_probs_many([(prompt, first, second, principle)])[0]

    def compare(self, prompt: Turns, a: str, b: str, principle: str | None = None, reference: Any = None) -> float:
        """P(a better than b) = mean of P(A | a shown first) and P(B | a shown second)."""
        first, second = self.compare_orders(prompt, a, b, principle)
        return 0.5 * (first + second)

    def compare_orders(self, prompt: Turns, a: str, b: str, principle: str | None = None) -> tuple[float, float]:
        """(P(a better) with a shown as (A), P(a better) with a shown as (B)), for position-bias audits."""
        return self.compare_orders_many([(prompt, a, b, principle)])[0]

    def compare_orders_many(self, items: list[tuple]) -> list[tuple[float, float]]:
        """compare_orders for many (prompt, a, b[, principle]) items, batched."""
        questions = []
        for prompt, a, b, *rest in items:
            principle = rest[0] if rest else None
            questions += [(prompt, a, b, principle), (prompt, b, a, principle)]
        probs = self.option_probs_many(questions)
        return [(float(probs[2 * i, 0]), float(probs[2 * i + 1, 1])) for i in range(len(items))]

    def compare_many(self, items: list[tuple]) -> list[float]:
        return [0.5 * (first + second) for first, second in self.compare_orders_many(items)]

    def score(self, prompts: list[Turns], completions: list[str], references: list | None = None) -> list[float]:
        check_batch("LMJudge", prompts, completions, references)
        return self.compare_many([(p, c, "") for p, c in zip(prompts, completions)])
