"""The tabular-softmax trainer: RL and self-distillation by gradients, against the closed forms.

``docs/theory.md``, "The tabular-softmax trainer": one logit per edge of the
prefix tree, initialised at ``log pi0(u | h)``; the policy is the product of
softmaxes along the path.  :func:`train` optimises ``rl`` (maximise
``E_q[r] - beta KL(q || pi0)``, ``beta > 0``) or any self-distillation spec of
:data:`tilt.objectives.OBJECTIVES` (``sequence``, ``token``, ``forward``,
``token-forward``, ``jsd=a``, ``discount=g``, ``length-weighted``,
``hybrid=beta``; ``sd``, ``sd_token`` and ``sd_forward`` are the old names of
the first three), either exactly (expectations over the enumerated space) or
from samples with the estimator the real trainer uses, and reports its
distance to the closed form.

* Sequence objectives (``rl``, ``sequence``, ``hybrid``, ``forward``): the
  whole-rollout loss and its gradient (:mod:`tilt.train._estimators`).
* Per-prefix objectives (``token``, ``token-forward``, ``jsd``, ``discount``,
  ``length-weighted``): the per-token loss itself, with the prefix weights
  (and the detached return-to-go or per-sequence weights) held at the current
  student, never a distance to the closed form (:mod:`tilt.train._losses`).

Parsing, the bound objectives and the sampled estimators of each spec are in
:mod:`tilt.train._objectives`; this module keeps the loop, L-BFGS rounds and results.

``python -m tilt.train --graph grid3 --objective jsd=0.5`` runs it from the shell;
``python -m tilt.train --suite NAME --share FEATURES`` trains one shared-weight
student over a suite instead (:mod:`tilt.cli._train_share`, ``docs/sharing.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tilt._checks import check_instance, check_real
from tilt._lbfgs import lbfgs
from tilt._numerics import FloatArray
from tilt.context import ContextModel
from tilt.measures import correct_entropy
from tilt.policy import Policy, as_generator
from tilt.train._estimators import TabularSoftmax
from tilt.train._losses import TOP_K_MODES, Held
from tilt.train._objectives import (
    ALIASES,
    OBJECTIVES,
    TOP_K_OBJECTIVES,
    Bound,
    Demos,
    ExactObjective,
    SampledGradient,
    TrainObjective,
    closed_form,
    demo_source,
    parse_train_objective,
    train_objective_forms,
)

__all__ = [
    "OBJECTIVES",
    "ALIASES",
    "MODES",
    "TEACHERS",
    "TOP_K_MODES",
    "DEFAULT_LR",
    "TabularSoftmax",
    "TrainObjective",
    "TrainHistory",
    "TrainResult",
    "parse_train_objective",
    "train_objective_forms",
    "train",
    "check_train_options",
    "total_variation",
    "kl_divergence",
]

MODES = ("exact", "sampled")
"""``exact``: expectations over the enumerated space; ``sampled``: Monte-Carlo."""

TEACHERS = ("frozen", "live")
"""``frozen``: the base conditioned on ``c``; ``live``: the current student conditioned on ``c``."""

DEFAULT_LR = {"exact": 1.0, "sampled": 2.0}
"""Step size when ``lr`` is ``None`` and plain (stochastic) gradient steps are taken."""

_LBFGS_ROUND = 100  # per-prefix objectives: L-BFGS iterations per refresh of the held quantities
_PRECONDITION = True
_MAX_STEP = 2.0  # most change of one logit per L-BFGS step, in nats (no saturating jumps)
_GTOL = 1e-13  # L-BFGS stops when max |dF/dz| falls below this (float64 gradients carry ~1e-16 |F|)


# --------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class TrainHistory:
    """Distance to the closed form along training, every ``record_every`` steps and at the end.

    Attributes
    ----------
    step : ndarray of int64
        Step of each record (0 is the initial policy).
    tv_to_closed_form, kl_to_closed_form : ndarray of float64
        ``TV(q, q*)`` and ``KL(q || q*)``.
    accuracy, correct_entropy : ndarray of float64
        ``q(C)`` and ``H(q(. | C))`` of the recorded policy.
    """

    step: np.ndarray
    tv_to_closed_form: np.ndarray
    kl_to_closed_form: np.ndarray
    accuracy: np.ndarray
    correct_entropy: np.ndarray


@dataclass(frozen=True)
class TrainResult:
    """A trained policy and its distance to the closed-form optimum.

    Attributes
    ----------
    policy : Policy
        The trained policy (in sampled mode: of the averaged logits).
    closed_form : Policy
        The closed form of the objective from the base; for ``teacher='live'``
        it is the *frozen one-step* optimum (live SD is expected to move past it).
    history : TrainHistory
    tv_to_closed_form, kl_to_closed_form : float
        Final ``TV(q, q*)`` and ``KL(q || q*)``.
    steps : int
        Steps taken (L-BFGS iterations, or gradient steps).
    objective, mode, teacher : str
    optimizer : str
        ``'lbfgs'``, ``'gd'`` (exact gradient steps) or ``'sgd'`` (sampled).
    lr : float or None
        Step size used (``None`` for L-BFGS).
    """

    policy: Policy
    closed_form: Policy
    history: TrainHistory
    tv_to_closed_form: float
    kl_to_closed_form: float
    steps: int
    objective: str
    mode: str
    teacher: str
    optimizer: str = "lbfgs"
    lr: float | None = None


def total_variation(p: Policy, q: Policy) -> float:
    """``(1/2) sum_y |p(y) - q(y)|``."""
    return 0.5 * float(np.abs(p.prob - q.prob).sum())


def kl_divergence(p: Policy, q: Policy) -> float:
    """``KL(p || q) = sum_y p(y) (log p(y) - log q(y))``; ``inf`` if ``q`` misses mass of ``p``."""
    has = np.isfinite(p.log_prob)
    if np.isneginf(q.log_prob[has]).any():
        return math.inf
    return max(0.0, float((p.prob[has] * (p.log_prob[has] - q.log_prob[has])).sum()))


# --------------------------------------------------------------------------
# validation


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_train_options(
    objective: TrainObjective,
    mode: str,
    teacher: str,
    model: ContextModel | None,
    beta: float,
    anchor: float,
    lr: float | None,
    top_k: int | None = None,
    top_k_mode: str = "tail",
) -> None:
    """``ValueError`` on options that do not fit ``objective`` (the checks of :func:`train`)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    if teacher not in TEACHERS:
        raise ValueError(f"unknown teacher {teacher!r}: choose one of {', '.join(TEACHERS)}")
    if lr is not None and not (
        isinstance(lr, (int, float, np.floating))
        and not isinstance(lr, bool)
        and math.isfinite(lr)
        and lr > 0
    ):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not (math.isfinite(anchor) and anchor >= 0):
        raise ValueError(f"anchor must be finite and >= 0, got {anchor!r}")
    if objective.sd is None:
        if not (math.isfinite(beta) and beta > 0):
            raise ValueError(
                f"RL training needs beta > 0, got {beta!r}: the limit beta -> 0 puts zero mass on "
                "every incorrect rollout, which no finite logits reach"
            )
        if teacher != "frozen":
            raise ValueError("teacher='live' applies to the SD objectives only: RL has no teacher")
        if anchor:
            raise ValueError("anchor applies to sequence, token and hybrid; RL is anchored by beta")
        return
    if model is None:
        raise ValueError(f"objective {objective.spec!r} needs a context model (model=...)")
    if anchor and not objective.sd.kind.takes_anchor:
        raise ValueError(f"anchor applies to sequence, token and hybrid, not to {objective.spec!r}")
    if top_k is not None:
        if objective.name not in TOP_K_OBJECTIVES:
            raise ValueError(
                f"top_k truncates the per-token losses token, token-forward and jsd=a, "
                f"not {objective.spec!r}"
            )
        if mode != "exact":
            raise ValueError("top_k is available in exact mode only")
        if anchor:
            raise ValueError("top_k takes no anchor")
        if top_k_mode not in TOP_K_MODES:
            raise ValueError(
                f"unknown top_k_mode {top_k_mode!r}: choose one of {', '.join(TOP_K_MODES)}"
            )


