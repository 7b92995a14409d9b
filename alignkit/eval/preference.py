"""Preference metrics of a policy on held-out pairs, and its drift (KL) from a reference model.

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
from alignkit.models.forward import selected_logits


@dataclass
class PreferenceReport:
    pairs: int
    preference_accuracy: float
    reward_accuracy: float
    reward_margin: float
    kl_to_reference: float

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def preference_report(policy, reference, items: list[dict], pad_id: int, *, beta: float = 0.1, batch_size: int = 8,
                      autocast=None) -> PreferenceReport:
    """Metrics of `policy` on rendered pairs `items` ([{"chosen": Rendered, "rejected": Rendered}])."""
    policy.eval()
    reference.eval()
    pref_correct = reward_correct = 0
    margin_sum = kl_sum = 0.0
    kl_tokens = 0
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        n = len(chunk)
        batch = pad_batch([it["chosen"] for it in chunk] + [it["rejected"] for it in chunk], pad_id=pad_id)
        args = (batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
        with autocast() if autocast else torch.autocast("cpu", enabled=False):
            logits_p, rows, labels = selected_logits(policy, *args)
            logits_r, _, _ = selected_logits(reference, *args)
        logp = torch.log_softmax(logits_p.float(), -1)
        logq = torch.log_softmax(logits_r.float(), -1)
        token_p = logp.gather(-1, labels[:, None]).squeeze(-1)
        token_q = logq.gather(-1, labels[:, None]).squeeze(-1)
        kl = (logp.exp() * (logp - logq)).sum(-1)
        counts = torch.zeros(2 * n).index_add(0, rows, torch.ones_like(token_p))
        seq_p = torch.zeros(2 * n).index_add(0, rows, token_p)
        seq_q = torch.zeros(2 * n).index_add(0, rows, token_q)
        avg = seq_p / counts
        rewards = beta * (seq_p - seq_q)
        pref_correct += int((avg[:n] > avg[n:]).sum())
        reward_correct += int((rewards[:n] > rewards[n:]).sum())
        margin_sum += float((rewards[:n] - rewards[n:]).sum())
        kl_sum += float(kl.sum())
        kl_tokens += kl.numel()
    total = len(items)
    return PreferenceReport(
        pairs=total,
        preference_accuracy=pref_correct / total,
        reward_accuracy=reward_correct / total,
        reward_margin=margin_sum / total,
        kl_to_reference=kl_sum / max(kl_tokens, 1),
    )
