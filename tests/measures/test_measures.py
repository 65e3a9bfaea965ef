"""Measures against direct loops over the rollouts (``tests/oracle.py``)."""

from __future__ import annotations

import json
import math
from functools import cache

import networkx as nx
import numpy as np
import oracle
import pytest

from tilt.context import make_context
from tilt.measures import (
    correct_entropy,
    correct_flow_by_move,
    distinct_at_k,
    gap_slope,
    measure,
    ood_pass_at_k,
    pass_at_k,
    ratio_distortion,
    widening_fraction,
)
from tilt.objectives import rl_optimum, sd_optimum
from tilt.policy import Policy, base_policy
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import make_task, named_task

KS = (1, 2, 8, 64)
TOL = 1e-12  # exact sums over an enumerated space: rounding only


@cache
def _instance(name):
    task = named_task(name)
    space = enumerate_rollouts(task)
    truth = oracle.oracle_space(task.graph, task.source, task.target, task.horizon)
    return space, truth, base_policy(space)


def _policies(name):
    space, _, pi0 = _instance(name)
    model = make_context("edge", 2.0)
    yield "base", pi0
    yield "rl", rl_optimum(pi0, 0.3)
    yield "rl0", rl_optimum(pi0, 0.0)
    for method in ("sequence", "token", "forward"):
        yield method, sd_optimum(pi0, model, method)
    yield (
        "random",
        Policy.from_log_weights(space, np.random.default_rng(3).normal(0, 2, space.n_rollouts)),
    )


def _as_dict(policy):
    return dict(zip(oracle.label_rollouts(policy.space), policy.prob.tolist(), strict=True))


def _edge_label(unit, label):
    """Whether ``label`` names ``unit``: ``'v>w'`` for one move, ``'v-w'`` either way for two."""
    if len(unit) == 1:
        ((v, w),) = unit
        return label == f"{v}>{w}"
    return any(label == f"{v}-{w}" for v, w in unit)


CASES = [
    (name, key)
    for name in ("grid3", "grid4", "diamonds", "routes")
    for key in ("base", "rl", "rl0", "sequence", "token", "forward", "random")
]


@pytest.mark.parametrize(("name", "key"), CASES)
def test_measures_match_direct_loops(name, key):
    space, truth, pi0 = _instance(name)
    policy = dict(_policies(name))[key]
    q, base = _as_dict(policy), _as_dict(pi0)
    assert policy.accuracy == pytest.approx(oracle.accuracy(q, truth), abs=TOL)
    for k in KS:
        assert pass_at_k(policy, k) == pytest.approx(oracle.pass_at_k(q, truth, k), abs=TOL)
        assert distinct_at_k(policy, k) == pytest.approx(
            oracle.distinct_at_k(q, truth, k), abs=1e-11
        )
        values = oracle.ood_pass_at_k(q, truth, k)
        ood = ood_pass_at_k(policy, k)
        assert ood.n_moves == len(values)
        assert ood.mean == pytest.approx(sum(values.values()) / len(values), abs=TOL)
        assert ood.worst == pytest.approx(min(values.values()), abs=TOL)
        # the reported edge is one whose blocking gives the worst value
        worst = {u: v for u, v in values.items() if _edge_label(u, ood.worst_move)}
        assert list(worst.values()) == [pytest.approx(ood.worst, abs=TOL)]
    assert correct_entropy(policy) == pytest.approx(oracle.correct_entropy(q, truth), abs=1e-11)
    assert gap_slope(policy, pi0) == pytest.approx(oracle.gap_slope(q, base, truth), abs=1e-10)
    if all(q[y] > 0 for y in truth.rollouts if truth.correct[y]):
        assert ratio_distortion(policy, pi0) == pytest.approx(
            oracle.ratio_distortion(q, base, truth), abs=1e-10
        )
    else:
        assert ratio_distortion(policy, pi0) == math.inf
    # the bundle
    m = measure(policy, pi0, KS)
    assert m.accuracy == policy.accuracy
    assert m.effective_correct == pytest.approx(math.exp(m.correct_entropy), rel=1e-15)
    assert m.pass_at_k == {k: pass_at_k(policy, k) for k in KS}
    assert m.distinct_at_k == {k: distinct_at_k(policy, k) for k in KS}
    assert {k: v.mean for k, v in m.ood.items()} == {k: ood_pass_at_k(policy, k).mean for k in KS}
    json.dumps(m.as_dict(), allow_nan=False)


