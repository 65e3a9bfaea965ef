"""Every optimum tilt computes: RL's and every self-distillation objective, by spec string.

One spec names each objective everywhere (library, ``tilt.compare --sd``,
``tilt.train --objective``, figures):

| spec | what it is (fixed point; ``docs/theory.md``) | module |
|---|---|---|
| ``sequence`` | on-policy reverse KL, ``q ∝ pi exp(S / (1 + b))`` | sequence |
| ``hybrid=beta`` | sequence SD plus the task reward, ``+ r / beta`` | sequence |
| ``forward`` | fine-tuning on teacher samples, ``q = E_c T_c`` | forward |
| ``token`` | per-token reverse KL, ``q(u | h) ∝ exp E_c log T_c(u | h)`` | per_prefix |
| ``token-forward`` | per-token forward KL / ``k3``, ``q(u | h) = E_c T_c(u | h)`` | per_prefix |
| ``jsd=a`` | per-token generalised JSD, ``0 <= a <= 1`` | per_prefix |
| ``discount=g`` | sampled-token RKL, return-to-go discounted by ``g`` | per_prefix |
| ``length-weighted`` | sampled-token RKL averaged over each sequence's length | per_prefix |

A new objective is one function and one :data:`OBJECTIVES` entry.  The anchor
``b KL(q || pi)`` applies to ``sequence``, ``hybrid`` and ``token``; the
others refuse ``b > 0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from tilt._checks import check_instance
from tilt.context import ContextModel
from tilt.objectives._common import Demos, check_anchor, resolve_demos, tilt_score
from tilt.objectives.forward import sd_forward
from tilt.objectives.per_prefix import (
    jsd_conditionals,
    sd_discount,
    sd_jsd,
    sd_length_weighted,
    sd_token,
    sd_token_forward,
)
from tilt.objectives.presets import PRESETS, Preset, preset
from tilt.objectives.rl import (
    MATCH_TOLERANCE,
    MatchedRL,
    iterate,
    matched_beta,
    rl_matched,
    rl_optimum,
)
from tilt.objectives.sequence import sd_hybrid, sd_sequence
from tilt.policy import Policy

__all__ = [
    "check_anchor",
    "SD_METHODS",
    "rl_optimum",
    "MatchedRL",
    "MATCH_TOLERANCE",
    "rl_matched",
    "matched_beta",
    "iterate",
    "OBJECTIVES",
    "PRESETS",
    "Preset",
    "preset",
    "Objective",
    "ObjectiveKind",
    "parse_objective",
    "objective_forms",
    "sd_optimum",
    "tilt_score",
    "sd_sequence",
    "sd_hybrid",
    "sd_forward",
    "sd_token",
    "sd_token_forward",
    "sd_jsd",
    "sd_discount",
    "sd_length_weighted",
    "jsd_conditionals",
    "Demos",
]

SD_METHODS = ("sequence", "token", "forward")
"""The three idealised SD objectives of the first release (every spec of
:data:`OBJECTIVES` is accepted by :func:`sd_optimum`)."""

Solver = Callable[[Policy, ContextModel, Policy, float, float], Policy]
"""``solve(policy, model, demos, anchor, param) -> optimum``."""


@dataclass(frozen=True)
class ObjectiveKind:
    """One family of objectives: its name, its parameter, its solver.

    Attributes
    ----------
    name : str
    param : str or None
        ``None`` (no parameter), ``'unit'`` (a number in ``[0, 1]``) or
        ``'positive'`` (a number ``> 0``, ``inf`` allowed).
    symbol : str
        The parameter's name in messages (``a``, ``g``, ``beta``).
    takes_anchor : bool
    solve : callable
    summary : str
        One line for ``--help`` and listings.
    """

    name: str
    param: str | None
    symbol: str
    takes_anchor: bool
    solve: Solver
    summary: str

    def form(self) -> str:
        """How a spec of this kind is written, for example ``jsd=A (0 <= A <= 1)``."""
        if self.param is None:
            return self.name
        bound = "0 <= {s} <= 1" if self.param == "unit" else "{s} > 0"
        sym = self.symbol.upper()
        return f"{self.name}={sym} ({bound.format(s=sym)})"


OBJECTIVES: dict[str, ObjectiveKind] = {
    kind.name: kind
    for kind in (
        ObjectiveKind(
            "sequence",
            None,
            "",
            True,
            lambda p, m, d, b, _: sd_sequence(p, m, d, anchor=b),
            "on-policy reverse KL over whole rollouts (the optimum pi exp(S) / Z)",
        ),
        ObjectiveKind(
            "token",
            None,
            "",
            True,
            lambda p, m, d, b, _: sd_token(p, m, d, anchor=b),
            "per-token reverse KL (full vocabulary, or sampled-token without return-to-go)",
        ),
        ObjectiveKind(
            "forward",
            None,
            "",
            False,
            lambda p, m, d, b, _: sd_forward(p, m, d),
            "fine-tuning on teacher samples (sequence forward KL)",
        ),
        ObjectiveKind(
            "token-forward",
            None,
            "",
            False,
            lambda p, m, d, b, _: sd_token_forward(p, m, d),
            "per-token forward KL (and the k3 estimator)",
        ),
        ObjectiveKind(
            "jsd",
            "unit",
            "a",
            False,
            lambda p, m, d, b, a: sd_jsd(p, m, d, a=a),
            "per-token generalised JSD with coefficient a (0 forward, 1 reverse)",
        ),
        ObjectiveKind(
            "discount",
            "unit",
            "g",
            False,
            lambda p, m, d, b, g: sd_discount(p, m, d, g=g),
            "sampled-token reverse KL as an advantage, return-to-go discounted by g",
        ),
        ObjectiveKind(
            "length-weighted",
            None,
            "",
            False,
            lambda p, m, d, b, _: sd_length_weighted(p, m, d),
            "sampled-token reverse KL, each sequence's tokens averaged (TRL's reduction)",
        ),
        ObjectiveKind(
            "hybrid",
            "positive",
            "beta",
            True,
            lambda p, m, d, b, beta: sd_hybrid(p, m, d, anchor=b, beta=beta),
            "sequence SD plus the task reward at KL coefficient beta",
        ),
    )
}
"""Every objective family by name."""


def objective_forms() -> str:
    """The accepted spec forms, comma-separated (for messages and ``--help``)."""
    return ", ".join(kind.form() for kind in OBJECTIVES.values())


@dataclass(frozen=True)
class Objective:
    """A parsed spec: ``Objective('jsd=0.5', 'jsd', 0.5)``.

    Attributes
    ----------
    spec : str
        The spec as written (column names use it verbatim).
    name : str
        A key of :data:`OBJECTIVES`.
    param : float or None
    """

    spec: str
    name: str
    param: float | None = None

    @property
    def kind(self) -> ObjectiveKind:
        """The family this objective belongs to."""
        return OBJECTIVES[self.name]

    def optimum(
        self,
        policy: Policy,
        model: ContextModel,
        demos: Demos = "own",
        alpha: float = 1.0,
        anchor: float = 0.0,
    ) -> Policy:
        """The fixed point of this objective from ``policy`` with teachers ``model``."""
        anchor = check_anchor(anchor)
        if anchor > 0 and not self.kind.takes_anchor:
            raise ValueError(
                f"objective {self.spec!r} takes no anchor (got b = {anchor:g}): the anchor "
                "b KL(q || pi) applies to sequence, token and hybrid"
            )
        resolved = resolve_demos(policy, demos, alpha)
        param = math.nan if self.param is None else self.param
        return self.kind.solve(policy, model, resolved, anchor, param)


def parse_objective(spec: str | Objective) -> Objective:
    """Parse a spec string such as ``'jsd=0.5'``.

    Raises
    ------
    ValueError
        On an unknown name, a missing or extra parameter, or one out of range;
        the message lists the accepted forms.
    """
    if isinstance(spec, Objective):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"an objective spec must be a string, got {type(spec).__name__}")
    name, sep, text = spec.strip().partition("=")
    kind = OBJECTIVES.get(name.strip())
    forms = f"use one of {objective_forms()}"
    if kind is None:
        raise ValueError(f"unknown SD objective {spec!r}: {forms}")
    if kind.param is None:
        if sep:
            raise ValueError(f"objective {kind.name!r} takes no parameter, got {spec!r}: {forms}")
        return Objective(spec, kind.name)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"objective {spec!r} needs a number: write {kind.form()}") from None
    if (
        math.isnan(value)
        or (kind.param == "unit" and not 0.0 <= value <= 1.0)
        or (kind.param == "positive" and not value > 0)
    ):
        raise ValueError(f"objective {spec!r} is out of range: write {kind.form()}")
    return Objective(spec, kind.name, value)


def sd_optimum(
    policy: Policy,
    model: ContextModel,
    method: str | Objective = "sequence",
    demos: Demos = "own",
    alpha: float = 1.0,
    anchor: float = 0.0,
) -> Policy:
    """The fixed point of the SD objective ``method`` (a spec string, see :data:`OBJECTIVES`).

    ``forward`` ignores the anchor (it is an off-policy fit); the other
    objectives without an anchor refuse ``b > 0``.

    Examples
    --------
    >>> from tilt.tasks import named_task
    >>> from tilt.space import enumerate_rollouts
    >>> from tilt.policy import base_policy
    >>> from tilt.context import make_context
    >>> pi0 = base_policy(enumerate_rollouts(named_task("grid3")))
    >>> q = sd_optimum(pi0, make_context("edge", 2.0), "jsd=0.5")
    >>> round(float(q.prob.sum()), 12)
    1.0
    """
    check_instance("policy", policy, Policy)
    objective = parse_objective(method)
    if objective.name == "forward":
        anchor = 0.0
    return objective.optimum(policy, model, demos, alpha, anchor)
