"""The shared-weight student and its exact objectives over a suite of prompts.

``logit(h, u, x) = theta . phi(h, u, x)`` (:mod:`tilt.share.features`),
``q(u | h, x) = softmax over avail(h)``.  The objective is the mean over the
training prompts of the tabular trainer's per-prompt objective
(:mod:`tilt._train_estimators`); its gradient in ``theta`` is the pull-back of
the per-prefix gradients, ``dF/dtheta = (1/n) sum_x Phi_x^T dF_x/dz_x``.

Objectives (:data:`OBJECTIVES`; student ``q``, base ``pi0`` = the initial
student, teachers ``T_c`` built by the context model from the teacher policy,
demonstrations ``c ~ D``):

* ``rl``: ``min -E_q[r] + beta KL(q || pi0)`` per prompt (``beta > 0``);
* ``sequence``: ``min E_c KL(q || T_c) + b KL(q || pi0)`` (Gibbs form,
  ``a = E_c log T_c + b log pi0``, ``kappa = 1 + b``);
* ``token``: per-token reverse KL at held prefix weights ``n(h) = q(h)``:
  ``sum_h n(h) KL(q(. | h) || exp(tau) / Z)``, ``tau = E_c log T_c(. | h) + b log pi0(. | h)``;
* ``token-forward``: per-token forward KL at held prefix weights,
  ``sum_h n(h) KL(m(. | h) || q(. | h))``, ``m = E_c T_c(. | h)`` (no anchor).

With ``prefix`` features each is the tabular trainer's loss, so its optimum is
the closed form.  With shared features the per-token losses are *not*
equivalent to their fixed points: the loss as real trainers run it is used.

Teachers (:data:`TEACHERS`): ``frozen`` — teacher and demonstrations from the
initial student; ``live`` — both from the current student (no gradient through
them); ``ema`` — demonstrations from the current student, teacher from the
student at ``theta_ema``, updated ``theta_ema <- (1 - rate) theta_ema + rate theta``
after every step (SDPO's default rate 0.05).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from tilt._train_estimators import gibbs_value_and_grad, token_value_and_grad
from tilt.context import ContextModel, demonstrations
from tilt.policy import Policy
from tilt.share.features import SharedFeatures
from tilt.space import FloatArray, IntArray, RolloutSpace

__all__ = [
    "OBJECTIVES",
    "TEACHERS",
    "EMA_RATE",
    "SharedStudent",
    "ShareObjective",
    "token_forward_value_and_grad",
]

OBJECTIVES = ("rl", "sequence", "token", "token-forward")
"""Objectives the shared trainer runs."""

TEACHERS = ("frozen", "live", "ema")
"""Where the teacher comes from (see the module docstring)."""

EMA_RATE = 0.05
"""SDPO's default rate of the EMA teacher."""

PromptFn = Callable[[FloatArray, FloatArray], tuple[float, FloatArray]]


