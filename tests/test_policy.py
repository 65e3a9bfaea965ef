"""Policies: base policies against the oracle's explicit softmaxes, conditionals, round trips."""

from __future__ import annotations

import math

import numpy as np
import oracle
import pytest
from hypothesis import HealthCheck, event, given, settings

from tilt.policy import Policy, as_generator, base_policy, edge_softmax
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import make_task, named_task

NAMED = ["grid2", "grid3", "grid4", "diamonds", "routes"]
ATOL = 1e-12  # exact enumeration: only rounding


def _oracle_theta(space, kind, seed=None):
    """The logits the oracle uses for ``kind``: per directed move, on labels."""
    if kind == "default":
        return oracle.graph_logits(space.task.graph)
    if kind == "uniform":
        return {}
    # 'random' is documented as Normal(0, 1) per directed move of the space, drawn from the seed
    draws = as_generator(seed).normal(0.0, 1.0, size=space.n_moves)
    return {
        (space.labels[t], space.labels[h]): float(x)
        for t, h, x in zip(space.move_tail, space.move_head, draws, strict=True)
    }


def _check_base(task, kind, seed=None):
    space = enumerate_rollouts(task)
    truth = oracle.oracle_space(task.graph, task.source, task.target, task.horizon)
    policy = base_policy(space, kind, seed=seed)
    expected = oracle.aligned(space, oracle.edge_softmax(truth, _oracle_theta(space, kind, seed)))
    np.testing.assert_allclose(policy.prob, expected, rtol=0, atol=ATOL)
    assert abs(policy.prob.sum() - 1.0) <= ATOL
    policy.check()
    return space, policy


@pytest.mark.parametrize("name", NAMED)
@pytest.mark.parametrize("kind", ["default", "uniform", "random"])
def test_base_policy_matches_explicit_softmax(name, kind):
    _check_base(named_task(name), kind, seed=7)


@pytest.mark.parametrize("name", ["grid3", "routes"])
def test_base_policy_with_horizon(name):
    task = named_task(name)
    # 5 moves: long enough for a correct rollout (grid3 needs 4, routes 5), shorter than the longest
    _check_base(make_task(task.graph, task.source, task.target, 5, name), "default")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instance=oracle.random_instances())
def test_base_policy_random_graphs(instance):
    graph, source, target, horizon = instance
    truth = oracle.oracle_space(graph, source, target, horizon)
    if not any(truth.correct.values()):
        event("no correct rollout")
        return
    task = make_task(graph, source, target, horizon)
    for kind in ("default", "uniform", "random"):
        space, policy = _check_base(task, kind, seed=3)
        _check_conditionals(policy)


def test_grid5_default_base_matches_explicit_softmax():
    _check_base(named_task("grid5"), "default")


def test_random_base_is_seeded():
    space = enumerate_rollouts(named_task("grid4"))
    a = base_policy(space, "random", seed=11).log_prob
    b = base_policy(space, "random", seed=11).log_prob
    c = base_policy(space, "random", seed=12).log_prob
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)
    # a Generator is used as given
    d = base_policy(space, "random", seed=np.random.default_rng(11)).log_prob
    assert d.tobytes() == a.tobytes()


def test_grid2_by_hand():
    # grid2 from (0,0) to (1,1): two rollouts, (0,0)>(0,1)>(1,1) and (0,0)>(1,0)>(1,1).
    # Uniform base: 1/2 at the first step, then one available node: each rollout 1/2.
    # Default base: both first moves shorten the distance (logit 1 each): also 1/2 each.
    space = enumerate_rollouts(named_task("grid2"))
    assert sorted(space.path_labels()) == ["(0, 0)>(0, 1)>(1, 1)", "(0, 0)>(1, 0)>(1, 1)"]
    for kind in ("uniform", "default"):
        np.testing.assert_allclose(base_policy(space, kind).prob, [0.5, 0.5], rtol=0, atol=1e-15)


def test_diamonds_by_hand():
    # At each junction the softmax of logits (log 2, 0, -1) gives up 2/(3+e^-1), down 1/(3+e^-1),
    # trap e^-1/(3+e^-1); the nodes u_j, d_j have one successor.  A correct rollout with u ups
    # has probability 2^u / (3 + e^-1)^5, so the accuracy is (3 / (3 + e^-1))^5.
    space = enumerate_rollouts(named_task("diamonds"))
    pi0 = base_policy(space)
    z = 3 + math.exp(-1)
    ups = np.array(
        [sum(lab.startswith("u") for lab in path.split(">")) for path in space.path_labels()]
    )
    expected = 2.0 ** ups[space.correct] / z**5
    np.testing.assert_allclose(pi0.prob[space.correct], expected, rtol=1e-13, atol=0)
    assert pi0.accuracy == pytest.approx((3 / z) ** 5, rel=1e-13, abs=0)


def test_routes_by_hand():
    # the fork at s: route a has logit 2, route b 0, so pi0(route a) = e^2 / (1 + e^2)
    space = enumerate_rollouts(named_task("routes"))
    pi0 = base_policy(space)
    on_a = np.array([p.split(">")[1] == "a0" for p in space.path_labels()])
    assert pi0.mass(on_a) == pytest.approx(math.exp(2) / (1 + math.exp(2)), rel=1e-14, abs=0)


def _check_conditionals(policy):
    space = policy.space
    log_cond = policy.log_conditionals()
    cond = policy.conditional_probs()
    # each sibling group is a distribution
    inner = np.flatnonzero(space.child_count > 0)
    sums = np.bincount(space.parent[1:], weights=cond[1:], minlength=space.n_prefixes)
    np.testing.assert_allclose(sums[inner], 1.0, rtol=0, atol=ATOL)
    # round trip
    back = Policy.from_log_conditionals(space, log_cond)
    np.testing.assert_allclose(back.prob, policy.prob, rtol=0, atol=ATOL)
    finite = np.isfinite(policy.log_prob)
    np.testing.assert_allclose(back.log_prob[finite], policy.log_prob[finite], rtol=0, atol=1e-10)
    assert (np.isneginf(back.log_prob) == ~finite).all()


