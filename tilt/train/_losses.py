"""Per-prefix losses of the trainer: the per-token losses real trainers run, exactly.

``docs/theory.md``, "What real trainers optimise": the loss is computed per
token on the student's own prefixes, with no gradient through which prefixes
were sampled.  For a tabular softmax (logits ``z_p``, one per prefix
``p = h u``) every such loss, in expectation, is

    F(z) = sum_h n(h) f_h(q(. | h)),      n(h) = q(h) held (no gradient),

with ``f_h`` a function of the conditionals at ``h`` alone (and of held
quantities of the subtree below, for ``discount`` and ``length-weighted``).
Its gradient through the softmax is

    dF/dz_p = n(h) (Q_p - q(p | h) sum_{p'} Q_p'),     Q_p = q(p | h) df_h/dq(p | h),

so each loss gives, per child ``p``, its value term and ``Q_p`` (any constant
added to ``df_h/dq`` cancels).  With ``l = log q(u | h)``, teacher conditionals
``T_k`` of class ``k`` with normalised weight ``w_k`` (:class:`TeacherClasses`)
and ``t = E_k log T_k`` (the token target):

==================  ==========================================  ===============================
loss                value term per child                        ``Q_p``
==================  ==========================================  ===============================
reverse KL          ``q (kappa l - tau)``                       ``q (kappa l - tau)``
``token-forward``   ``m log m - m l``, ``m = E_k T_k``          ``-m``
``jsd=a``           ``E_k [a T_k log(T_k/M_k) + (1-a) q log(q/M_k)]``  ``(1-a) q E_k log(q/M_k)``
``discount=g``      ``q (l - t + g R(p))``                      the same
length-weighted     ``rho(p) q (l - 1 - t)``                    ``rho(p) q (l - t)``
==================  ==========================================  ===============================

with ``M_k = (1 - a) q + a T_k``; ``d GJSD_a / dq = (1 - a) log(q / M)``, so the
``jsd`` stationarity is ``E_k log(1 - a + a T_k / q) = kappa_h`` as in
``THEORY.md``.  Held quantities, from the current student: ``R(p)``, the
expected discounted per-token loss after ``p`` (``R = 0`` at a complete
rollout, ``R(h) = sum_u q(u | h) (l - t + g R(hu))``): the return-to-go the
sampled advantage carries, detached; and ``rho(p) = E_q[1 / |y| | p]``, the
per-sequence weight of TRL's reduction.  At held ``(n, R)`` or ``(n, rho)``
each ``f_h`` is convex in ``q(. | h)``; the trainer minimises ``F`` at held
quantities and refreshes them (:func:`tilt.train.train`), and the gradient
at the current point equals the expected gradient of the sampled estimator
(checked in ``tests/test_train_objectives.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import xlogy

from tilt._numerics import FloatArray
from tilt.context import TeacherClasses
from tilt.space import RolloutSpace

__all__ = [
    "Held",
    "PerPrefixLoss",
    "ReverseKL",
    "ForwardKL",
    "GeneralisedJSD",
    "Discounted",
    "LengthWeighted",
    "held_of",
    "per_prefix_value_and_grad",
    "gjsd_terms",
    "TOP_K_MODES",
    "TopKDivergence",
    "top_k_mask",
]


@dataclass(frozen=True)
class Held:
    """Quantities of the current student the per-prefix losses hold fixed.

    Attributes
    ----------
    weight : ndarray, shape (n_prefixes,)
        ``n(h) = q(h)``, the mass of every prefix.
    extra : ndarray, shape (n_prefixes,), or None
        ``R(p)`` (``discount``) or ``rho(p)`` (``length-weighted``).
    """

    weight: FloatArray
    extra: FloatArray | None = None


class PerPrefixLoss:
    """A per-prefix loss: value terms and ``Q_p`` per child (arrays over prefixes ``1:``)."""

    needs: str | None = None
    """``'return'`` or ``'length'`` when the loss holds ``R`` or ``rho``."""

    def terms(self, log_cond: FloatArray, held: Held) -> tuple[FloatArray, FloatArray]:
        """``(value term, Q)`` per prefix ``1:``, at log conditionals ``log_cond``."""
        raise NotImplementedError


@dataclass(frozen=True)
class ReverseKL(PerPrefixLoss):
    """``f_h = sum_u q (kappa log q - tau)``: per-token reverse KL (``kappa = 1 + b``)."""

    kappa: float
    tau: FloatArray

    def terms(self, log_cond: FloatArray, held: Held) -> tuple[FloatArray, FloatArray]:
        q = np.exp(log_cond[1:])
        value = q * (self.kappa * log_cond[1:] - self.tau[1:])
        return value, value


@dataclass(frozen=True)
class ForwardKL(PerPrefixLoss):
    """``f_h = KL(m || q)`` with ``m = E_k T_k(. | h)``: per-token forward KL."""

    mean: FloatArray
    """``m`` per prefix (0 where no teacher reaches the parent)."""

    @classmethod
    def from_classes(cls, classes: TeacherClasses) -> ForwardKL:
        """``m = sum_k w_k T_k / sum_k w_k`` (0 where the weights vanish)."""
        total = classes.weight.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(
                total > 0,
                (classes.weight * np.exp(classes.log_cond)).sum(axis=0)
                / np.where(total > 0, total, 1.0),
                0.0,
            )
        return cls(mean)

    def terms(self, log_cond: FloatArray, held: Held) -> tuple[FloatArray, FloatArray]:
        m = self.mean[1:]
        value = xlogy(m, m) - np.where(m > 0, m * log_cond[1:], 0.0)
        return value, -m


def gjsd_terms(
    a: float, log_q: FloatArray, weight: FloatArray, log_teacher: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Per child, the ``GJSD_a`` value term and ``Q``, averaged over classes.

    ``weight`` (classes, n) must already be normalised within each sibling
    group (rows of zeros are skipped); ``log_teacher`` (classes, n) holds
    ``log T_k``.  ``0 < a < 1``.
    """
    q = np.exp(log_q)
    log_keep, log_a = math.log1p(-a), math.log(a)
    value = np.zeros(log_q.shape)
    grad = np.zeros(log_q.shape)
    for w, lt in zip(weight, log_teacher, strict=True):
        use = w > 0
        lt = np.where(use, lt, 0.0)
        log_m = np.logaddexp(log_keep + log_q, log_a + lt)
        teacher = np.exp(lt)
        term = a * np.where(teacher > 0, teacher * (lt - log_m), 0.0) + (1 - a) * q * (
            log_q - log_m
        )
        value += np.where(use, w * term, 0.0)
        grad += np.where(use, w * (1 - a) * q * (log_q - log_m), 0.0)
    return value, grad


