"""Judges: one interface (``Judge``) for every source of reward or preference.

Rule judges are importable without torch; the model-backed ones live in ``alignkit.judges.model``
(``RewardModelJudge``, ``LMJudge``).
"""

from .base import Judge, JudgeError, ScoreJudge, check_batch, compare_from_scores
from .rules import (
    REFUSAL_PHRASES,
    CallableJudge,
    FinalAnswerVerifier,
    RefusalDetector,
    RegexJudge,
    answers_match,
    extract_final_answer,
    is_refusal,
    judge_from_spec,
)

__all__ = [
    "REFUSAL_PHRASES",
    "CallableJudge",
    "FinalAnswerVerifier",
    "Judge",
    "JudgeError",
    "RefusalDetector",
    "RegexJudge",
    "ScoreJudge",
    "answers_match",
    "check_batch",
    "compare_from_scores",
    "extract_final_answer",
    "is_refusal",
    "judge_from_spec",
]