# --------------------------------------------------------------------------
# the entry point


class _Recorder:
    def __init__(
        self,
        closed_form: Policy,
        record_every: int,
        steps: int,
        progress: Callable[[int, int], object] | None,
    ) -> None:
        self.closed_form, self.every, self.steps, self.progress = (
            closed_form,
            record_every,
            steps,
            progress,
        )
        self.rows: list[tuple[int, float, float, float, float]] = []

    def record(self, step: int, policy: Policy, force: bool = False) -> None:
        if force or step % self.every == 0:
            if self.rows and self.rows[-1][0] == step:
                return
            self.rows.append(
                (
                    step,
                    total_variation(policy, self.closed_form),
                    kl_divergence(policy, self.closed_form),
                    policy.accuracy,
                    correct_entropy(policy),
                )
            )

    def tick(self, step: int) -> None:
        if self.progress is not None:
            self.progress(step, self.steps)

    def history(self) -> TrainHistory:
        cols = list(zip(*self.rows, strict=True))
        return TrainHistory(
            np.asarray(cols[0], dtype=np.int64),
            *(np.asarray(c, dtype=np.float64) for c in cols[1:]),
        )


def train(
    base: Policy,
    objective: str | TrainObjective,
    *,
    model: ContextModel | None = None,
    demos: Demos = "own",
    alpha: float = 1.0,
    reference: str | None = None,
    anchor: float = 0.0,
    beta: float = 1.0,
    mode: str = "exact",
    teacher: str = "frozen",
    steps: int = 500,
    lr: float | None = None,
    batch: int = 64,
    seed: int | np.random.Generator | None = None,
    record_every: int = 1,
    progress: Callable[[int, int], object] | None = None,
    start: Policy | None = None,
    top_k: int | None = None,
    top_k_mode: str = "tail",
) -> TrainResult:
    """Train a tabular softmax from ``base`` on ``objective`` and compare it with the closed form.

    Objectives (student ``q``, teachers ``T_c``, demonstrations ``c ~ D``)::

        rl               max  E_q[r] - beta KL(q || pi0)          -> q ∝ pi0 exp(r / beta)
        sequence (sd)    min  E_c KL(q || T_c) + b KL(q || pi0)   -> q ∝ pi0 exp(S / (1 + b))
        hybrid=beta      the same minus (1 + b) E_q[r] / beta     -> tilt.objectives.sd_hybrid
        forward (sd_forward)  min KL(E_c T_c || q)                -> q = E_c T_c
        token (sd_token), token-forward, jsd=a, discount=g, length-weighted:
                         per-token losses at held prefix weights  -> tilt.objectives.per_prefix

    Parameters
    ----------
    base : Policy
        ``pi0``; it must give every rollout mass (the logits start at its log conditionals).
    objective : str or TrainObjective
        ``'rl'``, a spec of :data:`tilt.objectives.OBJECTIVES` (``'jsd=0.5'``), or an
        old name (:data:`ALIASES`).
    model : ContextModel, optional
        The context model; required by the SD objectives, ignored by ``rl``.
    demos : str or Policy
        ``'own'``, ``'uniform'``, ``'tempered'`` (built from the teacher policy,
        :func:`tilt.context.demonstrations`), ``'reference'`` (a point mass at
        ``reference``, or at the base's likeliest correct rollout), or a fixed
        demonstration distribution over the base's rollouts.
    alpha : float
        Tempering exponent of ``demos='tempered'``.
    reference : str, optional
        The reference path (as in the ``--rollouts`` CSV) of ``demos='reference'``.
    anchor : float
        ``b >= 0`` for ``sequence``, ``token`` and ``hybrid`` (an error elsewhere).
    beta : float
        KL coefficient of ``rl``, ``> 0``; ignored by the SD objectives.
    mode : {'exact', 'sampled'}
        ``exact``: expectations over the enumerated space; with ``lr=None`` and a
        frozen teacher, L-BFGS (:mod:`tilt._lbfgs`) for ``steps`` iterations at
        most, in rounds of 100 that restart its memory and, for the per-prefix
        objectives, refresh the held prefix weights (and return-to-go or
        per-sequence weights); otherwise ``steps`` gradient steps of size ``lr``
        (default 1).  ``sampled``: ``steps`` stochastic gradient steps with the
        estimator real trainers use (:class:`SampledGradient`) on ``batch`` student rollouts
        (teacher samples for ``forward``), step size ``lr / sqrt(1 + t / 50)``
        (default ``lr = 2``), and the returned policy is that of the logits
        averaged over the last half of the steps.
    teacher : {'frozen', 'live'}
        ``frozen``: teacher and demonstrations from ``base`` (what the closed
        forms assume); ``live``: from the current student at every step (no
        gradient through them), so SD drifts past the one-step optimum toward
        the iterated one.  The closed form reported is always the frozen one-step optimum.
    steps, batch, record_every : int
        Positive.  The history records every ``record_every`` steps and the last.
    lr : float, optional
        Step size, ``> 0``.
    seed : int, Generator or None
        Fixes every draw of sampled mode (exact mode draws nothing).
    progress : callable, optional
        Called as ``progress(step, steps)`` after every step.
    start : Policy, optional
        Where the logits start (default ``base``); the teachers still come from ``base``.
    top_k, top_k_mode : int, {'tail', 'renormalised'}
        Truncate ``token``, ``token-forward`` or ``jsd=a`` to the student's top
        ``top_k`` moves per prefix (exact mode; :class:`tilt.train._losses.TopKDivergence`).
        The closed form reported is the untruncated one.

    Returns
    -------
    TrainResult

    Raises
    ------
    ValueError
        On an unknown objective (the message lists the forms), mode or teacher,
        non-positive ``steps``, ``batch``, ``record_every``, ``lr`` or
        ``top_k``, ``beta <= 0`` for ``rl`` (the limit has no finite logits), an
        SD objective without a model, an anchor where it does not apply, a
        reference that is not a correct rollout, or an optimum with zero mass
        somewhere (no finite logits reach it).

    Notes
    -----
    Each exact step costs a few passes over the prefix tree (plus the context
    model's cost when the teacher is live); each sampled step samples ``batch``
    paths one depth at a time and evaluates at most ``batch`` teachers (one
    rollout-length row each), so sampled mode is meant for small spaces.

    Measured (``python -m analysis.trainer_convergence --exact``; docs/guide.md):
    exact mode ends below TV 3.3e-12 on every spec, on grid3 and diamonds, with
    edge(2) and copy(0.5), own and reference demonstrations.  Sampled mode on
    grid3 (edge(2), seeds 0-4, ``python -m analysis.trainer_convergence``): mean
    TV 0.003-0.007 after 2000 steps of 64 rollouts for every SD spec, falling like
    ``1 / sqrt(samples)`` (fitted slopes -0.37 to -0.81 over 8,000-128,000
    samples; RL at beta 1 faster, its estimator's noise vanishing at the optimum).

    Along the way, plain gradient steps do *not* keep the ratios among correct
    rollouts for RL (a prefix's logit moves its whole subtree): only the
    optimum does.

    Examples
    --------
    >>> from tilt.tasks import named_task
    >>> from tilt.space import enumerate_rollouts
    >>> from tilt.policy import base_policy
    >>> from tilt.context import make_context
    >>> pi0 = base_policy(enumerate_rollouts(named_task("grid3")))
    >>> result = train(pi0, "jsd=0.5", model=make_context("edge", 2.0))
    >>> result.tv_to_closed_form < 1e-9
    True
    """
    check_instance("base", base, Policy)
    steps = _positive_int("steps", steps)
    batch = _positive_int("batch", batch)
    record_every = _positive_int("record_every", record_every)
    alpha, anchor, beta = (
        check_real(n, v)
        for n, v in zip(("alpha", "anchor", "beta"), (alpha, anchor, beta), strict=True)
    )
    parsed = parse_train_objective(objective)
    if top_k is not None:
        top_k = _positive_int("top_k", top_k)
    check_train_options(parsed, mode, teacher, model, beta, anchor, lr, top_k, top_k_mode)
    space = base.space
    if not np.isfinite(base.log_prob).all():
        raise ValueError(
            "the base policy must give every rollout mass: zero-mass moves have no finite logits"
        )
    demos_of = demo_source(base, demos, alpha, reference)
    optimum = closed_form(base, parsed, model, demos_of, alpha, anchor, beta)
    if not np.isfinite(optimum.log_prob).all():
        raise ValueError(
            "the closed form puts zero mass on some rollouts, which no finite logits reach: "
            "the trainer needs an optimum with full support"
        )
    rng = as_generator(seed)
    if start is not None and (start.space is not space or not np.isfinite(start.log_prob).all()):
        raise ValueError("start must be a policy over the base's rollouts with full support")
    student = TabularSoftmax.from_policy(base if start is None else start)
    exact = ExactObjective(parsed, base, model, demos_of, anchor, beta, top_k, top_k_mode)
    recorder = _Recorder(optimum, record_every, steps, progress)
    recorder.record(0, student.policy(), force=True)
    live = teacher == "live"

    if mode == "exact" and lr is None and not live:
        taken = _lbfgs(student, exact.bind(base), steps, recorder)
        optimizer, used_lr = "lbfgs", None
    elif mode == "exact":
        used_lr = DEFAULT_LR["exact"] if lr is None else float(lr)
        fixed = None if live else exact.bind(base)
        for t in range(1, steps + 1):
            bound = exact.bind(student.policy()) if live else fixed
            assert bound is not None
            log_cond = student.log_conditionals()
            _, grad = bound.value_and_grad(log_cond, bound.held(log_cond))
            student.step(grad, used_lr)
            if t % record_every == 0 or t == steps:
                recorder.record(t, student.policy(), force=True)
            recorder.tick(t)
        taken, optimizer = steps, "gd"
    else:
        used_lr = DEFAULT_LR["sampled"] if lr is None else float(lr)
        sampler = SampledGradient(exact, batch, rng)
        average = np.zeros(space.n_prefixes)
        half = steps // 2
        for t in range(1, steps + 1):
            current = student.policy() if live else base
            grad = sampler.gradient(student.log_conditionals(), current, frozen=not live)
            student.step(grad, used_lr / math.sqrt(1.0 + t / 50.0))
            if t > half:
                average += (student.logits - average) / (t - half)
            shown = average if t > half else student.logits
            if t % record_every == 0 or t == steps:
                recorder.record(t, student.policy(shown), force=True)
            recorder.tick(t)
        student.logits = average
        taken, optimizer = steps, "sgd"

    trained = student.policy()
    return TrainResult(
        policy=trained,
        closed_form=optimum,
        history=recorder.history(),
        tv_to_closed_form=total_variation(trained, optimum),
        kl_to_closed_form=kl_divergence(trained, optimum),
        steps=taken,
        objective=parsed.spec,
        mode=mode,
        teacher=teacher,
        optimizer=optimizer,
        lr=used_lr,
    )