class SharedStudent:
    """A log-linear policy over many prompts: one ``theta``, one feature matrix per prompt.

    Parameters
    ----------
    spaces : sequence of RolloutSpace
    features : SharedFeatures
        Validated by :func:`tilt.share.features.make_features`.
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
        """A diagonal preconditioner: ``n / sum_x |Phi_x|^T w_x(parent)`` per parameter.

        ``w_x(h)`` is ``q_x(h)`` at ``theta``, or the held ``prefix_weights`` of the
        per-token losses.  With ``prefix`` features it is the tabular trainer's ``1 / q(h)``.
        """
        mass = np.zeros(int(self.offsets[-1]))
        if prefix_weights is None:
            prefix_weights = [
                np.exp(self.spaces[int(i)].path_sum(lc))
                for i, lc in zip(prompts, self.log_conditionals(theta, prompts), strict=True)
            ]
        for i, weight in zip(prompts, prefix_weights, strict=True):
            space = self.spaces[int(i)]
            lo = int(self.offsets[int(i)])
            mass[lo + 1 : lo + space.n_prefixes] = weight[space.parent[1:]]
        total = np.asarray(self.abs_matrix.T @ mass)
        return len(prompts) / np.maximum(total, 1e-300)


def token_forward_value_and_grad(
    space: RolloutSpace, log_cond: FloatArray, log_mean: FloatArray, prefix_weight: FloatArray
) -> tuple[float, FloatArray]:
    """``sum_h n(h) KL(m(. | h) || q(. | h))`` and its gradient at held ``n``.

    ``dF/dz_p = n(h) (q(p | h) - m(p | h))``; ``log_mean`` is ``log m`` per prefix.
    """
    parent = space.parent[1:]
    m = np.exp(log_mean[1:])
    weight = prefix_weight[parent]
    with np.errstate(invalid="ignore"):
        terms = np.where(m > 0, m * (log_mean[1:] - log_cond[1:]), 0.0)
    value = float(np.multiply(weight, terms).sum())
    out = np.zeros(space.n_prefixes)
    out[1:] = weight * (np.exp(log_cond[1:]) - m)
    return value, out


def _require_finite(values: FloatArray, what: str) -> None:
    if not np.isfinite(values).all():
        raise ValueError(
            f"{what} is -inf somewhere: the optimum puts zero mass there, which no finite "
            "parameters reach (use a context model whose teachers give every rollout mass)"
        )


@dataclass(frozen=True)
class ShareObjective:
    """One objective over the training prompts of a suite.

    Attributes
    ----------
    name : str
        One of :data:`OBJECTIVES`.
    bases : tuple of Policy
        ``pi0`` of every prompt (the initial student).
    model : ContextModel or None
        Required by the SD objectives.
    demos : str
        Demonstration distribution (:func:`tilt.context.demonstrations`).
    anchor, beta : float
        ``b >= 0`` for ``sequence`` and ``token``; ``beta > 0`` for ``rl``.
    """

    name: str
    bases: tuple[Policy, ...]
    model: ContextModel | None = None
    demos: str = "own"
    anchor: float = 0.0
    beta: float = 0.1

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ValueError(
                f"unknown objective {self.name!r} for the shared student: choose one of "
                f"{', '.join(OBJECTIVES)} (other SD specs are not built for shared weights yet)"
            )
        if not (math.isfinite(self.anchor) and self.anchor >= 0):
            raise ValueError(f"anchor must be finite and >= 0, got {self.anchor!r}")
        if self.name == "rl" and not (math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(
                f"RL needs beta > 0, got {self.beta!r}: beta = 0 has no finite optimum"
            )
        if self.name != "rl" and self.model is None:
            raise ValueError(f"objective {self.name!r} needs a context model")
        if self.name in ("rl", "token-forward") and self.anchor:
            raise ValueError(f"objective {self.name!r} takes no anchor (RL is anchored by beta)")

    @property
    def per_token(self) -> bool:
        """Whether the loss holds the prefix weights fixed."""
        return self.name in ("token", "token-forward")

    def bind(self, index: int, teacher: Policy, demo_source: Policy) -> PromptFn:
        """``(log_cond, prefix_weight) -> (value, dF/dz)`` of prompt ``index``."""
        base = self.bases[index]
        space, b = base.space, self.anchor
        if self.name == "rl":
            target = space.correct + self.beta * base.log_prob
            return lambda lc, _w: gibbs_value_and_grad(space, lc, self.beta, target)
        model = self.model
        assert model is not None
        d = demonstrations(demo_source, self.demos)
        if self.name == "sequence":
            target = teacher.log_prob + model.tilt_score(teacher, d) + b * base.log_prob
            _require_finite(target, "E_c log T_c(y)")
            return lambda lc, _w: gibbs_value_and_grad(space, lc, 1.0 + b, target)
        if self.name == "token":
            tau = model.token_log_target(teacher, d) + b * base.log_conditionals()
            _require_finite(tau, "the token target E_c log T_c(u | h)")
            return lambda lc, w: token_value_and_grad(space, lc, 1.0 + b, tau, w)
        log_mean = model.token_mean_log_target(teacher, d)
        return lambda lc, w: token_forward_value_and_grad(space, lc, log_mean, w)
