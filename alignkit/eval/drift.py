"""Drift from a reference model, measured on the model's own greedy responses to held-out benign prompts.

- kl_to_reference: the exact KL(model(.|ctx) || reference(.|ctx)) over the vocabulary at every response token
  (teacher-forced on the model's responses, summed over the vocabulary, averaged over tokens): nats per token.
  0 for the reference itself.
- reference_perplexity: exp of the reference's mean negative log-likelihood of those response tokens; it rises as
  the model's outputs move away from what the reference would write.
"""

from __future__ import annotations

import math

import torch

from alignkit.models.forward import response_logits, response_states
from alignkit.rollouts import Rollout


def _row_chunks(rollouts: list[Rollout], rows: int, device: torch.device):
    for r in rollouts:
        for start in range(0, r.prompt_ids.shape[0], rows):
            part = slice(start, start + rows)
            yield tuple(t[part].to(device) for t in (r.prompt_ids, r.prompt_mask, r.response_ids, r.response_mask))


@torch.no_grad()
def drift(model, reference, rollouts: list[Rollout], *, rows: int = 16) -> dict[str, float | None]:
    """Both figures over every response token of `rollouts`, `rows` responses at a time (full-vocabulary log-probs
    of two models for a whole batch would take gigabytes)."""
    kl_sum, nll_sum, tokens = 0.0, 0.0, 0
    model.eval()
    reference.eval()
    device = next(model.parameters()).device
    for prompt_ids, prompt_mask, response_ids, response_mask in _row_chunks(rollouts, rows, device):
        if int(response_mask.sum()) == 0:
            continue
        index = torch.arange(prompt_ids.shape[0], device=prompt_ids.device)
        logps = {}
        for name, m in (("model", model), ("reference", reference)):
            states = response_states(m, prompt_ids, prompt_mask, index, response_ids, response_mask)
            logits, token_rows, cols = response_logits(m, states, response_mask)
            logps[name] = torch.log_softmax(logits.float(), -1)
        lp, lq = logps["model"], logps["reference"]
        kl_sum += float((lp.exp() * (lp - lq)).sum())
        targets = response_ids[token_rows, cols]
        nll_sum -= float(lq.gather(-1, targets[:, None]).sum())
        tokens += lp.shape[0]
    if tokens == 0:
        return {"kl_to_reference": None, "reference_perplexity": None}
    return {"kl_to_reference": kl_sum / tokens, "reference_perplexity": math.exp(nll_sum / tokens)}