@dataclass(frozen=True)
class GeneralisedJSD(PerPrefixLoss):
    """``f_h = E_k GJSD_a(T_k(. | h), q(. | h))``, ``0 < a < 1``."""

    a: float
    weight: FloatArray
    """Class weights normalised per sibling group, shape (classes, n_prefixes)."""
    log_cond: FloatArray

    @classmethod
    def from_classes(cls, a: float, classes: TeacherClasses) -> GeneralisedJSD:
        total = classes.weight.sum(axis=0)
        weight = classes.weight / np.where(total > 0, total, 1.0)
        return cls(a, weight, classes.log_cond)

    def terms(self, log_cond: FloatArray, held: Held) -> tuple[FloatArray, FloatArray]:
        return gjsd_terms(self.a, log_cond[1:], self.weight[:, 1:], self.log_cond[:, 1:])


@dataclass(frozen=True)
class Discounted(PerPrefixLoss):
    """``f_h = sum_u q (log q - t + g R(hu))`` with the return-to-go ``R`` held."""

    target: FloatArray
    g: float
    needs: str | None = "return"

    def terms(self, log_cond: FloatArray, held: Held) -> tuple[FloatArray, FloatArray]:
        assert held.extra is not None
        q = np.exp(log_cond[1:])
        value = q * (log_cond[1:] - self.target[1:] + self.g * held.extra[1:])
        return value, value