def _lbfgs(student: TabularSoftmax, bound: Bound, steps: int, recorder: _Recorder) -> int:
    """L-BFGS on the logits, in rounds; per-prefix objectives refresh their held quantities.

    A per-prefix loss is minimised with its prefix weights (and return-to-go or
    per-sequence weights) held at the student of the round's start; then they are
    refreshed and L-BFGS goes again, until a round that ended on its own stopping
    rule could not lower the refreshed loss beyond rounding.  ``discount`` and
    ``length-weighted`` hold quantities of the subtree below each prefix, so they
    need about one round per depth; the others converge in the first round.
    """
    space = student.space
    taken = 0
    while taken < steps:
        held = bound.held(student.log_conditionals())

        def fun(x: FloatArray, held: Held | None = held) -> tuple[float, FloatArray]:
            value, grad = bound.value_and_grad(student.log_conditionals(np.r_[0.0, x]), held)
            return value, grad[1:]

        def callback(x: FloatArray) -> None:
            nonlocal taken
            taken += 1
            student.logits = np.r_[0.0, x]
            if taken % recorder.every == 0:
                recorder.record(taken, student.policy())
            recorder.tick(taken)

        def scaling(x: FloatArray, held: Held | None = held) -> FloatArray:
            # 1 / q(h) for the logit of each child of h: the curvature of every objective in z_p
            # carries a factor q(h) (per-prefix objectives: the held weight n(h)), so this puts
            # all prefixes on one scale, like a diagonal Fisher metric
            log_cond = student.log_conditionals(np.r_[0.0, x])
            if held is not None:
                mass = held.weight[space.parent[1:]]
            else:
                mass = np.exp(space.path_sum(log_cond)[space.parent[1:]])
            return 1.0 / np.maximum(mass * np.exp(log_cond[1:]), 1e-300)

        budget = min(steps - taken, _LBFGS_ROUND)
        before = taken
        start_value = fun(student.logits[1:])[0]
        result = lbfgs(
            fun,
            student.logits[1:],
            maxiter=budget,
            gtol=_GTOL,
            callback=callback,
            scaling=scaling if _PRECONDITION else None,
            max_step=_MAX_STEP,
        )
        student.logits = np.r_[0.0, result.x]
        if taken == before or (result.reason == "gradient" and not bound.per_prefix):
            break
        # go again (fresh memory; per-prefix: refreshed held quantities) until a round that ended
        # on its own stopping rule could not lower the objective beyond rounding
        if result.reason != "maxiter" and start_value - result.value <= 1e-13 * max(
            1.0, abs(result.value)
        ):
            break
    recorder.record(taken, student.policy(), force=True)
    return taken