@pytest.mark.parametrize("name", ["grid3", "grid4", "diamonds", "routes"])
def test_conditionals_round_trip(name):
    space = enumerate_rollouts(named_task(name))
    _check_conditionals(base_policy(space, "random", seed=5))
    # a policy with zero-mass prefixes (only correct rollouts): conditionals stay distributions
    pi0 = base_policy(space)
    only_correct = Policy.from_log_weights(space, np.where(space.correct, pi0.log_prob, -np.inf))
    _check_conditionals(only_correct)
    # an arbitrary (non edge-softmax) policy
    weights = as_generator(1).normal(0, 2, size=space.n_rollouts)
    _check_conditionals(Policy.from_log_weights(space, weights))


def test_conditionals_match_oracle():
    task = named_task("grid4")
    space = enumerate_rollouts(task)
    truth = oracle.oracle_space(task.graph, task.source, task.target)
    weights = as_generator(2).normal(0, 1, size=space.n_rollouts)
    policy = Policy.from_log_weights(space, weights)
    masses = oracle.prefix_masses(dict(zip(oracle.label_rollouts(space), policy.prob, strict=True)))
    # the prefix of every tree node, as a label tuple
    prefix = [None] * space.n_prefixes
    prefix[0] = (space.labels[space.source],)
    for p in range(1, space.n_prefixes):
        prefix[p] = prefix[space.parent[p]] + (space.labels[space.node[p]],)
    expected = [1.0] + [
        oracle.conditional(masses, prefix[p][:-1], prefix[p][-1])
        for p in range(1, space.n_prefixes)
    ]
    np.testing.assert_allclose(policy.conditional_probs(), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        np.exp(policy.prefix_log_mass()), [masses[h] for h in prefix], rtol=1e-12
    )
    assert truth.rollouts  # the oracle space is the same instance


def test_from_log_weights_rejects_bad_weights():
    space = enumerate_rollouts(named_task("grid3"))
    n = space.n_rollouts
    with pytest.raises(ValueError, match="log-weights"):
        Policy.from_log_weights(space, np.zeros(n + 1))
    with pytest.raises(ValueError, match="nan"):
        Policy.from_log_weights(space, np.full(n, np.nan))
    with pytest.raises(ValueError, match="zero weight"):
        Policy.from_log_weights(space, np.full(n, -np.inf))
    with pytest.raises(ValueError, match="nan or \\+inf"):
        Policy.from_log_weights(space, np.r_[np.inf, np.zeros(n - 1)])


def test_edge_softmax_and_base_reject_bad_input():
    space = enumerate_rollouts(named_task("grid3"))
    with pytest.raises(ValueError, match="finite"):
        edge_softmax(space, np.r_[np.inf, np.zeros(space.n_moves - 1)])
    with pytest.raises(ValueError, match="move logits"):
        edge_softmax(space, np.zeros(space.n_moves + 2))
    with pytest.raises(ValueError, match="unknown base 'nope'"):
        base_policy(space, "nope")
    with pytest.raises(ValueError, match="scale"):
        base_policy(space, "random", scale=-1.0)
    with pytest.raises(TypeError, match="seed"):
        as_generator(1.5)


def test_extreme_logits_give_a_normalised_policy():
    # logits +-50 on every move of grid3: the softmax stays finite in log space
    task = named_task("grid3")
    graph = task.graph.copy()
    for i, (_, _, data) in enumerate(graph.edges(data=True)):
        data["logit"] = 50.0 if i % 2 else -50.0
    space = enumerate_rollouts(make_task(graph, task.source, task.target))
    policy = base_policy(space)
    assert np.isfinite(policy.log_prob).all()
    assert abs(policy.prob.sum() - 1.0) <= ATOL
    truth = oracle.oracle_space(graph, task.source, task.target)
    expected = oracle.aligned(space, oracle.edge_softmax(truth, oracle.graph_logits(graph)))
    np.testing.assert_allclose(policy.prob, expected, rtol=0, atol=ATOL)
    _check_conditionals(policy)


@pytest.mark.parametrize("name", ["grid3", "diamonds", "routes"])
def test_softmax_policies_keep_the_conditionals_they_would_recompute(name):
    """``from_log_conditionals(..., softmax=True)`` keeps the given conditionals; they agree
    with the ones recomputed from the rollouts' masses, uniform below a zero conditional."""
    space = enumerate_rollouts(named_task(name))
    rng = np.random.default_rng(5)
    logits = rng.normal(size=space.n_prefixes)
    logits[rng.random(space.n_prefixes) < 0.15] = -np.inf  # some moves get no mass
    uniform = np.r_[0.0, -np.log(space.child_count[space.parent[1:]])]
    log_cond = space.sibling_log_softmax(logits, fallback=uniform)  # a dead group: uniform
    assert np.isneginf(log_cond).any()
    kept = Policy.from_log_conditionals(space, log_cond, softmax=True)
    recomputed = Policy.from_log_conditionals(space, log_cond)
    np.testing.assert_array_equal(kept.log_prob, recomputed.log_prob)
    a, b = kept.log_conditionals(), recomputed.log_conditionals()
    assert np.array_equal(np.isneginf(a), np.isneginf(b))
    finite = np.isfinite(b)
    np.testing.assert_allclose(a[finite], b[finite], rtol=0, atol=1e-14)
