"""The DP engine as an engine instance: an acyclic space, a Markov base, options.

:class:`DPInstance` implements :class:`tilt.engines.EngineInstance` on
:class:`~tilt.engines.dp.MarkovPolicy` objects, so that
:func:`tilt.compare.compare` runs on it.  :func:`dp_instance` builds one from an
:class:`~tilt.engines.InstanceSpec`, or says why the DP engine should not run:

* a context model with no Markov form (:meth:`ContextModel.markov_form`), or an
  SD method with none, is a reason, not an error, unless it was asked for;
* ``engine='auto'`` prefers enumeration when some method has no Markov form and
  the space fits ``max_rollouts``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tilt._numerics import FloatArray, both, threads_allowed
from tilt.context import ContextModel, make_context
from tilt.engines._spec import InstanceSpec, Method
from tilt.engines.dp.measures import first_move_names, first_move_strategies, measure_with_distinct
from tilt.engines.dp.objectives import dp_optimum, needs_depth, why_no_markov_form
from tilt.engines.dp.optima import rl_optimum
from tilt.engines.dp.policy import (
    MarkovPolicy,
    base_policy,
    log_rollout_count,
    point_mass,
    reference_edges,
)
from tilt.engines.dp.space import AcyclicSpace, MoveTable, acyclic_space, lattice_table, move_table
from tilt.measures import Measures, Strategies, StrategyMeasures
from tilt.objectives import Objective
from tilt.space import TooLargeError
from tilt.tasks import Task, is_lattice_name, resolve_task

__all__ = ["DPInstance", "dp_instance", "count_label"]


@dataclass(frozen=True)
class DPInstance:
    """An instance on the DP engine (the options of :class:`~tilt.engines.InstanceSpec`)."""

    space: AcyclicSpace
    base: MarkovPolicy
    model: ContextModel
    demos: str
    alpha: float
    anchor: float
    beta: float
    seed: int | None
    base_name: str
    spec: InstanceSpec
    log_rollouts: float
    log_correct: float
    reference: MarkovPolicy | None = None
    reference_path: str | None = None
    engine: str = "dp"

    def reference_label(self) -> str:
        """The reference demonstration as node labels joined by ``>``."""
        if self.reference_path is None:
            raise ValueError("this instance has no reference demonstration")
        return self.reference_path

    def header(self) -> str:
        """One line naming the instance (as the enumeration engine's, plus its size)."""
        space = self.space
        labels = space.moves.labels
        demos = self.demos + (f"(alpha={self.alpha:g})" if self.demos == "tempered" else "")
        if self.spec.wants_reference:
            demos += f"; reference {self.reference_path}"
        horizon = space.moves.horizon
        return (
            f"{space.name}: {count_label(self.log_rollouts)} rollouts, "
            f"{count_label(self.log_correct)} correct, {labels[space.moves.source]} -> "
            f"{labels[space.moves.target]}, horizon {'none' if horizon is None else horizon}; "
            f"base {self.base_name}; context {self.model.describe()}; demonstrations {demos}"
            + (f"; anchor {self.anchor:g}" if self.anchor else "")
            + f"; engine dp ({space.n_states:,} states, {space.n_edges:,} state edges)"
        )

    def json_fields(self) -> dict[str, object]:
        """Where the instance is, for ``--json`` (same keys as enumeration's)."""
        space = self.space
        labels = space.moves.labels
        return {
            "graph": space.name,
            "source": labels[space.moves.source],
            "target": labels[space.moves.target],
            "horizon": space.moves.horizon,
            "rollouts": _json_count(self.log_rollouts),
            "correct": _json_count(self.log_correct),
            "log10_rollouts": self.log_rollouts / math.log(10),
            "prefixes": None,
            "engine": "dp",
        }

    def unavailable(self, objective: Objective, demos: str) -> str | None:
        """Why ``objective`` has no Markov form here, or ``None``."""
        return why_no_markov_form(objective, self.model, demos)

    def rl_optimum(self, policy: MarkovPolicy, beta: float) -> MarkovPolicy:
        """RL's optimum as a chain (``beta = inf``: the policy itself)."""
        return policy if math.isinf(beta) else rl_optimum(policy, beta)

    def sd_optimum(
        self, policy: MarkovPolicy, objective: Objective, demos: str, anchor: float
    ) -> MarkovPolicy:
        """The Markov optimum of ``objective`` from ``policy``."""
        if demos == "reference":
            if self.reference is None:
                raise ValueError("reference demonstrations need the reference rollout")
            return dp_optimum(policy, self.model, objective, self.reference, self.alpha, anchor)
        return dp_optimum(policy, self.model, objective, demos, self.alpha, anchor)

    def measure(self, policy: MarkovPolicy, ks: Sequence[int]) -> tuple[Measures, str]:
        """The measures and, when distinct@k could not be listed exactly, a note with its
        bound."""
        measures, distinct = measure_with_distinct(policy, self.base, ks)
        loose = [d for d in distinct.values() if not d.exact]
        if not loose:
            return measures, ""
        bound = max(d.error for d in loose)
        return measures, (
            "distinct@k bounded, not listed exactly (too many correct rollouts): "
            f"|error| <= {bound:.2g}"
        )

    def strategies(self, name: str, landmarks: Sequence[str] | None = None) -> Strategies:
        """``first-move``, read from flows (the other maps label enumerated rollouts)."""
        if name != "first-move":
            raise ValueError(
                f"--strategy {name} labels the enumerated rollouts: use --engine enumerate "
                "(first-move runs on both engines)"
            )
        # the labels of individual rollouts are not listed (there may be 10^1800 of them)
        return Strategies(name, first_move_names(self.space), np.zeros(0, dtype=np.int64))

    def strategy_measures(
        self, policy: MarkovPolicy, strategies: Strategies, ks: Sequence[int]
    ) -> StrategyMeasures:
        """The first-move shares and diversity of ``policy``."""
        return first_move_strategies(policy, ks)

    def release(self, policy: MarkovPolicy) -> None:
        """Keep a measured row's conditionals only (memory linear in the edges, not in the
        rows); the base keeps what the SD rows reuse."""
        if policy is self.base:
            policy.release("prob", "linear", "flows", "log_incorrect_below")
        else:
            policy.release()

    @property
    def measures_beside(self) -> bool:
        """On a space of at least a million state edges with two CPUs
        (:func:`tilt._numerics.threads_allowed`): the passes release the GIL."""
        return threads_allowed(self.space.n_edges)

    def tilt_score(self) -> FloatArray | None:
        """``None``: the DP engine keeps no per-rollout tilt score."""
        return None


def count_label(log_count: float) -> str:
    """A rollout count for headers: exact below ``10^15``, else its order of magnitude."""
    if log_count < math.log(1e15):
        return f"{round(math.exp(log_count)):,}"
    return f"about 10^{log_count / math.log(10):.1f}"


def _json_count(log_count: float) -> int | float | None:
    """The count: an exact int below 2^53, a float up to float64's range, else ``None``."""
    if log_count < 53 * math.log(2):
        return round(math.exp(log_count))
    return math.exp(log_count) if log_count < 709 else None


def _table(spec: InstanceSpec, task: Task | None) -> MoveTable:
    if task is not None:
        return move_table(task)
    if is_lattice_name(spec.graph) and spec.source is None and spec.target is None:
        return lattice_table(spec.graph, spec.horizon)
    task = resolve_task(spec.graph, spec.source, spec.target, spec.horizon, spec.directed)
    return move_table(task)


def dp_instance(
    spec: InstanceSpec, methods: Sequence[Method], engine: str = "auto", task: Task | None = None
) -> DPInstance | None:
    """The DP instance of ``spec``, or ``None`` when enumeration should run.

    ``task`` replaces ``spec``'s graph, source, target and horizon.

    ``engine='dp'`` insists: a cycle, or a required method with no Markov form,
    raises; ``'auto'`` returns ``None`` for a cyclic graph, and for a method with
    no Markov form when the space fits ``spec.max_rollouts``.

    Raises
    ------
    ValueError
        Under ``engine='dp'``, with one line saying why the DP engine cannot run
        and what to use instead.
    """
    model = make_context(spec.context, spec.strength)
    blocked = [
        (m, reason)
        for m in methods
        if (
            reason := why_no_markov_form(
                m.objective, model, spec.demos if m.demos is None else m.demos
            )
        )
    ]
    required = [b for b in blocked if b[0].required]
    if engine == "dp" and blocked and (required or len(blocked) == len(methods)):
        method, reason = (required or blocked)[0]
        raise ValueError(f"--engine dp cannot compute SD {method.objective.spec}: {reason}")
    try:
        depth = any(needs_depth(m.objective) for m in methods) or None
        space = acyclic_space(_table(spec, task), with_depth=depth)
    except TooLargeError:
        raise  # too large for the DP engine's memory: enumeration cannot do better
    except ValueError:
        if engine == "dp":
            raise
        return None  # a cycle (or another problem enumeration reports in its own words)

    def counts() -> tuple[float, float]:
        return log_rollout_count(space), log_rollout_count(space, correct_only=True)

    def make_base() -> MarkovPolicy:
        return base_policy(space, spec.base, seed=spec.seed)

    may_enumerate = engine == "auto" and bool(blocked)
    base: MarkovPolicy | None = None
    if may_enumerate and not threads_allowed(space.n_edges):
        log_rollouts, log_correct = counts()  # first: they may hand the instance over
    else:  # the base beside the rollout counts (two backward passes, cached on the space);
        # a large space handed to enumeration below has built its base for nothing (rare:
        # a million state edges and at most --max-rollouts rollouts)
        base, (log_rollouts, log_correct) = both(space.n_edges, make_base, counts)
    if may_enumerate and log_rollouts <= math.log(spec.max_rollouts):
        return None  # enumeration can do every method
    if base is None:
        base = make_base()
    spec.check()
    reference, reference_path = None, None
    wants = spec.demos == "reference" or any(m.demos == "reference" for m in methods)
    if wants or spec.reference is not None:
        edges = reference_edges(base, spec.reference)  # one line when not a correct rollout
        reference = point_mass(space, edges)
        labels = space.moves.labels
        heads = space.moves.move_head[space.edge_move[edges]]
        reference_path = ">".join([labels[space.moves.source], *(labels[h] for h in heads)])
    return DPInstance(
        space,
        base,
        model,
        spec.demos,
        spec.alpha,
        spec.anchor,
        spec.beta,
        spec.seed,
        spec.base_label,
        spec,
        log_rollouts,
        log_correct,
        reference,
        reference_path,
    )
