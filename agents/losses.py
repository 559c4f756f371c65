"""TD targets and losses of the DQN family, as small pure functions on batched tensors.

Shapes: B batch, A actions, K atoms or quantiles. `discount` is gamma^k for a k-step return, and 0
when the episode terminated within those k steps.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def greedy_bootstrap(next_q_target: torch.Tensor, next_q_select: torch.Tensor) -> torch.Tensor:
    """Q_target(s', argmax_a Q_select(s', a)) for [B, A] inputs.

    Q-learning (Mnih et al. 2015) selects with the target network itself; Double DQN (van Hasselt et
    al. 2016, arXiv:1509.06461) selects with the online network and evaluates with the target one.
    """
    return next_q_target.gather(1, next_q_select.argmax(1, keepdim=True)).squeeze(1)


def td_target(reward: torch.Tensor, discount: torch.Tensor, bootstrap: torch.Tensor) -> torch.Tensor:
    return reward + discount * bootstrap


def value_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-sample loss: Huber with threshold 1 (the Nature paper's TD-error clipping), or 0.5 * delta^2."""
    if kind == "huber":
        return F.smooth_l1_loss(prediction, target, reduction="none", beta=1.0)
    if kind == "mse":
        return 0.5 * (prediction - target) ** 2
    raise ValueError(f"unknown value loss {kind!r}; use 'huber' or 'mse'")


def munchausen_target(
    reward: torch.Tensor,
    discount: torch.Tensor,
    action: torch.Tensor,
    q_target: torch.Tensor,
    next_q_target: torch.Tensor,
    tau: float,
    alpha: float,
    l0: float,
) -> torch.Tensor:
    """Munchausen-DQN target (Vieillard et al. 2020, arXiv:2007.14430, eq. 2):

    r + alpha * clip(tau log pi(a|s), l0, 0) + discount * sum_a' pi(a'|s') (q(s',a') - tau log pi(a'|s')),

    with pi = softmax(q / tau) of the target network, q_target = q(s, .) and next_q_target = q(s', .).
    """
    log_pi = F.log_softmax(q_target / tau, dim=1)
    bonus = alpha * (tau * log_pi.gather(1, action[:, None]).squeeze(1)).clamp(min=l0, max=0.0)
    next_log_pi = F.log_softmax(next_q_target / tau, dim=1)
    soft_value = (next_log_pi.exp() * (next_q_target - tau * next_log_pi)).sum(1)
    return reward + bonus + discount * soft_value


def categorical_projection(
    next_probs: torch.Tensor, rewards: torch.Tensor, discounts: torch.Tensor, support: torch.Tensor
) -> torch.Tensor:
    """Projects the distribution of r + discount * Z onto the fixed support (Bellemare et al. 2017,
    arXiv:1707.06887, Algorithm 1).

    next_probs [B, K] over `support` [K] (evenly spaced); rewards, discounts [B]. Each atom's mass is
    split between the two nearest support points in proportion to its distance; mass beyond either
    edge goes to that edge. Written as the triangular-kernel form m_j = sum_i p_i max(0, 1 - |Tz_i -
    z_j| / dz), which needs no special case for atoms that land exactly on a support point.
    """
    v_min, v_max = support[0], support[-1]
    dz = (v_max - v_min) / (support.numel() - 1)
    tz = (rewards[:, None] + discounts[:, None] * support[None, :]).clamp(v_min, v_max)  # [B, K]
    kernel = (1.0 - (tz[:, :, None] - support[None, None, :]).abs() / dz).clamp(min=0.0)  # [B, K_i, K_j]
    return (next_probs[:, :, None] * kernel).sum(1)


def quantile_huber_loss(
    prediction: torch.Tensor, target: torch.Tensor, taus: torch.Tensor, kappa: float = 1.0
) -> torch.Tensor:
    """Quantile regression loss (Dabney et al. 2018a, arXiv:1710.10044, eq. 10), per sample [B].

    prediction [B, N] are the quantiles at fractions `taus` ([B, N] or [N]); target [B, N'] are samples
    of the target distribution. u_ij = target_j - prediction_i;
    rho_tau(u) = |tau - 1{u < 0}| * L_kappa(u) / kappa, with L_kappa the Huber loss (kappa = 0: |u|);
    summed over i and averaged over j.
    """
    u = target[:, None, :] - prediction[:, :, None]  # [B, N, N']
    if kappa > 0:
        huber = torch.where(u.abs() <= kappa, 0.5 * u**2, kappa * (u.abs() - 0.5 * kappa)) / kappa
    else:
        huber = u.abs()
    taus = taus.expand_as(prediction)[:, :, None]
    return ((taus - (u.detach() < 0).float()).abs() * huber).mean(2).sum(1)
