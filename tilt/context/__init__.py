"""Demonstrations and context models: how the model behaves with ``c`` in context.

A context model maps a tabular policy ``pi`` and a demonstration ``c`` to a
teacher ``T_c(y) = pi(y | c)`` (``docs/theory.md``, "Self-distillation").  The
one method a model must define is :meth:`ContextModel.teacher_log_prob`; the
quantities the optima need have generic implementations through it
(:mod:`tilt.context.generic`):

* the tilt score ``S(y) = E_c log T_c(y) - log pi(y)``;
* the token target ``E_c[log T_c(u | h) | T_c(h) > 0]`` at every prefix;
* the forward mixture ``log E_c T_c(y)``.

The built-in models, one module each, override them with structured forms:
``copy`` in closed form (:mod:`tilt.context.copy`), ``edge`` from the edge
marginals of the demonstrations (:mod:`tilt.context.edge`), ``kernel`` from edge
marginals plus one bottom-up pass per block of demonstrations
(:mod:`tilt.context.kernel`).  A new built-in is one module and one entry of
:data:`CONTEXT_MODELS`.
"""

from __future__ import annotations

from tilt._checks import check_instance
from tilt.context.base import ContextModel, MarkovForm
from tilt.context.copy import CopyContext
from tilt.context.demos import DEMOS, demonstrations, edge_marginals, point_mass, reference_rollout
from tilt.context.edge import EdgeContext
from tilt.context.generic import (
    GENERIC_LIMIT,
    TeacherClasses,
    generic_forward_log_prob,
    generic_teacher_classes,
    generic_tilt_score,
    generic_token_log_target,
    generic_token_mean_log_target,
)
from tilt.context.kernel import KernelContext

__all__ = [
    "DEMOS",
    "CONTEXTS",
    "CONTEXT_MODELS",
    "DEFAULT_STRENGTH",
    "GENERIC_LIMIT",
    "demonstrations",
    "edge_marginals",
    "reference_rollout",
    "point_mass",
    "ContextModel",
    "MarkovForm",
    "CopyContext",
    "EdgeContext",
    "KernelContext",
    "make_context",
    "generic_tilt_score",
    "generic_token_log_target",
    "generic_forward_log_prob",
    "generic_teacher_classes",
    "generic_token_mean_log_target",
    "TeacherClasses",
]

CONTEXT_MODELS: dict[str, type[ContextModel]] = {
    "copy": CopyContext,
    "edge": EdgeContext,
    "kernel": KernelContext,
}
"""The built-in context models by name; each takes one strength (``lam`` or ``gamma``)."""

CONTEXTS = tuple(CONTEXT_MODELS)
"""Names accepted by :func:`make_context`."""

DEFAULT_STRENGTH = {"copy": 0.5, "edge": 2.0, "kernel": 0.5}
"""The strength of each built-in model when none is given: ``lam`` for copy, ``gamma``
otherwise."""


def make_context(name: str, strength: float | None = None) -> ContextModel:
    """The built-in context model ``name`` at ``strength`` (``lam`` or ``gamma``).

    ``strength=None`` takes :data:`DEFAULT_STRENGTH`.

    Raises
    ------
    TypeError
        When ``name`` is not a string or ``strength`` not a number.
    ValueError
        On an unknown name, a negative strength, ``lam >= 1`` for ``copy``, or
        ``gamma`` above :data:`~tilt.context.base.MAX_GAMMA`.
    """
    check_instance("name", name, str)
    if name not in CONTEXT_MODELS:
        raise ValueError(f"unknown context model {name!r}: choose one of {', '.join(CONTEXTS)}")
    if strength is None:
        strength = DEFAULT_STRENGTH[name]
    return CONTEXT_MODELS[name](strength)  # type: ignore[call-arg]
