"""Elastic Weight Consolidation (Kirkpatrick et al. 2017): a quadratic anchor against forgetting."""

from __future__ import annotations

import torch

__all__ = ["ewc_penalty", "fisher_diagonal_update"]


def ewc_penalty(
    params: dict[str, torch.Tensor],
    anchors: dict[str, torch.Tensor],
    fisher: dict[str, torch.Tensor],
    strength: float,
) -> torch.Tensor:
    """EWC penalty, Kirkpatrick et al. 2017, eq. 3: (lambda / 2) * sum_i F_i (theta_i - theta*_i)^2.

    Unlike the other losses this returns a *scalar*: the penalty is a function of the parameters alone, not
    of any example, so it must be added once per optimisation step rather than spread over (and averaged
    with) the per-example losses.

    Only parameters that have a Fisher entry are penalised. Accumulation is in fp32 so bf16 weights do not
    lose the small differences theta - theta*.

    Args:
        params: name -> current parameter (with grad).
        anchors: name -> parameter value theta* after the previous task (same shapes).
        fisher: name -> diagonal Fisher information F (same shapes), e.g. from ``fisher_diagonal_update``.
        strength: lambda.

    Returns:
        scalar tensor.
    """
    total = None
    for name, f in fisher.items():
        theta = params[name]
        diff = theta.float() - anchors[name].detach().float()
        term = (f.detach().float() * diff.square()).sum()
        total = term if total is None else total + term
    if total is None:
        device = next(iter(params.values())).device if params else None
        return torch.zeros((), device=device)
    return 0.5 * strength * total


def fisher_diagonal_update(
    fisher: dict[str, torch.Tensor],
    grads: dict[str, torch.Tensor],
    n: int,
) -> dict[str, torch.Tensor]:
    """Running mean of squared gradients: the diagonal empirical Fisher information.

        F_n = F_{n-1} + (g_n^2 - F_{n-1}) / n

    so that after n updates F_n = (1/n) sum_k g_k^2, the diagonal Fisher of Kirkpatrick et al. 2017 estimated
    from per-sample gradients of the log-likelihood. Pure: returns a new dict and leaves the inputs untouched.

    Args:
        fisher: name -> running estimate F_{n-1} (pass {} before the first sample).
        grads: name -> gradient g_n of one sample's log-likelihood (or loss; the sign does not matter). A name
            present in ``fisher`` but absent here counts as a zero gradient (a parameter the sample did not
            touch); a name new in ``grads`` starts from F = 0.
        n: index of this sample, counting from 1.

    Returns:
        name -> F_n (fp32) for every name in ``fisher`` or ``grads``.
    """
    if n < 1:
        raise ValueError("n counts samples from 1")
    updated = {}
    for name in {**fisher, **grads}:
        g = grads.get(name)
        prev = fisher.get(name)
        if g is None:
            updated[name] = prev - prev / n
            continue
        g2 = g.detach().float().square()
        updated[name] = g2 / n if prev is None else prev + (g2 - prev) / n
    return updated
