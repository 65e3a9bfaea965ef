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

from tilt.context import TeacherClasses
from tilt.space import FloatArray, RolloutSpace

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
