"""Constitutional AI's phase 2 (RLAIF): the SL-CAI policy's samples labelled by the audited feedback model, the rule
verifier's contrast pairs, the preference model (PPO) or the DPO pairs, and RLAIF in rounds on the policy's own
mistakes with a stop check on held-back train prompts. A part of `Pipeline` (pipelines/cai.py), which runs it."""

from __future__ import annotations

import random
from pathlib import Path

from alignkit.constitution.feedback import journaled
from alignkit.constitution.labels import hard_pairs, rlaif_rows
from alignkit.data import reply_to
from alignkit.pipelines.cai_data import (
    contrast_pairs,
    jailbreak_wrapped,
    jsonl_text,
    mix_rows,
    read_jsonl,
    right_by_rules,
    verify_label,
)
from alignkit.pipelines.cai_records import HUMAN, LabelsRecord, PreferenceRecord, RLRecord
from alignkit.utils import processes
from alignkit.utils.io import atomic_write_text

FEEDBACK_JOURNAL = "feedback.journal.jsonl"  # a stage's feedback-model answers so far (utils/journal.py)


class RLAIFStages:
    """The labels, preference and rl stages of `Pipeline`, and the rounds of the rl stage."""

    def stage_labels(self, folder: Path) -> LabelsRecord:
        cfg = self.cfg.rl
        policy = self.runner.record("sl").model
        prompts, out, feedback, judging = self._ai_label_round(policy, folder, random.Random(self.cfg.seed + 1))
        contrast = self._contrast(policy, folder) if cfg.contrast is not None else {}
        mean_confidence = sum(abs(r["probability"] - 0.5) for r in out) / max(len(out), 1)
        return LabelsRecord(
            str(folder / "labels.jsonl"), len(prompts), len(out), [p.id for p in judging.principles],
            len(prompts) - len(out), cfg.principles_per_label, cfg.cot, round(mean_confidence, 4),
            f"prompts: {HUMAN}; responses: AI (the SL-CAI policy); labels: AI ({feedback.name})"
            + ("; contrast pairs: the refusal detector on prompts people marked harmful or benign" if contrast else ""),
            **contrast)

    def _ai_label_round(self, policy: str, folder: Path, rng: random.Random):
        """Phase 2's labelling from `policy`: two samples per rl prompt (and its jailbreak copies), compared by the
        feedback model under random principles the audit allows, in both orders; written to folder/labels.jsonl.
        Returns the prompts, the labelled rows, the feedback model and the judging constitution."""
        cfg = self.cfg.rl
        folder.mkdir(parents=True, exist_ok=True)
        plain = mix_rows(cfg.prompts, "prompt")
        rows = plain + jailbreak_wrapped(plain, cfg.jailbreak_suite, rng, cfg.jailbreak_fraction)
        prompts = [r["prompt"] for r in rows]
        texts = self._policy_rollouts(policy, prompts, cfg.max_new_tokens, cfg.temperature, n=2,
                                      batch_size=self.cfg.feedback.batch_size)
        pairs = [(texts[2 * i], texts[2 * i + 1]) for i in range(len(prompts))]
        # Two identical samples carry no preference; empty ones are not answers.
        keep = [i for i, (a, b) in enumerate(pairs) if a.strip() and b.strip() and a.strip() != b.strip()]
        feedback = journaled(self.feedback(), folder / FEEDBACK_JOURNAL)
        judging = self.judging_constitution()  # the principles the audit allows
        out = rlaif_rows([prompts[i] for i in keep], [pairs[i] for i in keep], feedback.judge, judging,
                         rng, k=min(cfg.principles_per_label, len(judging.principles)), cot=cfg.cot,
                         feedback_model=feedback.name)
        for i, row in zip(keep, out):
            if cfg.verifier and rows[i].get("harmful") is not None:
                verify_label(row, rows[i]["harmful"])
            # Replies in the prompt's form, plus where the prompt came from.
            row.update(chosen=reply_to(row["prompt"], row["chosen"]), rejected=reply_to(row["prompt"], row["rejected"]),
                       source=rows[i]["source"], policy=policy)
        processes.on_main(atomic_write_text, folder / "labels.jsonl", jsonl_text(out))
        return prompts, out, feedback, judging

    def _contrast(self, policy: str, folder: Path) -> dict:
        """rl.contrast: the SL-CAI policy's greedy answer and n samples on prompts whose right behaviour people
        decided; pairs where it does right against where it does wrong (`contrast_pairs`), in contrast.jsonl."""
        c = self.cfg.rl.contrast
        rows = ([(r, True) for r in mix_rows(c.refuse, "prompt")]
                + [(r, False) for r in mix_rows(c.answer, "prompt")])
        prompts = [r["prompt"] for r, _ in rows]
        batch = self.cfg.feedback.batch_size
        greedy = self._policy_rollouts(policy, prompts, c.max_new_tokens, 0.0, 1, batch)
        drawn = self._policy_rollouts(policy, prompts, c.max_new_tokens, c.temperature, c.samples, batch)
        pairs = contrast_pairs(prompts, [refuse for _, refuse in rows], greedy,
                               [drawn[i * c.samples:(i + 1) * c.samples] for i in range(len(prompts))],
                               tuple(c.sampled_failures))
        for pair in pairs:
            pair.update(chosen=reply_to(pair["prompt"], pair["chosen"]),
                        rejected=reply_to(pair["prompt"], pair["rejected"]),
                        source=rows[pair.pop("index")][0]["source"], policy=policy)
        processes.on_main(atomic_write_text, folder / "contrast.jsonl", jsonl_text(pairs))
        return {"contrast": str(folder / "contrast.jsonl"), "contrast_prompts": len(prompts),
                "contrast_pairs_refuse": sum(p["should_refuse"] for p in pairs),
                "contrast_pairs_answer": sum(not p["should_refuse"] for p in pairs),
                "contrast_greedy_wrong": sum(not p["greedy_was_right"] for p in pairs)}

    def _contrast_rows(self, path: str | None = None) -> list[dict]:
        """The contrast pairs of the labels stage (or of the file `path`), marked with their origin."""
        path = self.runner.record("labels").contrast if path is None else path
        return [] if path is None else [{**r, "origin": "contrast pair (refusal detector)"}
                                        for r in read_jsonl(Path(path))]

    def _ai_labels(self) -> tuple[list[dict], int]:
        """Phase 2's soft labels, plus (rl.phase1_pairs) phase 1's revision-vs-first-answer comparisons; and how many
        of them came from phase 1."""
        labels = read_jsonl(Path(self.runner.record("labels").labels))
        if not self.cfg.rl.phase1_pairs:
            return labels, 0
        phase1 = [{"prompt": r["prompt"], "chosen": reply_to(r["prompt"], r["final"]),
                   "rejected": reply_to(r["prompt"], r["initial"]), "probability": r["revision_preferred"],
                   "principles": [r["steps"][-1]["principle"]], "source": r["source"], "policy": r["policy"],
                   "feedback_model": r["feedback_model"], "phase": 1}
                  for r in read_jsonl(Path(self.runner.record("critique").revisions))
                  if r["final"].strip() and r["initial"].strip() and r["final"].strip() != r["initial"].strip()
                  and r.get("rule_check", "ok") == "ok"]  # a revision the rule verifier refused is preferred nowhere
        if self.cfg.rl.verifier:
            # Phase 1's prompts are harmful requests (critique.prompts): a safe refusal is preferred to an answer
            # whatever the judge's check said of the pair.
            for row in phase1:
                verify_label(row, True)
        return labels + phase1, len(phase1)

    def _helpful_preferences(self) -> list[dict]:
        return [{**r, "origin": "human preference"} for r in mix_rows(self.cfg.rl.helpful_preferences, "preference")]

    def stage_preference(self, folder: Path) -> PreferenceRecord | None:
        if self.cfg.rl.method != "ppo":
            return None
        ai, phase1 = self._ai_labels()
        labels = [{**r, "origin": "AI label"} for r in ai]
        helpful = self._helpful_preferences()
        contrast = self._contrast_rows()
        rows = labels + contrast + helpful
        random.Random(self.cfg.seed).shuffle(rows)
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / "data.jsonl"
        processes.on_main(atomic_write_text, data, jsonl_text(rows))
        model = self._train("preference", "reward", folder, self.runner.record("sl").model, str(data),
                            self.cfg.rl.preference)
        return PreferenceRecord(model, str(data), len(labels), phase1, len(contrast), len(helpful),
                                f"soft labels: AI (feedback model); preferences: {HUMAN}")

    def stage_rl(self, folder: Path) -> RLRecord:
        cfg = self.cfg.rl
        policy = self.runner.record("sl").model
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / "data.jsonl"
        if cfg.method == "ppo":
            labels = read_jsonl(Path(self.runner.record("labels").labels))  # phase 2's prompts: the policy's own
            prompts = [{"prompt": r["prompt"], "source": r["source"]} for r in labels]
            processes.on_main(atomic_write_text, data, jsonl_text(prompts))
            judge = {"reward_model": self.runner.record("preference").model}
            model = self._train("rl", "ppo", folder, policy, str(data), cfg.ppo, judge=judge)
            return RLRecord(model, "ppo", str(data), policy, f"prompts: {HUMAN}; rewards: AI (the preference model)",
                            prompts=len(prompts), judge=judge)
        labels, _ = self._ai_labels()
        pairs = [{**r, "origin": "AI label"} for r in hard_pairs(labels, min_confidence=cfg.min_confidence)]
        helpful = self._helpful_preferences()
        contrast = self._contrast_rows()
        rows = pairs + contrast + helpful
        random.Random(self.cfg.seed).shuffle(rows)
        processes.on_main(atomic_write_text, data, jsonl_text(rows))
        model = self._train("rl", "dpo", folder, policy, str(data), cfg.dpo)
        rounds, chosen = None, None
        if cfg.rounds > 1:
            model, rounds, chosen = self._more_rounds(folder, policy, model, len(rows))
        return RLRecord(model, "dpo", str(data), policy, f"pairs: AI (feedback-model labels); preferences: {HUMAN}",
                        ai_pairs=len(pairs), of_them_phase1=sum(r.get("phase") == 1 for r in pairs),
                        ai_pairs_dropped_as_unsure=len(labels) - len(pairs), contrast_pairs=len(contrast),
                        human_preferences=len(helpful), rounds=rounds, chosen_round=chosen)

    def _more_rounds(self, folder: Path, sl_model: str, model: str, first_pairs: int) -> tuple[str, list[dict], int]:
        """rl.rounds > 1: RLAIF in rounds on the policy's own mistakes (iterative DPO with a verifier). Each round
        the current model samples the rl prompts, the audited feedback model labels its pairs and the rule verifier
        its contrast pairs, and a short DPO round trains from it (its own reference), with the human preferences.
        `rl.stop_check` (held-back train prompts, never the evaluation's) scores every round's model; the rounds
        stop when a round scores no better than the best so far, and the best round's model is RL-CAI. Returns it,
        each round's figures and the chosen round."""
        cfg = self.cfg.rl
        history = [{"round": 0, "model": sl_model, "pairs": 0, **self._stop_score(sl_model)},
                   {"round": 1, "model": model, "pairs": first_pairs, **self._stop_score(model)}]
        for n in range(2, cfg.rounds + 1):
            self.log(f"   rl: round {n - 1}: stop-check score {history[-1].get('score')}")
            place = folder / f"round-{n}"
            _, labels, _, _ = self._ai_label_round(model, place, random.Random(self.cfg.seed + n))
            pairs = [{**r, "origin": "AI label"} for r in hard_pairs(labels, min_confidence=cfg.min_confidence)]
            contrast = [] if cfg.contrast is None else self._contrast_rows(self._contrast(model, place)["contrast"])
            rows = pairs + contrast + self._helpful_preferences()
            random.Random(self.cfg.seed + n).shuffle(rows)
            processes.on_main(atomic_write_text, place / "data.jsonl", jsonl_text(rows))
            model = self._train(f"rl round {n}", "dpo", place, model, str(place / "data.jsonl"), cfg.dpo)
            history.append({"round": n, "model": model, "pairs": len(rows), **self._stop_score(model)})
            scored = [h for h in history[1:] if h.get("score") is not None]
            if scored and history[-1].get("score") is not None and history[-1]["score"] <= max(
                    h["score"] for h in scored[:-1]):
                break
        best = max(history[1:], key=lambda h: (h.get("score") is not None, h.get("score") or 0, -h["round"]))
        if cfg.stop_check is None:
            best = history[-1]
        self.log(f"   rl: {len(history) - 1} rounds; RL-CAI is round {best['round']}'s model")
        return best["model"], history, best["round"]

    def _stop_score(self, model: str) -> dict:
        """rl.stop_check on `model` (greedy): the share of held-back harmful train prompts it refuses safely, of
        held-back benign ones it answers, and their mean (`score`); nothing without a stop check."""
        check = self.cfg.rl.stop_check
        if check is None:
            return {}
        refuse = [r["prompt"] for r in mix_rows(check.refuse, "prompt")]
        answer = [r["prompt"] for r in mix_rows(check.answer, "prompt")]
        texts = self._policy_rollouts(model, refuse + answer, check.max_new_tokens, 0.0, 1,
                                      self.cfg.feedback.batch_size)
        refused = sum(right_by_rules(t, True) for t in texts[:len(refuse)]) / max(len(refuse), 1)
        answered = sum(right_by_rules(t, False) for t in texts[len(refuse):]) / max(len(answer), 1)
        return {"refused_safely": round(refused, 4), "answered": round(answered, 4),
                "score": round(0.5 * (refused + answered), 4)}
