"""Judges: one interface (``Judge``) for every source of reward or preference.

Rule judges and the HTTP judge (any OpenAI-compatible endpoint) are importable without torch; the judges backed by a
local model live in ``alignkit.judges.model`` (``RewardModelJudge``, ``LMJudge``), which imports torch.
"""

from .base import Judge, JudgeError, ScoreJudge, check_batch, compare_from_scores
from .factory import judge_from_spec
from .http import HTTPJudge
from .offers import harmful_offer, offers_harm, refuses_safely
from .rules import REFUSAL_PHRASES, CallableJudge, FinalAnswerVerifier, RefusalDetector, RegexJudge, is_refusal

__all__ = [
    "REFUSAL_PHRASES",
    "CallableJudge",
    "FinalAnswerVerifier",
    "HTTPJudge",
    "Judge",
    "JudgeError",
    "RefusalDetector",
    "RegexJudge",
    "ScoreJudge",
    "check_batch",
    "compare_from_scores",
    "harmful_offer",
    "is_refusal",
    "judge_from_spec",
    "offers_harm",
    "refuses_safely",
]
