"""A judge behind any OpenAI-compatible chat endpoint: vLLM, llama.cpp's server, Ollama, hosted APIs.

It asks the same questions as the local ``LMJudge`` (``prompts.py``) through ``POST {base_url}/chat/completions``,
greedily (``temperature`` 0) and with few ``max_tokens``, and reads the answer in one of two ways:

**From log-probs** when the server returns them (``logprobs: true, top_logprobs: k`` is requested). The answer
position is the first generated token whose text, stripped of whitespace, brackets, quotes, ``*`` and trailing
``.:,``, is one of the options ("A"/"B" for a comparison, the digits of the scale for a rating); lead-in tokens such
as "(" or "**", and words before the answer ("The answer is (A)") are stepped over. At that position every entry of
``top_logprobs`` whose stripped text is an option adds its probability to that option, so the variants "A", " A",
"(A" and "A)" — different tokens, hence disjoint events — are summed. The option probabilities are then normalised
over the options alone. Options outside the top k count as probability 0.

- ``compare``: P(A) for one order of the two replies. The question is asked in both orders and
  P(a better) = (P(A | a shown first) + P(B | a shown second)) / 2, which cancels position bias and makes
  compare(a, b) + compare(b, a) = 1 for a deterministic server.
- ``score``: the expected rating, sum_d d * P(d) over the digits of ``rating_scale`` (default 1..9: single digits,
  so all ratings are read at one position).

**From the text** when there are no log-probs (many hosted APIs) or no option token was generated: "(A)", "answer:
B", or a reply that starts with the letter count as that option, giving 1.0 / 0.0 for that order; a rating is the
first integer on the scale. Unreadable answers count as undecided (0.5 for an order, the scale's midpoint for a
rating) with a logged warning, or raise ``JudgeError`` with ``on_unparseable="raise"``. ``stats`` counts how every
answer was read, so a run can check that the log-prob path was really taken.

Transport: `chat_client.ChatClient`, the one OpenAI-compatible client (timeouts, bounded retries with backoff and
jitter, no retry on client errors or malformed bodies, the API key read from ``api_key_env`` at each request and
never stored, logged or shown), which a feedback model served over HTTP also writes through.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .base import JudgeError, check_batch
from .chat_client import ChatClient, excerpt
from .prompts import (
    COMPARISON_TEMPLATE,
    DEFAULT_QUESTION,
    DEFAULT_RATING_QUESTION,
    RATING_TEMPLATE,
    conversation_text,
)

if TYPE_CHECKING:
    from alignkit.data.records import Turns

log = logging.getLogger(__name__)

# Characters around an option in a token or answer: "(A", " A", "**A**", "A)", "A.", and the word-start markers
# some servers leave in token strings ("▁A" for SentencePiece, "ĠA" for byte-level BPE).
_LEAD = " \t\r\n([{*_\"'`\u2581\u0120"
_TRAIL = " \t\r\n)]}*_\"'`.:,"

# A/B in free text, tried in this order (the first pattern that matches decides, at its first match):
# "(A)" anywhere; "answer: B" / "Response A" / "option is (B)"; a reply that starts with the letter ("B.", "**A**").
_PARENTHESISED = re.compile(r"\(\s*([AB])\s*\)")
_NAMED = re.compile(r"\b(?i:answer|response|reply|option|choice)\b\s*(?:(?i:is)\s*)?[:\-]?\s*[(\[*]*\s*([AB])(?![\w])")
_LEADING = re.compile(r"^[\s([{*_\"'`]*([AB])(?![\w'])")
_INTEGER = re.compile(r"(?<![\d.])\d+(?![\d.]*\d)")


def _label(token: str) -> str:
    """A token or answer stripped of the decoration around an option: " (A" -> "A", "**7" -> "7", "(" -> ""."""
    return token.lstrip(_LEAD).rstrip(_TRAIL)


# ---------------------------------------------------------------------------------------------
# Reading answers (pure functions of a parsed response)
# ---------------------------------------------------------------------------------------------

Position = tuple[str, list[tuple[str, float]]]  # (generated token, [(alternative token, logprob), ...])


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} is {value!r}, expected a number")
    return float(value)


def logprob_positions(choice: Mapping) -> list[Position] | None:
    """The generated tokens of one choice with their top alternatives, or None when the server sent no log-probs.

    Accepts the chat shape ``logprobs.content[i] = {token, logprob, top_logprobs: [{token, logprob}]}`` and the
    legacy completions shape ``logprobs = {tokens, token_logprobs, top_logprobs: [{token: logprob}]}``. The
    generated token joins its alternatives when the server left it out of them. Raises ValueError on a wrong shape.
    """
    logprobs = choice.get("logprobs")
    if logprobs is None:
        return None
    if not isinstance(logprobs, Mapping):
        raise ValueError(f"'logprobs' is a {type(logprobs).__name__}, expected an object")
    positions: list[Position] = []
    if logprobs.get("content") is not None:
        content = logprobs["content"]
        if not isinstance(content, list):
            raise ValueError(f"'logprobs.content' is a {type(content).__name__}, expected a list")
        for i, entry in enumerate(content):
            where = f"logprobs.content[{i}]"
            if not isinstance(entry, Mapping) or not isinstance(entry.get("token"), str):
                raise ValueError(f"{where} is not an object with a string 'token'")
            chosen_logprob = _number(entry.get("logprob"), f"{where}.logprob")
            alternatives = []
            for j, top in enumerate(entry.get("top_logprobs") or []):
                if not isinstance(top, Mapping) or not isinstance(top.get("token"), str):
                    raise ValueError(f"{where}.top_logprobs[{j}] is not an object with a string 'token'")
                alternatives.append((top["token"], _number(top.get("logprob"), f"{where}.top_logprobs[{j}].logprob")))
            if entry["token"] not in {token for token, _ in alternatives}:
                alternatives.append((entry["token"], chosen_logprob))
            positions.append((entry["token"], alternatives))
        return positions
    if "tokens" in logprobs:
        tokens, chosen, tops = logprobs.get("tokens"), logprobs.get("token_logprobs"), logprobs.get("top_logprobs")
        if not isinstance(tokens, list) or not isinstance(chosen, list) or len(chosen) != len(tokens):
            raise ValueError("legacy 'logprobs' needs lists 'tokens' and 'token_logprobs' of equal length")
        tops = tops if isinstance(tops, list) else [None] * len(tokens)
        for i, (token, token_logprob, top) in enumerate(zip(tokens, chosen, tops)):
            if not isinstance(token, str):
                raise ValueError(f"logprobs.tokens[{i}] is {token!r}, expected a string")
            top = top or {}
            if not isinstance(top, Mapping):
                raise ValueError(f"logprobs.top_logprobs[{i}] is a {type(top).__name__}, expected an object")
            alternatives = [(str(t), _number(lp, f"logprobs.top_logprobs[{i}][{t!r}]")) for t, lp in top.items()]
            if token not in top:
                alternatives.append((token, _number(token_logprob, f"logprobs.token_logprobs[{i}]")))
            positions.append((token, alternatives))
        return positions
    return None


def option_probabilities(positions: Sequence[Position], options: Sequence[str]) -> dict[str, float] | None:
    """P(option) at the answer position, normalised over ``options``; None when no generated token is an option.

    The answer position is the first generated token whose ``_label`` is an option. There each alternative whose
    label is an option adds exp(logprob) to it (variants like "A", " A", "(A" are distinct tokens, so their
    probabilities add up).
    """
    for chosen, alternatives in positions:
        if _label(chosen) not in options:
            continue
        mass = dict.fromkeys(options, 0.0)
        for token, logprob in alternatives:
            label = _label(token)
            if label in mass and not math.isnan(logprob):
                mass[label] += math.exp(min(logprob, 0.0))
        total = sum(mass.values())
        if not total > 0 or not math.isfinite(total):
            return None
        return {option: p / total for option, p in mass.items()}
    return None


def parse_choice(text: str) -> str | None:
    """"A" or "B" from a free-text answer, or None (see the module docstring for the accepted forms)."""
    for pattern in (_PARENTHESISED, _NAMED, _LEADING):
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


def parse_rating(text: str, low: int, high: int) -> int | None:
    """The first whole number in ``text`` that lies on the scale [low, high], or None."""
    for match in _INTEGER.finditer(text):
        value = int(match.group())
        if low <= value <= high:
            return value
    return None


# ---------------------------------------------------------------------------------------------
# The judge
# ---------------------------------------------------------------------------------------------


class HTTPJudge:
    """A Judge that asks a model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        base_url: the API root, as OpenAI clients take it, e.g. ``http://127.0.0.1:8080/v1``; requests go to
            ``{base_url}/chat/completions``.
        model: the ``model`` field of each request (servers that host one model ignore it).
        api_key_env: name of the environment variable that holds the API key, sent as ``Authorization: Bearer``.
            None sends no key. No variable is read unless it is named here, so a key meant for one provider is never
            sent to another endpoint by default. It must be set when the judge is built.
        timeout: seconds for the connection and for each read of one request.
        max_retries: retries after the first attempt, on connection errors, timeouts, 429 and 5xx.
        backoff, max_backoff: the n-th retry waits ``min(max_backoff, backoff * 2**n)`` seconds times a random
            factor in [0.5, 1) (jitter spreads out clients that failed together); a numeric ``Retry-After`` header
            raises the wait to its value, capped at ``max_backoff``.
        max_concurrency: requests in flight at once for batches (``score``, ``compare_many``, both orders of one
            ``compare``).
        logprobs, top_logprobs: whether to ask for log-probs and how many alternatives per token (OpenAI allows up
            to 20). Switch off for servers that reject the fields; answers are then read from the text.
        max_tokens: tokens to generate per question; a few are enough for "(A)" or a digit and a lead-in.
        question: what "better" means in comparisons (a ``principle`` passed to ``compare`` replaces it).
        rating_question, rating_scale: the rating question and its scale (single digits, low < high).
        system_prompt: an optional system message before each question.
        extra_body: fields merged into every request body (e.g. ``{"seed": 0}`` or a server's own options).
        on_unparseable: "neutral" (0.5, or the scale's midpoint, with a logged warning) or "raise" (JudgeError).
    """

    def __init__(
        self,
        base_url: str,
        model: str = "default",
        *,
        api_key_env: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        max_concurrency: int = 4,
        logprobs: bool = True,
        top_logprobs: int = 20,
        max_tokens: int = 8,
        question: str = DEFAULT_QUESTION,
        rating_question: str = DEFAULT_RATING_QUESTION,
        rating_scale: tuple[int, int] | list[int] = (1, 9),
        system_prompt: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        on_unparseable: str = "neutral",
    ):
        if not isinstance(top_logprobs, int) or top_logprobs < 1:
            raise ValueError(f"HTTPJudge: top_logprobs must be an int >= 1, got {top_logprobs!r}")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"HTTPJudge: max_tokens must be an int >= 1, got {max_tokens!r}")
        low, high = rating_scale
        if not (isinstance(low, int) and isinstance(high, int) and 0 <= low < high <= 9):
            raise ValueError(f"HTTPJudge: rating_scale must be two single digits low < high, got {rating_scale!r}")
        if on_unparseable not in ("neutral", "raise"):
            raise ValueError(f"HTTPJudge: on_unparseable must be 'neutral' or 'raise', got {on_unparseable!r}")
        # The transport (and the checks of its settings) is the chat client a feedback model over HTTP also uses.
        self.client = ChatClient(base_url, model, api_key_env=api_key_env, timeout=timeout, max_retries=max_retries,
                                 backoff=backoff, max_backoff=max_backoff, max_concurrency=max_concurrency,
                                 system_prompt=system_prompt, extra_body=extra_body, owner="HTTPJudge")
        self.base_url, self.url, self.model = self.client.base_url, self.client.url, model
        self.api_key_env, self.timeout, self.max_retries = api_key_env, self.client.timeout, max_retries
        self.logprobs = bool(logprobs)
        self.top_logprobs = top_logprobs
        self.max_tokens = max_tokens
        self.question = question
        self.rating_question = rating_question
        self.rating_scale = (low, high)
        self.on_unparseable = on_unparseable
        self.name = self.client.name
        self._lock = threading.Lock()
        self._stats = dict.fromkeys(("logprob_answers", "text_answers", "unparsed_answers"), 0)

    def __repr__(self) -> str:
        return f"HTTPJudge(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    @property
    def stats(self) -> dict[str, int]:
        """Counts since construction: HTTP attempts, retries, and answers read from log-probs / text / neither."""
        with self._lock:
            return {**self.client.stats, **self._stats}

    def _count(self, key: str) -> None:
        with self._lock:
            self._stats[key] += 1

    # -- the Judge interface ------------------------------------------------------------------

    def compare(self, prompt: Turns, a: str, b: str, principle: str | None = None, reference: Any = None) -> float:
        """P(``a`` better than ``b``): the mean of P(A) with ``a`` shown first and P(B) with ``a`` shown second."""
        return self.compare_many([(prompt, a, b, principle, reference)])[0]

    def compare_many(self, items: Iterable[Sequence | Mapping]) -> list[float]:
        """``compare`` for many items, at most ``max_concurrency`` requests at a time.

        Each item is ``(prompt, a, b)``, optionally followed by ``principle`` and ``reference``, or a mapping with
        those keys.
        """
        return [0.5 * (first + second) for first, second in self.compare_orders_many(items)]

    def compare_orders(self, prompt: Turns, a: str, b: str, principle: str | None = None) -> tuple[float, float]:
        """(P(a better) with ``a`` shown as (A), P(a better) with ``a`` shown as (B)): the two orders apart, which
        is what a position-bias audit needs; ``compare`` is their mean."""
        return self.compare_orders_many([(prompt, a, b, principle)])[0]

    def compare_orders_many(self, items: Iterable[Sequence | Mapping]) -> list[tuple[float, float]]:
        jobs = []
        for i, item in enumerate(items):
            prompt, a, b, principle, reference = self._unpack(i, item)
            for first, second in ((a, b), (b, a)):
                jobs.append((i, self._comparison_body(prompt, first, second, principle, reference)))
        responses = self.client.post_all(jobs)
        results = []
        for i in range(0, len(responses), 2):
            forward = self._first_option_probability(responses[i], jobs[i][0])
            backward = self._first_option_probability(responses[i + 1], jobs[i][0])
            # In the second order a is option B, whose probability is 1 - P(A).
            results.append((forward, 1.0 - backward))
        return results

    def score(self, prompts: list[Turns], completions: list[str], references: list | None = None) -> list[float]:
        """The expected rating of each completion on ``rating_scale`` (see the module docstring)."""
        check_batch(self.name, prompts, completions, references)
        low, high = self.rating_scale
        jobs = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions)):
            if not isinstance(completion, str):
                raise JudgeError(f"{self.name}: item {i}: completion must be a str, got {type(completion).__name__}")
            reference = None if references is None else references[i]
            text = RATING_TEMPLATE.format(
                conversation=conversation_text(prompt, reference),
                completion=completion,
                question=self.rating_question,
                low=low,
                high=high,
            )
            jobs.append((i, self._body(text)))
        return [self._rating(response, item) for (item, _), response in zip(jobs, self.client.post_all(jobs))]

    # -- questions and answers ----------------------------------------------------------------

    def _unpack(self, index: int, item: Sequence | Mapping) -> tuple:
        if isinstance(item, Mapping):
            unknown = sorted(set(item) - {"prompt", "a", "b", "principle", "reference"})
            if unknown or not {"prompt", "a", "b"} <= set(item):
                raise ValueError(
                    f"{self.name}: compare item {index} needs keys prompt, a, b (optional principle, reference); "
                    f"got {sorted(item)}"
                )
            fields = (item["prompt"], item["a"], item["b"], item.get("principle"), item.get("reference"))
        elif isinstance(item, Sequence) and not isinstance(item, str) and 3 <= len(item) <= 5:
            fields = tuple(item) + (None,) * (5 - len(item))
        else:
            raise ValueError(
                f"{self.name}: compare item {index} must be (prompt, a, b[, principle[, reference]]) or a mapping, "
                f"got {type(item).__name__}"
            )
        for name, value in zip(("a", "b"), fields[1:3]):
            if not isinstance(value, str):
                raise JudgeError(f"{self.name}: item {index}: {name} must be a str, got {type(value).__name__}")
        return fields

    def _comparison_body(self, prompt: Turns, first: str, second: str, principle: str | None, reference: Any) -> dict:
        text = COMPARISON_TEMPLATE.format(
            conversation=conversation_text(prompt, reference),
            question=principle or self.question,
            first=first,
            second=second,
        )
        return self._body(text)

    def _body(self, text: str) -> dict:
        fields: dict[str, Any] = {"max_tokens": self.max_tokens, "temperature": 0.0}
        if self.logprobs:
            fields.update(logprobs=True, top_logprobs=self.top_logprobs)
        return self.client.body([{"role": "user", "content": text}], **fields)

    def _answer(self, response: Mapping, item: int, options: Sequence[str]) -> tuple[dict[str, float] | None, str]:
        """(option probabilities from log-probs or None, answer text) for one validated response."""
        choice = response["choices"][0]
        text = choice["message"].get("content") or ""
        try:
            positions = logprob_positions(choice)
        except ValueError as exc:
            raise JudgeError(f"{self.name}: POST {self.url}: item {item}: malformed logprobs: {exc}") from exc
        probabilities = option_probabilities(positions, options) if positions else None
        return probabilities, text

    def _unparsed(self, item: int, text: str, what: str) -> None:
        self._count("unparsed_answers")
        message = f"{self.name}: item {item}: could not read {what} from the answer {excerpt(text)!r}"
        if self.on_unparseable == "raise":
            raise JudgeError(message)
        log.warning("%s; counting it as undecided (%d so far)", message, self.stats["unparsed_answers"])

    def _first_option_probability(self, response: Mapping, item: int) -> float:
        probabilities, text = self._answer(response, item, ("A", "B"))
        if probabilities is not None:
            self._count("logprob_answers")
            return probabilities["A"]
        choice = parse_choice(text)
        if choice is not None:
            self._count("text_answers")
            return 1.0 if choice == "A" else 0.0
        self._unparsed(item, text, "(A) or (B)")
        return 0.5

    def _rating(self, response: Mapping, item: int) -> float:
        low, high = self.rating_scale
        digits = [str(d) for d in range(low, high + 1)]
        probabilities, text = self._answer(response, item, digits)
        if probabilities is not None:
            self._count("logprob_answers")
            return sum(int(d) * p for d, p in probabilities.items())
        rating = parse_rating(text, low, high)
        if rating is not None:
            self._count("text_answers")
            return float(rating)
        self._unparsed(item, text, f"a rating from {low} to {high}")
        return (low + high) / 2
