"""Out-of-distribution readings (``tilt.measures.ood``) against an oracle that rebuilds the graph.

The vectorised re-route reading (one pass over the prefix tree for every edge)
must equal, to 1e-12 (exact enumeration: rounding only), the accuracy of the
policy run on the graph rebuilt without the edge and enumerated again by the
plain DFS of ``tests/oracle.py``.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import oracle
import pytest
from hypothesis import given, settings

from tilt.context import make_context
from tilt.measures.ood import blocked_edges, ood_pass_at_k, ood_success
from tilt.objectives import rl_optimum, sd_optimum
from tilt.policy import Policy, base_policy
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import make_task, named_task
from tilt.testing import instances

TOL = 1e-12


def _as_dict(policy):
    return dict(zip(oracle.label_rollouts(policy.space), policy.prob.tolist(), strict=True))


def _truth(task):
    return oracle.oracle_space(task.graph, task.source, task.target, task.horizon)


def _unit_of(space, label, truth):
    """The oracle's unit (frozenset of label moves) named by a tilt edge label."""
    for unit in oracle.blocked_units(truth):
        if len(unit) == 1 and label == "{}>{}".format(*next(iter(unit))):
            return unit
        if len(unit) == 2 and any(label == f"{v}-{w}" for v, w in unit):
            return unit
    raise AssertionError(f"no oracle unit named {label!r}")


def _check_against_oracle(policy, task):
    truth = _truth(task)
    q = _as_dict(policy)
    edges = blocked_edges(policy.space)
    assert edges.n_edges == len(oracle.blocked_units(truth))
    reroute, fail = ood_success(policy, "reroute"), ood_success(policy, "fail")
    for i, label in enumerate(edges.labels):
        unit = _unit_of(policy.space, label, truth)
        expected = oracle.reroute_accuracy(q, truth, unit)
        assert reroute[i] == pytest.approx(expected, abs=TOL), label
        survive = sum(
            p
            for y, p in q.items()
            if truth.correct[y] and not unit & set(zip(y, y[1:], strict=False))
        )
        assert fail[i] == pytest.approx(survive, abs=TOL), label
        # re-routing never does worse than failing on the blocked edge
        assert reroute[i] >= fail[i] - TOL


@pytest.mark.parametrize("name", ["grid3", "grid4", "routes", "routes-bottleneck", "diamonds"])
@pytest.mark.parametrize("method", ["base", "rl", "sequence", "token", "forward"])
def test_reroute_matches_rebuilding_the_graph(name, method):
    task = named_task(name)
    pi0 = base_policy(enumerate_rollouts(task))
    if method == "base":
        policy = pi0
    elif method == "rl":
        policy = rl_optimum(pi0, 0.5)
    else:
        policy = sd_optimum(pi0, make_context("edge", 2.0), method)
    _check_against_oracle(policy, task)


@settings(max_examples=60, deadline=None)
@given(instance=instances(max_nodes=6))
def test_reroute_matches_rebuilding_the_graph_on_random_instances(instance):
    _check_against_oracle(instance.base, instance.task)


def test_an_only_move_becomes_a_failed_dead_end():
    # s -> a -> t is the only way; blocking a -> t leaves a dead end at a (success 0),
    # blocking s -> b re-routes all of b's mass through a.
    graph = nx.DiGraph()
    graph.add_edge("s", "a", logit=0.0)
    graph.add_edge("s", "b", logit=math.log(3.0))
    graph.add_edge("a", "t")
    graph.add_edge("b", "t")
    space = enumerate_rollouts(make_task(graph, "s", "t"))
    pi0 = base_policy(space)
    edges = blocked_edges(space)
    reroute = dict(zip(edges.labels, ood_success(pi0, "reroute"), strict=True))
    fail = dict(zip(edges.labels, ood_success(pi0, "fail"), strict=True))
    assert reroute["a>t"] == 0.75  # only s>a>t lost, no alternative at a
    assert fail["a>t"] == 0.75
    assert reroute["s>b"] == pytest.approx(1.0, abs=TOL)  # all mass re-routed to a
    assert fail["s>b"] == pytest.approx(0.25, abs=TOL)


