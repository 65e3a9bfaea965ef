"""RL's optimum, the beta that matches an accuracy, and iterates of any optimum.

``pi_RL(y) = pi0(y) exp(r(y) / beta) / Z``; ``beta -> 0`` gives
``pi0(y) r(y) / pi0(C)`` (``docs/theory.md``, "Optimal RL").  It keeps every
ratio among correct rollouts, for every ``beta``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from tilt._checks import check_beta
from tilt.policy import Policy

_P = TypeVar("_P")

__all__ = [
    "rl_optimum",
    "MatchedRL",
    "rl_matched",
    "matched_beta",
    "matched_beta_or_reason",
    "iterate",
]


def rl_optimum(policy: Policy, beta: float = 0.0) -> Policy:
    """The optimum of ``E_q[r] - beta KL(q || pi)``.

    ``q(y) = pi(y) exp(r(y) / beta) / Z`` for ``beta > 0``; at ``beta = 0`` the
    limit ``pi(y) r(y) / pi(C)``; ``beta = inf`` returns ``pi``.  For correct
    ``y, y'`` the ratio ``q(y) / q(y')`` equals ``pi(y) / pi(y')`` for every
    ``beta``.

    Raises
    ------
    ValueError
        If ``beta < 0`` or ``nan``, or the limit is asked of a policy with no
        correct mass.

    Examples
    --------
    >>> from tilt.tasks import named_task
    >>> from tilt.space import enumerate_rollouts
    >>> from tilt.policy import base_policy
    >>> pi0 = base_policy(enumerate_rollouts(named_task("grid3")), "uniform")
    >>> round(rl_optimum(pi0).accuracy, 12)
    1.0
    """
    beta = check_beta(beta)
    correct = policy.space.correct
    if math.isinf(beta):
        return policy
    if beta == 0:
        if not np.isfinite(policy.log_prob[correct]).any():
            raise ValueError(
                "the policy puts no mass on correct rollouts: the beta -> 0 limit is undefined"
            )
        return Policy.from_log_weights(policy.space, np.where(correct, policy.log_prob, -np.inf))
    # weight exp(-1/beta) on incorrect rollouts (not exp(+1/beta) on correct ones): adding 1/beta
    # to the correct log-probabilities would round them to the ulp of 1/beta (1e-4 at beta=1e-12)
    with np.errstate(over="ignore"):  # 1 / beta = inf for a subnormal beta: weight exp(-inf) = 0
        log_weight = policy.log_prob - (~correct) / beta
    return Policy.from_log_weights(policy.space, log_weight)


_ULPS = 1e-12
"""How far above 1 a probability computed by summing masses may round (far above the ulps)."""


def matched_beta(base_accuracy: float, target_accuracy: float) -> float | None:
    """The ``beta`` at which RL from a base of accuracy ``p`` reaches accuracy ``a``.

    ``pi_RL(C) = p e^{1/beta} / (p e^{1/beta} + 1 - p) = a`` gives
    ``beta = 1 / log(a (1 - p) / (p (1 - a)))`` for ``p < a < 1``; ``a = 1``
    gives ``0`` (the limit) and ``a = p`` gives ``inf`` (RL is the base).
    Returns ``None`` when no ``beta >= 0`` reaches ``a`` (``a < p``: a reward of
    1 for correct rollouts never lowers accuracy).
    """
    p, a = float(base_accuracy), float(target_accuracy)
    if not (0 < p <= 1 + _ULPS and 0 <= a <= 1 + _ULPS):
        raise ValueError(f"accuracies must lie in (0, 1] and [0, 1], got {p!r} and {a!r}")
    p, a = min(p, 1.0), min(a, 1.0)  # a sum of masses may round a few ulps above 1
    tol = 1e-14
    if abs(a - p) <= tol:
        return math.inf
    if a < p:
        return None
    if a >= 1 - tol:
        return 0.0
    logit_gap = (math.log(a) - math.log1p(-a)) - (math.log(p) - math.log1p(-p))
    return 1.0 / logit_gap


@dataclass(frozen=True)
class MatchedRL:
    """RL at a target accuracy.

    Attributes
    ----------
    target_accuracy : float
    beta : float or None
        ``None`` when no ``beta`` reaches the target.
    policy : Policy or None
        The RL optimum at ``beta``.
    message : str
        Why no ``beta`` reaches the target, or ``''``.
    """

    target_accuracy: float
    beta: float | None
    policy: Policy | None
    message: str = ""


def rl_matched(policy: Policy, target_accuracy: float) -> MatchedRL:
    """The RL optimum from ``policy`` at accuracy ``target_accuracy`` (:func:`matched_beta`)."""
    beta, message = matched_beta_or_reason(policy.accuracy, target_accuracy)
    if beta is None:
        return MatchedRL(target_accuracy, None, None, message)
    return MatchedRL(target_accuracy, beta, rl_optimum(policy, beta))


def matched_beta_or_reason(
    base_accuracy: float, target_accuracy: float
) -> tuple[float | None, str]:
    """:func:`matched_beta`, and why no ``beta`` reaches the target when none does (every
    engine matches RL through this)."""
    beta = matched_beta(base_accuracy, target_accuracy)
    if beta is None:
        return None, (
            f"no beta reaches accuracy {target_accuracy:.6g}: it is below the base's "
            f"{base_accuracy:.6g}, and RL with a 0/1 reward only raises accuracy"
        )
    return beta, ""


def iterate(policy: _P, step: Callable[[_P], _P], rounds: int) -> list[_P]:
    """``[pi_0, pi_1, ..., pi_n]`` with ``pi_{k+1} = step(pi_k)``.

    For SD, ``step`` takes demonstrations and teacher from ``pi_k`` (for example
    ``lambda p: sd_sequence(p, model)``); for RL, ``lambda p: rl_optimum(p, beta)``.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 0:
        raise ValueError(f"rounds must be a non-negative integer, got {rounds!r}")
    out = [policy]
    for _ in range(int(rounds)):
        out.append(step(out[-1]))
    return out
