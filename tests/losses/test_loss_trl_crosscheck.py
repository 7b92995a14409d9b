"""Numerical cross-checks against TRL 1.16 on seeded random tensors.

TRL keeps these losses inside trainer methods that run a model forward. Each method is called unbound with a
small stand-in for the trainer (only the attributes the method reads) and a fake model that returns the
log-probs / scores we chose, so TRL's own loss arithmetic runs on our tensors.
"""

import types
from collections import defaultdict

import pytest
import torch

from alignkit.losses import (
    DPO_LOSSES,
    bradley_terry_loss,
    dpo_sigmoid_loss,
    kto_kl_estimate,
    kto_loss,
    orpo_loss,
    reward_centering_penalty,
)

pytest.importorskip("trl", reason="trl (a declared test dependency) is not installed; TRL cross-checks skipped")

B = 16


def _identity_accelerator():
    return types.SimpleNamespace(device=torch.device("cpu"), gather=lambda t: t, gather_for_metrics=lambda t: t)


def _trainer_stub(**attrs):
    return types.SimpleNamespace(
        model=types.SimpleNamespace(training=False),  # eval mode: TRL then skips token counting
        accelerator=_identity_accelerator(),
        aux_loss_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        **attrs,
    )


def _fake_lm(per_row_logp):
    """Model whose per-token log-probs on row i are [per_row_logp[i]] (one completion token per row)."""

    def forward(input_ids, **_):
        logp = per_row_logp[input_ids[:, 1]].unsqueeze(-1)
        zeros = torch.zeros_like(logp)
        return types.SimpleNamespace(log_probs=logp, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())

    return forward


def _random_logps(seed, n=B):
    g = torch.Generator().manual_seed(seed)
    return [-(5 + 20 * torch.rand(n, generator=g)) for _ in range(4)]


def _trl_dpo(loss_type, beta, label_smoothing, pc, pr, rc, rr):
    from trl.trainer.dpo_trainer import DPOTrainer

    n = pc.shape[0]
    stub = _trainer_stub(
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
    )
    # Rows are [chosen..., rejected...]; token 0 is the prompt, token 1 (the row index) the only completion
    # token, so every completion has length 1 and TRL's IPO length normalisation divides by 1.
    input_ids = torch.stack([torch.zeros(2 * n, dtype=torch.long), torch.arange(2 * n)], dim=1)
    inputs = {
        "input_ids": input_ids,
        "completion_mask": torch.tensor([[0, 1]]).repeat(2 * n, 1),
        "ref_chosen_logps": rc,
        "ref_rejected_logps": rr,
    }
    return DPOTrainer._compute_loss(stub, _fake_lm(torch.cat([pc, pr])), inputs, return_outputs=False)


@pytest.mark.parametrize(
    ("name", "trl_type", "eps"),
    [("sigmoid", "sigmoid", 0.0), ("robust", "robust", 0.1), ("ipo", "ipo", 0.0), ("hinge", "hinge", 0.0)],
)
def test_dpo_family_matches_trl(name, trl_type, eps):
    pc, pr, rc, rr = _random_logps(0)
    beta = 0.1
    kwargs = {"label_smoothing": eps} if name == "robust" else {}
    ours, _ = DPO_LOSSES[name](pc, pr, rc, rr, beta=beta, **kwargs)
    # TRL returns the batch mean; check it, then each example through batches of one.
    torch.testing.assert_close(ours.mean(), _trl_dpo(trl_type, beta, eps, pc, pr, rc, rr), atol=1e-5, rtol=1e-5)
    per_example = torch.stack(
        [_trl_dpo(trl_type, beta, eps, pc[i : i + 1], pr[i : i + 1], rc[i : i + 1], rr[i : i + 1]) for i in range(B)]
    )
    torch.testing.assert_close(ours, per_example, atol=1e-5, rtol=1e-5)