@pytest.mark.parametrize("name", ["grid3", "grid4", "diamonds", "routes"])
@pytest.mark.parametrize("beta", [0.0, 0.1, 1.0, 10.0])
def test_rl_has_gap_slope_one_and_no_distortion(name, beta):
    _, _, pi0 = _instance(name)
    q = rl_optimum(pi0, beta)
    assert gap_slope(q, pi0) == pytest.approx(1.0, abs=1e-12)
    assert ratio_distortion(q, pi0) == pytest.approx(0.0, abs=1e-12)


def test_correct_flow_by_move_by_loop():
    space, truth, pi0 = _instance("grid4")
    q = _as_dict(pi0)
    flow = correct_flow_by_move(pi0)
    for e in range(space.n_moves):
        move = (space.labels[space.move_tail[e]], space.labels[space.move_head[e]])
        expected = sum(p for y, p in q.items() if truth.correct[y] and move in oracle._moves(y))
        assert flow[e] == pytest.approx(expected, abs=TOL)


def test_grid2_by_hand():
    # grid2, uniform base: two correct rollouts of 1/2.  pass@k = 1; distinct@k = 2 (1 - 2^-k);
    # H = log 2; each of the 4 moves is on exactly one rollout, so blocking it leaves 1/2 correct:
    # ood pass@k = 1 - 2^-k, mean and worst.  log pi0 is constant on C: no gap slope (nan).
    space = enumerate_rollouts(named_task("grid2"))
    pi0 = base_policy(space, "uniform")
    for k in (1, 3, 10):
        assert pass_at_k(pi0, k) == 1.0
        assert distinct_at_k(pi0, k) == pytest.approx(2 * (1 - 2.0**-k), abs=1e-15)
        ood = ood_pass_at_k(pi0, k)
        assert (ood.n_moves, ood.mean, ood.worst) == (
            4,
            pytest.approx(1 - 2.0**-k),
            pytest.approx(1 - 2.0**-k),
        )
    assert correct_entropy(pi0) == pytest.approx(math.log(2), abs=1e-15)
    assert math.isnan(gap_slope(pi0, pi0))
    assert ratio_distortion(pi0, pi0) == 0.0
    assert measure(pi0, pi0, (1,)).as_dict()["gap_slope"] is None


def test_dead_end_by_hand():
    # s -> a -> t and s -> b (dead end), uniform: q(C) = 1/2, pass@k = 1 - 2^-k, distinct@k the same
    # (one correct rollout), H = 0; blocking s>a or a>t kills everything: ood pass@k = 0.
    graph = nx.DiGraph([("s", "a"), ("a", "t"), ("s", "b")])
    pi0 = base_policy(enumerate_rollouts(make_task(graph, "s", "t")))
    for k in (1, 4):
        assert pass_at_k(pi0, k) == pytest.approx(1 - 2.0**-k, abs=1e-15)
        assert distinct_at_k(pi0, k) == pytest.approx(1 - 2.0**-k, abs=1e-15)
        ood = ood_pass_at_k(pi0, k)
        assert (ood.n_moves, ood.mean, ood.worst) == (2, 0.0, 0.0)
    assert correct_entropy(pi0) == 0.0
    assert math.isnan(gap_slope(pi0, pi0))  # fewer than two correct rollouts


def test_pass_at_k_accurate_near_one():
    # accuracy 1 - 1e-13: pass@k from the failure mass, not 1 - accuracy
    graph = nx.DiGraph()
    graph.add_edge("s", "t", logit=0.0)
    graph.add_edge("s", "b", logit=-math.log(1e13))
    pi0 = base_policy(enumerate_rollouts(make_task(graph, "s", "t")))
    fail = 1 / (1 + 1e13)
    assert 1 - pass_at_k(pi0, 2) == pytest.approx(fail**2, rel=1e-9)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_k_must_be_positive_int(bad):
    _, _, pi0 = _instance("grid3")
    for fn in (pass_at_k, distinct_at_k, ood_pass_at_k):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            fn(pi0, bad)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        measure(pi0, pi0, (1, bad))


