"""The enumeration engine: every rollout of the prefix tree, exactly.

An :class:`EnumeratedInstance` is a rollout space, a base policy and a context
model, with the options of demonstrations, anchor and RL's beta; it implements
the engine protocol of :mod:`tilt.engines` on :class:`~tilt.policy.Policy`
objects, so that :func:`tilt.compare.compare` runs on it.  Any source of a base
policy and a context model on a :class:`~tilt.space.RolloutSpace` (the built-in
context models, a network's tables) plugs in here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from tilt._numerics import FloatArray
from tilt.context import (
    ContextModel,
    demonstrations,
    make_context,
    point_mass,
    reference_rollout,
)
from tilt.engines._spec import InstanceSpec
from tilt.measures import Measures, Strategies, StrategyMeasures, measure, strategy_measures
from tilt.measures.strategies import strategy_labels
from tilt.objectives import Objective, rl_optimum, tilt_score
from tilt.policy import Policy, base_policy
from tilt.space import RolloutSpace, enumerate_rollouts
from tilt.tasks import Task, resolve_task

__all__ = ["EnumeratedInstance", "enumerated_instance"]


@dataclass(frozen=True)
class EnumeratedInstance:
    """An instance on the enumeration engine: a space, its base, a context model, options.

    Implements :class:`tilt.engines.EngineInstance` on :class:`~tilt.policy.Policy`
    objects.  Build one from options with :func:`enumerated_instance`, or directly
    from any base policy and context model on a space (a network's tables, say).
    """

    space: RolloutSpace
    base: Policy
    model: ContextModel
    demos: str = "own"
    alpha: float = 0.5
    anchor: float = 0.0
    beta: float = 0.0
    seed: int | None = 0
    base_name: str = "default"
    reference: str | None = None
    engine: str = "enumerate"

    @cached_property
    def reference_index(self) -> int:
        """The rollout index of the reference demonstration (``reference`` or the default)."""
        return reference_rollout(self.base, self.reference)

    def reference_label(self) -> str:
        """The reference demonstration as node labels joined by ``>``."""
        return self.space.path_labels(np.array([self.reference_index]))[0]

    def demonstrations(self, policy: Policy, kind: str | None = None) -> Policy:
        """The demonstration distribution of ``policy`` (``kind`` defaults to ``demos``)."""
        kind = self.demos if kind is None else kind
        if kind == "reference":
            return point_mass(policy, self.reference_index)
        return demonstrations(policy, kind, self.alpha)

    def header(self) -> str:
        """One line naming the instance."""
        space = self.space
        demos = self.demos + (f"(alpha={self.alpha:g})" if self.demos == "tempered" else "")
        if self.demos == "reference" or self.reference is not None:
            demos += f"; reference {self.reference_label()}"
        return (
            f"{space.task.name}: {space.n_rollouts:,} rollouts, {space.n_correct:,} correct, "
            f"{space.labels[space.source]} -> {space.labels[space.target]}, "
            f"horizon {'none' if space.task.horizon is None else space.task.horizon}; "
            f"base {self.base_name}; context {self.model.describe()}; demonstrations {demos}"
            + (f"; anchor {self.anchor:g}" if self.anchor else "")
        )

    def json_fields(self) -> dict[str, object]:
        """Where the instance is, for ``--json``: graph, endpoints, sizes, engine."""
        space = self.space
        return {
            "graph": space.task.name,
            "source": space.labels[space.source],
            "target": space.labels[space.target],
            "horizon": space.task.horizon,
            "rollouts": space.n_rollouts,
            "correct": space.n_correct,
            "log10_rollouts": math.log10(space.n_rollouts),
            "prefixes": space.n_prefixes,
            "engine": "enumerate",
        }

    def unavailable(self, objective: Objective, demos: str) -> str | None:
        """Every objective has an exact form here (a size limit may still stop one)."""
        return None

    def rl_optimum(self, policy: Policy, beta: float) -> Policy:
        """:func:`tilt.objectives.rl_optimum`."""
        return rl_optimum(policy, beta)

    def sd_optimum(self, policy: Policy, objective: Objective, demos: str, anchor: float) -> Policy:
        """The optimum of ``objective`` from ``policy``, demonstrations drawn from it."""
        given = self.demonstrations(policy, demos)
        return objective.optimum(policy, self.model, given, anchor=anchor)

    def measure(self, policy: Policy, ks: Sequence[int]) -> tuple[Measures, str]:
        """:func:`tilt.measures.measure` against the base, and no note."""
        return measure(policy, self.base, ks), ""

    def strategies(self, name: str, landmarks: Sequence[str] | None = None) -> Strategies:
        """The strategy map ``name`` over the correct rollouts."""
        return strategy_labels(self.space, name, landmarks)

    def strategy_measures(
        self, policy: Policy, strategies: Strategies, ks: Sequence[int]
    ) -> StrategyMeasures:
        """:func:`tilt.measures.strategy_measures`."""
        return strategy_measures(policy, strategies, ks)

    def release(self, policy: Policy) -> None:
        """Let a measured row's per-prefix arrays go (a row keeps its ``log_prob``; on
        grid6 each row's arrays are some 300 MB); the base keeps its own."""
        if policy is not self.base:
            policy.release()

    @property
    def measures_beside(self) -> bool:
        """No: a row's per-prefix arrays are large (some 300 MB on grid6) and its measures
        are not all in GIL-free passes, so one row at a time."""
        return False

    def tilt_score(self) -> FloatArray | None:
        """``S(y)`` of the base under its own demonstrations."""
        return tilt_score(self.base, self.model, self.demonstrations(self.base))


def enumerated_instance(spec: InstanceSpec, task: Task | None = None) -> EnumeratedInstance:
    """Enumerate the space of ``spec`` and build its base and context model.

    ``task`` replaces ``spec``'s graph, source, target and horizon (a prompt of a
    suite, a graph built in Python).

    Raises
    ------
    ValueError
        On a bad option, a task that cannot be built, a space above
        ``spec.max_rollouts`` (:class:`~tilt.space.TooLargeError`) or a
        reference that is not a correct rollout.
    """
    spec.check()
    model = make_context(spec.context, spec.strength)
    if task is None:
        task = resolve_task(spec.graph, spec.source, spec.target, spec.horizon, spec.directed)
    space = enumerate_rollouts(task, spec.max_rollouts)
    base = base_policy(space, spec.base, seed=spec.seed)
    instance = EnumeratedInstance(
        space,
        base,
        model,
        spec.demos,
        spec.alpha,
        spec.anchor,
        spec.beta,
        spec.seed,
        spec.base_label,
        spec.reference,
    )
    if spec.wants_reference:
        _ = instance.reference_index  # a path that is not a correct rollout fails here, in one line
    return instance