def test_dpo_metrics_match_trl_logging():
    pc, pr, rc, rr = _random_logps(1)
    _, metrics = dpo_sigmoid_loss(pc, pr, rc, rr, beta=0.1)
    from trl.trainer.dpo_trainer import DPOTrainer

    stub = _trainer_stub(ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
                         loss_types=["sigmoid"], loss_weights=[1.0], beta=0.1, label_smoothing=0.0,
                         use_weighting=False)
    inputs = {"input_ids": torch.stack([torch.zeros(2 * B, dtype=torch.long), torch.arange(2 * B)], dim=1),
              "completion_mask": torch.tensor([[0, 1]]).repeat(2 * B, 1), "ref_chosen_logps": rc,
              "ref_rejected_logps": rr}
    DPOTrainer._compute_loss(stub, _fake_lm(torch.cat([pc, pr])), inputs, return_outputs=False)
    logged = stub._metrics["eval"]
    for ours, theirs in [("chosen_rewards", "rewards/chosen"), ("rejected_rewards", "rewards/rejected"),
                         ("reward_margin", "rewards/margins"), ("reward_accuracy", "rewards/accuracies")]:
        assert metrics[ours].mean().item() == pytest.approx(logged[theirs][-1], abs=1e-5)


def test_cdpo_label_smoothing_matches_trl_aot_on_single_pairs():
    # TRL 1.16's "sigmoid" has no label smoothing; its "aot" loss applies the same smoothed form to
    # sorted log-ratio gaps, and with one pair per batch the sort is the identity, so it equals cDPO.
    pc, pr, rc, rr = _random_logps(2)
    ours, _ = dpo_sigmoid_loss(pc, pr, rc, rr, beta=0.1, label_smoothing=0.2)
    theirs = torch.stack(
        [_trl_dpo("aot", 0.1, 0.2, pc[i : i + 1], pr[i : i + 1], rc[i : i + 1], rr[i : i + 1]) for i in range(B)]
    )
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def _trl_kto(policy, ref, labels, policy_kl, ref_kl, beta, w_d, w_u):
    from trl.trainer.kto_trainer import KTOTrainer

    n, m = policy.shape[0], policy_kl.shape[0]
    stub = _trainer_stub(calculate_KL=True, precompute_ref_logps=True, loss_type="kto", beta=beta,
                         desirable_weight=w_d, undesirable_weight=w_u)
    stub._compute_kl_logps = types.MethodType(KTOTrainer._compute_kl_logps, stub)
    # Row ids 0..n-1 index the scored completions, n..n+m-1 the mismatched (KL) completions.
    ids = torch.stack([torch.zeros(n, dtype=torch.long), torch.arange(n)], dim=1)
    kl_ids = torch.stack([torch.zeros(m, dtype=torch.long), n + torch.arange(m)], dim=1)
    inputs = {
        "input_ids": ids,
        "completion_mask": torch.tensor([[0, 1]]).repeat(n, 1),
        "KL_input_ids": kl_ids,
        "KL_attention_mask": torch.ones_like(kl_ids),
        "KL_completion_mask": torch.tensor([[0, 1]]).repeat(m, 1),
        "label": labels,
        "ref_logps": ref,
        "ref_KL_logps": ref_kl,
    }
    loss = KTOTrainer._compute_loss(stub, _fake_lm(torch.cat([policy, policy_kl])), inputs, return_outputs=False)
    return loss, stub._metrics["eval"]["kl"][-1]


