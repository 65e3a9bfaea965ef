"""RL's optimum, the beta that matches an accuracy, and iterates of any optimum.

``pi_RL(y) = pi0(y) exp(r(y) / beta) / Z``; ``beta -> 0`` gives
``pi0(y) r(y) / pi0(C)`` (``docs/theory.md``, "Optimal RL").  It keeps every
ratio among correct rollouts, for every ``beta``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from tilt._checks import check_beta, check_instance, check_number, check_real
from tilt._numerics import logsumexp
from tilt.policy import Policy

__all__ = [
    "rl_optimum",
    "MatchedRL",
    "MATCH_TOLERANCE",
    "rl_matched",
    "matched_beta",
    "iterate",
]

_P = TypeVar("_P")


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
    check_instance("policy", policy, Policy)
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

MATCH_TOLERANCE = 1e-12
""":func:`rl_matched` returns a policy only when its accuracy is within this of the target."""

_SAME = 1e-14
"""Targets this close to the base's accuracy (or to 1) are met by ``beta = inf`` (or 0)."""


def _expit(x: float) -> float:
    """``1 / (1 + e^-x)`` without overflow."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    return math.exp(x) / (1.0 + math.exp(x))


def _beta_from_log_odds(base_log_odds: float, a: float) -> float | None:
    """``beta`` with ``expit(base_log_odds + 1 / beta) = a``; ``None`` below the base."""
    p = _expit(base_log_odds)
    if abs(a - p) <= _SAME:
        return math.inf
    if a < p:
        return None
    if a >= 1 - _SAME:
        return 0.0
    logit_gap = (math.log(a) - math.log1p(-a)) - base_log_odds
    return 1.0 / logit_gap


def matched_beta(base_accuracy: float, target_accuracy: float) -> float | None:
    """The ``beta`` at which RL from a base of accuracy ``p`` reaches accuracy ``a``.

    ``pi_RL(C) = p e^{1/beta} / (p e^{1/beta} + 1 - p) = a`` gives
    ``beta = 1 / log(a (1 - p) / (p (1 - a)))`` for ``p < a < 1``; ``a`` within
    ``1e-14`` of 1 gives ``0`` (the limit) and within ``1e-14`` of ``p`` gives ``inf``
    (RL is the base).  Returns ``None`` when no ``beta >= 0`` reaches ``a`` (``a < p``:
    a reward of 1 for correct rollouts never lowers accuracy).

    Raises
    ------
    TypeError, ValueError
        Unless ``0 < p <= 1`` and ``0 <= a <= 1`` (a few ulps above 1 are taken as 1).
        ``p = 0`` is refused: RL cannot move it, and an accuracy that underflowed to 0
        has lost its log-odds (:func:`rl_matched` works from the policy's log-masses).
    """
    p = check_real("base_accuracy", base_accuracy)
    a = check_real("target_accuracy", target_accuracy)
    for name, value, ok in (
        ("base_accuracy", p, 0 < p <= 1 + _ULPS),
        ("target_accuracy", a, 0 <= a <= 1 + _ULPS),
    ):
        if not ok:  # nan fails both comparisons
            raise ValueError(f"accuracies must lie in (0, 1] and [0, 1]: {name} is {value!r}")
    p, a = min(p, 1.0), min(a, 1.0)  # a sum of masses may round a few ulps above 1
    if p == 1.0:
        return math.inf if a >= 1 - _SAME else None
    return _beta_from_log_odds(math.log(p) - math.log1p(-p), a)


@dataclass(frozen=True)
class MatchedRL:
    """RL at a target accuracy.

    Attributes
    ----------
    target_accuracy : float
    beta : float or None
        ``None`` when no ``beta`` reaches the target within :data:`MATCH_TOLERANCE`.
    policy : Policy or None
        The RL optimum at ``beta``.
    message : str
        Why no ``beta`` reaches the target, or ``''``.
    """

    target_accuracy: float
    beta: float | None
    policy: Any
    """The engine's policy (a :class:`~tilt.policy.Policy` by default), or ``None``."""
    message: str = ""


def _log_odds(policy: Any) -> float:
    """``log pi(C) - log pi(not C)`` from the log-masses: finite where ``pi(C)`` underflows
    (from ``accuracy`` and ``incorrect_mass`` for a policy without per-rollout log-masses)."""
    if not isinstance(policy, Policy):
        correct_mass, incorrect = float(policy.accuracy), float(policy.incorrect_mass)
        if incorrect == 0:
            return math.inf
        return (math.log(correct_mass) if correct_mass > 0 else -math.inf) - math.log(incorrect)
    correct = policy.space.correct
    top = [
        logsumexp(policy.log_prob[mask]) if mask.any() else -math.inf
        for mask in (correct, ~correct)
    ]
    if top[1] == -math.inf:
        return math.inf
    return top[0] - top[1]


def rl_matched(
    policy: Any, target_accuracy: float, optimum: Callable[[Any, float], Any] | None = None
) -> MatchedRL:
    """The RL optimum from ``policy`` at accuracy ``target_accuracy`` (:func:`matched_beta`).

    ``optimum(policy, beta)`` is RL's optimum on the policy's engine (default
    :func:`rl_optimum` on a :class:`~tilt.policy.Policy`; the DP engine passes its own,
    so every engine matches RL here).

    The base's log-odds come from its log-masses, so a base whose accuracy underflows
    float64 (``e^-800``) still has its beta.  The optimum at that beta is checked: when
    its accuracy is not within :data:`MATCH_TOLERANCE` of the target, ``beta`` and
    ``policy`` are ``None`` and ``message`` says by how much it missed.

    Raises
    ------
    TypeError, ValueError
        Unless ``policy`` is a :class:`~tilt.policy.Policy` (with no ``optimum``) and
        ``0 <= target <= 1``.
    """
    if optimum is None:
        check_instance("policy", policy, Policy)
        optimum = rl_optimum
    a = min(check_number("target_accuracy", target_accuracy, 0.0, 1.0 + _ULPS), 1.0)
    log_odds = _log_odds(policy)
    if log_odds == -math.inf:
        return MatchedRL(
            a, None, None, "the policy has no correct rollout with mass: RL cannot change it"
        )
    beta = (
        _beta_from_log_odds(log_odds, a)
        if math.isfinite(log_odds)
        else (math.inf if a >= 1 - _SAME else None)
    )
    if beta is None:
        return MatchedRL(
            a,
            None,
            None,
            f"no beta reaches accuracy {a:.6g}: it is below the base's "
            f"{policy.accuracy:.6g}, and RL with a 0/1 reward only raises accuracy",
        )
    matched = optimum(policy, beta)
    off = abs(matched.accuracy - a)
    if off > MATCH_TOLERANCE:
        return MatchedRL(
            a,
            None,
            None,
            f"RL at beta = {beta:.6g} reaches accuracy {matched.accuracy:.17g}, {off:.3g} from "
            f"the target {a:.17g} (tolerance {MATCH_TOLERANCE:g}): not matched",
        )
    return MatchedRL(a, beta, matched)


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
