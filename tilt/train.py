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
  whole-rollout loss and its gradient (:mod:`tilt._train_estimators`).
* Per-prefix objectives (``token``, ``token-forward``, ``jsd``, ``discount``,
  ``length-weighted``): the per-token loss itself, with the prefix weights
  (and the detached return-to-go or per-sequence weights) held at the current
  student, never a distance to the closed form (:mod:`tilt._train_losses`).

``python -m tilt.train --graph grid3 --objective jsd=0.5`` runs it from the shell.
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
    full_vocabulary_gradient,
    gibbs_value_and_grad,
    k3_coefficients,
    leave_one_out,
    leaves_of,
    sample_categorical,
    sample_paths,
    sampled_token_coefficients,
    score_function_gradient,
    step_gradient,
    step_log_q,
    step_log_teacher,
)
from tilt._train_losses import (
    TOP_K_MODES,
    Discounted,
    ForwardKL,
    GeneralisedJSD,
    Held,
    LengthWeighted,
    PerPrefixLoss,
    ReverseKL,
    TopKDivergence,
    held_of,
    per_prefix_value_and_grad,
)
from tilt.context import ContextModel, demonstrations, point_mass, reference_rollout
from tilt.measures import correct_entropy
from tilt.objectives import OBJECTIVES as SD_OBJECTIVES
from tilt.objectives import Objective, objective_forms, parse_objective
from tilt.optimal import rl_optimum
from tilt.policy import Policy, as_generator
from tilt.space import FloatArray

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
    "total_variation",
    "kl_divergence",
    "main",
]

ALIASES = {"sd": "sequence", "sd_token": "token", "sd_forward": "forward"}
"""The first release's names of three SD objectives, still accepted."""

OBJECTIVES = ("rl", *SD_OBJECTIVES, *ALIASES)
"""Objective names accepted by :func:`train` (a parameterised one is written ``name=value``)."""

MODES = ("exact", "sampled")
"""``exact``: expectations over the enumerated space; ``sampled``: Monte-Carlo."""

TEACHERS = ("frozen", "live")
"""``frozen``: the base conditioned on ``c``; ``live``: the current student conditioned on ``c``."""

DEFAULT_LR = {"exact": 1.0, "sampled": 2.0}
"""Step size when ``lr`` is ``None`` and plain (stochastic) gradient steps are taken."""

_LBFGS_ROUND = 100  # per-prefix objectives: L-BFGS iterations per refresh of the held quantities
_PRECONDITION = True
_MAX_STEP = 2.0  # most change of one logit per L-BFGS step, in nats (no saturating jumps)
_CACHE_ENTRIES = 1 << 24  # frozen teachers kept between sampled steps (x2 with conditionals)
_GTOL = 1e-13  # L-BFGS stops when max |dF/dz| falls below this (float64 gradients carry ~1e-16 |F|)
_PER_PREFIX = ("token", "token-forward", "jsd", "discount", "length-weighted")
_TOP_K = ("token", "token-forward", "jsd")  # full-vocabulary per-token losses that can be truncated


# --------------------------------------------------------------------------
# objectives


@dataclass(frozen=True)
class TrainObjective:
    """A parsed ``--objective``: ``rl`` or an SD spec (an alias keeps its spelling in ``spec``).

    Attributes
    ----------
    spec : str
        As written (``'sd'``, ``'jsd=0.5'``).
    sd : Objective or None
        The SD objective; ``None`` for ``rl``.
    """

    spec: str
    sd: Objective | None

    @property
    def name(self) -> str:
        """``'rl'`` or the family name of :data:`tilt.objectives.OBJECTIVES`."""
        return "rl" if self.sd is None else self.sd.name

    @property
    def param(self) -> float:
        """The spec's parameter (``nan`` when it has none)."""
        return math.nan if self.sd is None or self.sd.param is None else self.sd.param

    @property
    def per_prefix(self) -> bool:
        """Whether the loss is per prefix (held prefix weights) rather than per rollout."""
        return self.name in _PER_PREFIX


def train_objective_forms() -> str:
    """Every accepted ``--objective`` form, for messages and ``--help``."""
    aliases = ", ".join(f"{old} ({new})" for old, new in ALIASES.items())
    return f"rl, {objective_forms()}, or the old names {aliases}"