@pytest.mark.parametrize("kl_shift", [0.5, -0.5])  # positive KL estimate, and one clamped to 0
def test_kto_matches_trl(kl_shift):
    g = torch.Generator().manual_seed(3)
    policy = -(5 + 20 * torch.rand(B, generator=g))
    ref = policy + torch.randn(B, generator=g)
    ref_kl = -(5 + 20 * torch.rand(B, generator=g))
    policy_kl = ref_kl + kl_shift + 0.3 * torch.randn(B, generator=g)
    labels = torch.rand(B, generator=g) < 0.6
    beta, w_d, w_u = 0.1, 1.0, 1.33

    kl = kto_kl_estimate(policy_kl, ref_kl)
    ours, _ = kto_loss(policy, ref, labels, kl, beta, desirable_weight=w_d, undesirable_weight=w_u)

    trl_mean, trl_kl = _trl_kto(policy, ref, labels, policy_kl, ref_kl, beta, w_d, w_u)
    assert kl.item() == pytest.approx(trl_kl, abs=1e-6)
    torch.testing.assert_close(ours.mean(), trl_mean, atol=1e-5, rtol=1e-5)
    per_example = torch.stack(
        [_trl_kto(policy[i : i + 1], ref[i : i + 1], labels[i : i + 1], policy_kl, ref_kl, beta, w_d, w_u)[0]
         for i in range(B)]
    )
    torch.testing.assert_close(ours, per_example, atol=1e-5, rtol=1e-5)


def test_orpo_matches_trl_odds_ratio_loss():
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    g = torch.Generator().manual_seed(4)
    # Average per-token log-probs, spanning both sides of -log 2 (where stable log(1 - p) switches form).
    chosen = -3 * torch.rand(B, generator=g) - 1e-3
    rejected = -3 * torch.rand(B, generator=g) - 1e-3
    beta = 0.1
    ours, metrics = orpo_loss(-chosen, chosen, rejected, beta)

    stub = types.SimpleNamespace(beta=beta, accelerator=_identity_accelerator())
    trl_terms, trl_chosen_rewards, trl_rejected_rewards, _, trl_mean_log_odds = ORPOTrainer.odds_ratio_loss(
        stub, chosen, rejected
    )
    # TRL's terms are beta * log sigmoid(log OR), which its trainer subtracts from the NLL.
    torch.testing.assert_close(ours, -chosen - trl_terms, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(metrics["or_loss"] * beta, -trl_terms, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(metrics["log_odds_ratio"].mean(), trl_mean_log_odds, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(metrics["chosen_rewards"], trl_chosen_rewards)
    torch.testing.assert_close(metrics["rejected_rewards"], trl_rejected_rewards)


def _trl_reward(chosen, rejected, margin, center_coef):
    from trl.trainer.reward_trainer import RewardTrainer

    stub = _trainer_stub(args=types.SimpleNamespace(center_rewards_coefficient=center_coef))
    scores = torch.cat([chosen, rejected]).unsqueeze(-1)

    def model(**_):
        return types.SimpleNamespace(logits=scores)

    inputs = {} if margin is None else {"margin": margin}
    return RewardTrainer.compute_loss(stub, model, inputs), stub._metrics["eval"]


@pytest.mark.parametrize("with_margin", [False, True])
def test_bradley_terry_and_centering_match_trl_reward_trainer(with_margin):
    g = torch.Generator().manual_seed(5)
    chosen, rejected = torch.randn(B, generator=g), torch.randn(B, generator=g)
    margin = torch.rand(B, generator=g) if with_margin else None
    coef = 0.01

    ours, metrics = bradley_terry_loss(chosen, rejected, margin)
    ours = ours + reward_centering_penalty(chosen, rejected, coef)
    trl_loss, logged = _trl_reward(chosen, rejected, margin, coef)
    torch.testing.assert_close(ours.mean(), trl_loss, atol=1e-5, rtol=1e-5)
    assert metrics["accuracy"].mean().item() == pytest.approx(logged["accuracy"][-1])
    assert metrics["margin"].mean().item() == pytest.approx(logged["margin"][-1], abs=1e-6)
    per_example = torch.stack(
        [_trl_reward(chosen[i : i + 1], rejected[i : i + 1], None if margin is None else margin[i : i + 1], coef)[0]
         for i in range(B)]
    )
    torch.testing.assert_close(ours, per_example, atol=1e-5, rtol=1e-5)
