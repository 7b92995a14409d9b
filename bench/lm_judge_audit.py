"""How well a local LM judge agrees with the team's labels on the held-out built-in pairs, and its position bias.

    .venv/bin/python bench/lm_judge_audit.py [MODEL]      # default: smollm2-135m

Accuracy: share of pairs where P(chosen better) > 0.5 (both orders averaged). Position bias: the mean probability
the judge gives to whichever option is shown first (0.5 = none); averaging both orders cancels it in the label.
"""

from __future__ import annotations

import sys
import time

from alignkit.data import load_records
from alignkit.judges.model import LMJudge


def main(model: str = "smollm2-135m") -> None:
    records = load_records("builtin:preference_eval", "preference").records
    judge = LMJudge(model)
    t0 = time.perf_counter()
    correct, first = 0, 0.0
    for rec in records:
        chosen, rejected = rec.chosen[-1]["content"], rec.rejected[-1]["content"]
        forward = judge.option_probs(rec.prompt, chosen, rejected)
        backward = judge.option_probs(rec.prompt, rejected, chosen)
        correct += float(0.5 * (forward[0] + backward[1])) > 0.5
        first += float(0.5 * (forward[0] + backward[0]))
    n = len(records)
    print(f"LM judge {model} on {n} held-out pairs: accuracy {correct / n:.3f}, "
          f"mean P(first option) {first / n:.3f}, {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main(*sys.argv[1:])