def parse_train_objective(spec: str | TrainObjective) -> TrainObjective:
    """Parse ``'rl'``, an SD spec such as ``'jsd=0.5'``, or an old name (``'sd_token'``).

    Raises
    ------
    ValueError
        On an unknown name or a parameter out of range; the message names the
        accepted forms.
    """
    if isinstance(spec, TrainObjective):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"an objective must be a string, got {type(spec).__name__}")
    text = spec.strip()
    if text == "rl":
        return TrainObjective(spec, None)
    if text in ALIASES:
        return TrainObjective(spec, parse_objective(ALIASES[text]))
    name = text.partition("=")[0].strip()
    if name not in SD_OBJECTIVES:
        raise ValueError(f"unknown objective {spec!r}: use {train_objective_forms()}")
    return TrainObjective(spec, parse_objective(text))


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
        if objective.name not in _TOP_K:
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


Demos = str | Policy
"""``'own'``, ``'uniform'``, ``'tempered'``, ``'reference'``, or a demonstration distribution."""


def _demo_source(
    base: Policy, demos: Demos, alpha: float, reference: str | None
) -> Callable[[Policy], Policy]:
    """``policy -> D``: built from the teacher policy, or fixed (a reference or a given ``D``)."""
    if isinstance(demos, Policy):
        if demos.space is not base.space:
            raise ValueError(
                "the demonstrations are a distribution over another rollout space: build them "
                "from the same space as the base"
            )
        if not np.isfinite(demos.log_prob[base.space.correct]).any():
            raise ValueError("the demonstrations put no mass on correct rollouts")
        return lambda _policy: demos
    if not isinstance(demos, str):
        raise TypeError(f"demos must be a name or a Policy, got {type(demos).__name__}")
    if reference is not None and demos != "reference":
        raise ValueError(f"reference= applies to demos='reference', not to demos={demos!r}")
    if demos == "reference":
        index = reference_rollout(base, reference)
        return lambda policy: point_mass(policy, index)
    demonstrations(base, demos, alpha)  # fail early on a bad name or alpha
    return lambda policy: demonstrations(policy, demos, alpha)


def _closed_form(
    base: Policy,
    objective: TrainObjective,
    model: ContextModel | None,
    demos_of: Callable[[Policy], Policy],
    alpha: float,
    anchor: float,
    beta: float,
) -> Policy:
    if objective.sd is None:
        return rl_optimum(base, beta)
    assert model is not None
    return objective.sd.optimum(base, model, demos_of(base), alpha, anchor)


# --------------------------------------------------------------------------
# the objectives at a teacher policy (the base when frozen, the student when live)


@dataclass(frozen=True)
class _Bound:
    """The objective with its teacher fixed: value and gradient at held quantities."""

    value_and_grad: Callable[[FloatArray, Held | None], tuple[float, FloatArray]]
    held: Callable[[FloatArray], Held | None]
    per_prefix: bool


def _no_held(_log_cond: FloatArray) -> None:
    return None


class _Exact:
    """Value and gradient of the objective, with the teacher built from ``teacher_policy``."""

    def __init__(
        self,
        objective: TrainObjective,
        base: Policy,
        model: ContextModel | None,
        demos_of: Callable[[Policy], Policy],
        anchor: float,
        beta: float,
        top_k: int | None = None,
        top_k_mode: str = "tail",
    ) -> None:
        self.objective, self.base, self.model = objective, base, model
        self.demos_of, self.anchor, self.beta = demos_of, anchor, beta
        self.top_k, self.top_k_mode = top_k, top_k_mode
        self.space = base.space
        self.base_log_cond = base.log_conditionals()

    def bind(self, teacher_policy: Policy) -> _Bound:
        """The objective with teachers (and demonstrations) from ``teacher_policy``."""
        space, b, name = self.space, self.anchor, self.objective.name
        if name == "rl":
            target = space.correct + self.beta * self.base.log_prob
            return _Bound(
                lambda lc, _h: gibbs_value_and_grad(space, lc, self.beta, target), _no_held, False
            )
        model = self.model
        assert model is not None
        d = self.demos_of(teacher_policy)
        if name in ("sequence", "hybrid"):
            target = teacher_policy.log_prob + model.tilt_score(teacher_policy, d)
            target = target + b * self.base.log_prob
            _require_finite(target, "E_c log T_c(y)")
            if name == "hybrid" and math.isfinite(self.objective.param):
                # (1 + b) r / beta, shifted by a constant: incorrect rollouts lose (1 + b) / beta
                target = target - (1.0 + b) * (~space.correct) / self.objective.param
            return _Bound(
                lambda lc, _h: gibbs_value_and_grad(space, lc, 1.0 + b, target), _no_held, False
            )
        if name == "forward":
            mixture = model.forward_log_prob(teacher_policy, d)
            return _Bound(
                lambda lc, _h: forward_value_and_grad(space, lc, mixture), _no_held, False
            )
        loss = self._per_prefix_loss(teacher_policy, d)
        return _Bound(
            lambda lc, h: per_prefix_value_and_grad(space, lc, loss, _held(h)),
            lambda lc: held_of(space, lc, loss),
            True,
        )

    def _per_prefix_loss(self, teacher_policy: Policy, d: Policy) -> PerPrefixLoss:
        model, name, param = self.model, self.objective.name, self.objective.param
        assert model is not None
        if self.top_k is not None:
            a = 1.0 if name == "token" else 0.0 if name == "token-forward" else param
            classes = model.teacher_classes(teacher_policy, d)
            return TopKDivergence.from_classes(a, self.top_k, self.top_k_mode, classes, self.space)
        if name == "token-forward" or (name == "jsd" and param == 0.0):
            return ForwardKL.from_classes(model.teacher_classes(teacher_policy, d))
        if name == "jsd" and param < 1.0:
            return GeneralisedJSD.from_classes(param, model.teacher_classes(teacher_policy, d))
        target = model.token_log_target(teacher_policy, d)
        _require_finite(target, "the token target E_c log T_c(u | h)")
        if name == "discount":
            return Discounted(target, param)
        if name == "length-weighted":
            return LengthWeighted(target)
        # token, and jsd=1 (reverse KL, as TRL and verl special-case it)
        b = self.anchor
        return ReverseKL(1.0 + b, target + b * self.base_log_cond)


