"""Judges: one interface (``Judge``) for every source of reward or preference.

Rule judges and the HTTP judge (any OpenAI-compatible endpoint) are importable without torch; the judges backed by a
local model live in ``alignkit.judges.model`` (``RewardModelJudge``, ``LMJudge``), which imports torch.
"""

from .base import Judge, JudgeError, ScoreJudge, check_batch, compare_from_scores
from .http import HTTPJudge
from .rules import (
    ANTHROPOMORPHIC_PATTERNS,
    REFUSAL_PHRASES,
    CallableJudge,
    FinalAnswerVerifier,
    RefusalDetector,
    RegexJudge,
    answers_match,
    claims_human_traits,
    extract_final_answer,
    is_refusal,
    judge_from_spec,
)

__all__ = [
    "ANTHROPOMORPHIC_PATTERNS",
    "REFUSAL_PHRASES",
    "CallableJudge",
    "FinalAnswerVerifier",
    "HTTPJudge",
    "Judge",
    "JudgeError",
    "RefusalDetector",
    "RegexJudge",
    "ScoreJudge",
    "answers_match",
    "check_batch",
    "claims_human_traits",
    "compare_from_scores",
    "extract_final_answer",
    "is_refusal",
    "judge_from_spec",
]
