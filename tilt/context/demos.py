"""Demonstration distributions ``D`` over the correct rollouts, and their edge marginals."""

from __future__ import annotations

import math

import numpy as np

from tilt._checks import check_real
from tilt._numerics import FloatArray
from tilt.policy import Policy

__all__ = ["DEMOS", "demonstrations", "edge_marginals", "reference_rollout", "point_mass"]

DEMOS = ("own", "uniform", "tempered")
"""Demonstration distributions built from the policy by :func:`demonstrations`.

A fixed ``reference`` demonstration (OPSD, SDFT) is a :func:`point_mass` at
the rollout :func:`reference_rollout` picks."""

_TIE = 1e-12
"""Log-probabilities this close count as a tie when picking the most probable rollout."""


def reference_rollout(base: Policy, path: str | None = None) -> int:
    """The reference demonstration's index: ``path``, or the base's likeliest correct rollout.

    ``path`` is written as in the ``--rollouts`` CSV (node labels joined by
    ``>``).  Without it, ties in probability (within ``1e-12`` in log space) go to
    the smallest path string, so the choice does not depend on rounding.

    Raises
    ------
    ValueError
        If ``path`` is not a correct rollout of the space, or the base gives
        the correct rollouts no mass.
    """
    space = base.space
    correct = np.flatnonzero(space.correct)
    if path is not None:
        if not isinstance(path, str) or not path:
            raise ValueError(f"a reference path must be a non-empty string, got {path!r}")
        labels = space.path_labels(correct)
        try:
            return int(correct[labels.index(path)])
        except ValueError:
            raise ValueError(
                f"reference {path!r} is not a correct rollout of this instance: write its "
                "node labels joined by '>' from the source to the target, as in the "
                "--rollouts CSV"
            ) from None
    log_p = base.log_prob[correct]
    if correct.size == 0 or not np.isfinite(log_p).any():
        raise ValueError("the base puts no mass on correct rollouts: there is no reference")
    best = correct[log_p >= log_p.max() - _TIE]
    labels = space.path_labels(best)
    return int(best[labels.index(min(labels))])


def point_mass(policy: Policy, index: int) -> Policy:
    """``D = delta_c``: one fixed demonstration ``c`` (a rollout index of ``policy``'s space)."""
    space = policy.space
    if not 0 <= index < space.n_rollouts:
        raise ValueError(f"rollout index {index} is outside 0..{space.n_rollouts - 1}")
    log_weight = np.full(space.n_rollouts, -np.inf)
    log_weight[index] = 0.0
    return Policy(space, log_weight)


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
    if kind not in DEMOS:
        raise ValueError(f"unknown demonstrations {kind!r}: choose one of {', '.join(DEMOS)}")
    alpha = check_real("alpha", alpha)
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"tempering alpha must be finite and >= 0, got {alpha!r}")
    alpha = float(alpha)
    # one distribution object per policy and kind: the structured forms remember what they
    # derive from it (edge marginals, per-step tilts) on it
    return policy.memo(f"demonstrations:{kind}:{alpha!r}", lambda: _build(policy, kind, alpha))


def _build(policy: Policy, kind: str, alpha: float) -> Policy:
    space = policy.space
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
        top = float(lp[np.isfinite(lp)].max())
        # shifted by the largest value first: alpha * lp overflows at huge alpha, while
        # alpha * (lp - top) goes to -inf below the top, which is the limit
        with np.errstate(over="ignore"):
            log_weight[correct] = np.where(np.isfinite(lp), alpha * (lp - top), -np.inf)
    return Policy.from_log_weights(space, log_weight)


def edge_marginals(demos: Policy) -> FloatArray:
    """``m(e) = P_{c ~ D}(e in E(c))`` for every move ``e``, shape (n_moves,).

    A simple path makes each move at most once, so ``m`` is the flow of ``D``
    through the prefixes that end with ``e``.
    """

    def compute() -> FloatArray:
        space = demos.space
        flow = space.subtree_sum(demos.prob)
        return np.bincount(space.move[1:], weights=flow[1:], minlength=space.n_moves).astype(
            np.float64, copy=False
        )

    return demos.memo("edge-marginals", compute)


def edge_log_marginals(demos: Policy) -> FloatArray:
    """``log m(e)`` for every move ``e`` (``-inf`` where no demonstration makes it), from
    ``D``'s log-probabilities: finite where ``m(e)`` underflows float64 (a demonstration of
    probability ``e^-2100`` still makes its moves), shape (n_moves,)."""

    def compute() -> FloatArray:
        space = demos.space
        m = edge_marginals(demos)
        with np.errstate(divide="ignore"):
            out = np.log(m)  # exact to rounding wherever m is a normal float
        small = m < 1e-300
        if small.any() and _no_underflow(demos.log_prob):
            # every demonstration's probability is a normal float: m(e) = 0 only where none
            # makes the move, whose flows are all -inf (no pass over the tree for those)
            small &= m > 0.0
        if small.any():  # where m underflowed: the log-sum-exp of its prefixes' flows
            flow = space.subtree_logsumexp(demos.log_prob)
            moves = space.move[1:]
            pick = np.flatnonzero(small[moves]) + 1
            out[small] = -np.inf
            np.logaddexp.at(out, space.move[pick], flow[pick])
        return out

    return demos.memo("edge-log-marginals", compute)


_NORMAL = -700.0
"""``exp`` of a log-probability above this is a normal float (they end at ``e^-708``)."""


def _no_underflow(log_prob: FloatArray) -> bool:
    """Whether ``exp`` keeps every finite value of ``log_prob`` a normal float: then a sum of
    them is 0 only when every term is ``-inf``."""
    least = float(np.min(log_prob, initial=0.0, where=log_prob != -np.inf))
    return least > _NORMAL
