"""Final answers of verifiable tasks: the number a response gives as its answer, and whether it matches the gold one.

Used by the final-answer verifier (`alignkit.judges.rules.FinalAnswerVerifier`) and the helpfulness metric.
"""

from __future__ import annotations

import math
import numbers
import re
from fractions import Fraction
from typing import Any

# One number as written in a response: "-12", "1,234", "$12.50", "3/4".
# - A minus sign counts only when it does not follow a word character or a closing bracket, so
#   the "-5" of "10-5" is read as 5 (a subtraction), while "= -5" and "-$5" are negative.
# - Thousands separators must come in groups of exactly three digits, so "1,2,3" is three numbers.
# - A number may not start right after a letter, digit or "." ("x2", "v1.2.3" are not answers).
# - A decimal point needs digits after it, so the full stop of "42." is left out.
_NUMBER = re.compile(
    r"(?:(?<![\w)\]])(?P<sign>[-\u2212]))?\$?"
    r"(?<![\w.])(?P<int>\d{1,3}(?:,\d{3})+(?![\d,])|\d+)"
    r"(?:\.(?P<dec>\d+)|/(?P<den>\d+)(?![\d.]))?"
)
# "#### 42": the GSM8K convention, and what alignkit.tasks asks for.
_HASHES = re.compile(r"####")
# "\boxed{...}" with one level of nested braces, enough for "\boxed{\frac{3}{4}}".
_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_LATEX_FRAC = re.compile(r"\\d?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
# "the answer is 42", "Answer: 42", "final answer = 42", "answer would be 42".
_ANSWER_PHRASE = re.compile(r"\banswer\b\s*(?:(?:is|was|would be|will be)\b|:|=)\s*:?", re.IGNORECASE)
# A number may sit a few characters after a marker ("####  $42", "answer is **42**").
_MARKER_GAP = 15


def _format_number(match: re.Match) -> str:
    sign = "-" if match["sign"] else ""
    digits = str(int(match["int"].replace(",", "")))
    if match["den"] is not None:
        text = f"{digits}/{int(match['den'])}"
    elif match["dec"] is not None and match["dec"].strip("0"):
        text = f"{digits}.{match['dec']}"
    else:
        # "42.0" and "42.00" are the integer 42.
        text = digits
    if text.strip("0./") == "" and match["den"] is None:
        # "-0" is 0.
        return text
    return sign + text


def _number_after(text: str, start: int) -> str | None:
    """The first number in ``text[start:]`` when it begins within _MARKER_GAP characters of ``start``."""
    match = _NUMBER.search(text, start)
    if match is None:
        return None
    gap = text[start : match.start()]
    if len(gap) > _MARKER_GAP or "\n\n" in gap:
        return None
    return _format_number(match)


def _last_number(text: str) -> str | None:
    matches = list(_NUMBER.finditer(text))
    return _format_number(matches[-1]) if matches else None


def extract_final_answer(text: str) -> str | None:
    """The final answer of a math response, normalised ("1,234.00" -> "1234"), or None.

    Explicit markers win, each at its last occurrence, in this order: "#### 42",
    "\\boxed{42}", "answer is 42" / "Answer: 42", "... = 42" on the last line; otherwise the
    last number in the text. Negatives, thousands separators, decimals, simple fractions
    ("3/4") and surrounding units or currency ("42 apples.", "$12.50") are handled.
    """
    if not isinstance(text, str):
        raise TypeError(f"extract_final_answer expects a str, got {type(text).__name__}")
    text = text.replace("\u2212", "-")

    hashes = list(_HASHES.finditer(text))
    if hashes:
        found = _number_after(text, hashes[-1].end())
        if found is not None:
            return found

    boxes = list(_BOXED.finditer(text))
    if boxes:
        inner = _LATEX_FRAC.sub(r"\1/\2", boxes[-1].group(1)).replace(" ", "")
        found = _last_number(inner)
        if found is not None:
            return found

    phrases = list(_ANSWER_PHRASE.finditer(text))
    if phrases:
        found = _number_after(text, phrases[-1].end())
        if found is not None:
            return found

    # "6 * 7 = 42 (six rows of seven)": the result of the last equation, not the trailing 7.
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and "=" in lines[-1]:
        last_line = lines[-1]
        found = _number_after(last_line, last_line.rindex("=") + 1)
        if found is not None:
            return found

    return _last_number(text)


def _as_fraction(value: Any) -> Fraction | None:
    """An exact value for a number, a numeric string, or a response whose final answer is one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Fraction | int):
        return Fraction(value)
    if isinstance(value, numbers.Real):
        as_float = float(value)
        return Fraction(as_float) if math.isfinite(as_float) else None
    if not isinstance(value, str):
        return None
    answer = extract_final_answer(value)
    if answer is None:
        return None
    try:
        return Fraction(answer)
    except ZeroDivisionError:
        return None


def answers_match(predicted: str | None, gold: Any) -> bool:
    """Whether ``predicted`` and ``gold`` are the same number.

    Both may be numbers or strings; a string is read with ``extract_final_answer``, so a
    gold solution ending in "#### 72" works. Fractions compare by value ("3/4" == "0.75");
    otherwise values within a relative tolerance of 1e-6 match (so "0.333333" matches "1/3").
    Raises ValueError when ``gold`` holds no number, since that is a broken reference rather
    than a wrong prediction.
    """
    gold_value = _as_fraction(gold)
    if gold_value is None:
        raise ValueError(f"gold answer {gold!r} holds no number")
    if predicted is None:
        return False
    predicted_value = _as_fraction(predicted)
    if predicted_value is None:
        return False
    if predicted_value == gold_value:
        return True
    return math.isclose(float(predicted_value), float(gold_value), rel_tol=1e-6, abs_tol=0.0)
