"""Evaluation of what alignment is for. So far: preference metrics, drift from a reference
model, and judged generation on held-out prompts."""

from alignkit.eval.judged import JudgedGeneration, judged_generation
from alignkit.eval.preference import PreferenceReport, preference_report, preference_reports

__all__ = ["JudgedGeneration", "judged_generation", "PreferenceReport", "preference_report", "preference_reports"]
