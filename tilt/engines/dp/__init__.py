"""The DP engine: exact optima and measures on acyclic rollout spaces, without enumeration.

On a directed acyclic graph every path is simple, so the base policy is a
Markov chain on states (nodes, or ``(depth, node)`` pairs with a horizon), and
so are RL's optimum and the SD optima whose tilt score is a sum over moves.
Everything is a forward or backward pass over the topological layers of the
state DAG, vectorised over the edges of a layer: cost linear in the number of
edges, whatever the number of rollouts (``docs/theory.md``, "The DP engine").

Modules, in the order data flows:

* :mod:`tilt.engines.dp.space` — the state DAG (:func:`acyclic_space`);
* :mod:`tilt.engines.dp.passes` — log-space forward, backward, max-plus and moment passes;
* :mod:`tilt.engines.dp.policy` — Markov policies, the base, demonstrations;
* :mod:`tilt.engines.dp.context` — Markov forms of the context models;
* :mod:`tilt.engines.dp.optima` — RL, sequence, token, hybrid and discounted SD;
* :mod:`tilt.engines.dp.per_prefix` — token-forward, jsd, length-weighted;
* :mod:`tilt.engines.dp.objectives` — spec strings, which are Markov, :func:`dp_optimum`;
* :mod:`tilt.engines.dp.measures` — every measure by passes;
* :mod:`tilt.engines.dp.rollouts` — back to enumerated rollouts (tests, CSV);
* :mod:`tilt.engines.dp.instance` — the engine protocol of :mod:`tilt.engines`.
"""

from tilt.engines.dp.measures import DistinctAtK, distinct_at_k, measure, ood_reroute
from tilt.engines.dp.objectives import dp_optimum, needs_depth, parse_spec, why_no_markov_form
from tilt.engines.dp.optima import rl_optimum
from tilt.engines.dp.policy import MarkovPolicy, base_policy, demonstrations, log_rollout_count
from tilt.engines.dp.space import AcyclicSpace, MoveTable, acyclic_space, lattice_table, move_table

__all__ = [
    "AcyclicSpace",
    "MoveTable",
    "MarkovPolicy",
    "DistinctAtK",
    "acyclic_space",
    "move_table",
    "lattice_table",
    "base_policy",
    "demonstrations",
    "log_rollout_count",
    "rl_optimum",
    "dp_optimum",
    "why_no_markov_form",
    "needs_depth",
    "parse_spec",
    "measure",
    "distinct_at_k",
    "ood_reroute",
]