def _held(held: Held | None) -> Held:
    assert held is not None
    return held


def _require_finite(values: FloatArray, what: str) -> None:
    if not np.isfinite(values).all():
        raise ValueError(
            f"{what} is -inf somewhere: the optimum puts zero mass there, which no finite logits "
            "reach (use a context model whose teachers give every rollout mass)"
        )


class _Sampled:
    """Stochastic gradient estimates from a batch, with the teacher built from a teacher policy.

    The estimator of each objective is the one real trainers run:

    * ``rl``: REINFORCE on ``r - beta (log q - log pi0)`` with a leave-one-out baseline;
    * ``sequence``: the score function of ``(1 + b) log q(y) - log T_c(y) - b log pi0(y)``
      (leave-one-out baseline); ``hybrid``: the same plus REINFORCE on ``r / beta``;
    * ``forward``: maximum likelihood on teacher samples ``y ~ T_c``;
    * ``token``, ``discount=g``, ``length-weighted``: the sampled-token reverse KL as an
      advantage on each move, return-to-go discounted by ``g`` (0 for ``token``), each
      sequence's tokens averaged (``length-weighted``) or summed;
    * ``token-forward``: ``k3`` backpropagated (verl's ``kl_penalty``, clamps included);
    * ``jsd=a``: the full-vocabulary ``GJSD_a`` at every prefix of the student's rollouts.

    One demonstration ``c ~ D`` per rollout, drawn independently of it.
    """

    def __init__(self, exact: _Exact, batch: int, rng: np.random.Generator) -> None:
        self.exact, self.batch, self.rng = exact, batch, rng
        self.space = exact.space
        self._cache: dict[int, tuple[FloatArray, FloatArray | None]] = {}
        self._cache_size = max(1, _CACHE_ENTRIES // exact.space.n_prefixes)
        self._frozen_demos: Policy | None = None

    def _demonstrations(self, teacher_policy: Policy, frozen: bool) -> Policy:
        if not frozen:
            return self.exact.demos_of(teacher_policy)
        if self._frozen_demos is None:
            self._frozen_demos = self.exact.demos_of(teacher_policy)
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
            new = conditionals_of_rows(self.space, rows) if conditionals else None
            for i, c in enumerate(missing):
                self._cache[c] = (rows[i], None if new is None else new[i])
        rows = np.stack([self._cache[int(c)][0] for c in unique])
        if not conditionals:
            return row_of, rows, None
        conds = [self._cache[int(c)][1] for c in unique]
        return row_of, rows, np.stack([x for x in conds if x is not None])

    def gradient(self, log_cond: FloatArray, teacher_policy: Policy, frozen: bool) -> FloatArray:
        ex, space, rng, n = self.exact, self.space, self.rng, self.batch
        b, name, param = ex.anchor, ex.objective.name, ex.objective.param
        if name == "forward":
            d = self._demonstrations(teacher_policy, frozen)
            demos = sample_categorical(d.log_prob, np.zeros(n, dtype=np.int64), rng)
            row_of, rows, _ = self._teachers(teacher_policy, demos, frozen, conditionals=False)
            rollouts = sample_categorical(rows, row_of, rng)  # teacher samples y ~ T_c
            return score_function_gradient(space, log_cond, rollouts, -np.ones(n))
        paths = sample_paths(space, log_cond, n, rng)
        rollouts = leaves_of(space, paths)
        log_q = space.path_sum(log_cond)[space.rollout_prefix][rollouts]
        base_lp = ex.base.log_prob[rollouts]
        if name == "rl":
            # loss per sample -(r - beta (log q - log pi0)); REINFORCE, leave-one-out baseline
            loss = ex.beta * (log_q - base_lp) - space.correct[rollouts]
            return score_function_gradient(space, log_cond, rollouts, loss - leave_one_out(loss))
        d = self._demonstrations(teacher_policy, frozen)
        demos = sample_categorical(d.log_prob, np.zeros(n, dtype=np.int64), rng)
        per_prefix = name in _PER_PREFIX
        row_of, rows, conds = self._teachers(teacher_policy, demos, frozen, per_prefix)
        if not per_prefix:
            # sequence SD: score function of E_c[log q(y) - log T_c(y)] + b (log q - log pi0)
            loss = (1.0 + b) * log_q - rows[row_of, rollouts] - b * base_lp
            if not np.isfinite(loss).all():
                raise ValueError(
                    "a teacher gives a sampled rollout zero mass: sequence SD is infinite"
                )
            if name == "hybrid" and math.isfinite(param):  # REINFORCE on the reward, added
                loss = loss - (1.0 + b) * space.correct[rollouts] / param
            return score_function_gradient(space, log_cond, rollouts, loss - leave_one_out(loss))
        assert conds is not None
        if name == "jsd":
            return full_vocabulary_gradient(space, log_cond, paths, conds, row_of, param)
        log_teacher = step_log_teacher(paths, conds, row_of)
        if name == "token-forward":
            coef = k3_coefficients(paths, step_log_q(space, log_cond, paths), log_teacher)
        else:
            coef = sampled_token_coefficients(
                log_cond,
                paths,
                log_teacher,
                discount=param if name == "discount" else 0.0,
                kappa=1.0 + b,
                anchor_cond=ex.base_log_cond,
                anchor=b,
                length_weighted=name == "length-weighted",
            )
        return step_gradient(space, log_cond, paths, coef)


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
        estimator real trainers use (:class:`_Sampled`) on ``batch`` student rollouts
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
        ``top_k`` moves per prefix (exact mode; :class:`tilt._train_losses.TopKDivergence`).
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
    >>> from tilt.graphs import named_task
    >>> from tilt.space import enumerate_rollouts
    >>> from tilt.policy import base_policy
    >>> from tilt.context import make_context
    >>> pi0 = base_policy(enumerate_rollouts(named_task("grid3")))
    >>> result = train(pi0, "jsd=0.5", model=make_context("edge", 2.0))
    >>> result.tv_to_closed_form < 1e-9
    True
    """
    steps = _positive_int("steps", steps)
    batch = _positive_int("batch", batch)
    record_every = _positive_int("record_every", record_every)
    alpha, anchor, beta = float(alpha), float(anchor), float(beta)
    parsed = parse_train_objective(objective)
    if top_k is not None:
        top_k = _positive_int("top_k", top_k)
    _check(parsed, mode, teacher, model, beta, anchor, lr, top_k, top_k_mode)
    space = base.space
    if not np.isfinite(base.log_prob).all():
        raise ValueError(
            "the base policy must give every rollout mass: zero-mass moves have no finite logits"
        )
    demos_of = _demo_source(base, demos, alpha, reference)
    closed_form = _closed_form(base, parsed, model, demos_of, alpha, anchor, beta)
    if not np.isfinite(closed_form.log_prob).all():
        raise ValueError(
            "the closed form puts zero mass on some rollouts, which no finite logits reach: "
            "the trainer needs an optimum with full support"
        )
    rng = as_generator(seed)
    if start is not None and (start.space is not space or not np.isfinite(start.log_prob).all()):
        raise ValueError("start must be a policy over the base's rollouts with full support")
    student = TabularSoftmax.from_policy(base if start is None else start)
    exact = _Exact(parsed, base, model, demos_of, anchor, beta, top_k, top_k_mode)
    recorder = _Recorder(closed_form, record_every, steps, progress)
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
        sampler = _Sampled(exact, batch, rng)
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
        closed_form=closed_form,
        history=recorder.history(),
        tv_to_closed_form=total_variation(trained, closed_form),
        kl_to_closed_form=kl_divergence(trained, closed_form),
        steps=taken,
        objective=parsed.spec,
        mode=mode,
        teacher=teacher,
        optimizer=optimizer,
        lr=used_lr,
    )


def _lbfgs(student: TabularSoftmax, bound: _Bound, steps: int, recorder: _Recorder) -> int:
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tilt.train``; the command line is in :mod:`tilt._train_cli`."""
    from tilt._train_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
