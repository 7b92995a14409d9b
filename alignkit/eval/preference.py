"""Preference metrics of policies on held-out pairs, and their drift (KL) from reference models.

For each (prompt, chosen, rejected) pair, with sequence log-probs log pi(y|x) of the trained (completion) tokens:

- preference accuracy: the fraction of pairs where the policy's per-token average log-prob of the chosen
  completion exceeds the rejected one's — the model's own preference, defined for any model (no reference);
- implicit reward accuracy and margin: r(y) = beta * (log pi(y|x) - log ref(y|x)) (Rafailov et al. 2023, eq. 5),
  accuracy = fraction with r(chosen) > r(rejected), margin = mean r(chosen) - r(rejected); both 0 when pi == ref;
- KL to the reference: mean over completion token positions of the exact KL(pi(.|ctx) || ref(.|ctx)) over the
  vocabulary, teacher-forced on the pairs' completions (deterministic; no sampling noise).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from alignkit.data import pad_batch
from alignkit.models.forward import per_row_sum, selected_logits


@dataclass
class PreferenceReport:
    pairs: int
    preference_accuracy: float
    reward_accuracy: float
    reward_margin: float
    kl_to_reference: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Sums:
    pref: int = 0
    reward: int = 0
    margin: float = 0.0
    kl: float = 0.0
    tokens: int = 0


@torch.no_grad()
def preference_reports(
    models: dict, comparisons: list[tuple[str, str]], items: list[dict], pad_id: int, *, beta: float = 0.1,
    batch_size: int = 8,
) -> dict[str, PreferenceReport]:
    """Reports for each (policy, reference) pair of names in `comparisons`, keyed "policy/reference".

    Each model runs once per batch, however many comparisons it appears in. `items` are rendered pairs
    ([{"chosen": Rendered, "rejected": Rendered}]).
    """
    needed = sorted({name for pair in comparisons for name in pair})
    for name in needed:
        models[name].eval()
    sums = {pair: _Sums() for pair in comparisons}
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        n = len(chunk)
        batch = pad_batch([it["chosen"] for it in chunk] + [it["rejected"] for it in chunk], pad_id=pad_id)
        batch = {k: v.to(next(models[needed[0]].parameters()).device) for k, v in batch.items()}
        logprobs, rows, labels = {}, None, None
        for name in needed:
            logits, rows, labels = selected_logits(models[name], batch["input_ids"], batch["attention_mask"],
                                                   batch["loss_mask"])
            logprobs[name] = torch.log_softmax(logits.float(), -1)
        counts = per_row_sum(torch.ones(rows.shape[0], device=rows.device), rows, 2 * n)
        seq = {name: per_row_sum(lp.gather(-1, labels[:, None]).squeeze(-1), rows, 2 * n) for name, lp in logprobs.items()}
        for policy, reference in comparisons:
            s = sums[(policy, reference)]
            avg = seq[policy] / counts
            rewards = beta * (seq[policy] - seq[reference])
            lp, lq = logprobs[policy], logprobs[reference]
            s.pref += int((avg[:n] > avg[n:]).sum())
            s.reward += int((rewards[:n] > rewards[n:]).sum())
            s.margin += float((rewards[:n] - rewards[n:]).sum())
            s.kl += float((lp.exp() * (lp - lq)).sum())
            s.tokens += lp.shape[0]
    total = len(items)
    return {
        f"{policy}/{reference}": PreferenceReport(
            pairs=total,
            preference_accuracy=s.pref / total,
            reward_accuracy=s.reward / total,
            reward_margin=s.margin / total,
            kl_to_reference=s.kl / max(s.tokens, 1),
        )
        for (policy, reference), s in sums.items()
    }


def preference_report(policy, reference, items: list[dict], pad_id: int, *, beta: float = 0.1,
                      batch_size: int = 8) -> PreferenceReport:
    """Metrics of one `policy` against one `reference` (see the module docstring)."""
    reports = preference_reports({"policy": policy, "reference": reference}, [("policy", "reference")], items, pad_id,
                                 beta=beta, batch_size=batch_size)
    return reports["policy/reference"]