def test_undirected_graphs_block_both_directions():
    space = enumerate_rollouts(named_task("grid3"))
    edges = blocked_edges(space)
    assert edges.undirected
    assert edges.n_edges == 12  # every edge of the 3x3 grid carries some correct rollout
    assert all("-" in label for label in edges.labels)
    # each undirected edge owns both of its moves
    assert np.bincount(edges.move_unit[edges.move_unit >= 0]).tolist() == [2] * 12


def test_readings_agree_on_the_bottleneck_instance():
    # routes-bottleneck: the minority route ends through one move, so blocking the majority
    # route re-routes onto it exactly as much as blocked = fail keeps; the worst case agrees
    pi0 = base_policy(enumerate_rollouts(named_task("routes-bottleneck")))
    model = make_context("kernel", 2.0)
    for policy in (pi0, rl_optimum(pi0), sd_optimum(pi0, model, "sequence")):
        fail, reroute = ood_pass_at_k(policy, 16, "fail"), ood_pass_at_k(policy, 16, "reroute")
        # s>a0 and a2>t tie under blocked = fail; under re-route a2>t alone is worst
        assert reroute.worst_move == "a2>t"
        assert reroute.worst == pytest.approx(fail.worst, abs=1e-12)


def test_readings_differ_on_routes():
    pi0 = base_policy(enumerate_rollouts(named_task("routes")))
    fail, reroute = ood_pass_at_k(pi0, 1, "fail"), ood_pass_at_k(pi0, 1, "reroute")
    assert reroute.worst > fail.worst + 0.2


def test_zero_mass_moves_and_extreme_policies_stay_finite():
    space = enumerate_rollouts(named_task("routes"))
    weights = np.where(space.correct, 0.0, -np.inf)
    weights[np.flatnonzero(space.correct)[0]] = 700.0  # one rollout holds all the mass
    policy = Policy.from_log_weights(space, weights)
    for reading in ("fail", "reroute"):
        values = ood_success(policy, reading)
        assert np.isfinite(values).all()
        assert ((values >= 0) & (values <= 1)).all()


def test_unknown_reading_is_refused():
    pi0 = base_policy(enumerate_rollouts(named_task("grid3")))
    with pytest.raises(ValueError, match="unknown OOD reading 'detour'"):
        ood_success(pi0, "detour")


def test_a_dominant_blocked_move_keeps_full_precision():
    # found by Hypothesis: at prefix 0>2>5 the blocked move 5>4 holds 1 - 8.3e-7 of the mass;
    # re-routing sends it all to 5>3, and every rollout stays correct: success exactly 1
    graph = nx.DiGraph()
    for move in ("0>2", "2>3", "2>4", "2>5", "3>1", "4>2", "4>3", "4>5", "5>0", "5>2", "5>3"):
        tail, head = move.split(">")
        graph.add_edge(int(tail), int(head), logit=0.0)
    graph.add_edge(5, 4, logit=14.0)
    task = make_task(graph, 0, 1)
    pi0 = base_policy(enumerate_rollouts(task))
    edges = blocked_edges(pi0.space)
    reroute = dict(zip(edges.labels, ood_success(pi0, "reroute"), strict=True))
    assert reroute["5>4"] == pytest.approx(1.0, abs=1e-15)
    _check_against_oracle(pi0, task)


def test_doctests():
    import doctest

    import tilt.measures.ood
    import tilt.measures.strategies
    import tilt.tasks.graphs

    for module in (tilt.measures.ood, tilt.measures.strategies, tilt.tasks.graphs):
        failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert tried > 0, module.__name__
        assert failures == 0, module.__name__