@dataclass(frozen=True)
class LengthWeighted(PerPrefixLoss):
    """``f_h = sum_u rho(hu) q (log q - 1 - t)`` with ``rho(p) = E_q[1 / |y| | p]`` held."""

    target: FloatArray
    needs: str | None = "length"

    def terms(self, log_cond: FloatArray, held: Held) -> tuple[FloatArray, FloatArray]:
        assert held.extra is not None
        q = np.exp(log_cond[1:])
        rho = held.extra[1:]
        gap = log_cond[1:] - self.target[1:]
        return rho * q * (gap - 1.0), rho * q * gap


def held_of(space: RolloutSpace, log_cond: FloatArray, loss: PerPrefixLoss) -> Held:
    """The held quantities of ``loss`` at the student ``log_cond``."""
    log_mass = space.path_sum(log_cond)
    weight = np.exp(log_mass)
    if loss.needs == "length":
        leaves = space.rollout_prefix
        log_len = np.log(np.maximum(space.depth[leaves], 1).astype(np.float64))
        rho = np.exp(space.subtree_logsumexp(log_mass[leaves] - log_len) - log_mass)
        return Held(weight, rho)
    if loss.needs == "top-k":
        assert isinstance(loss, TopKDivergence)
        return Held(weight, top_k_mask(space, log_cond, loss.k))
    if loss.needs == "return":
        assert isinstance(loss, Discounted)
        q = np.exp(log_cond)
        ret = np.zeros(space.n_prefixes)
        for lo, hi, internal, offsets in space.bottom_up_levels:
            step = q[lo:hi] * (log_cond[lo:hi] - loss.target[lo:hi] + loss.g * ret[lo:hi])
            ret[internal] = np.add.reduceat(step, offsets)
        return Held(weight, ret)
    return Held(weight)


def per_prefix_value_and_grad(
    space: RolloutSpace, log_cond: FloatArray, loss: PerPrefixLoss, held: Held
) -> tuple[float, FloatArray]:
    """``F = sum_h n(h) f_h`` and ``dF/dz`` at held quantities (entry 0 of the gradient is 0)."""
    parent = space.parent[1:]
    q = np.exp(log_cond[1:])
    value_terms, grad_terms = loss.terms(log_cond, held)
    n = held.weight[parent]
    group = np.bincount(parent, weights=grad_terms, minlength=space.n_prefixes)
    out = np.zeros(space.n_prefixes)
    out[1:] = n * (grad_terms - q * group[parent])
    return float(np.multiply(n, value_terms).sum()), out


# --------------------------------------------------------------------------
# top-k truncated losses (optional; exact mode)

TOP_K_MODES = ("tail", "renormalised")
"""``tail``: the student's top-k moves plus one bucket for the rest (SDPO);
``renormalised``: the student's top-k moves, both distributions renormalised on them
(TRL's ``topk_logits``, OPSD)."""


