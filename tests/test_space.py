"""Enumeration of rollout spaces against the DFS oracle (``tests/oracle.py``)."""

from __future__ import annotations

import re
from collections import Counter

import networkx as nx
import numpy as np
import oracle
import pytest
from hypothesis import HealthCheck, given, settings

from tilt.space import TooLargeError, enumerate_rollouts
from tilt.tasks.graphs import make_task, named_task

SMALL_NAMED = ["grid2", "grid3", "grid4", "diamonds", "routes"]


def _check_against_oracle(task):
    """Same rollouts (as label tuples, no duplicates), same correctness, same tree."""
    space = enumerate_rollouts(task)
    truth = oracle.oracle_space(task.graph, task.source, task.target, task.horizon)
    ours = oracle.label_rollouts(space)
    assert Counter(ours) == Counter(truth.rollouts)
    assert len(ours) == space.n_rollouts == len(set(ours))
    assert [truth.correct[y] for y in ours] == space.correct.tolist()
    assert space.n_correct == sum(truth.correct.values())
    _check_tree(space)
    return space, truth


def _check_tree(space):
    """Prefix-tree invariants: parents, depths, moves, contiguous children, levels, leaves."""
    p = np.arange(1, space.n_prefixes)
    parent = space.parent[1:]
    assert (space.parent[0], space.move[0], space.depth[0]) == (-1, -1, 0)
    assert (parent < p).all()
    assert (space.depth[1:] == space.depth[parent] + 1).all()
    assert (space.move_tail[space.move[1:]] == space.node[parent]).all()
    assert (space.move_head[space.move[1:]] == space.node[1:]).all()
    for q in range(space.n_prefixes):
        kids = np.flatnonzero(space.parent == q)
        assert kids.size == space.child_count[q]
        if kids.size:
            assert kids.tolist() == list(
                range(space.child_start[q], space.child_start[q] + kids.size)
            )
    for d in range(space.max_depth + 1):
        lo, hi = space.level_start[d], space.level_start[d + 1]
        assert (space.depth[lo:hi] == d).all()
    assert space.level_start[-1] == space.n_prefixes
    assert space.rollout_prefix.tolist() == np.flatnonzero(space.child_count == 0).tolist()
    # path_moves and move_incidence agree with the node paths
    paths = space.paths()
    moves = space.path_moves()
    incidence = space.move_incidence()
    for r in range(space.n_rollouts):
        nodes = paths[r][paths[r] >= 0]
        mv = moves[r][moves[r] >= 0]
        assert len(mv) == len(nodes) - 1 == space.length[r]
        assert space.move_tail[mv].tolist() == nodes[:-1].tolist()
        assert space.move_head[mv].tolist() == nodes[1:].tolist()
        assert incidence[r].sum() == len(mv)
        assert (incidence[r, mv] == 1).all()
    assert space.path_labels() == [">".join(y) for y in oracle.label_rollouts(space)]


@pytest.mark.parametrize("name", SMALL_NAMED)
def test_named_graphs_match_dfs_oracle(name):
    _check_against_oracle(named_task(name))


@pytest.mark.parametrize("name", ["grid3", "grid4", "diamonds", "routes"])
@pytest.mark.parametrize("horizon", [0, 1, 3, 6, 9])
def test_named_graphs_with_horizon_match_oracle(name, horizon):
    task = named_task(name)
    task = make_task(task.graph, task.source, task.target, horizon, name)
    truth = oracle.oracle_space(task.graph, task.source, task.target, horizon)
    if not any(truth.correct.values()):
        with pytest.raises(ValueError, match="no path"):
            enumerate_rollouts(task)
        return
    space, _ = _check_against_oracle(task)
    assert space.max_depth <= horizon


def test_undirected_graph_is_both_directions():
    # the cycle 0-1-2-3-0 from 0 to 2: two correct paths (0,1,2) and (0,3,2), nothing else
    task = make_task(nx.cycle_graph(4), 0, 2)
    space, truth = _check_against_oracle(task)
    assert sorted(truth.rollouts) == [("0", "1", "2"), ("0", "3", "2")]
    # directed cycle: only one way round
    task = make_task(nx.cycle_graph(4, create_using=nx.DiGraph), 0, 2)
    space, truth = _check_against_oracle(task)
    assert truth.rollouts == [("0", "1", "2")]


def test_grid5_counts_from_theory():
    # THEORY.md, "Rollout spaces": |Y| = 26228 and |C| = 8512 for the 5x5 grid
    space = enumerate_rollouts(named_task("grid5"))
    assert (space.n_rollouts, space.n_correct) == (26228, 8512)
    truth = oracle.oracle_space(
        *(lambda t: (t.graph, t.source, t.target, t.horizon))(named_task("grid5"))
    )
    assert len(truth.rollouts) == 26228
    assert sum(truth.correct.values()) == 8512
    assert Counter(oracle.label_rollouts(space)) == Counter(truth.rollouts)


@pytest.mark.slow
def test_grid6_counts():
    space = enumerate_rollouts(named_task("grid6"))
    assert (space.n_rollouts, space.n_correct) == (5271726, 1262816)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instance=oracle.random_instances())
