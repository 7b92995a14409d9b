"""Constitutional AI's phase 1 (SL-CAI): the policy's answers to red-team prompts, critiqued and revised by the
feedback model under randomly drawn principles (checked by the judge and the rule verifier), and SFT of the policy on
the revisions mixed with helpfulness demonstrations. A part of `Pipeline` (pipelines/cai.py), which runs it."""

from __future__ import annotations

import random
from pathlib import Path

from alignkit.constitution.critique import critique_and_revise, short_revision
from alignkit.constitution.feedback import journaled
from alignkit.constitution.labels import judge_orders
from alignkit.data import reply_to
from alignkit.pipelines.cai_data import (
    jailbreak_wrapped,
    jsonl_text,
    mix_rows,
    read_jsonl,
    reply_text,
    revision_rule_check,
    row_category,
)
from alignkit.pipelines.cai_records import HUMAN, CritiqueRecord, SLRecord
from alignkit.pipelines.cai_rlaif import FEEDBACK_JOURNAL
from alignkit.utils import processes
from alignkit.utils.io import atomic_write_text


class SLStages:
    """The critique and sl stages of `Pipeline`."""

    def stage_critique(self, folder: Path) -> CritiqueRecord:
        cfg = self.cfg.critique
        rng = random.Random(self.cfg.seed)
        plain = mix_rows(cfg.prompts, "prompt")
        rows = plain + jailbreak_wrapped(plain, cfg.jailbreak_suite, rng, cfg.jailbreak_fraction)
        prompts = [r["prompt"] for r in rows]
        initial = self._policy_rollouts(self.cfg.model, prompts, cfg.max_new_tokens, temperature=0.0, n=1,
                                        batch_size=self.cfg.feedback.batch_size)
        # The feedback model's answers are journaled as they come: a stage stopped half-way asks only the rest.
        feedback = journaled(self.feedback(), folder / FEEDBACK_JOURNAL)
        # Critiques, revisions and their check are the feedback model's judgements: only under principles it passed.
        pool = self.judging_constitution(cfg.principles)
        records = critique_and_revise(prompts, initial, pool, feedback.require_generate(), rng,
                                      rounds=cfg.rounds,
                                      critique_tokens=cfg.critique_tokens, revision_tokens=cfg.revision_tokens,
                                      policy=self.cfg.model, feedback_model=feedback.name)
        out = [{"source": row["source"], **record.as_dict()} for row, record in zip(rows, records)]
        if cfg.revision_form == "short":
            # The writer's refusal sentence, then the constitution's reason and safe offer for the request's kind of
            # harm (its `category`; "default" without one); the writer's own revision stays on record as `written`.
            constitution = self.constitution
            for row, r in zip(rows, out):
                request = row.get("request") or reply_text(row["prompt"])
                category = row_category(row)
                r.update(written=r["final"], category=category,
                         final=short_revision(request, r["final"], constitution.alternative_for(category)))
        if cfg.rule_check:
            # The critique prompts are harmful requests: a revision is trained on only if it refuses and offers no
            # harmful act in its place (judges/offers.py); the verdict is kept on record either way.
            for r in out:
                r["rule_check"] = revision_rule_check(r["final"])
                r["use"] = r["rule_check"] == "ok"
        if cfg.check_revisions:
            # The feedback model's own check: is the final revision better than the first answer under the last
            # round's principle, by more than `check_margin` over both orders? Revisions it does not prefer so are
            # kept on record but not trained on.
            # Only revisions the rule verifier passed are asked (the others are not trained on anyway).
            asked = [r for r in out if r.get("use", True)]
            items = [(r["prompt"], r["final"], r["initial"], self.constitution.principle(r["steps"][-1]["principle"])
                      .comparison) for r in asked]
            for r, p in zip(asked, (0.5 * sum(o) for o in judge_orders(feedback.judge, items))):
                r["revision_preferred"] = p
                r["use"] = p > 0.5 + cfg.check_margin
        folder.mkdir(parents=True, exist_ok=True)
        processes.on_main(atomic_write_text, folder / "revisions.jsonl", jsonl_text(out))
        changed = sum(r["final"].strip() != r["initial"].strip() for r in out)
        return CritiqueRecord(str(folder / "revisions.jsonl"), len(out), len(plain), len(out) - len(plain), cfg.rounds,
                              changed, sum(r.get("use", True) for r in out),
                              f"prompts: {HUMAN}; answers: AI (the policy); critiques and revisions: AI "
                              f"({feedback.name})")

    def stage_sl(self, folder: Path) -> SLRecord:
        revisions = read_jsonl(Path(self.runner.record("critique").revisions))
        helpful = mix_rows(self.cfg.sl.helpful, "sft")
        kept = [{"prompt": r["prompt"], "completion": reply_to(r["prompt"], r["final"]), "origin": "AI revision",
                 "source": r["source"]}
                for r in revisions if r["final"].strip() and r.get("use", True)]
        # The starting policy's own answers to benign prompts (sl.policy_answers), kept as they are: SL-CAI learns
        # to refuse from the revisions, and these show it where refusing stops.
        asked = mix_rows(self.cfg.sl.policy_answers, "prompt")
        answers = self._policy_rollouts(self.cfg.model, [r["prompt"] for r in asked], self.cfg.critique.max_new_tokens,
                                        temperature=0.0, n=1, batch_size=self.cfg.feedback.batch_size) if asked else []
        own = [{"prompt": r["prompt"], "completion": reply_to(r["prompt"], text), "origin": "AI answer (the policy)",
                "source": r["source"]} for r, text in zip(asked, answers) if text.strip()]
        rows = (kept * self.cfg.sl.revision_repeats + own
                + [{**r, "origin": "human demonstration"} for r in helpful])
        random.Random(self.cfg.seed).shuffle(rows)
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / "data.jsonl"
        processes.on_main(atomic_write_text, data, jsonl_text(rows))
        model = self._train("sl", "sft", folder, self.cfg.model, str(data), self.cfg.sl.sft)
        return SLRecord(model, str(data), len(kept), self.cfg.sl.revision_repeats, len(own), len(helpful),
                        f"revisions: AI (feedback model); policy answers: AI (the policy); demonstrations: {HUMAN}")