def test_extreme_policies_have_finite_measures():
    _, _, pi0 = _instance("grid4")
    for q in (
        rl_optimum(pi0, 1e-12),
        sd_optimum(pi0, make_context("kernel", 60.0)),
        sd_optimum(pi0, make_context("copy", 0.999999)),
        sd_optimum(pi0, make_context("edge", 60.0)),
    ):
        m = measure(q, pi0, (1, 64))
        assert np.isfinite([m.accuracy, m.correct_entropy, m.effective_correct]).all()
        assert all(0 <= v <= 1 for v in m.pass_at_k.values())
        assert all(0 <= v.worst <= v.mean <= 1 for v in m.ood.values())


def test_point_mass_on_one_correct_rollout():
    # RL's beta -> 0 limit on s -> t | s -> b puts mass 1 on (s, t): pass@k = distinct@k = 1, H = 0,
    # blocking s>t leaves nothing: ood pass@k = 0 (a plain 0.0, not -0.0); no warning on log1p(-1)
    graph = nx.DiGraph([("s", "t"), ("s", "b")])
    pi0 = base_policy(enumerate_rollouts(make_task(graph, "s", "t")))
    q = rl_optimum(pi0, 0.0)
    for k in (1, 5):
        assert pass_at_k(q, k) == 1.0
        assert distinct_at_k(q, k) == 1.0
        ood = ood_pass_at_k(q, k)
        assert (ood.mean, ood.worst, ood.worst_move, ood.n_moves) == (0.0, 0.0, "s>t", 1)
        assert math.copysign(1.0, ood.worst) == 1.0
        # base: blocking s>t keeps nothing either, pass@k = 1 - 2^-k
        assert pass_at_k(pi0, k) == pytest.approx(1 - 2.0**-k, abs=1e-15)
    m = measure(q, pi0, (1, 8)).as_dict()
    assert m["correct_entropy"] == 0.0
    assert m["gap_slope"] is None
    json.dumps(m, allow_nan=False)


# ------------------------------------------------------------ widening fraction


def _widening_brute(q, base, tol=1e-9):
    """Every ordered pair of correct rollouts, weights pi0(y) pi0(y')."""
    correct = base.space.correct
    x, d = base.log_prob[correct], q.log_prob[correct] - base.log_prob[correct]
    w = np.exp(x)
    num = den = 0.0
    for i in range(x.size):
        for j in range(x.size):
            if x[i] > x[j] + tol:
                den += w[i] * w[j]
                num += w[i] * w[j] if d[i] > d[j] + tol else 0.0
    return num / den


@pytest.mark.parametrize("name", ["grid3", "grid4", "routes", "diamonds"])
@pytest.mark.parametrize("context", ["edge", "kernel", "copy"])
def test_widening_fraction_matches_all_pairs(name, context):
    space = enumerate_rollouts(named_task(name))
    pi0 = base_policy(space, "random", seed=4)
    model = make_context(context, 0.5 if context == "copy" else 1.5)
    for method in ("sequence", "token", "forward"):
        q = sd_optimum(pi0, model, method)
        assert widening_fraction(q, pi0) == pytest.approx(_widening_brute(q, pi0), abs=1e-12)
    for beta in (0.0, 0.1, 3.0):
        assert widening_fraction(rl_optimum(pi0, beta), pi0) == 0.0  # RL keeps every ratio


def test_widening_fraction_counts_dropped_rollouts_and_ties():
    # four correct rollouts with base masses 0.4, 0.3, 0.2, 0.1 (all correct): q drops the last
    space = enumerate_rollouts(make_task(nx.star_graph(4).to_directed(), 0, 1))
    assert space.n_correct == 1  # a star has one correct rollout: no pair
    pi0 = base_policy(space)
    assert math.isnan(widening_fraction(pi0, pi0))
    graph = nx.DiGraph()
    for i, logit in enumerate([math.log(4), math.log(3), math.log(2), 0.0]):
        graph.add_edge("s", f"m{i}", logit=logit)
        graph.add_edge(f"m{i}", "t")
    space = enumerate_rollouts(make_task(graph, "s", "t"))
    pi0 = base_policy(space)
    w = pi0.prob
    order = np.argsort(-w)
    log_q = pi0.log_prob.copy()
    log_q[order[3]] = -np.inf  # q drops the least likely rollout: its three gaps widen
    q = Policy.from_log_weights(space, log_q)
    a, b, c, d = w[order]
    total = a * (b + c + d) + b * (c + d) + c * d
    assert widening_fraction(q, pi0) == pytest.approx((a + b + c) * d / total, abs=1e-15)
    assert widening_fraction(pi0, pi0) == 0.0
