"""Instances, oracle bundles and tolerances shared by the optima and context-model tests.

Tolerances: the engine and the oracle both compute exact sums over an
enumerated space, so they differ by rounding only; ``1e-10`` (the project's
bar for closed forms against brute force) leaves room for the oracle's plain
products and sums of a few hundred terms.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import oracle

from tilt.context import EdgeContext
from tilt.engines.dp import dp_optimum, lattice_table
from tilt.engines.dp.optima import rl_optimum as dp_rl_optimum
from tilt.engines.dp.policy import MarkovPolicy, edge_softmax
from tilt.engines.dp.space import AcyclicSpace, MoveTable
from tilt.policy import as_generator, base_policy
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import make_task, named_task

TOL = 1e-10


INSTANCES = {
    # name: (task factory, base kind, seed)
    "grid3": (lambda: named_task("grid3"), "default", None),
    "grid3-random": (lambda: named_task("grid3"), "random", 4),
    "diamonds": (lambda: named_task("diamonds"), "default", None),
    "routes": (lambda: named_task("routes"), "default", None),
    "grid4": (lambda: named_task("grid4"), "default", None),
    "grid3-h6": (lambda: _with_horizon(named_task("grid3"), 6), "uniform", None),
}


MODELS = [("copy", 0.4), ("edge", 1.3), ("kernel", 0.8)]


DEMOS = [("own", 1.0), ("uniform", 1.0), ("tempered", 0.5)]


def _with_horizon(task, horizon):
    return make_task(task.graph, task.source, task.target, horizon, task.name)


@cache
def _base(name):
    factory, kind, seed = INSTANCES[name]
    task = factory()
    space = enumerate_rollouts(task)
    policy = base_policy(space, kind, seed=seed)
    truth = oracle.oracle_space(task.graph, task.source, task.target, task.horizon)
    # the oracle's own base policy, from the same logits (random ones are drawn per engine move)
    if kind == "default":
        theta = oracle.graph_logits(task.graph)
    elif kind == "uniform":
        theta = {}
    else:
        theta = _move_logits(space, seed)
    pi = oracle.edge_softmax(truth, theta)
    np.testing.assert_allclose(policy.prob, oracle.aligned(space, pi), rtol=0, atol=1e-12)
    return space, policy, truth, pi


def _move_logits(space, seed):
    """The 'random' base's logits: Normal(0, 1) per directed move of the space, from ``seed``."""
    draws = as_generator(seed).normal(0.0, 1.0, size=space.n_moves)
    return {
        (space.labels[t], space.labels[h]): float(x)
        for t, h, x in zip(space.move_tail, space.move_head, draws, strict=True)
    }


@cache
def _bundle(name, model_name, strength, demos_kind, alpha):
    space, policy, truth, pi = _base(name)
    demos = oracle.demonstrations(pi, truth, demos_kind, alpha)
    teach = oracle.teachers(pi, truth, demos, model_name, strength)
    return space, policy, truth, pi, demos, teach


def _close(actual, expected, atol=TOL):
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


def _close_policy(policy, expected_dict):
    expected = np.array(oracle.aligned(policy.space, expected_dict))
    _close(policy.prob, expected, atol=1e-12)
    positive = expected > 0
    _close(policy.log_prob[positive], np.log(expected[positive]))
    assert np.isneginf(policy.log_prob[~positive]).all()
    assert abs(policy.prob.sum() - 1) <= 1e-12


CASES = [
    (n, m, s, d, a) for n in INSTANCES if n != "grid4" for (m, s) in MODELS for (d, a) in DEMOS
]
CASES += [("grid4", m, s, "own", 1.0) for (m, s) in MODELS]


def scaled_lattice_table(name: str, scale: float) -> MoveTable:
    """The move table of the lattice ``name`` with its logits times ``scale`` (hundreds of
    nats apart at ``scale`` 300: the DP passes' log-space fallbacks)."""
    table = lattice_table(name)
    return MoveTable(
        table.name,
        table.labels,
        table.source,
        table.target,
        table.horizon,
        table.move_tail,
        table.move_head,
        table.move_logit * scale,
    )


def dp_rows(space: AcyclicSpace, logits: np.ndarray | None = None) -> dict[str, MarkovPolicy]:
    """The DP engine's policies of ``python -m tilt.compare``, fresh (nothing cached): the
    base (the edge softmax of ``logits``, default the space's), RL at ``beta -> 0`` and 0.7,
    and sequence and token SD with ``edge(2)``."""
    base = edge_softmax(space, space.moves.move_logit if logits is None else logits)
    model = EdgeContext(2.0)
    return {
        "base": base,
        "rl0": dp_rl_optimum(base, 0.0),
        "rl": dp_rl_optimum(base, 0.7),
        "sequence": dp_optimum(base, model, "sequence"),
        "token": dp_optimum(base, model, "token"),
    }
