"""Sequence-level self-distillation: on-policy reverse KL to the teachers, and with the task reward.

* ``sequence``: minimise ``E_c KL(q || T_c) + b KL(q || pi)``.  By Gibbs'
  inequality the objective is ``(1 + b) KL(q || q*) - (1 + b) log Z`` with
  ``q*(y) = pi(y) exp(S(y) / (1 + b)) / Z``.
* ``hybrid=beta``: the same with the task reward added (``total = RL + SD``),
  ``q(y) ∝ pi(y) exp(S(y) / (1 + b) + r(y) / beta)``; ``beta -> inf`` is ``sequence``.
"""

from __future__ import annotations

import math

import numpy as np

from tilt.context import ContextModel
from tilt.objectives._common import Demos, check_anchor, resolve_demos, tilt_score
from tilt.policy import Policy

__all__ = ["sd_sequence", "sd_hybrid"]


def sd_sequence(
    policy: Policy,
    model: ContextModel,
    demos: Demos = "own",
    alpha: float = 1.0,
    anchor: float = 0.0,
) -> Policy:
    """Optimum of ``E_c KL(q || T_c) + b KL(q || pi)``: ``q*(y) ∝ pi(y) exp(S(y) / (1 + b))``.

    The minimum value is ``-(1 + b) log Z``.  ``q*(y) = 0`` where ``S(y) = -inf``
    (some teacher gives ``y`` no mass).
    """
    return sd_hybrid(policy, model, demos, alpha, anchor, beta=math.inf)


def sd_hybrid(
    policy: Policy,
    model: ContextModel,
    demos: Demos = "own",
    alpha: float = 1.0,
    anchor: float = 0.0,
    *,
    beta: float,
) -> Policy:
    """``q(y) ∝ pi(y) exp(S(y) / (1 + b) + r(y) / beta)``: sequence SD plus the task reward.

    The optimum of ``E_q[r] / beta + E_q[S] / (1 + b) - KL(q || pi)``, i.e. of
    ``(1 + b)``-scaled ``E_c KL(q || T_c) + b KL(q || pi)`` with a reward ``r / beta``.
    ``beta = inf`` is :func:`sd_sequence`.  Incorrect rollouts are weighted by
    ``exp(-1 / beta)`` (not correct ones by ``exp(+1 / beta)``), exact at any ``beta > 0``.
    """
    anchor = check_anchor(anchor)
    beta = float(beta)
    if not beta > 0:
        raise ValueError(f"hybrid beta must be > 0 (inf is sequence SD), got {beta!r}")
    score = tilt_score(policy, model, resolve_demos(policy, demos, alpha))
    reward = 0.0 if math.isinf(beta) else (~policy.space.correct) / beta
    with np.errstate(invalid="ignore"):
        log_weight = np.where(
            np.isneginf(score), -np.inf, policy.log_prob + score / (1.0 + anchor) - reward
        )
    return Policy.from_log_weights(policy.space, log_weight)
