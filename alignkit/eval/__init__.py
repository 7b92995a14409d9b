"""Evaluation of what alignment is for. So far: preference metrics and drift from a reference model."""

from alignkit.eval.preference import PreferenceReport, preference_report, preference_reports

__all__ = ["PreferenceReport", "preference_report", "preference_reports"]
