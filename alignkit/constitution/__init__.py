"""Constitutional AI: the constitution file (principles, exemplars), AI preference labels. See docs/eval.md for how
its effect is measured."""

from alignkit.constitution.labels import COT_CLAMP, option_probability, soft_label
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

__all__ = ["COT_CLAMP", "Constitution", "ConstitutionError", "Exemplar", "LintIssue", "Principle",
           "constitution_path", "lint", "load_constitution", "option_probability", "soft_label"]
