"""Constitutional AI: the constitution file (principles, exemplars), AI preference labels, and the audit of a feedback
model on gold comparisons before its labels are trusted."""

from alignkit.constitution.audit import (
    AuditReport,
    FeedbackAuditError,
    GoldComparison,
    audit_feedback_model,
    check_audit,
    first_per_principle,
    load_gold_comparisons,
    wilson_lower,
)
from alignkit.constitution.labels import COT_CLAMP, AILabel, ai_label, label_from_orders, option_probability, soft_label
from alignkit.constitution.principles import (
    Constitution,
    ConstitutionError,
    Exemplar,
    LintIssue,
    Principle,
    constitution_path,
    lint,
    load_constitution,
)

__all__ = ["AuditReport", "FeedbackAuditError", "GoldComparison", "audit_feedback_model", "check_audit",
           "first_per_principle", "load_gold_comparisons", "AILabel", "ai_label", "label_from_orders", "COT_CLAMP", "Constitution", "ConstitutionError", "Exemplar", "LintIssue", "Principle",
           "constitution_path", "lint", "load_constitution", "option_probability", "soft_label", "wilson_lower"]
