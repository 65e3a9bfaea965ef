"""Training the shared-weight student exactly, and checkpoints at matched training pass@1.

:func:`train_shared` runs one objective of :mod:`tilt.share._exact` over the
training prompts, from the initial parameters, recording ``theta`` and the mean
training accuracy after every step.  :func:`matched_theta` finds, between two
recorded steps, the point of the segment where the mean training pass@1 equals
a target (``scipy.optimize.brentq`` on the straight line between the two
parameter vectors, to 1e-12): runs of different objectives are compared at the
same *training* accuracy, and measured on the held-out prompts there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy.optimize import brentq

from tilt._checks import check_number
from tilt._lbfgs import lbfgs
from tilt._numerics import FloatArray, IntArray
from tilt.policy import Policy
from tilt.share._exact import (
    EMA_RATE,
    TEACHERS,
    SharedStudent,
    ShareObjective,
    held_quantities,
    shared_value_and_grad,
)
from tilt.share._run import ShareRun, mean_accuracy
from tilt.share._sampled import SampledObjective, train_sampled
from tilt.train import Bound, Held

__all__ = [
    "ShareRun",
    "RunMatch",
    "train_shared",
    "mean_accuracy",
    "match_run",
    "matched_theta",
    "DEFAULT_LR",
    "MATCH_TOL",
]

DEFAULT_LR = 1.0
"""Gradient step on ``theta`` for live and EMA teachers when no ``lr`` is given (a frozen
teacher without ``lr`` uses L-BFGS)."""
_GTOL = 1e-13
_LBFGS_ROUND = 100
MAX_STEP = 2.0
"""Most change of one parameter per L-BFGS step (as the tabular trainer: no saturating jumps)."""


def _bind_all(
    objective: ShareObjective,
    train: IntArray,
    teachers: list[Policy],
    sources: list[Policy],
) -> list[Bound]:
    return [objective.bind(int(i), t, s) for i, t, s in zip(train, teachers, sources, strict=True)]


def train_shared(
    student: SharedStudent,
    objective: ShareObjective,
    train: IntArray,
    *,
    teacher: str = "frozen",
    steps: int = 300,
    lr: float | None = None,
    ema_rate: float = EMA_RATE,
    progress: Callable[[int, int], object] | None = None,
    mode: str = "exact",
    batch: int = 64,
    seed: int | np.random.Generator | None = None,
    start: FloatArray | None = None,
) -> ShareRun:
    """Train ``theta`` on ``objective`` summed over the prompts ``train``.

    Parameters
    ----------
    student : SharedStudent
    objective : ShareObjective
    train : ndarray of int
        Indices of the training prompts (non-empty).
    teacher : {'frozen', 'live', 'ema'}
        Ignored by ``rl``.
    steps : int
        L-BFGS iterations (frozen teacher, ``lr=None``) or gradient steps.
    lr : float, optional
        Gradient step; ``None``: L-BFGS for a frozen teacher, ``DEFAULT_LR`` otherwise.
    ema_rate : float
        In ``(0, 1]``; the EMA teacher's rate.
    progress : callable, optional
        ``progress(step, steps)`` after every step.
    mode : {'exact', 'sampled'}
        ``sampled``: :func:`tilt.share._sampled.train_sampled` with ``batch``
        rollouts per training prompt and step, drawn from ``seed`` (``lr=None``:
        its default 2, decayed).
    batch : int
    seed : int, Generator or None
        Used by ``sampled`` only.
    start : ndarray, optional
        ``theta`` to start from (default the features' initial parameters);
        the base ``pi0`` of the objective stays the initial student.

    Returns
    -------
    ShareRun

    Notes
    -----
    Exact mode is deterministic (no sampling).  Each step costs a few passes over the prefix
    trees of the training prompts plus, for live and EMA teachers, the context
    model's cost per prompt.  L-BFGS uses the diagonal scaling of
    :meth:`SharedStudent.scaling` and moves a parameter by at most ``MAX_STEP``
    per step; it runs in rounds of 100 iterations (fresh memory; per-token
    losses: held quantities refreshed) as the tabular trainer does.
    """
    if mode == "sampled":
        if start is not None:
            raise ValueError("start is for exact mode: sampled runs start at the initial student")

        return train_sampled(
            student,
            SampledObjective.of(objective),
            train,
            teacher=teacher,
            steps=steps,
            lr=lr,
            batch=batch,
            seed=seed,
            ema_rate=ema_rate,
            progress=progress,
        )
    if mode != "exact":
        raise ValueError(f"unknown mode {mode!r}: choose exact or sampled")
    train = np.asarray(train, dtype=np.int64)
    if train.size == 0:
        raise ValueError("no training prompt: the split must leave at least one")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if teacher not in TEACHERS:
        raise ValueError(f"unknown teacher {teacher!r}: choose one of {', '.join(TEACHERS)}")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not (0 < ema_rate <= 1):
        raise ValueError(f"ema_rate must lie in (0, 1], got {ema_rate!r}")
    initial = student.features.initial if start is None else start
    theta = np.array(initial, dtype=np.float64, copy=True)
    if theta.shape != student.features.initial.shape or not np.isfinite(theta).all():
        raise ValueError(f"start must be {student.n_params} finite parameters")
    bases = [objective.bases[int(i)] for i in train]
    thetas = [theta.copy()]
    accuracy = [mean_accuracy(student, theta, train)]
    if objective.name == "rl":
        teacher = "frozen"
    if teacher == "frozen" and lr is None:
        fns = _bind_all(objective, train, bases, bases)
        theta, value = _lbfgs(
            student, train, fns, objective.per_token, theta, steps, thetas, accuracy, progress
        )
        return ShareRun(
            objective.name, teacher, "lbfgs", np.asarray(thetas), np.asarray(accuracy), value, None
        )
    step = DEFAULT_LR if lr is None else float(lr)
    ema = theta.copy()
    frozen_fns = _bind_all(objective, train, bases, bases) if teacher == "frozen" else None
    value = math.nan
    for t in range(1, steps + 1):
        if frozen_fns is not None:
            fns = frozen_fns
        else:
            current = student.policies(theta, train)
            source = current if teacher == "live" else student.policies(ema, train)
            fns = _bind_all(objective, train, source, current)
        held = held_quantities(student, fns, theta, train)
        value, grad = shared_value_and_grad(student, train, fns, held, theta)
        theta = theta - step * grad
        if teacher == "ema":
            ema = (1.0 - ema_rate) * ema + ema_rate * theta
        thetas.append(theta.copy())
        accuracy.append(mean_accuracy(student, theta, train))
        if progress is not None:
            progress(t, steps)
    return ShareRun(
        objective.name, teacher, "gd", np.asarray(thetas), np.asarray(accuracy), value, step
    )


def _lbfgs(
    student: SharedStudent,
    train: IntArray,
    fns: list[Bound],
    per_token: bool,
    theta: FloatArray,
    steps: int,
    thetas: list[FloatArray],
    accuracy: list[float],
    progress: Callable[[int, int], object] | None,
) -> tuple[FloatArray, float]:
    taken = 0
    value = math.nan
    while taken < steps:
        held = held_quantities(student, fns, theta, train)

        def fun(x: FloatArray, held: list[Held | None] = held) -> tuple[float, FloatArray]:
            return shared_value_and_grad(student, train, fns, held, x)

        def callback(x: FloatArray) -> None:
            nonlocal taken
            taken += 1
            thetas.append(x.copy())
            accuracy.append(mean_accuracy(student, x, train))
            if progress is not None:
                progress(taken, steps)

        before = taken
        start = fun(theta)[0]
        result = lbfgs(
            fun,
            theta,
            maxiter=min(steps - taken, _LBFGS_ROUND),
            gtol=_GTOL,
            max_step=MAX_STEP,
            callback=callback,
            scaling=partial(
                student.scaling,
                prompts=train,
                prefix_weights=[h.weight for h in held if h is not None] if per_token else None,
            ),
        )
        theta, value = result.x, result.value
        # go again (fresh memory; per-token: refreshed held quantities) until a round that
        # ended on its own stopping rule could not lower the objective beyond rounding
        if taken == before or (result.reason == "gradient" and not per_token):
            break
        if result.reason != "maxiter" and start - result.value <= 1e-13 * max(
            1.0, abs(result.value)
        ):
            break
    return theta, value


MATCH_TOL = 1e-12
"""A matched checkpoint's mean training accuracy is within this of its target, or it is
reported as not matched (:class:`RunMatch`)."""


@dataclass(frozen=True)
class RunMatch:
    """Where a run reaches a target mean training accuracy, or why it does not.

    Attributes
    ----------
    target : float
    theta : ndarray or None
        The matched parameters; ``None`` when not matched within :data:`MATCH_TOL`.
    accuracy : float
        Mean training accuracy at ``theta`` (``nan`` when there is no candidate).
    message : str
        Why it is not matched, or ``''``.
    """

    target: float
    theta: FloatArray | None
    accuracy: float
    message: str = ""


def match_run(student: SharedStudent, run: ShareRun, train: IntArray, target: float) -> RunMatch:
    """The point of the run's path where the mean training accuracy first reaches ``target``.

    Between the first recorded step at or above ``target`` and the one before, the point
    of the straight segment with mean training accuracy ``target``, found by brentq on the
    segment's parameter down to its float64 resolution, then checked: within
    :data:`MATCH_TOL` it is matched; otherwise (a step so large that the accuracy jumps
    across the target between neighbouring floats, as with ``lr = 1e20``) the result says
    by how much it missed.  Not matched either when the run never reaches ``target``, or
    starts above it.
    """
    target = check_number("target", target, 0.0, 1.0)
    acc = run.train_accuracy
    if acc[0] >= target:
        if abs(acc[0] - target) <= MATCH_TOL:
            return RunMatch(target, run.thetas[0], float(acc[0]))
        return RunMatch(
            target, None, float(acc[0]), f"the run starts above the target, at {acc[0]:.6g}"
        )
    above = np.flatnonzero(acc >= target)
    if above.size == 0:
        return RunMatch(
            target, None, float(acc.max()), f"the run never reaches it (best {acc.max():.6g})"
        )
    s = int(above[0])
    lo, hi = run.thetas[s - 1], run.thetas[s]

    def excess(t: float) -> float:
        return mean_accuracy(student, lo + t * (hi - lo), train) - target

    # xtol far below 1e-14: with a step of |hi - lo| = 1e10, t to 1e-14 left theta 1e-4 off
    t = brentq(excess, 0.0, 1.0, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=2000)
    theta = lo + t * (hi - lo)
    reached = mean_accuracy(student, theta, train)
    off = abs(reached - target)
    if off > MATCH_TOL:
        return RunMatch(
            target,
            None,
            reached,
            f"step {s} jumps across it: the closest point of its segment has accuracy "
            f"{reached:.17g}, {off:.3g} from the target (tolerance {MATCH_TOL:g}); "
            "a smaller lr resolves it",
        )
    return RunMatch(target, theta, reached)


def matched_theta(
    student: SharedStudent, run: ShareRun, train: IntArray, target: float
) -> FloatArray | None:
    """``theta`` of :func:`match_run`: ``None`` when not matched within :data:`MATCH_TOL`."""
    return match_run(student, run, train, target).theta
