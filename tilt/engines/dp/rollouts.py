"""From the DP engine back to enumerated rollouts (small spaces only).

:func:`prefix_edges` maps every prefix of an enumerated
:class:`~tilt.space.RolloutSpace` of the same task to the state edge it ends
with; :func:`to_policy` turns a :class:`~tilt.engines.dp.policy.MarkovPolicy` into a
:class:`~tilt.policy.Policy` over the enumerated rollouts.  Used by the tests
(DP against enumeration) and by ``tilt.compare --rollouts``.
"""

from __future__ import annotations

import numpy as np

from tilt._numerics import IntArray
from tilt.engines.dp.policy import MarkovPolicy
from tilt.engines.dp.space import AcyclicSpace
from tilt.policy import Policy
from tilt.space import RolloutSpace

__all__ = ["prefix_edges", "to_policy", "per_rollout_sum"]


def prefix_edges(space: AcyclicSpace, rollouts: RolloutSpace) -> IntArray:
    """State edge of every prefix ``p > 0`` (entry 0 is ``-1``), shape (n_prefixes,).

    Raises
    ------
    ValueError
        If the two spaces do not describe the same task (a prefix has no state edge).
    """
    labels = space.moves.labels
    if tuple(rollouts.labels) != tuple(labels):
        raise ValueError("the enumerated space and the DP space have different node sets")
    n_nodes = len(labels)
    state = np.full(rollouts.n_prefixes, -1, dtype=np.int64)
    out = np.full(rollouts.n_prefixes, -1, dtype=np.int64)
    state[0] = 0
    key = space.edge_tail * n_nodes + space.moves.move_head[space.edge_move]
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    for d in range(1, rollouts.max_depth + 1):
        lo, hi = int(rollouts.level_start[d]), int(rollouts.level_start[d + 1])
        want = state[rollouts.parent[lo:hi]] * n_nodes + rollouts.node[lo:hi]
        pos = np.searchsorted(sorted_key, want)
        pos = np.minimum(pos, sorted_key.size - 1)
        if not np.array_equal(sorted_key[pos], want):
            raise ValueError("a prefix of the enumerated space has no state edge")
        edges = order[pos]
        out[lo:hi] = edges
        state[lo:hi] = space.edge_head[edges]
    return out


def per_rollout_sum(
    space: AcyclicSpace,
    rollouts: RolloutSpace,
    edge_value: np.ndarray,
    edges: IntArray | None = None,
) -> np.ndarray:
    """``sum of edge_value along each rollout``, shape (n_rollouts,)."""
    edges = prefix_edges(space, rollouts) if edges is None else edges
    per_prefix = np.zeros(rollouts.n_prefixes)
    per_prefix[1:] = edge_value[edges[1:]]
    return rollouts.path_sum(per_prefix)[rollouts.rollout_prefix]


def to_policy(
    policy: MarkovPolicy, rollouts: RolloutSpace, edges: IntArray | None = None
) -> Policy:
    """The enumerated :class:`Policy` with the conditionals of ``policy``."""
    log_prob = per_rollout_sum(policy.space, rollouts, policy.log_cond, edges)
    return Policy.from_log_weights(rollouts, log_prob)
