"""Sampled training of the shared-weight student: the practitioners' estimators, pulled back.

Each step samples ``batch`` rollouts of the current student on every training
prompt (one seeded ``numpy.random.Generator`` for the whole run), forms on each
prompt the stochastic gradient in the per-prefix logits ``z_x`` that the
tabular sampled trainer forms (:class:`tilt.train._objectives.SampledGradient`:
REINFORCE with a leave-one-out baseline for ``rl``, ``sequence`` and
``hybrid``; maximum likelihood on teacher samples for ``forward``; the
sampled-token reverse KL as an advantage, return-to-go discounted by ``g``,
for ``token``, ``discount=g`` and, with ``1 / |y|`` weights,
``length-weighted``; verl's ``k3`` backpropagated for ``token-forward``; the
full-vocabulary ``GJSD_a`` for ``jsd=a``), and pulls it back to ``theta``
through the sparse feature matrices:

    g_theta = (1 / n) sum over training prompts x of Phi_x^T g_x,

the estimate of the gradient of the mean over the training prompts of each
prompt's loss, the objective of :mod:`tilt.share._exact`.  The optimiser is the
tabular sampled mode's: ``theta <- theta - lr / sqrt(1 + t / 50) g_theta``
(default ``lr = 2``), and the parameters returned are averaged over the last
half of the steps.

Teachers: ``frozen`` (teacher and demonstrations from the initial student,
rows cached), ``live`` (both from the current student), ``ema``
(demonstrations from the current student, teacher from ``theta_ema``).

With ``prefix`` features and one training prompt this *is* the tabular
sampled trainer (:func:`tilt.train.train` with ``mode='sampled'``), draw for
draw; with several prompts the draws interleave and the step on each prompt's
logits is ``1 / n`` of the tabular one.  ``docs/sharing.md`` ("Sampled mode")
reports how fast it approaches the closed forms and the exact shared optimum.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tilt._numerics import FloatArray, IntArray
from tilt.context import ContextModel
from tilt.policy import Policy, as_generator
from tilt.share._exact import EMA_RATE, TEACHERS, SharedStudent, ShareObjective
from tilt.share._run import ShareRun, mean_accuracy
from tilt.train import (
    DEFAULT_LR,
    ExactObjective,
    SampledGradient,
    TrainObjective,
    check_train_options,
    closed_form,
    demo_source,
    parse_train_objective,
    total_variation,
)

__all__ = ["SampledObjective", "train_sampled", "mean_total_variation"]


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _training_prompts(student: SharedStudent, bases: Sequence[Policy], train: IntArray) -> IntArray:
    train = np.asarray(train, dtype=np.int64)
    if train.ndim != 1 or train.size == 0:
        raise ValueError("no training prompt: the split must leave at least one")
    if len(bases) != len(student.spaces):
        raise ValueError(f"expected {len(student.spaces)} base policies, got {len(bases)}")
    if train.min() < 0 or train.max() >= len(student.spaces):
        raise ValueError(f"training prompt indices must lie in 0..{len(student.spaces) - 1}")
    for i in train:
        if bases[int(i)].space is not student.spaces[int(i)]:
            raise ValueError(f"the base policy of prompt {int(i)} is over another rollout space")
    return train


@dataclass(frozen=True)
class SampledObjective:
    """An objective of sampled shared training: ``rl`` or any SD spec, over a suite's prompts.

    Attributes
    ----------
    spec : str
        ``'rl'`` or an SD spec of :data:`tilt.objectives.OBJECTIVES` (``'jsd=0.5'``;
        the old names of :data:`tilt.train.ALIASES` too).
    bases : tuple of Policy
        ``pi0`` of *every* prompt of the student (the initial student): the
        frozen teacher, the anchor and RL's KL reference.
    model : ContextModel or None
        Required by the SD objectives.
    demos : {'own', 'uniform', 'tempered', 'reference'}
        Demonstrations (:func:`tilt.train._objectives.demo_source`; ``reference``
        is each prompt's likeliest correct rollout); ``alpha`` tempers.
    anchor, beta : float
        ``b >= 0`` (``sequence``, ``token``, ``hybrid``); ``beta > 0`` for ``rl``.

    Raises
    ------
    ValueError
        On an unknown spec, ``beta <= 0`` for ``rl``, an SD spec without a model
        or an anchor where it does not apply (the checks of :func:`tilt.train.train`).
    """

    spec: str
    bases: tuple[Policy, ...]
    model: ContextModel | None = None
    demos: str = "own"
    anchor: float = 0.0
    beta: float = 0.1
    alpha: float = 1.0

    def __post_init__(self) -> None:
        check_train_options(
            self.parsed, "exact", "frozen", self.model, self.beta, self.anchor, None
        )

    @property
    def parsed(self) -> TrainObjective:
        """The parsed spec."""
        return parse_train_objective(self.spec)

    @classmethod
    def of(cls, objective: ShareObjective) -> SampledObjective:
        """The same objective as an exact one of :mod:`tilt.share._exact`."""
        return cls(
            objective.name,
            objective.bases,
            objective.model,
            objective.demos,
            objective.anchor,
            objective.beta,
        )

    def sampler(self, index: int, batch: int, rng: np.random.Generator) -> SampledGradient:
        """The tabular sampled estimator on prompt ``index``."""
        base = self.bases[index]
        parsed = self.parsed
        model = None if parsed.sd is None else self.model
        demos_of = demo_source(base, self.demos, self.alpha, None)
        exact = ExactObjective(parsed, base, model, demos_of, self.anchor, self.beta)
        return SampledGradient(exact, batch, rng)

    def tabular_optima(self, prompts: IntArray) -> list[Policy]:
        """The tabular closed form from each of ``prompts``' bases (frozen teacher).

        What a ``prefix``-feature student converges to on its training prompts
        (:func:`tilt.train._objectives.closed_form`); with shared features it is
        only a reference point.
        """
        parsed = self.parsed
        model = None if parsed.sd is None else self.model
        out = []
        for i in np.asarray(prompts, dtype=np.int64):
            base = self.bases[int(i)]
            demos_of = demo_source(base, self.demos, self.alpha, None)
            out.append(
                closed_form(base, parsed, model, demos_of, self.alpha, self.anchor, self.beta)
            )
        return out


def train_sampled(
    student: SharedStudent,
    objective: SampledObjective,
    train: IntArray,
    *,
    teacher: str = "frozen",
    steps: int = 500,
    lr: float | None = None,
    batch: int = 64,
    seed: int | np.random.Generator | None = None,
    ema_rate: float = EMA_RATE,
    record_every: int = 1,
    progress: Callable[[int, int], object] | None = None,
) -> ShareRun:
    """Train ``theta`` by stochastic gradients on ``batch`` rollouts per training prompt and step.

    The objective is the mean over the training prompts of the tabular
    trainer's loss (``rl``: ``-E_q[r] + beta KL(q || pi0)``; any SD spec of
    :data:`tilt.objectives.OBJECTIVES`, with the anchor ``b`` where it applies);
    each step's gradient is ``(1 / n) sum_x Phi_x^T g_x`` with ``g_x`` the
    tabular sampled estimator's on prompt ``x`` (module docstring).

    Parameters
    ----------
    student : SharedStudent
    objective : SampledObjective
    train : ndarray of int
        Indices of the training prompts (non-empty).
    teacher : {'frozen', 'live', 'ema'}
        Ignored by ``rl``.
    steps, batch, record_every : int
        Positive.  ``thetas`` is recorded every ``record_every`` steps and at the last.
    lr : float, optional
        Step size ``> 0``, decayed as ``lr / sqrt(1 + t / 50)`` (default 2).
    seed : int, Generator or None
        Fixes every draw: the same seed gives the same ``thetas``, bit for bit.
    ema_rate : float
        In ``(0, 1]``.
    progress : callable, optional
        ``progress(step, steps)`` after every step.

    Returns
    -------
    ShareRun
        ``optimizer='sgd'``; a recorded ``theta`` after step ``steps // 2`` is the
        running average over the steps since then (as the tabular sampled mode
        reports), so ``run.theta`` is the averaged one; ``value`` is ``nan``
        (a sampled run does not evaluate its objective).

    Raises
    ------
    ValueError
        On an unknown teacher, non-positive ``steps``, ``batch``,
        ``record_every`` or ``lr``, or an empty training set.

    Notes
    -----
    Each step samples ``batch`` paths per training prompt one depth at a time
    and evaluates the teachers of the drawn demonstrations (cached for a frozen
    teacher); a live or EMA teacher rebuilds each training prompt's policy and
    demonstrations every step.  Cost grows with the number of training prompts
    times their rollout counts: meant for the small suites of
    :mod:`tilt.share._suites`.  Memory: the run keeps ``steps / record_every``
    copies of ``theta`` (with ``prefix`` features on ``grid-holed``, 114,978
    parameters: raise ``record_every`` for long runs).
    """
    steps = _positive_int("steps", steps)
    batch = _positive_int("batch", batch)
    record_every = _positive_int("record_every", record_every)
    if teacher not in TEACHERS:
        raise ValueError(f"unknown teacher {teacher!r}: choose one of {', '.join(TEACHERS)}")
    if not (0 < ema_rate <= 1):
        raise ValueError(f"ema_rate must lie in (0, 1], got {ema_rate!r}")
    if lr is not None and not (
        isinstance(lr, (int, float, np.floating)) and math.isfinite(lr) and lr > 0
    ):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    train = _training_prompts(student, objective.bases, train)
    rng = as_generator(seed)
    samplers = [objective.sampler(int(i), batch, rng) for i in train]
    pi0 = [objective.bases[int(i)] for i in train]
    if objective.parsed.sd is None:
        teacher = "frozen"
    lr0 = DEFAULT_LR["sampled"] if lr is None else float(lr)
    theta = np.array(student.features.initial, dtype=np.float64, copy=True)
    ema, average, half = theta.copy(), np.zeros_like(theta), steps // 2
    thetas, accuracy = [theta.copy()], [mean_accuracy(student, theta, train)]
    spaces = student.spaces
    for t in range(1, steps + 1):
        log_conds = student.log_conditionals(theta, train)
        if teacher == "frozen":
            teachers, sources = pi0, pi0
        else:
            current = [
                Policy.from_log_conditionals(spaces[int(i)], lc, softmax=True)
                for i, lc in zip(train, log_conds, strict=True)
            ]
            teachers = current if teacher == "live" else student.policies(ema, train)
            sources = current
        grads = {
            int(i): sampler.gradient(lc, tp, teacher == "frozen", demo_policy=dp)
            for i, sampler, lc, tp, dp in zip(
                train, samplers, log_conds, teachers, sources, strict=True
            )
        }
        theta = theta - (lr0 / math.sqrt(1.0 + t / 50.0)) * student.pullback(grads) / train.size
        if teacher == "ema":
            ema = (1.0 - ema_rate) * ema + ema_rate * theta
        if t > half:
            average += (theta - average) / (t - half)
        if t % record_every == 0 or t == steps:
            shown = average if t > half else theta
            thetas.append(shown.copy())
            accuracy.append(mean_accuracy(student, shown, train))
        if progress is not None:
            progress(t, steps)
    return ShareRun(
        objective.parsed.spec,
        teacher,
        "sgd",
        np.asarray(thetas),
        np.asarray(accuracy),
        math.nan,
        lr0,
    )


def mean_total_variation(
    student: SharedStudent, theta: FloatArray, prompts: IntArray, references: Sequence[Policy]
) -> float:
    """Mean over ``prompts`` of ``TV(q_x, reference_x)`` at ``theta``."""
    policies = student.policies(theta, prompts)
    return float(
        np.mean([total_variation(q, r) for q, r in zip(policies, references, strict=True)])
    )