def test_random_graphs_match_dfs_oracle(instance):
    graph, source, target, horizon = instance
    task = make_task(graph, source, target, horizon)
    truth = oracle.oracle_space(graph, source, target, horizon)
    if not any(truth.correct.values()):
        with pytest.raises(ValueError, match="no path"):
            enumerate_rollouts(task)
        return
    _check_against_oracle(task)


def test_too_large_names_count_and_a_horizon_that_fits():
    task = named_task("grid5")
    with pytest.raises(TooLargeError) as info:
        enumerate_rollouts(task, max_rollouts=1000)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in message
    assert re.search(r"more than [\d,]+ rollouts", message)
    found = re.search(r"--horizon (\d+)", message)
    assert found, message
    horizon = int(found.group(1))
    fits = enumerate_rollouts(make_task(task.graph, task.source, task.target, horizon), 1000)
    assert fits.n_rollouts <= 1000
    # the next horizon does not fit
    with pytest.raises(TooLargeError):
        enumerate_rollouts(make_task(task.graph, task.source, task.target, horizon + 1), 1000)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_max_rollouts_must_be_positive_int(bad):
    with pytest.raises(ValueError, match="max_rollouts"):
        enumerate_rollouts(named_task("grid2"), bad)


def test_no_path_is_value_error():
    graph = nx.DiGraph()
    graph.add_edge("s", "a")
    graph.add_edge("t", "s")
    with pytest.raises(ValueError, match="no path"):
        enumerate_rollouts(make_task(graph, "s", "t"))


@pytest.mark.parametrize("name", SMALL_NAMED)
def test_other_siblings_sum_is_the_group_without_itself(name):
    """Per prefix, the sum over its siblings other than itself, as a plain loop gives it;
    exact (not total minus own) when one sibling holds almost everything."""
    space = enumerate_rollouts(named_task(name))
    rng = np.random.default_rng(7)
    values = rng.random(space.n_prefixes)
    values[rng.random(space.n_prefixes) < 0.3] = 1.0 - 1e-17  # one sibling near 1, others tiny
    values[rng.random(space.n_prefixes) < 0.3] = 1e-20
    got = space.other_siblings_sum(values)
    assert got[0] == 0.0
    for p in range(1, space.n_prefixes):
        start = space.child_start[space.parent[p]]
        siblings = range(start, start + space.child_count[space.parent[p]])
        want = sum(values[s] for s in siblings if s != p)
        assert got[p] == pytest.approx(want, rel=1e-15, abs=0.0)


@pytest.mark.parametrize("name", ["grid3", "diamonds", "routes"])
@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_sibling_logsumexp_against_a_loop(name, scale):
    """Only children keep their value; groups agree with a per-group shifted sum to 1e-15,
    in the linear domain (scale 1) and the per-group one (scale 1000); -inf where all are."""
    space = enumerate_rollouts(named_task(name))
    rng = np.random.default_rng(1)
    values = rng.normal(0.0, scale, space.n_prefixes)
    values[rng.random(values.size) < 0.2] = -np.inf
    got = space.sibling_logsumexp(values)
    want = np.zeros_like(values)
    for p in range(1, space.n_prefixes):
        start = space.child_start[space.parent[p]]
        group = values[start : start + space.child_count[space.parent[p]]]
        peak = group.max()
        want[p] = peak if not np.isfinite(peak) else peak + np.log(np.exp(group - peak).sum())
    finite = np.isfinite(want)
    assert got[0] == 0.0
    assert np.array_equal(np.isfinite(got), finite)
    assert np.array_equal(got[~finite], want[~finite])
    np.testing.assert_allclose(got[finite], want[finite], rtol=0, atol=1e-15 * max(1.0, scale))


def test_sibling_sums_on_a_chain():
    """A path graph: every prefix is an only child (no group of two or more)."""
    graph = nx.path_graph(4, create_using=nx.DiGraph)
    space = enumerate_rollouts(make_task(graph, 0, 3))
    values = np.array([5.0, -1.0, 2.0, -np.inf])
    np.testing.assert_array_equal(space.sibling_logsumexp(values), [0.0, -1.0, 2.0, -np.inf])
    np.testing.assert_array_equal(space.other_siblings_sum(values), np.zeros(4))


@pytest.mark.parametrize("name", ["grid3", "diamonds", "routes"])
@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_sibling_log_softmax_against_a_loop(name, scale):
    """Each group's log-softmax as a loop gives it; only children 0; an all ``-inf`` group
    takes the fallback's entries."""
    space = enumerate_rollouts(named_task(name))
    rng = np.random.default_rng(2)
    logits = rng.normal(0.0, scale, space.n_prefixes)
    logits[rng.random(logits.size) < 0.3] = -np.inf
    fallback = rng.normal(size=space.n_prefixes)
    got = space.sibling_log_softmax(logits, fallback)
    assert got[0] == 0.0
    for h in np.flatnonzero(space.child_count > 0):
        group = slice(space.child_start[h], space.child_start[h] + space.child_count[h])
        values = logits[group]
        if space.child_count[h] == 1:
            want = np.zeros(1)
        elif np.isneginf(values).all():
            want = fallback[group]
        else:
            peak = values.max()
            want = values - (peak + np.log(np.exp(values - peak).sum()))
        finite = np.isfinite(want)
        assert np.array_equal(np.isfinite(got[group]), finite)
        np.testing.assert_allclose(got[group][finite], want[finite], rtol=0, atol=1e-15 * scale)
