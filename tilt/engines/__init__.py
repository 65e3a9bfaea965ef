"""Engines: what turns an instance into optima and measures, behind one protocol.

An engine instance (:class:`EngineInstance`) holds a base policy, a context
model and the options of an instance, and answers the few questions
:func:`tilt.compare.compare` and the suite ask: RL's optimum, an SD
objective's optimum (or why it has none here), the measures of a policy, its
strategy shares, and when a row's memory may go.  Two engines implement it:

* ``enumerate`` (:mod:`tilt.engines.enumerate`): every rollout of the prefix
  tree; any context model, any base — the built-in models, or a network's
  tables (:mod:`tilt.neural`);
* ``dp`` (:mod:`tilt.engines.dp`): passes over the states of an acyclic graph,
  for context models that declare a Markov form
  (:meth:`tilt.context.ContextModel.markov_form`); no enumeration, any length.

:func:`build_instance` picks one by name, as ``scipy.optimize.minimize`` picks a
method: ``'auto'`` takes the DP engine when the graph is acyclic and every
method has a Markov form, enumeration otherwise.  A new engine is one module
with a class that implements the protocol, and one entry of :data:`ENGINES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from tilt._numerics import FloatArray
from tilt.context import ContextModel
from tilt.engines._spec import InstanceSpec, Method
from tilt.engines.dp.instance import DPInstance, dp_instance
from tilt.engines.enumerate import EnumeratedInstance, enumerated_instance
from tilt.measures import Measures, Strategies, StrategyMeasures
from tilt.objectives import Objective
from tilt.tasks import Task

__all__ = [
    "ENGINES",
    "EngineInstance",
    "InstanceSpec",
    "Method",
    "EnumeratedInstance",
    "DPInstance",
    "build_instance",
    "enumerated_instance",
    "dp_instance",
]

ENGINES = ("auto", "dp", "enumerate")
"""Names accepted by :func:`build_instance`."""


class EngineInstance(Protocol):
    """What an engine answers about one instance (policies are the engine's own type).

    A policy has at least ``accuracy`` and ``incorrect_mass``; the engine's
    methods take and return its own policies.
    """

    @property
    def engine(self) -> str:
        """The engine's name (``'enumerate'``, ``'dp'``)."""

    @property
    def model(self) -> ContextModel:
        """The context model."""

    @property
    def demos(self) -> str:
        """The demonstrations of the SD rows that name none."""

    @property
    def alpha(self) -> float:
        """The tempering exponent of ``tempered`` demonstrations."""

    @property
    def anchor(self) -> float:
        """The anchor ``b`` of ``b KL(q || pi)``."""

    @property
    def beta(self) -> float:
        """RL's KL coefficient (0: the limit ``beta -> 0``)."""

    @property
    def base_name(self) -> str:
        """The base's name for headers."""

    @property
    def base(self) -> Any:
        """The base policy."""

    def header(self) -> str:
        """One line naming the instance."""

    def json_fields(self) -> dict[str, object]:
        """Where the instance is (graph, endpoints, sizes, engine), for ``--json``."""

    def reference_label(self) -> str:
        """The reference demonstration as node labels joined by ``>``."""

    def unavailable(self, objective: Objective, demos: str) -> str | None:
        """Why this engine cannot compute ``objective`` with ``demos``, or ``None``."""

    def rl_optimum(self, policy: Any, beta: float) -> Any:
        """RL's optimum from ``policy`` (``beta = inf``: the policy itself)."""

    def sd_optimum(self, policy: Any, objective: Objective, demos: str, anchor: float) -> Any:
        """The optimum of ``objective`` from ``policy``, demonstrations drawn from it."""

    def measure(self, policy: Any, ks: Sequence[int]) -> tuple[Measures, str]:
        """The measures of ``policy`` against the base, and a note ('' when none)."""

    def strategies(self, name: str, landmarks: Sequence[str] | None = None) -> Strategies:
        """The strategy map ``name``."""

    def strategy_measures(
        self, policy: Any, strategies: Strategies, ks: Sequence[int]
    ) -> StrategyMeasures:
        """Strategy shares and diversity of ``policy``."""

    def release(self, policy: Any) -> None:
        """Let go of what ``policy`` remembered for its measures."""

    @property
    def measures_beside(self) -> bool:
        """Whether a row's measures may run on a second thread beside the next optima (the
        same numbers, sooner; at most three rows, the base's among them, queued or being
        measured at once, besides the optimum being computed)."""

    def tilt_score(self) -> FloatArray | None:
        """``S(y)`` per rollout of the base, or ``None`` when the engine keeps none."""


def build_instance(
    spec: InstanceSpec,
    methods: Sequence[Method] = (),
    engine: str = "auto",
    task: Task | None = None,
) -> EnumeratedInstance | DPInstance:
    """The instance of ``spec`` on the engine ``engine`` (``auto``, ``dp`` or ``enumerate``).

    ``methods`` are the SD methods that will be asked of it (the DP engine needs
    their Markov forms); ``task`` replaces ``spec``'s graph, source, target and
    horizon (a prompt of a suite, a graph built in Python).

    Raises
    ------
    ValueError
        On an unknown engine, or with one line saying why the chosen engine cannot
        run the instance.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if engine != "enumerate":
        dp = dp_instance(spec, methods, engine, task)
        if dp is not None:
            return dp
    return enumerated_instance(spec, task)
