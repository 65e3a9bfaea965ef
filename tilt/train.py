"""The tabular-softmax trainer: RL and self-distillation by gradients, against the closed forms.

``docs/theory.md``, "The tabular-softmax trainer": one logit per edge of the
prefix tree, initialised at ``log pi0(u | h)``; the policy is the product of
softmaxes along the path.  :func:`train` optimises one objective

* ``rl``: maximise ``E_q[r] - beta KL(q || pi0)`` (``beta > 0``);
* ``sd``: minimise ``E_c KL(q || T_c) + b KL(q || pi0)`` (sequence SD);
* ``sd_token``: per-token reverse KL with no gradient through the prefix
  distribution (fixed point :func:`tilt.optimal.sd_token`);
* ``sd_forward``: forward KL to the mixture ``E_c T_c`` (fine-tuning on
  teacher samples; fixed point :func:`tilt.optimal.sd_forward`)

either exactly (expectations over the enumerated space) or from samples, and
reports its distance to the closed form.  Gradients and estimators are in
:mod:`tilt._train_estimators`.

``python -m tilt.train --graph grid3 --objective sd`` runs it from the shell.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tilt._lbfgs import lbfgs
from tilt._train_estimators import (
    TabularSoftmax,
    conditionals_of_rows,
    forward_value_and_grad,
    gibbs_value_and_grad,
    leave_one_out,
    leaves_of,
    sample_categorical,
    sample_paths,
    score_function_gradient,
    token_sample_gradient,
    token_value_and_grad,
)
from tilt.context import ContextModel, demonstrations
from tilt.measures import correct_entropy
from tilt.optimal import rl_optimum, sd_optimum
from tilt.policy import Policy, as_generator
from tilt.space import FloatArray

__all__ = [
    "OBJECTIVES",
    "MODES",
    "TEACHERS",
    "DEFAULT_LR",
    "TabularSoftmax",
    "TrainHistory",
    "TrainResult",
    "train",
    "total_variation",
    "kl_divergence",
    "main",
]

OBJECTIVES = ("rl", "sd", "sd_token", "sd_forward")
"""Objectives accepted by :func:`train`."""

MODES = ("exact", "sampled")
"""``exact``: expectations over the enumerated space; ``sampled``: Monte-Carlo."""

TEACHERS = ("frozen", "live")
"""``frozen``: the base conditioned on ``c``; ``live``: the current student conditioned on ``c``."""

DEFAULT_LR = {"exact": 1.0, "sampled": 2.0}
"""Step size when ``lr`` is ``None`` and plain (stochastic) gradient steps are taken."""

_SD_METHOD = {"sd": "sequence", "sd_token": "token", "sd_forward": "forward"}
_LBFGS_ROUND = 100  # token SD: L-BFGS iterations per refresh of the prefix weights
_PRECONDITION = True
_CACHE_ENTRIES = 1 << 24  # frozen teachers kept between sampled steps (x2 with conditionals)
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


def _check(
    objective: str,
    mode: str,
    teacher: str,
    model: ContextModel | None,
    beta: float,
    anchor: float,
    lr: float | None,
) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}: choose one of {', '.join(OBJECTIVES)}")
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
    if objective == "rl":
        if not (math.isfinite(beta) and beta > 0):
            raise ValueError(
                f"RL training needs beta > 0, got {beta!r}: the limit beta -> 0 puts zero mass on "
                "every incorrect rollout, which no finite logits reach"
            )
        if teacher != "frozen":
            raise ValueError("teacher='live' applies to the SD objectives only: RL has no teacher")
        if anchor:
            raise ValueError("anchor applies to sd and sd_token; RL is anchored by beta")
        return
    if model is None:
        raise ValueError(f"objective {objective!r} needs a context model (model=...)")
    if objective == "sd_forward" and anchor:
        raise ValueError("anchor applies to sd and sd_token, not to sd_forward")


def _closed_form(
    base: Policy,
    objective: str,
    model: ContextModel | None,
    demos: str,
    alpha: float,
    anchor: float,
    beta: float,
) -> Policy:
    if objective == "rl":
        return rl_optimum(base, beta)
    assert model is not None
    return sd_optimum(base, model, _SD_METHOD[objective], demos, alpha, anchor)


# --------------------------------------------------------------------------
# the objectives at a teacher policy (the base when frozen, the student when live)


class _Exact:
    """Value and gradient of the objective, with the teacher built from ``teacher_policy``."""

    def __init__(
        self,
        objective: str,
        base: Policy,
        model: ContextModel | None,
        demos: str,
        alpha: float,
        anchor: float,
        beta: float,
    ) -> None:
        self.objective, self.base, self.model = objective, base, model
        self.demos, self.alpha, self.anchor, self.beta = demos, alpha, anchor, beta
        self.space = base.space
        self.base_log_cond = base.log_conditionals()

    def bind(
        self, teacher_policy: Policy
    ) -> Callable[[FloatArray, FloatArray], tuple[float, FloatArray]]:
        """``(log_cond, prefix_weight) -> (value, gradient)``, teacher from ``teacher_policy``."""
        space, b = self.space, self.anchor
        if self.objective == "rl":
            target = self.space.correct + self.beta * self.base.log_prob
            return lambda lc, _w: gibbs_value_and_grad(space, lc, self.beta, target)
        assert self.model is not None
        d = demonstrations(teacher_policy, self.demos, self.alpha)
        if self.objective == "sd":
            expected_log_teacher = teacher_policy.log_prob + self.model.tilt_score(
                teacher_policy, d
            )
            target = expected_log_teacher + b * self.base.log_prob
            _require_finite(target, "E_c log T_c(y)")
            return lambda lc, _w: gibbs_value_and_grad(space, lc, 1.0 + b, target)
        if self.objective == "sd_token":
            tau = self.model.token_log_target(teacher_policy, d) + b * self.base_log_cond
            _require_finite(tau, "the token target E_c log T_c(u | h)")
            return lambda lc, w: token_value_and_grad(space, lc, 1.0 + b, tau, w)
        mixture = self.model.forward_log_prob(teacher_policy, d)
        return lambda lc, _w: forward_value_and_grad(space, lc, mixture)


def _require_finite(values: FloatArray, what: str) -> None:
    if not np.isfinite(values).all():
        raise ValueError(
            f"{what} is -inf somewhere: the optimum puts zero mass there, which no finite logits "
            "reach (use a context model whose teachers give every rollout mass)"
        )


class _Sampled:
    """Stochastic gradient estimates from a batch, with the teacher built from a teacher policy."""

    def __init__(self, exact: _Exact, batch: int, rng: np.random.Generator) -> None:
        self.exact, self.batch, self.rng = exact, batch, rng
        self.space = exact.space
        self._cache: dict[int, tuple[FloatArray, FloatArray | None]] = {}
        self._cache_size = max(1, _CACHE_ENTRIES // exact.space.n_prefixes)
        self._frozen_demos: Policy | None = None

    def _demonstrations(self, teacher_policy: Policy, frozen: bool) -> Policy:
        ex = self.exact
        if not frozen:
            return demonstrations(teacher_policy, ex.demos, ex.alpha)
        if self._frozen_demos is None:
            self._frozen_demos = demonstrations(teacher_policy, ex.demos, ex.alpha)
        return self._frozen_demos

    def _teachers(
        self, teacher_policy: Policy, demos: np.ndarray, frozen: bool, conditionals: bool
    ) -> tuple[np.ndarray, FloatArray, FloatArray | None]:
        """Unique demos, their teacher rows ``log T_c(y)`` and (optionally) conditionals."""
        model = self.exact.model
        assert model is not None
        unique, row_of = np.unique(demos, return_inverse=True)
        if not frozen:
            rows = model.teacher_log_prob(teacher_policy, unique)
            return row_of, rows, conditionals_of_rows(self.space, rows) if conditionals else None
        missing = [int(c) for c in unique if int(c) not in self._cache]
        if len(self._cache) + len(missing) > self._cache_size:
            self._cache.clear()  # bounded memory: start again
            missing = [int(c) for c in unique]
        if missing:
            rows = model.teacher_log_prob(teacher_policy, np.asarray(missing, dtype=np.int64))
            conds = conditionals_of_rows(self.space, rows) if conditionals else None
            for i, c in enumerate(missing):
                self._cache[c] = (rows[i], None if conds is None else conds[i])
        rows = np.stack([self._cache[int(c)][0] for c in unique])
        conds = np.stack([self._cache[int(c)][1] for c in unique]) if conditionals else None  # type: ignore[misc]
        return row_of, rows, conds

    def gradient(self, log_cond: FloatArray, teacher_policy: Policy, frozen: bool) -> FloatArray:
        ex, space, rng, n = self.exact, self.space, self.rng, self.batch
        b = ex.anchor
        if ex.objective == "sd_forward":
            d = self._demonstrations(teacher_policy, frozen)
            demos = sample_categorical(d.log_prob, np.zeros(n, dtype=np.int64), rng)
            row_of, rows, _ = self._teachers(teacher_policy, demos, frozen, conditionals=False)
            rollouts = sample_categorical(rows, row_of, rng)  # teacher samples y ~ T_c
            return score_function_gradient(space, log_cond, rollouts, -np.ones(n))
        paths = sample_paths(space, log_cond, n, rng)
        rollouts = leaves_of(space, paths)
        log_q = space.path_sum(log_cond)[space.rollout_prefix][rollouts]
        base_lp = ex.base.log_prob[rollouts]
        if ex.objective == "rl":
            # loss per sample -(r - beta (log q - log pi0)); REINFORCE, leave-one-out baseline
            loss = ex.beta * (log_q - base_lp) - space.correct[rollouts]
            return score_function_gradient(space, log_cond, rollouts, loss - leave_one_out(loss))
        d = self._demonstrations(teacher_policy, frozen)
        demos = sample_categorical(d.log_prob, np.zeros(n, dtype=np.int64), rng)
        token = ex.objective == "sd_token"
        row_of, rows, conds = self._teachers(teacher_policy, demos, frozen, conditionals=token)
        if token:
            assert conds is not None
            return token_sample_gradient(
                space, log_cond, paths, conds, row_of, 1.0 + b, ex.base_log_cond, b
            )
        # sequence SD: score function of E_c[log q(y) - log T_c(y)] + b (log q - log pi0)
        loss = (1.0 + b) * log_q - rows[row_of, rollouts] - b * base_lp
        if not np.isfinite(loss).all():
            raise ValueError("a teacher gives a sampled rollout zero mass: sequence SD is infinite")
        return score_function_gradient(space, log_cond, rollouts, loss - leave_one_out(loss))


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
    objective: str,
    *,
    model: ContextModel | None = None,
    demos: str = "own",
    alpha: float = 1.0,
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
) -> TrainResult:
    """Train a tabular softmax from ``base`` on ``objective`` and compare it with the closed form.

    Objectives (student ``q``, teachers ``T_c``, demonstrations ``c ~ D``)::

        rl          max  E_q[r] - beta KL(q || pi0)           -> q ∝ pi0 exp(r / beta)
        sd          min  E_c KL(q || T_c) + b KL(q || pi0)    -> q ∝ pi0 exp(S / (1 + b))
        sd_token    per-token reverse KL, prefix weights held -> tilt.optimal.sd_token
        sd_forward  min  KL(E_c T_c || q)                     -> q = E_c T_c

    Parameters
    ----------
    base : Policy
        ``pi0``; it must give every rollout mass (the logits start at its log conditionals).
    objective : {'rl', 'sd', 'sd_token', 'sd_forward'}
    model : ContextModel, optional
        The context model; required by the SD objectives, ignored by ``rl``.
    demos, alpha : str, float
        Demonstration distribution (:func:`tilt.context.demonstrations`).
    anchor : float
        ``b >= 0`` for ``sd`` and ``sd_token`` (anchored to ``pi0``; an error elsewhere).
    beta : float
        KL coefficient of ``rl``, ``> 0``; ignored by the SD objectives.
    mode : {'exact', 'sampled'}
        ``exact``: expectations over the enumerated space; with ``lr=None`` and a
        frozen teacher, L-BFGS (:mod:`tilt._lbfgs`) for ``steps`` iterations at most (token SD:
        L-BFGS on the per-token loss with the prefix weights refreshed every
        100 iterations); otherwise ``steps`` gradient steps of size ``lr``
        (default 1).  ``sampled``: ``steps`` stochastic gradient steps on
        ``batch`` student rollouts (or teacher samples for ``sd_forward``), step
        size ``lr / sqrt(1 + t / 50)`` (default ``lr = 2``), and the returned
        policy is that of the logits averaged over the last half of the steps.
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

    Returns
    -------
    TrainResult

    Raises
    ------
    ValueError
        On an unknown objective, mode or teacher, non-positive ``steps``,
        ``batch``, ``record_every`` or ``lr``, ``beta <= 0`` for ``rl`` (the
        limit has no finite logits), an SD objective without a model, or an
        optimum with zero mass somewhere (no finite logits reach it).

    Notes
    -----
    Each exact step costs a few passes over the prefix tree (plus the context
    model's cost when the teacher is live); each sampled step samples ``batch``
    paths one depth at a time and evaluates at most ``batch`` teachers (one
    rollout-length row each), so sampled mode is meant for small spaces.
    Gradients: see :mod:`tilt._train_estimators`.

    Measured on grid3 (edge(gamma=2), own demonstrations, seed 0, e.g.
    ``python -m tilt.train --graph grid3 --objective sd --mode sampled``):
    exact mode stops after 15-20 L-BFGS iterations at TV below 1e-9; sampled
    mode with the defaults (500 steps x 64 samples) ends at TV 2.5e-4 (rl,
    beta 1), 1.0e-2 (sd), 6.1e-3 (sd_token), 1.2e-2 (sd_forward); over seeds
    0-4 the SD errors fall like ``1 / sqrt(samples)`` (sd: mean TV 0.025,
    0.011, 0.0053, 0.0027 after 100, 500, 2000, 8000 steps).

    Along the way, plain gradient steps do *not* keep the ratios among correct
    rollouts for RL (a prefix's logit moves its whole subtree): only the
    optimum does.

    Examples
    --------
    >>> from tilt.graphs import named_task
    >>> from tilt.space import enumerate_rollouts
    >>> from tilt.policy import base_policy
    >>> from tilt.context import make_context
    >>> pi0 = base_policy(enumerate_rollouts(named_task("grid3")))
    >>> result = train(pi0, "sd", model=make_context("edge", 2.0))
    >>> result.tv_to_closed_form < 1e-6
    True
    """
    steps = _positive_int("steps", steps)
    batch = _positive_int("batch", batch)
    record_every = _positive_int("record_every", record_every)
    alpha, anchor, beta = float(alpha), float(anchor), float(beta)
    _check(objective, mode, teacher, model, beta, anchor, lr)
    space = base.space
    if not np.isfinite(base.log_prob).all():
        raise ValueError(
            "the base policy must give every rollout mass: zero-mass moves have no finite logits"
        )
    closed_form = _closed_form(base, objective, model, demos, alpha, anchor, beta)
    if not np.isfinite(closed_form.log_prob).all():
        raise ValueError(
            "the closed form puts zero mass on some rollouts, which no finite logits reach: "
            "the trainer needs an optimum with full support"
        )
    rng = as_generator(seed)
    student = TabularSoftmax.from_policy(base)
    exact = _Exact(objective, base, model, demos, alpha, anchor, beta)
    recorder = _Recorder(closed_form, record_every, steps, progress)
    recorder.record(0, student.policy(), force=True)
    live = teacher == "live"

    if mode == "exact" and lr is None and not live:
        taken = _lbfgs(student, exact, steps, recorder)
        optimizer, used_lr = "lbfgs", None
    elif mode == "exact":
        used_lr = DEFAULT_LR["exact"] if lr is None else float(lr)
        evaluate = None if live else exact.bind(base)
        for t in range(1, steps + 1):
            current = student.policy()
            fn = exact.bind(current) if live else evaluate
            assert fn is not None
            _, grad = fn(student.log_conditionals(), np.exp(current.prefix_log_mass()))
            student.step(grad, used_lr)
            if t % record_every == 0 or t == steps:
                recorder.record(t, student.policy(), force=True)
            recorder.tick(t)
        taken, optimizer = steps, "gd"
    else:
        used_lr = DEFAULT_LR["sampled"] if lr is None else float(lr)
        sampler = _Sampled(exact, batch, rng)
        average = np.zeros(space.n_prefixes)
        start = steps // 2
        for t in range(1, steps + 1):
            current = student.policy() if live else base
            grad = sampler.gradient(student.log_conditionals(), current, frozen=not live)
            student.step(grad, used_lr / math.sqrt(1.0 + t / 50.0))
            if t > start:
                average += (student.logits - average) / (t - start)
            shown = average if t > start else student.logits
            if t % record_every == 0 or t == steps:
                recorder.record(t, student.policy(shown), force=True)
            recorder.tick(t)
        student.logits = average
        taken, optimizer = steps, "sgd"

    trained = student.policy()
    return TrainResult(
        policy=trained,
        closed_form=closed_form,
        history=recorder.history(),
        tv_to_closed_form=total_variation(trained, closed_form),
        kl_to_closed_form=kl_divergence(trained, closed_form),
        steps=taken,
        objective=objective,
        mode=mode,
        teacher=teacher,
        optimizer=optimizer,
        lr=used_lr,
    )


def _lbfgs(student: TabularSoftmax, exact: _Exact, steps: int, recorder: _Recorder) -> int:
    """L-BFGS on the logits; for token SD, rounds with the prefix weights refreshed each round."""
    fn = exact.bind(exact.base)
    token = exact.objective == "sd_token"
    taken = 0
    while taken < steps:
        weight = np.exp(student.policy().prefix_log_mass())

        def fun(x: FloatArray, weight: FloatArray = weight) -> tuple[float, FloatArray]:
            z = np.r_[0.0, x]
            value, grad = fn(student.log_conditionals(z), weight)
            return value, grad[1:]

        def callback(x: FloatArray) -> None:
            nonlocal taken
            taken += 1
            student.logits = np.r_[0.0, x]
            if taken % recorder.every == 0:
                recorder.record(taken, student.policy())
            recorder.tick(taken)

        def scaling(x: FloatArray, weight: FloatArray = weight) -> FloatArray:
            # 1 / q(h) for the logit of each child of h: the curvature of every objective in z_p
            # carries a factor q(h) (token SD: the fixed weight n(h)), so this puts all prefixes
            # on one scale, like a diagonal Fisher metric
            if token:
                mass = weight[student.space.parent[1:]]
            else:
                log_mass = student.space.path_sum(student.log_conditionals(np.r_[0.0, x]))
                mass = np.exp(log_mass[student.space.parent[1:]])
            return 1.0 / np.maximum(mass, 1e-300)

        budget = min(steps - taken, _LBFGS_ROUND) if token else steps - taken
        before = taken
        start_value = fn(student.log_conditionals(), weight)[0]
        result = lbfgs(
            fun,
            student.logits[1:],
            maxiter=budget,
            gtol=_GTOL,
            callback=callback,
            scaling=scaling if _PRECONDITION else None,
        )
        student.logits = np.r_[0.0, result.x]
        if not token or taken == before:
            break
        # token SD: refresh the prefix weights and go again, until a round that ended on its own
        # stopping rule could not lower the per-token loss beyond rounding
        if result.reason != "maxiter" and start_value - result.value <= 1e-13 * max(
            1.0, abs(result.value)
        ):
            break
    recorder.record(taken, student.policy(), force=True)
    return taken


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tilt.train``; the command line is in :mod:`tilt._train_cli`."""
    from tilt._train_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
