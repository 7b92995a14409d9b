"""Evaluation of what alignment is for: the `alignkit eval` harness (harmlessness, jailbreaks, over-refusal,
helpfulness, bias, anthropomorphism, drift) and its report; preference metrics; judged generation."""

from alignkit.eval.harness import EvalSettings, evaluate, save_eval
from alignkit.eval.judged import JudgedGeneration, judged_generation
from alignkit.eval.preference import PreferenceReport, preference_report, preference_reports

__all__ = ["EvalSettings", "JudgedGeneration", "PreferenceReport", "evaluate", "judged_generation",
           "preference_report", "preference_reports", "save_eval"]
