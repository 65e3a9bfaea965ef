"""SD objectives by spec string on the DP engine: which have a Markov form, and the optimum.

A spec is the string of :mod:`tilt.objectives` (``sequence``, ``token``,
``forward``, ``token-forward``, ``jsd=a``, ``discount=g``, ``length-weighted``,
``hybrid=beta``), parsed by the shared :func:`tilt.objectives.parse_objective`.
:func:`why_no_markov_form` says why an objective has no Markov form on an acyclic
space (``None`` when it has one); :func:`dp_optimum` computes it.  Each
objective is one entry of :data:`DP_OBJECTIVES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tilt.context import ContextModel
from tilt.engines.dp.context import markov_form
from tilt.engines.dp.optima import sd_discount, sd_hybrid, sd_sequence, sd_token
from tilt.engines.dp.per_prefix import sd_jsd, sd_length_weighted, sd_token_forward
from tilt.engines.dp.policy import Demos, MarkovPolicy
from tilt.objectives import OBJECTIVES, parse_objective

__all__ = [
    "ObjectiveSpec",
    "parse_spec",
    "DP_OBJECTIVES",
    "why_no_markov_form",
    "needs_depth",
    "dp_optimum",
]


@dataclass(frozen=True)
class ObjectiveSpec:
    """``name`` (a key of :data:`tilt.objectives.OBJECTIVES`) and ``param`` (float or None)."""

    name: str
    param: float | None = None


def parse_spec(spec: object) -> ObjectiveSpec:
    """Parse a spec string with :func:`tilt.objectives.parse_objective` (the shared parser).

    Accepts an already parsed object (anything with ``.name`` and ``.param``).
    """
    if hasattr(spec, "name") and hasattr(spec, "param"):
        return ObjectiveSpec(str(spec.name), spec.param)
    parsed = parse_objective(spec)  # type: ignore[arg-type]
    return ObjectiveSpec(parsed.name, parsed.param)


Optimum = Callable[[MarkovPolicy, ContextModel, ObjectiveSpec, Demos, float, float], MarkovPolicy]

DP_OBJECTIVES: dict[str, Optimum] = {
    "sequence": lambda p, m, s, d, al, an: sd_sequence(p, m, d, al, an),
    "token": lambda p, m, s, d, al, an: sd_token(p, m, d, al, an),
    "token-forward": lambda p, m, s, d, al, an: sd_token_forward(p, m, d, al),
    "jsd": lambda p, m, s, d, al, an: sd_jsd(p, m, float(s.param or 0.0), d, al),
    "discount": lambda p, m, s, d, al, an: sd_discount(p, m, float(s.param or 0.0), d, al),
    "length-weighted": lambda p, m, s, d, al, an: sd_length_weighted(p, m, d, al),
    "hybrid": lambda p, m, s, d, al, an: sd_hybrid(
        p, m, d, al, an, beta=float("inf") if s.param is None else s.param
    ),
}
"""The objectives with a Markov form, by name."""

_PER_PREFIX = ("token", "token-forward", "jsd", "discount", "length-weighted")


def why_no_markov_form(spec: object, model: ContextModel, demos: str = "own") -> str | None:
    """Why ``spec`` with ``model`` (and ``demos``) has no Markov form here, or ``None``.

    Every demonstration kind has one (``own``, ``uniform``, ``tempered`` are chains
    conditioned on ``C``; ``reference`` is a point mass, a chain of probability 1
    along one rollout), so only the objective and the context model decide.
    """
    parsed = parse_spec(spec)
    try:
        form = markov_form(model)
    except ValueError as exc:
        return str(exc)
    if parsed.name == "forward":
        return (
            "forward SD's mixture E_c T_c(y) sums one teacher per demonstration at every "
            "rollout: no Markov form; use --engine enumerate on a small space"
        )
    if form.per_prefix_reason is not None and parsed.name in _PER_PREFIX:
        return f"{parsed.name} SD with {model.name} {form.per_prefix_reason}"
    return None


def needs_depth(spec: object) -> bool:
    """Whether the objective needs ``(depth, node)`` states (``length-weighted``)."""
    return parse_spec(spec).name == "length-weighted"


def dp_optimum(
    policy: MarkovPolicy,
    model: ContextModel,
    spec: object,
    demos: Demos = "own",
    alpha: float = 1.0,
    anchor: float = 0.0,
) -> MarkovPolicy:
    """The optimum of the SD objective ``spec`` from ``policy``, as a Markov policy.

    Raises
    ------
    ValueError
        With the one-line reason of :func:`why_no_markov_form` when it has no Markov form.
    """
    parsed = parse_spec(spec)
    reason = why_no_markov_form(parsed, model)
    if reason is not None:
        raise ValueError(reason)
    if anchor > 0 and not OBJECTIVES[parsed.name].takes_anchor:
        raise ValueError(
            f"objective {parsed.name!r} takes no anchor (got b = {anchor:g}): the anchor "
            "b KL(q || pi) applies to sequence, token and hybrid"
        )
    return DP_OBJECTIVES[parsed.name](policy, model, parsed, demos, alpha, anchor)
