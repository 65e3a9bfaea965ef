"""The shared-weight student and its exact objectives over a suite of prompts.

``logit(h, u, x) = theta . phi(h, u, x)`` (:mod:`tilt.share._features`),
``q(u | h, x) = softmax over avail(h)``.  The objective is the mean over the
training prompts of the tabular trainer's per-prompt objective, exactly as
:class:`tilt.train._objectives.ExactObjective` computes it (one registry:
``rl`` and every SD spec of :data:`tilt.objectives.OBJECTIVES`); its gradient
in ``theta`` is the pull-back of the per-prefix gradients,

    dF/dtheta = (1/n) sum_x Phi_x^T dF_x/dz_x.

Objectives (:data:`OBJECTIVES`; student ``q``, base ``pi0`` = the initial
student, teachers ``T_c`` built by the context model from the teacher policy,
demonstrations ``c ~ D``; ``docs/theory.md``, "What real trainers optimise"):

* ``rl``: ``-E_q[r] + beta KL(q || pi0)`` per prompt (``beta > 0``);
* ``sequence``, ``hybrid=beta``: ``E_c KL(q || T_c) + b KL(q || pi0)``
  (minus ``(1 + b) E_q[r] / beta`` for ``hybrid``), a Gibbs form over rollouts;
* ``forward``: ``KL(E_c T_c || q)`` over rollouts (fine-tuning on teacher samples);
* the per-prefix losses ``token``, ``token-forward``, ``jsd=a``, ``discount=g``,
  ``length-weighted``: ``sum_h n(h) f_h(q(. | h))`` with the prefix weights
  ``n(h) = q(h)`` -- and the return-to-go (``discount``) or the per-sequence
  weights ``E_q[1 / |y| | p]`` (``length-weighted``) -- held at the student of
  the moment (:mod:`tilt.train._losses`): the loss as real trainers run it,
  with no gradient through which prefixes were sampled.

With ``prefix`` features each is the tabular trainer's loss, so its optimum is
the closed form of :func:`tilt.objectives.sd_optimum`.  With shared features
the per-prefix losses are *not* equivalent to their tabular fixed points: the
loss as real trainers run it is what is pulled back.

Teachers (:data:`TEACHERS`): ``frozen`` -- teacher and demonstrations from the
initial student; ``live`` -- both from the current student (no gradient through
them); ``ema`` -- demonstrations from the current student, teacher from the
student at ``theta_ema``, updated ``theta_ema <- (1 - rate) theta_ema + rate theta``
after every step (SDPO's default rate 0.05).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import sparse

from tilt._numerics import FloatArray, IntArray
from tilt.context import ContextModel, demonstrations
from tilt.objectives import OBJECTIVES as SD_OBJECTIVES
from tilt.objectives import objective_forms
from tilt.policy import Policy
from tilt.share._features import SharedFeatures
from tilt.space import RolloutSpace
from tilt.train import (
    PER_PREFIX,
    Bound,
    ExactObjective,
    Held,
    TrainObjective,
    parse_train_objective,
)

__all__ = [
    "OBJECTIVES",
    "TEACHERS",
    "EMA_RATE",
    "SharedStudent",
    "ShareObjective",
    "objective_help",
    "held_quantities",
    "shared_value_and_grad",
]

OBJECTIVES = ("rl", *SD_OBJECTIVES)
"""Objective families the shared trainer runs (a parameterised one is written ``name=value``)."""

SHARED_DEMOS = ("own", "uniform")
"""Demonstrations the exact shared objectives take (each prompt's own distribution)."""

TEACHERS = ("frozen", "live", "ema")
"""Where the teacher comes from (see the module docstring)."""

EMA_RATE = 0.05
"""SDPO's default rate of the EMA teacher."""


def objective_help() -> str:
    """Every accepted objective form, for ``--help`` and messages."""
    return f"rl, {objective_forms()}"


class SharedStudent:
    """A log-linear policy over many prompts: one ``theta``, one feature matrix per prompt.

    Parameters
    ----------
    spaces : sequence of RolloutSpace
    features : SharedFeatures
        Validated by :func:`tilt.share._features.make_features`.
    """

    def __init__(self, spaces: Sequence[RolloutSpace], features: SharedFeatures) -> None:
        self.spaces = tuple(spaces)
        self.features = features
        self.matrix = sparse.csr_array(sparse.vstack(features.matrices, format="csr"))
        self.abs_matrix = abs(self.matrix)
        self.offsets = np.cumsum([0] + [s.n_prefixes for s in self.spaces])

    @property
    def n_params(self) -> int:
        """Length of ``theta``."""
        return self.features.n_params

    def _split(self, values: FloatArray) -> list[FloatArray]:
        return [values[self.offsets[i] : self.offsets[i + 1]] for i in range(len(self.spaces))]

    def log_conditionals(
        self, theta: FloatArray, prompts: IntArray | None = None
    ) -> list[FloatArray]:
        """``log q(p | h)`` per prefix of each prompt (entry 0 is 0), all prompts or ``prompts``."""
        z = self._split(self.matrix @ np.asarray(theta, dtype=np.float64))
        which = range(len(self.spaces)) if prompts is None else prompts
        out = []
        for i in which:
            space = self.spaces[int(i)]
            lc = z[int(i)] - space.sibling_logsumexp(z[int(i)])
            lc[0] = 0.0
            out.append(lc)
        return out

    def policies(self, theta: FloatArray, prompts: IntArray | None = None) -> list[Policy]:
        """The policy of every prompt (or of ``prompts``) at ``theta``."""
        which = np.arange(len(self.spaces)) if prompts is None else np.asarray(prompts)
        return [
            Policy.from_log_conditionals(self.spaces[int(i)], lc, softmax=True)
            for i, lc in zip(which, self.log_conditionals(theta, which), strict=True)
        ]

    def pullback(self, grads: dict[int, FloatArray]) -> FloatArray:
        """``sum_x Phi_x^T g_x`` for per-prefix gradients ``g_x`` of some prompts."""
        full = np.zeros(int(self.offsets[-1]))
        for i, g in grads.items():
            full[self.offsets[i] : self.offsets[i + 1]] = g
        return np.asarray(self.matrix.T @ full)

    def scaling(
        self,
        theta: FloatArray,
        prompts: IntArray,
        prefix_weights: Sequence[FloatArray] | None = None,
    ) -> FloatArray:
        """A diagonal preconditioner: ``n / sum_x |Phi_x|^T (w_x(h) q_x(p | h))`` per parameter.

        ``w_x(h)`` is ``q_x(h)`` at ``theta``, or the held ``prefix_weights`` of the
        per-token losses; ``q_x(p | h)`` is the conditional at ``theta`` of the move into
        prefix ``p``.  The curvature of every objective in the logit of ``p`` carries the
        factor ``w(h) q(p | h)``; with ``prefix`` features this is the tabular trainer's
        ``1 / (q(h) q(u | h))`` (a diagonal Fisher metric).
        """
        mass = np.zeros(int(self.offsets[-1]))
        log_conds = self.log_conditionals(theta, prompts)
        for k, (i, lc) in enumerate(zip(prompts, log_conds, strict=True)):
            space = self.spaces[int(i)]
            lo = int(self.offsets[int(i)])
            if prefix_weights is None:
                child = np.exp(space.path_sum(lc)[1:])
            else:
                child = prefix_weights[k][space.parent[1:]] * np.exp(lc[1:])
            mass[lo + 1 : lo + space.n_prefixes] = child
        total = np.asarray(self.abs_matrix.T @ mass)
        return len(prompts) / np.maximum(total, 1e-300)


@dataclass(frozen=True)
class ShareObjective:
    """One objective over the training prompts of a suite.

    Attributes
    ----------
    name : str
        ``'rl'`` or an SD spec of :func:`tilt.objectives.parse_objective`
        (``'jsd=0.5'``, ``'discount=0.9'``, ...); kept as written.
    bases : tuple of Policy
        ``pi0`` of every prompt (the initial student).
    model : ContextModel or None
        Required by the SD objectives.
    demos : str
        Demonstration distribution (:func:`tilt.context.demonstrations`).
    anchor, beta : float
        ``b >= 0`` for the objectives that take an anchor (``sequence``,
        ``token``, ``hybrid``); ``beta > 0`` for ``rl``.

    Raises
    ------
    ValueError
        On an unknown spec or a parameter out of range (the message lists the
        accepted forms), an anchor where it does not apply, ``beta <= 0`` for
        ``rl``, or an SD objective without a context model.
    """

    name: str
    bases: tuple[Policy, ...]
    model: ContextModel | None = None
    demos: str = "own"
    anchor: float = 0.0
    beta: float = 0.1

    def __post_init__(self) -> None:
        parsed = self.parsed
        if not (math.isfinite(self.anchor) and self.anchor >= 0):
            raise ValueError(f"anchor must be finite and >= 0, got {self.anchor!r}")
        if parsed.sd is None:
            if not (math.isfinite(self.beta) and self.beta > 0):
                raise ValueError(
                    f"RL needs beta > 0, got {self.beta!r}: beta = 0 has no finite optimum"
                )
            if self.anchor:
                raise ValueError("objective 'rl' takes no anchor (RL is anchored by beta)")
            return
        if self.model is None:
            raise ValueError(f"objective {self.name!r} needs a context model")
        if self.demos not in SHARED_DEMOS:
            raise ValueError(
                f"demonstrations {self.demos!r} are not built for exact shared training "
                f"(tempered needs an alpha, reference a rollout per prompt): use "
                f"{' or '.join(SHARED_DEMOS)}"
            )
        if self.anchor and not parsed.sd.kind.takes_anchor:
            raise ValueError(
                f"objective {self.name!r} takes no anchor: the anchor applies to sequence, "
                "token and hybrid"
            )

    @cached_property
    def parsed(self) -> TrainObjective:
        """The spec, parsed (``rl`` or :class:`tilt.objectives.Objective`)."""
        return parse_train_objective(self.name)

    @property
    def per_token(self) -> bool:
        """Whether the loss holds the prefix weights (and other quantities of the student) fixed."""
        return self.parsed.name in PER_PREFIX

    def bind(self, index: int, teacher: Policy, demo_source: Policy) -> Bound:
        """Prompt ``index``'s loss: teachers from ``teacher``, demonstrations from ``demo_source``.

        ``Bound.value_and_grad(log_cond, held)`` gives ``(F_x, dF_x/dz)`` at the
        held quantities ``Bound.held(log_cond)`` (``None`` for the losses over
        whole rollouts).
        """
        base = self.bases[index]
        d = base if self.parsed.sd is None else demonstrations(demo_source, self.demos)
        exact = ExactObjective(
            self.parsed, base, self.model, lambda _policy: d, self.anchor, self.beta
        )
        return exact.bind(teacher)


def held_quantities(
    student: SharedStudent, losses: Sequence[Bound], theta: FloatArray, prompts: IntArray
) -> list[Held | None]:
    """Each loss's held quantities at the student ``theta`` (prompts in the order of ``losses``)."""
    return [
        loss.held(lc)
        for loss, lc in zip(losses, student.log_conditionals(theta, prompts), strict=True)
    ]


def shared_value_and_grad(
    student: SharedStudent,
    prompts: IntArray,
    losses: Sequence[Bound],
    held: Sequence[Held | None],
    theta: FloatArray,
) -> tuple[float, FloatArray]:
    """``F = (1/n) sum_x F_x`` over ``prompts`` and ``dF/dtheta`` (the pull-back), at ``held``."""
    value = 0.0
    grads = {}
    for i, loss, lc, h in zip(
        prompts, losses, student.log_conditionals(theta, prompts), held, strict=True
    ):
        v, g = loss.value_and_grad(lc, h)
        value += v
        grads[int(i)] = g
    n = len(prompts)
    return value / n, student.pullback(grads) / n
