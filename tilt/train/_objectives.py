"""The trainer's objectives: parsing, exact value and gradient, sampled estimators.

:func:`tilt.train.train` optimises ``rl`` or any SD spec of
:data:`tilt.objectives.OBJECTIVES`.  This module turns a spec into

* :class:`ExactObjective`: the objective with its teachers fixed (``bind``),
  value and gradient in the logits at held quantities -- whole-rollout losses
  from :mod:`tilt.train._estimators`, per-prefix losses from
  :mod:`tilt.train._losses`;
* :class:`SampledGradient`: the stochastic gradient real trainers compute
  (the trainers' files: ``docs/objectives.md``, "Sources"), one demonstration
  per sampled rollout.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tilt._numerics import FloatArray
from tilt.context import ContextModel, demonstrations, point_mass, reference_rollout
from tilt.objectives import OBJECTIVES as SD_OBJECTIVES
from tilt.objectives import Objective, objective_forms, parse_objective, rl_optimum
from tilt.policy import Policy
from tilt.train._estimators import (
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
from tilt.train._losses import (
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

__all__ = [
    "ALIASES",
    "OBJECTIVES",
    "PER_PREFIX",
    "TOP_K_OBJECTIVES",
    "Demos",
    "TrainObjective",
    "parse_train_objective",
    "train_objective_forms",
    "demo_source",
    "closed_form",
    "Bound",
    "ExactObjective",
    "SampledGradient",
]

ALIASES = {"sd": "sequence", "sd_token": "token", "sd_forward": "forward"}
"""The first release's names of three SD objectives, still accepted."""

OBJECTIVES = ("rl", *SD_OBJECTIVES, *ALIASES)
"""Objective names accepted by :func:`train` (a parameterised one is written ``name=value``)."""

PER_PREFIX = ("token", "token-forward", "jsd", "discount", "length-weighted")
"""Objectives whose loss is per prefix (held prefix weights), not per rollout."""

TOP_K_OBJECTIVES = ("token", "token-forward", "jsd")
"""The full-vocabulary per-token losses that ``top_k`` can truncate."""

_CACHE_ENTRIES = 1 << 24  # frozen teachers kept between sampled steps (x2 with conditionals)

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
        return self.name in PER_PREFIX


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


Demos = str | Policy
"""``'own'``, ``'uniform'``, ``'tempered'``, ``'reference'``, or a demonstration distribution."""


def demo_source(
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


def closed_form(
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
class Bound:
    """The objective with its teacher fixed: value and gradient at held quantities."""

    value_and_grad: Callable[[FloatArray, Held | None], tuple[float, FloatArray]]
    held: Callable[[FloatArray], Held | None]
    per_prefix: bool


def _no_held(_log_cond: FloatArray) -> None:
    return None


class ExactObjective:
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

    def bind(self, teacher_policy: Policy) -> Bound:
        """The objective with teachers (and demonstrations) from ``teacher_policy``."""
        space, b, name = self.space, self.anchor, self.objective.name
        if name == "rl":
            target = space.correct + self.beta * self.base.log_prob
            return Bound(
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
            return Bound(
                lambda lc, _h: gibbs_value_and_grad(space, lc, 1.0 + b, target), _no_held, False
            )
        if name == "forward":
            mixture = model.forward_log_prob(teacher_policy, d)
            return Bound(lambda lc, _h: forward_value_and_grad(space, lc, mixture), _no_held, False)
        loss = self._per_prefix_loss(teacher_policy, d)
        return Bound(
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


class SampledGradient:
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

    def __init__(self, exact: ExactObjective, batch: int, rng: np.random.Generator) -> None:
        self.exact, self.batch, self.rng = exact, batch, rng
        self.space = exact.space
        self._cache: dict[int, tuple[FloatArray, FloatArray | None]] = {}
        self._cache_size = max(1, _CACHE_ENTRIES // exact.space.n_prefixes)
        self._frozen_demos: Policy | None = None

    def _demonstrations(self, source: Policy, frozen: bool) -> Policy:
        if not frozen:
            return self.exact.demos_of(source)
        if self._frozen_demos is None:
            self._frozen_demos = self.exact.demos_of(source)
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

    def gradient(
        self,
        log_cond: FloatArray,
        teacher_policy: Policy,
        frozen: bool,
        demo_policy: Policy | None = None,
    ) -> FloatArray:
        """One stochastic estimate of ``dF/dz`` at the student ``log_cond``.

        Teachers are built from ``teacher_policy``; demonstrations from
        ``demo_policy`` (default: ``teacher_policy``; an EMA teacher of shared
        weights draws them from the current student instead).  ``frozen``:
        both are fixed for the whole run, so their rows are cached.
        """
        source = teacher_policy if demo_policy is None else demo_policy
        ex, space, rng, n = self.exact, self.space, self.rng, self.batch
        b, name, param = ex.anchor, ex.objective.name, ex.objective.param
        if name == "forward":
            d = self._demonstrations(source, frozen)
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
        d = self._demonstrations(source, frozen)
        demos = sample_categorical(d.log_prob, np.zeros(n, dtype=np.int64), rng)
        per_prefix = name in PER_PREFIX
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
