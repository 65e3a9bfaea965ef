"""Shared by the objectives: demonstrations, the anchor, the tilt score, per-prefix policies."""

from __future__ import annotations

import math

import numpy as np

from tilt._checks import check_real
from tilt._numerics import FloatArray
from tilt.context import DEMOS, ContextModel, demonstrations
from tilt.context.generic import checked_output
from tilt.policy import Policy
from tilt.space import check_same_space

__all__ = [
    "Demos",
    "resolve_demos",
    "check_anchor",
    "check_model",
    "model_output",
    "tilt_score",
    "from_prefix_logits",
]

Demos = str | Policy
"""A demonstration distribution, or the name of one built from the policy (``DEMOS``)."""


def resolve_demos(policy: Policy, demos: Demos, alpha: float = 1.0) -> Policy:
    """``demos`` as a distribution over ``policy``'s rollouts (a name is built from ``policy``)."""
    if isinstance(demos, str):
        return demonstrations(policy, demos, alpha)
    if not isinstance(demos, Policy):
        raise TypeError(
            f"demos must be a name ({', '.join(DEMOS)}) or a Policy over the same rollouts, "
            f"got {type(demos).__name__}"
        )
    check_same_space(policy.space, demos.space, "the policy and the demonstrations")
    return demos


def check_model(model: object) -> ContextModel:
    """``model`` if it is a :class:`~tilt.context.ContextModel`; ``TypeError`` otherwise."""
    if not isinstance(model, ContextModel):
        raise TypeError(
            "model must be a ContextModel (tilt.context.make_context or a subclass), "
            f"got {type(model).__name__}"
        )
    return model


def model_output(model: ContextModel, method: str, policy: Policy, demos: Policy) -> FloatArray:
    """``model.<method>(policy, demos)``, checked where tilt calls it.

    For ``tilt_score``, ``token_log_target``, ``token_mean_log_target`` and
    ``forward_log_prob``: a user's model that returns the wrong shape, ``nan`` or
    ``+inf`` is named in a ``ValueError`` (the built-ins always pass).
    """
    check_model(model)
    return checked_output(getattr(model, method)(policy, demos), policy, model, method)


def check_anchor(anchor: float) -> float:
    """``anchor`` as a float; ``TypeError`` unless a number, ``ValueError`` unless finite
    and ``>= 0``."""
    anchor = check_real("anchor", anchor)
    if not math.isfinite(anchor) or anchor < 0:
        raise ValueError(f"anchor b must be finite and >= 0, got {anchor!r}")
    return anchor


def tilt_score(
    policy: Policy, model: ContextModel, demos: Demos = "own", alpha: float = 1.0
) -> FloatArray:
    """``S(y) = E_{c ~ D}[log pi(y | c) - log pi(y)]`` for every rollout.

    ``demos`` is a name from :data:`tilt.context.DEMOS` (built from ``policy``)
    or a demonstration distribution.  ``S(y) = -inf`` where some demonstration's
    teacher gives ``y`` no mass (``E_c log T_c(y) = -inf``).
    """
    score = model_output(model, "tilt_score", policy, resolve_demos(policy, demos, alpha))
    # where pi(y) = 0 every teacher gives y no mass too, so E_c log T_c(y) = -inf: one
    # convention for the structured forms (finite there) and the generic path (-inf)
    return np.where(np.isneginf(policy.log_prob), -np.inf, score)


def from_prefix_logits(policy: Policy, logits: FloatArray) -> Policy:
    """The policy ``q(u | h) ∝ exp(logits[hu])``, one softmax per sibling group.

    Where every logit of a group is ``-inf`` (no signal and no mass) the group
    keeps ``policy``'s own conditionals.
    """
    space = policy.space
    log_cond = space.sibling_log_softmax(logits, fallback=policy.log_conditionals())
    return Policy.from_log_conditionals(space, log_cond, softmax=True, copy=False)
