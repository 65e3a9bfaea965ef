"""Demonstration distributions ``D`` over the correct rollouts, and their edge marginals."""

from __future__ import annotations

import math

import numpy as np

from tilt.policy import Policy
from tilt.space import FloatArray

__all__ = ["DEMOS", "demonstrations", "edge_marginals"]

DEMOS = ("own", "uniform", "tempered")
"""Demonstration distributions accepted by :func:`demonstrations`."""


def demonstrations(policy: Policy, kind: str = "own", alpha: float = 1.0) -> Policy:
    """The demonstration distribution ``D`` over the correct rollouts.

    ``own``: ``D(c) = pi(c) r(c) / pi(C)``; ``uniform``: ``D(c) = r(c) / |C|``;
    ``tempered``: ``D(c) ∝ pi(c)^alpha r(c)`` (``alpha = 1`` is ``own``,
    ``alpha = 0`` is ``uniform``).

    Raises
    ------
    ValueError
        On an unknown ``kind``, a negative or non-finite ``alpha``, or a policy
        with no mass on the correct set.
    """
    space = policy.space
    if kind not in DEMOS:
        raise ValueError(f"unknown demonstrations {kind!r}: choose one of {', '.join(DEMOS)}")
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"tempering alpha must be finite and >= 0, got {alpha!r}")
    log_weight = np.full(space.n_rollouts, -np.inf)
    correct = space.correct
    if not np.isfinite(policy.log_prob[correct]).any():
        raise ValueError("the policy puts no mass on correct rollouts: it has no demonstrations")
    if kind == "own":
        log_weight[correct] = policy.log_prob[correct]
    elif kind == "uniform":
        log_weight[correct] = 0.0
    else:
        lp = policy.log_prob[correct]
        log_weight[correct] = np.where(np.isfinite(lp), alpha * lp, -np.inf)
    return Policy.from_log_weights(space, log_weight)


def edge_marginals(demos: Policy) -> FloatArray:
    """``m(e) = P_{c ~ D}(e in E(c))`` for every move ``e``, shape (n_moves,).

    A simple path makes each move at most once, so ``m`` is the flow of ``D``
    through the prefixes that end with ``e``.
    """
    space = demos.space
    flow = space.subtree_sum(demos.prob)
    return np.bincount(space.move[1:], weights=flow[1:], minlength=space.n_moves).astype(
        np.float64, copy=False
    )
