"""SD objectives by spec string on the DP engine: which have a Markov form, and the optimum.

A spec is the string of ``tilt.objectives`` (``sequence``, ``token``,
``forward``, ``token-forward``, ``jsd=a``, ``discount=g``, ``length-weighted``,
``hybrid=beta``).  :func:`markov_reason` says why an objective has no Markov
form on an acyclic space (``None`` when it has one); :func:`dp_optimum`
computes it.  Each objective is one entry of :data:`DP_OBJECTIVES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from tilt.context import ContextModel
from tilt.dp.context import NOT_MARKOV
from tilt.dp.optima import sd_discount, sd_hybrid, sd_sequence, sd_token
from tilt.dp.per_prefix import sd_jsd, sd_length_weighted, sd_token_forward
from tilt.dp.policy import MarkovPolicy

__all__ = [
    "ObjectiveSpec",
    "parse_spec",
    "DP_OBJECTIVES",
    "markov_reason",
    "needs_depth",
    "dp_optimum",
]

_PARAM = {"jsd": "a", "discount": "g", "hybrid": "beta"}
_NAMES = (
    "sequence",
    "token",
    "forward",
    "token-forward",
    "jsd",
    "discount",
    "length-weighted",
    "hybrid",
)


@dataclass(frozen=True)
class ObjectiveSpec:
    """``name`` (one of the objective names) and ``param`` (float or None)."""

    name: str
    param: float | None = None


def parse_spec(spec: object) -> ObjectiveSpec:
    """Parse a spec string, through ``tilt.objectives.parse_objective`` when it exists.

    Accepts an object with ``.name`` and ``.param`` as is.
    """
    if hasattr(spec, "name") and hasattr(spec, "param"):
        return ObjectiveSpec(str(spec.name), spec.param)
    try:
        from tilt.objectives import parse_objective
    except ImportError:
        return _parse(str(spec))
    parsed = parse_objective(spec)
    return ObjectiveSpec(str(parsed.name), parsed.param)


def _parse(text: str) -> ObjectiveSpec:
    name, eq, raw = text.strip().partition("=")
    if name not in _NAMES:
        raise ValueError(f"unknown SD objective {text!r}: choose one of {', '.join(_NAMES)}")
    if name in _PARAM:
        if not eq:
            raise ValueError(f"SD objective {name} needs a value: {name}={_PARAM[name]}")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r}: {_PARAM[name]} must be a number") from None
        if math.isnan(value) or value < 0 or (name != "hybrid" and value > 1):
            bound = ">= 0" if name == "hybrid" else "in [0, 1]"
            raise ValueError(f"{name}={raw}: {_PARAM[name]} must be {bound}")
        return ObjectiveSpec(name, value)
    if eq:
        raise ValueError(f"SD objective {name} takes no value, got {text!r}")
    return ObjectiveSpec(name)


Optimum = Callable[[MarkovPolicy, ContextModel, ObjectiveSpec, str, float, float], MarkovPolicy]

DP_OBJECTIVES: dict[str, Optimum] = {
    "sequence": lambda p, m, s, d, al, an: sd_sequence(p, m, d, al, an),
    "token": lambda p, m, s, d, al, an: sd_token(p, m, d, al, an),
    "token-forward": lambda p, m, s, d, al, an: sd_token_forward(p, m, d, al),
    "jsd": lambda p, m, s, d, al, an: sd_jsd(p, m, float(s.param or 0.0), d, al),
    "discount": lambda p, m, s, d, al, an: sd_discount(p, m, float(s.param or 0.0), d, al),
    "length-weighted": lambda p, m, s, d, al, an: sd_length_weighted(p, m, d, al),
    "hybrid": lambda p, m, s, d, al, an: sd_hybrid(p, m, float(s.param or 0.0), d, al, an),
}
"""The objectives with a Markov form, by name."""

_PER_PREFIX = ("token", "token-forward", "jsd", "discount", "length-weighted")


def markov_reason(spec: object, model: ContextModel) -> str | None:
    """Why ``spec`` with ``model`` has no Markov form on an acyclic space, or ``None``."""
    parsed = parse_spec(spec)
    if model.name in NOT_MARKOV:
        return NOT_MARKOV[model.name]
    if model.name not in ("edge", "kernel"):
        return f"the DP engine has no Markov form for the {model.name!r} context model"
    if parsed.name == "forward":
        return (
            "forward SD's mixture E_c T_c(y) sums one teacher per demonstration at every "
            "rollout: no Markov form; use --engine enumerate on a small space"
        )
    if model.name == "kernel" and parsed.name in _PER_PREFIX:
        return (
            f"{parsed.name} SD with kernel needs the kernel's token target E_c log r_c(hu), one "
            "backward pass per demonstration: no Markov form; use sequence or hybrid SD, the "
            "edge model, or --engine enumerate"
        )
    return None


def needs_depth(spec: object) -> bool:
    """Whether the objective needs ``(depth, node)`` states (``length-weighted``)."""
    return parse_spec(spec).name == "length-weighted"


def dp_optimum(
    policy: MarkovPolicy,
    model: ContextModel,
    spec: object,
    demos: str = "own",
    alpha: float = 1.0,
    anchor: float = 0.0,
) -> MarkovPolicy:
    """The optimum of the SD objective ``spec`` from ``policy``, as a Markov policy.

    Raises
    ------
    ValueError
        With the one-line reason of :func:`markov_reason` when it has no Markov form.
    """
    parsed = parse_spec(spec)
    reason = markov_reason(parsed, model)
    if reason is not None:
        raise ValueError(reason)
    return DP_OBJECTIVES[parsed.name](policy, model, parsed, demos, alpha, anchor)