def _bucket_terms(a: float, q: FloatArray, t: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``GJSD_a`` value and derivative ``dGJSD/dq`` per bucket of masses ``q`` (student), ``t``.

    ``a = 1`` is ``q log(q / t)`` (derivative ``log(q / t)``, up to a constant that cancels),
    ``a = 0`` is ``t log(t / q)`` (derivative ``-t / q``).  Empty buckets (``q = 0``) give 0.
    """
    has = q > 0
    safe_q = np.where(has, q, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if a == 1.0:
            if np.any(has & (t <= 0)):
                raise ValueError(
                    "a teacher gives a top-k bucket zero mass: the reverse KL is infinite"
                )
            log_ratio = np.log(safe_q) - np.log(np.where(has, t, 1.0))
            return np.where(has, q * log_ratio, 0.0), np.where(has, log_ratio, 0.0)
        if a == 0.0:
            value = xlogy(t, t) - np.where(t > 0, t * np.log(safe_q), 0.0)
            return np.where(has, value, 0.0), np.where(has, -t / safe_q, 0.0)
        m = (1 - a) * q + a * t
        safe_m = np.where(m > 0, m, 1.0)
        log_qm = np.log(safe_q) - np.log(safe_m)
        value = a * (xlogy(t, t) - np.where(t > 0, t * np.log(safe_m), 0.0)) + (1 - a) * q * log_qm
        return np.where(has, value, 0.0), np.where(has, (1 - a) * log_qm, 0.0)


def top_k_mask(space: RolloutSpace, log_cond: FloatArray, k: int) -> FloatArray:
    """1.0 for the ``k`` most probable children of each prefix (ties: lower index), else 0."""
    parent = space.parent[1:]
    # rank within the sibling group: order by (parent, -log q, index)
    order = np.lexsort((np.arange(parent.size), -log_cond[1:], parent))
    rank = np.empty(parent.size, dtype=np.int64)
    start = space.child_start[parent[order]] - 1
    rank[order] = np.arange(parent.size) - start
    mask = np.zeros(space.n_prefixes)
    mask[1:] = rank < k
    return mask


@dataclass(frozen=True)
class TopKDivergence(PerPrefixLoss):
    """``E_k GJSD_a`` on the student's top-k moves at each prefix, with or without a tail bucket.

    The top-k set is held (``held.extra`` is its mask: no gradient through the
    selection).  ``tail``: buckets ``K`` and ``rest``, ``q_rest = 1 - q(K)``,
    ``T_rest = 1 - T(K)``; every move of ``rest`` gets the bucket's derivative.
    ``renormalised``: ``q / q(K)`` and ``T / T(K)`` on ``K``; moves outside ``K``
    get no gradient, and the loss is invariant to a shift of the logits of ``K``,
    so their mean never moves.
    """

    a: float
    k: int
    mode: str
    weight: FloatArray
    log_cond: FloatArray
    space: RolloutSpace
    needs: str | None = "top-k"

    @classmethod
    def from_classes(
        cls, a: float, k: int, mode: str, classes: TeacherClasses, space: RolloutSpace
    ) -> TopKDivergence:
        total = classes.weight.sum(axis=0)
        weight = classes.weight / np.where(total > 0, total, 1.0)
        return cls(a, k, mode, weight, classes.log_cond, space)

    def terms(self, log_cond: FloatArray, held: Held) -> tuple[FloatArray, FloatArray]:
        assert held.extra is not None
        space, n = self.space, self.space.n_prefixes
        parent = space.parent[1:]
        inside = held.extra[1:] > 0
        q = np.exp(log_cond[1:])

        def per_parent(values: FloatArray) -> FloatArray:
            return np.bincount(parent, weights=values, minlength=n).astype(np.float64)[parent]

        q_in = per_parent(np.where(inside, q, 0.0))
        q_out = per_parent(np.where(inside, 0.0, q))
        value = np.zeros(q.size)
        deriv = np.zeros(q.size)
        for w, lt in zip(self.weight[:, 1:], self.log_cond[:, 1:], strict=True):
            use = w > 0
            # a class that does not reach the parent weighs 0: any positive stand-in will do
            t = np.where(use, np.exp(np.where(use, lt, 0.0)), q)
            t_in = per_parent(np.where(inside, t, 0.0))
            if self.mode == "tail":
                t_out = per_parent(np.where(inside, 0.0, t))
                v_in, d_in = _bucket_terms(self.a, np.where(inside, q, 0.0), t)
                v_out, d_out = _bucket_terms(self.a, q_out, t_out)
                share = np.where(q_out > 0, q / np.where(q_out > 0, q_out, 1.0), 0.0)
                v = np.where(inside, v_in, v_out * share)
                d = np.where(inside, d_in, d_out)
            else:
                qr = np.where(inside, q / np.where(q_in > 0, q_in, 1.0), 0.0)
                tr = np.where(inside, t / np.where(t_in > 0, t_in, 1.0), 0.0)
                v, d = _bucket_terms(self.a, qr, tr)
            value += np.where(use, w * v, 0.0)
            deriv += np.where(use, w * d, 0.0)
        if self.mode == "tail":
            return value, q * deriv
        # renormalised: L depends on q only through qr = q / q(K): Q_u = qr_u (D_u - sum qr D)
        qr = np.where(inside, q / np.where(q_in > 0, q_in, 1.0), 0.0)
        centred = deriv - per_parent(qr * deriv)
        return value, np.where(inside, qr * centred, 0.0)
