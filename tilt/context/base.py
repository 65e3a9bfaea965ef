"""The context-model protocol: ``T_c(y) = pi(y | c)`` for a policy and a demonstration."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from tilt._checks import check_real
from tilt._numerics import FloatArray, IntArray
from tilt.context.generic import (
    TeacherClasses,
    generic_forward_log_prob,
    generic_teacher_classes,
    generic_tilt_score,
    generic_token_log_target,
    generic_token_mean_log_target,
)
from tilt.policy import Policy

__all__ = ["ContextModel", "MarkovForm", "MAX_GAMMA", "boost_gain", "check_strength", "digest"]

MAX_GAMMA = 1e4
"""Largest ``gamma`` of ``edge`` and ``kernel``: the honest bound of what float64 resolves.

The tilt score is ``gamma x (a sum of demonstration marginals)`` plus bounded terms, and
the marginals carry rounding of about ``2^-52`` each, so ``log q`` moves by about
``gamma x moves x 2^-52`` nats: ``2e-12`` per move at ``1e4``.  Beyond, rollouts whose
scores tie in exact arithmetic are told apart by rounding: measured on ``grid4`` with
its default logits, the two tied sequence-SD rollouts get 0.50003 / 0.49997 at
``gamma = 1e12``, and ``routes`` with a uniform base 0.151 -> 0.1 between ``1e12`` and
``1e20`` (a value that stays put from ``gamma ~ 1e3`` on there).
"""


@dataclass(frozen=True)
class MarkovForm:
    """A context model's tilt score as a sum over moves (the DP engine's input).

    Attributes
    ----------
    kind : str
        ``'next-move'``: the teacher multiplies the conditional of the
        demonstration's next move by ``exp(strength)`` and renormalises at every
        prefix (``edge``), so every per-prefix objective is a per-state problem;
        ``'move-sum'``: ``S(y) = strength * sum of D's edge marginals along y``
        plus a constant (``kernel``), a sequence-level form only.
    strength : float
    per_prefix_reason : str or None
        Why the per-prefix (token-level) objectives have no Markov form with this
        model, or ``None`` when they have one.
    """

    kind: str
    strength: float
    per_prefix_reason: str | None = None


class ContextModel:
    """A context model ``T_c(y) = pi(y | c)``; subclass it to define your own.

    A subclass sets ``name`` and implements :meth:`teacher_log_prob`; the
    optima then work through the generic paths, at a cost of one teacher per
    demonstration.  It may override :meth:`tilt_score`,
    :meth:`token_log_target` and :meth:`forward_log_prob` with faster exact
    forms (the built-ins do); ``tests/`` checks both paths agree.

    Requirements: for every policy ``pi`` and demonstration ``c``, ``T_c`` is a
    distribution over the rollouts with ``T_c(y) = 0`` wherever ``pi(y) = 0``.

    Examples
    --------
    >>> import numpy as np
    >>> class Ignore(ContextModel):
    ...     name = "ignore"
    ...     def teacher_log_prob(self, policy, demos):
    ...         return np.tile(policy.log_prob, (len(demos), 1))
    """

    name: str = "custom"
    strength: float = 0.0
    token_mean_normalised: bool = False
    """Whether :meth:`token_mean_log_target` returns every sibling group normalised (to
    rounding) in a new array each call, so that ``token-forward`` takes that array over as
    its conditionals, without a softmax.  A model sets it only when its own method
    guarantees both (``edge`` does)."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # a subclass that overrides token_mean_log_target vouches for it only by saying so
        if "token_mean_log_target" in cls.__dict__ and "token_mean_normalised" not in cls.__dict__:
            cls.token_mean_normalised = False

    def teacher_log_prob(self, policy: Policy, demos: IntArray) -> FloatArray:
        """``log T_c(y)`` for each demonstration index ``c`` in ``demos``: shape (k, n_rollouts)."""
        raise NotImplementedError(f"{type(self).__name__} must implement teacher_log_prob")

    def tilt_score(self, policy: Policy, demos: Policy) -> FloatArray:
        """``S(y) = E_{c~D} log T_c(y) - log pi(y)``, shape (n_rollouts,)."""
        return generic_tilt_score(self, policy, demos)

    def token_log_target(self, policy: Policy, demos: Policy) -> FloatArray:
        """``E_c[log T_c(u | h) | T_c(h) > 0]`` per prefix, shape (n_prefixes,)."""
        return generic_token_log_target(self, policy, demos)

    def forward_log_prob(self, policy: Policy, demos: Policy) -> FloatArray:
        """``log E_{c~D} T_c(y)``, shape (n_rollouts,)."""
        return generic_forward_log_prob(self, policy, demos)

    def teacher_classes(self, policy: Policy, demos: Policy) -> TeacherClasses:
        """The teachers' conditionals at every prefix, grouped into classes of demonstrations.

        What the per-token objectives other than ``token`` need (``token-forward``,
        ``jsd=a``): the whole distribution over ``c ~ D`` of ``T_c(. | h)``, not only
        its mean log.  See :class:`~tilt.context.generic.TeacherClasses`.
        """
        return generic_teacher_classes(self, policy, demos)

    def token_mean_log_target(self, policy: Policy, demos: Policy) -> FloatArray:
        """``log E_c[T_c(u | h) | T_c(h) > 0]`` per prefix, shape (n_prefixes,).

        The target of per-token forward KL; by default reduced from
        :meth:`teacher_classes`.
        """
        return generic_token_mean_log_target(self, policy, demos)

    def describe(self) -> str:
        """Short label such as ``edge(gamma=2)``."""
        return f"{self.name}"

    def markov_form(self) -> MarkovForm | None:
        """How the tilt score decomposes over moves on an acyclic space, or ``None``.

        The DP engine (:mod:`tilt.engines.dp`) asks this, never a model's name: a
        model that returns a :class:`MarkovForm` of a kind the engine knows runs
        there; ``None`` keeps it on the enumeration engine, with
        :meth:`no_markov_reason` as the reason.
        """
        return None

    def no_markov_reason(self) -> str:
        """Why :meth:`markov_form` is ``None``, for one line of a report."""
        return f"the DP engine has no Markov form for the {self.name!r} context model"


