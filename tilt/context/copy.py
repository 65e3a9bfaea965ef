"""``copy(lam)``: the teacher copies the whole demonstration with probability ``lam``."""

from __future__ import annotations

import math

import numpy as np

from tilt._numerics import FloatArray, IntArray
from tilt.context.base import ContextModel, check_strength
from tilt.context.generic import TeacherClasses, check_classes
from tilt.policy import Policy

__all__ = ["CopyContext"]


class CopyContext(ContextModel):
    """``copy(lam)``: ``pi(y | c) = (1 - lam) pi(y) + lam [y = c]``, ``0 <= lam < 1``.

    Closed forms (``docs/theory.md``)::

        S(y) = log(1 - lam) + D(y) log(1 + lam / ((1 - lam) pi(y)))
        forward: q(y) = (1 - lam) pi(y) + lam D(y)
    """

    name = "copy"

    def __init__(self, lam: float) -> None:
        self.strength = self.lam = check_strength("lam", lam, upper=1.0)

    def no_markov_reason(self) -> str:
        """The copy model's score depends on ``D(y)`` pointwise, not on moves."""
        return (
            "the copy model's tilt score depends on D(y) = pi(y) / pi(C) pointwise, not on "
            "moves: no Markov form; use the enumeration engine (--engine enumerate) on a small "
            "space"
        )

    def describe(self) -> str:
        return f"copy(lam={self.lam:g})"

    def teacher_log_prob(self, policy: Policy, demos: IntArray) -> FloatArray:
        demos = np.asarray(demos, dtype=np.int64)
        out = np.tile(math.log1p(-self.lam) + policy.log_prob, (demos.size, 1))
        rows = np.arange(demos.size)
        with np.errstate(divide="ignore"):
            out[rows, demos] = np.logaddexp(
                out[rows, demos], math.log(self.lam) if self.lam else -np.inf
            )
        return out

    def _log_boost(self, log_p: FloatArray) -> FloatArray:
        """``log(1 + lam / ((1 - lam) p))`` from ``log p``."""
        if self.lam == 0:
            return np.zeros_like(log_p)
        return np.logaddexp(0.0, math.log(self.lam) - math.log1p(-self.lam) - log_p)

    def tilt_score(self, policy: Policy, demos: Policy) -> FloatArray:
        d = demos.prob
        boost = np.zeros(policy.space.n_rollouts)
        has = d > 0
        boost[has] = d[has] * self._log_boost(policy.log_prob[has])
        return math.log1p(-self.lam) + boost

    def token_log_target(self, policy: Policy, demos: Policy) -> FloatArray:
        # E_c log T_c(p | h) = (1 - D(h)) log pi(p|h) + D(p) log((1-lam) pi(p) + lam)
        #   + (D(h) - D(p)) log((1-lam) pi(p)) - D(h) log((1-lam) pi(h) + lam)
        space = policy.space
        log_mass = policy.prefix_log_mass()
        d_mass = np.clip(space.subtree_sum(demos.prob), 0.0, 1.0)
        parent = space.parent[1:]
        lam = self.lam
        log_keep = math.log1p(-lam)
        log_lam = math.log(lam) if lam else -np.inf
        own = policy.log_conditionals()[1:]
        d_h, d_p = d_mass[parent], np.minimum(d_mass[1:], d_mass[parent])
        lp, lh = log_mass[1:], log_mass[parent]
        through_both = np.logaddexp(log_keep + lp, log_lam)
        through_h_only = log_keep + lp
        norm = np.logaddexp(log_keep + lh, log_lam)
        out = np.zeros(space.n_prefixes)
        out[1:] = (
            _weighted(1.0 - d_h, own)
            + _weighted(d_p, through_both)
            + _weighted(d_h - d_p, through_h_only)
            - _weighted(d_h, norm)
        )
        return out

    def teacher_classes(self, policy: Policy, demos: Policy) -> TeacherClasses:
        """Class ``j``: ``c`` passes through the ``j``-th child of ``h`` (mass ``D(h u_j)``);
        the last class: ``c`` avoids ``h`` (mass ``1 - D(h)``; no mass when ``pi(h) = 0``).

        ``T_j(u | h) = ((1 - lam) pi(hu) + lam [u = u_j]) / ((1 - lam) pi(h) + lam)``;
        the last class's teacher is ``pi(u | h)``.
        """
        space = policy.space
        log_mass = policy.prefix_log_mass()
        d_mass = np.clip(space.subtree_sum(demos.prob), 0.0, 1.0)
        parent = space.parent[1:]
        first = space.child_start[parent]
        count = space.child_count[parent]
        position = np.arange(1, space.n_prefixes) - first
        branching = int(count.max(initial=0))
        check_classes(space, branching + 1, f"the teacher classes of {self.describe()}")
        log_keep = math.log1p(-self.lam)
        log_lam = math.log(self.lam) if self.lam else -np.inf
        lp, lh = log_mass[1:], log_mass[parent]
        norm = np.logaddexp(log_keep + lh, log_lam)
        weight = np.zeros((branching + 1, space.n_prefixes))
        log_cond = np.zeros((branching + 1, space.n_prefixes))
        with np.errstate(invalid="ignore"):
            through = np.logaddexp(log_keep + lp, log_lam) - norm
            beside = log_keep + lp - norm
        for j in range(branching):
            valid = j < count
            sibling = np.where(valid, first + j, 0)
            weight[j, 1:] = np.where(valid & np.isfinite(norm), d_mass[sibling], 0.0)
            log_cond[j, 1:] = np.where(position == j, through, beside)
        weight[branching, 1:] = np.where(np.isfinite(lh), np.maximum(1.0 - d_mass[parent], 0.0), 0)
        log_cond[branching, 1:] = policy.log_conditionals()[1:]
        return TeacherClasses(weight, log_cond)

    def token_mean_log_target(self, policy: Policy, demos: Policy) -> FloatArray:
        """``log E_c T_c(u | h)`` in closed form, from the classes of :meth:`teacher_classes`.

        ``[w0 pi(u | h) + D(h) (1 - lam) pi(hu) / N + D(hu) lam / N] / (w0 + D(h))`` with
        ``N = (1 - lam) pi(h) + lam`` and ``w0 = 1 - D(h)`` where ``pi(h) > 0`` (else 0).
        In log space, with ``D``'s prefix masses from its log-probabilities: a
        demonstration of mass ``e^-1400`` still lifts a move its teacher copies (its
        linear mass underflowed to 0, and the move's target with it, 0.51 nats off).
        """
        space = policy.space
        log_mass = policy.prefix_log_mass()
        log_d = np.minimum(space.subtree_logsumexp(demos.log_prob), 0.0)  # log D(h)
        parent = space.parent[1:]
        own = policy.log_conditionals()
        log_keep = math.log1p(-self.lam)
        log_lam = math.log(self.lam) if self.lam else -np.inf
        lh = log_mass[parent]
        log_d_h = log_d[parent]
        reached = np.isfinite(lh)
        with np.errstate(divide="ignore", invalid="ignore"):
            # w0 = 1 - D(h) where pi(h) > 0, else 0; the total w0 + D(h) is 1 there, else D(h)
            log_w0 = np.where(reached, np.log1p(-np.exp(log_d_h)), -np.inf)
            log_total = np.where(reached, 0.0, log_d_h)
            log_norm = np.logaddexp(log_keep + lh, log_lam)
            parts = np.logaddexp(log_w0 + own[1:], log_d_h + log_keep + log_mass[1:] - log_norm)
            parts = np.logaddexp(parts, log_d[1:] + log_lam - log_norm)
            value = parts - log_total
        out = own.copy()
        out[1:] = np.where(np.isfinite(log_total), value, own[1:])
        out[0] = 0.0
        return out

    def forward_log_prob(self, policy: Policy, demos: Policy) -> FloatArray:
        if self.lam == 0:
            return policy.log_prob.copy()
        return np.logaddexp(
            math.log1p(-self.lam) + policy.log_prob, math.log(self.lam) + demos.log_prob
        )


def _weighted(weight: FloatArray, log_value: FloatArray) -> FloatArray:
    """``weight * log_value`` with ``0 * -inf = 0`` (weights clipped at 0)."""
    weight = np.maximum(weight, 0.0)
    has = weight > 0
    return np.where(has, weight * np.where(has, log_value, 0.0), 0.0)
