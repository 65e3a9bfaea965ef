"""RL at its optimum, matched to a target mean training pass@1 by its KL coefficient ``beta``.

For shared parameters ``theta`` the RL objective over the training prompts is

    F_beta(theta) = (1/n) sum_x [ -q_x(C_x) + beta KL(q_x || pi0_x) ],

and :func:`rl_optimum_theta` minimises it to L-BFGS's stopping rule
(:func:`tilt.share._train.train_shared` with a frozen teacher).  Its
mean training accuracy ``A(beta) = (1/n) sum_x q_x(C_x)`` at the minimiser is
non-increasing in ``beta``: for ``beta1 < beta2`` with minimisers ``1, 2`` and
``K`` the mean KL, optimality gives ``(beta2 - beta1)(K2 - K1) <= 0`` and then
``A1 - A2 >= beta1 (K1 - K2) >= 0``.  :func:`match_rl_beta` brackets ``log beta``
and runs ``scipy.optimize.brentq`` on ``A(beta) - target``, each solve started
from the minimiser at the nearest ``beta`` solved so far (warm start), so
matched RL is compared *optimum against optimum*, not along training.

Limits: the monotonicity holds for global minimisers; the solves are local
(warm-started L-BFGS), which on the built-in feature maps behaves the same
(checked in ``tests/test_share_match.py``).  ``A(beta) -> `` the base's mean
accuracy as ``beta -> inf``; as ``beta -> 0`` it tends to the best the features
reach, which may be below 1: a target outside the range gives ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from tilt._numerics import FloatArray, IntArray
from tilt.policy import Policy
from tilt.share._exact import SharedStudent, ShareObjective
from tilt.share._run import mean_accuracy
from tilt.share._train import train_shared

__all__ = ["BetaMatch", "rl_optimum_theta", "match_rl_beta", "BETA_RANGE"]

BETA_RANGE = (1e-4, 1e4)
"""The ``beta`` searched by :func:`match_rl_beta`."""

_MAXITER = 5000


@dataclass(frozen=True)
class BetaMatch:
    """RL's optimum at the ``beta`` whose mean training accuracy is the target.

    Attributes
    ----------
    beta : float
    theta : ndarray, shape (n_params,)
        The converged RL student at ``beta``.
    train_accuracy : float
        Mean training ``q(C)`` at ``theta`` (the target, to brentq's tolerance).
    solves : int
        Converged L-BFGS solves used (bracketing and root finding).
    """

    beta: float
    theta: FloatArray
    train_accuracy: float
    solves: int


def rl_optimum_theta(
    student: SharedStudent,
    bases: Sequence[Policy],
    train: IntArray,
    beta: float,
    start: FloatArray | None = None,
    maxiter: int = _MAXITER,
) -> FloatArray:
    """The minimiser of ``F_beta`` over ``theta``: L-BFGS from ``start`` (default the initial).

    ``bases`` are ``pi0`` of every prompt of the student (the initial student).
    """
    objective = ShareObjective("rl", tuple(bases), beta=beta)
    return train_shared(student, objective, train, steps=maxiter, start=start).theta


def match_rl_beta(
    student: SharedStudent,
    bases: Sequence[Policy],
    train: IntArray,
    target: float,
    *,
    beta: float = 0.1,
    start: FloatArray | None = None,
    xtol: float = 1e-12,
) -> BetaMatch | None:
    """The ``beta`` whose converged RL student has mean training accuracy ``target``.

    Parameters
    ----------
    student : SharedStudent
    bases : sequence of Policy
        ``pi0`` of every prompt (the initial student).
    train : ndarray of int
        The training prompts.
    target : float
        In ``(0, 1)``.
    beta : float
        Where the bracket search starts (multiplied or divided by 4 until
        ``A(beta) - target`` changes sign, within :data:`BETA_RANGE`).
    start : ndarray, optional
        Warm start of the first solve.
    xtol : float
        brentq's tolerance on ``log beta``.

    Returns
    -------
    BetaMatch or None
        ``None`` when the target lies outside ``A`` over :data:`BETA_RANGE`
        (at or below the base's accuracy, or beyond what the features reach).
    """
    if not (math.isfinite(target) and 0 < target < 1):
        raise ValueError(f"the target accuracy must lie in (0, 1), got {target!r}")
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be finite and > 0, got {beta!r}")
    train = np.asarray(train, dtype=np.int64)
    solved: dict[float, FloatArray] = {}
    accuracy: dict[float, float] = {}

    def excess(log_beta: float) -> float:
        if log_beta not in solved:
            warm = start
            if solved:
                warm = solved[min(solved, key=lambda b: abs(b - log_beta))]
            theta = rl_optimum_theta(student, bases, train, math.exp(log_beta), warm)
            solved[log_beta] = theta
            accuracy[log_beta] = mean_accuracy(student, theta, train)
        return accuracy[log_beta] - target

    lo_end, hi_end = (math.log(b) for b in BETA_RANGE)
    a = min(max(math.log(beta), lo_end), hi_end)
    step = math.log(4.0)
    # A is non-increasing in beta: above the target, raise beta; below it, lower it
    direction = 1.0 if excess(a) > 0 else -1.0
    b = a
    while excess(b) * excess(a) > 0:
        a = b
        b = min(max(a + direction * step, lo_end), hi_end)
        if b == a:
            return None
    if excess(b) == 0:
        a = b
    root = a if excess(a) == 0 else brentq(excess, min(a, b), max(a, b), xtol=xtol, rtol=1e-15)
    excess(root)
    return BetaMatch(math.exp(root), solved[root], accuracy[root], len(solved))