def check_strength(name: str, value: float, upper: float | None = None) -> float:
    value = check_real(name, value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    if upper is None and value > MAX_GAMMA:
        raise ValueError(
            f"{name} = {value:g} is too large: above {MAX_GAMMA:g}, the rounding of the "
            f"demonstrations' marginals times {name} moves log-probabilities by more than "
            f"1e-11 nats per move; use 0 <= {name} <= {MAX_GAMMA:g}"
        )
    if upper is not None and value >= upper:
        raise ValueError(
            f"{name} must be < {upper:g}, got {value!r}: "
            f"{name} = 1 would copy the demonstration exactly"
        )
    return value


def boost_gain(gamma: float, log_cond: FloatArray) -> FloatArray:
    """``gamma - log(1 + (e^gamma - 1) p)`` from ``log p``, with no cancellation at any ``gamma``.

    Computed as ``-log(e^-gamma + (1 - e^-gamma) p)``: what the boosted move's log-conditional
    gains, bounded by ``-log p`` however large ``gamma`` is.  The difference of the two terms,
    both near ``gamma``, would lose ``gamma x 2^-53`` nats (0.1 nats at ``gamma = 1e15``).
    """
    log_cond = np.asarray(log_cond, dtype=np.float64)
    if gamma == 0:
        return np.zeros_like(log_cond)
    with np.errstate(divide="ignore"):
        return -np.logaddexp(-gamma, math.log(-math.expm1(-gamma)) + log_cond)


def digest(values: FloatArray) -> str:
    """A short hash of an array's bytes (keys of per-policy memos)."""
    return hashlib.blake2b(np.ascontiguousarray(values).tobytes(), digest_size=16).hexdigest()
