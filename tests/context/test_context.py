"""Context models: closed-form tilt scores by hand, structured forms against the generic ones,
zero strength, and user-defined models.

Tolerances: the engine and the oracle both compute exact sums over an
enumerated space, so they differ by rounding only; ``1e-10`` (the project's
bar for closed forms against brute force) leaves room for the oracle's plain
products and sums of a few hundred terms.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import oracle
import pytest
from _instances import CASES, DEMOS, _base, _close, _close_policy

from tilt.context import (
    ContextModel,
    CopyContext,
    EdgeContext,
    KernelContext,
    demonstrations,
    edge_marginals,
    generic_forward_log_prob,
    generic_tilt_score,
    generic_token_log_target,
    make_context,
)
from tilt.objectives import (
    sd_forward,
    sd_optimum,
    sd_sequence,
    sd_token,
    tilt_score,
)
from tilt.policy import base_policy
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import make_task, named_task


@pytest.mark.parametrize(("name", "model_name", "strength", "demos_kind", "alpha"), CASES)
def test_structured_forms_equal_generic_paths(name, model_name, strength, demos_kind, alpha):
    _, policy, _, _ = _base(name)
    model = make_context(model_name, strength)
    d = demonstrations(policy, demos_kind, alpha)
    _close(model.tilt_score(policy, d), generic_tilt_score(model, policy, d))
    _close(model.token_log_target(policy, d), generic_token_log_target(model, policy, d))
    _close(model.forward_log_prob(policy, d), generic_forward_log_prob(model, policy, d))


def test_edge_marginals_by_loop():
    space, policy, truth, pi = _base("grid3")
    d = demonstrations(policy)
    m = edge_marginals(d)
    moves = [oracle._moves(y) for y in oracle.label_rollouts(space)]
    for e in range(space.n_moves):
        label = (space.labels[space.move_tail[e]], space.labels[space.move_head[e]])
        expected = sum(p for p, mv in zip(d.prob, moves, strict=True) if label in mv)
        assert m[e] == pytest.approx(expected, abs=1e-14)


@pytest.mark.parametrize("model", [CopyContext(0.0), EdgeContext(0.0), KernelContext(0.0)])
def test_zero_strength_changes_nothing(model):
    _, policy, _, _ = _base("grid3-random")
    _close(tilt_score(policy, model), np.zeros(policy.space.n_rollouts), atol=1e-13)
    for method in ("sequence", "token", "forward"):
        _close(sd_optimum(policy, model, method).prob, policy.prob, atol=1e-13)


def test_copy_tilt_score_by_hand():
    # pi = (3/4, 1/4), D = pi (both correct), lam = 1/2.
    # T_a = (1/2 * 3/4 + 1/2, 1/2 * 1/4) = (7/8, 1/8); T_b = (3/8, 1/8 + 1/2) = (3/8, 5/8).
    # S(a) = 3/4 log((7/8)/(3/4)) + 1/4 log((3/8)/(3/4)) = 3/4 log(7/6) + 1/4 log(1/2)
    # S(b) = 3/4 log((1/8)/(1/4)) + 1/4 log((5/8)/(1/4)) = 3/4 log(1/2) + 1/4 log(5/2)
    pi0, a, b = _two_routes()
    score = tilt_score(pi0, CopyContext(0.5))
    assert score[a] == pytest.approx(0.75 * math.log(7 / 6) + 0.25 * math.log(0.5), abs=1e-14)
    assert score[b] == pytest.approx(0.75 * math.log(0.5) + 0.25 * math.log(2.5), abs=1e-14)
    # sequence SD: q(a) / q(b) = 3 exp(S(a) - S(b))
    q = sd_sequence(pi0, CopyContext(0.5))
    assert q.prob[a] / q.prob[b] == pytest.approx(3 * math.exp(score[a] - score[b]), rel=1e-13)
    # forward SD: (1 - lam) pi + lam D = pi here
    _close(sd_forward(pi0, CopyContext(0.5)).prob, pi0.prob, atol=1e-15)


def test_copy_on_grid2_by_hand():
    # grid2: two rollouts of 1/2 each, D = (1/2, 1/2).  S(y) = 1/2 log(1 + lam) + 1/2 log(1 - lam)
    # = 1/2 log(1 - lam^2) for both, so every SD optimum is the base.
    space = enumerate_rollouts(named_task("grid2"))
    pi0 = base_policy(space, "uniform")
    for lam in (0.2, 0.9):
        _close(tilt_score(pi0, CopyContext(lam)), [0.5 * math.log(1 - lam**2)] * 2, atol=1e-15)
        _close(sd_sequence(pi0, CopyContext(lam)).prob, [0.5, 0.5], atol=1e-15)


def test_edge_tilt_score_by_hand():
    # gamma = log 2.  Teacher with c = a: at s, pi(a|s) = 3/4 doubled: T_a = (6/7, 1/7).
    # With c = b: pi(b|s) = 1/4 doubled: T_b = (3/5, 2/5).  D = (3/4, 1/4).
    # S(a) = 3/4 log((6/7)/(3/4)) + 1/4 log((3/5)/(3/4)) = 3/4 log(8/7) + 1/4 log(4/5)
    # S(b) = 3/4 log((1/7)/(1/4)) + 1/4 log((2/5)/(1/4)) = 3/4 log(4/7) + 1/4 log(8/5)
    pi0, a, b = _two_routes()
    score = tilt_score(pi0, EdgeContext(math.log(2)))
    assert score[a] == pytest.approx(0.75 * math.log(8 / 7) + 0.25 * math.log(0.8), abs=1e-14)
    assert score[b] == pytest.approx(0.75 * math.log(4 / 7) + 0.25 * math.log(1.6), abs=1e-14)
    # forward SD: 3/4 T_a + 1/4 T_b = (3/4 * 6/7 + 1/4 * 3/5, 3/4 * 1/7 + 1/4 * 2/5)
    #           = (111/140, 29/140)
    fwd = sd_forward(pi0, EdgeContext(math.log(2)))
    assert fwd.prob[a] == pytest.approx(111 / 140, abs=1e-14)
    # token SD at s: q(a|s) ∝ exp(3/4 log(6/7) + 1/4 log(3/5)),
    #                q(b|s) ∝ exp(3/4 log(1/7) + 1/4 log(2/5))
    qa = math.exp(0.75 * math.log(6 / 7) + 0.25 * math.log(3 / 5))
    qb = math.exp(0.75 * math.log(1 / 7) + 0.25 * math.log(2 / 5))
    assert sd_token(pi0, EdgeContext(math.log(2))).prob[a] == pytest.approx(
        qa / (qa + qb), abs=1e-14
    )


def test_kernel_tilt_score_by_hand():
    # E(a) and E(b) are disjoint, two moves each: T_c(y) ∝ pi(y) e^{2 gamma [y = c]}.
    # gamma = log(2)/2: T_a = (3*2, 1)/7 = (6/7, 1/7), T_b = (3, 2)/5: the numbers of edge(log 2).
    pi0, a, b = _two_routes()
    score = tilt_score(pi0, KernelContext(math.log(2) / 2))
    assert score[a] == pytest.approx(0.75 * math.log(8 / 7) + 0.25 * math.log(0.8), abs=1e-14)
    assert score[b] == pytest.approx(0.75 * math.log(4 / 7) + 0.25 * math.log(1.6), abs=1e-14)


@pytest.mark.parametrize("name", ["grid3", "routes", "grid3-h6"])
def test_user_defined_context_model_through_generic_paths(name):
    space, policy, truth, pi = _base(name)
    model = SharedPrefix(0.9)
    for demos_kind, alpha in DEMOS:
        demos = oracle.demonstrations(pi, truth, demos_kind, alpha)
        teach = {c: _shared_prefix_teacher(pi, c, 0.9) for c in demos}
        score = oracle.tilt_score(pi, demos, teach)
        _close(tilt_score(policy, model, demos_kind, alpha), oracle.aligned(space, score))
        _close_policy(
            sd_sequence(policy, model, demos_kind, alpha, 0.5), oracle.sd_sequence(pi, score, 0.5)
        )
        _close_policy(
            sd_token(policy, model, demos_kind, alpha), oracle.sd_token(pi, truth, demos, teach)
        )
        _close_policy(
            sd_forward(policy, model, demos_kind, alpha), oracle.sd_forward(pi, demos, teach)
        )


def test_context_model_without_teacher_is_an_error():
    _, policy, _, _ = _base("grid3")
    with pytest.raises(NotImplementedError):
        tilt_score(policy, ContextModel())


def test_kernel_forward_with_one_demonstration():
    # regression: with a block of one demonstration, np.ascontiguousarray(tilted.T) was a view of
    # tilted and the in-place log-sum-exp of the normaliser overwrote it
    # s -> t (logit 0) and s -> a (logit 1), undirected: one correct rollout, so D is a point mass
    # on c = (s, t) and q(y) = T_c(y) = pi(y) e^{gamma |E(y) ∩ E(c)|} / Z.  pi = (1, e) / (1 + e) on
    # ((s, t), (s, a)); at gamma = 2: (e^2, e) / Z = (e, 1) / (1 + e).
    graph = nx.Graph()
    graph.add_edge("s", "t", logit=0.0)
    graph.add_edge("s", "a", logit=1.0)
    space = enumerate_rollouts(make_task(graph, "s", "t"))
    assert space.path_labels() == ["s>t", "s>a"]
    q = sd_forward(base_policy(space), KernelContext(2.0))
    e = math.e
    _close(q.prob, [e / (1 + e), 1 / (1 + e)], atol=1e-15)


def _two_routes():
    """s -> a -> t and s -> b -> t with theta(s, a) = log 3: pi0 = (3/4, 1/4), both correct."""
    graph = nx.DiGraph()
    graph.add_edge("s", "a", logit=math.log(3))
    graph.add_edge("s", "b", logit=0.0)
    graph.add_edge("a", "t")
    graph.add_edge("b", "t")
    space = enumerate_rollouts(make_task(graph, "s", "t"))
    order = [p.split(">")[1] for p in space.path_labels()]
    return base_policy(space), order.index("a"), order.index("b")


class SharedPrefix(ContextModel):
    """A user model: ``T_c(y) ∝ pi(y) exp(g * (number of leading moves y shares with c))``."""

    name = "shared-prefix"

    def __init__(self, g):
        self.strength = self.g = g

    def teacher_log_prob(self, policy, demos):
        paths = policy.space.paths()
        out = []
        for c in np.asarray(demos):
            same = np.cumprod((paths == paths[c]) & (paths >= 0), axis=1).sum(axis=1) - 1
            tilted = policy.log_prob + self.g * same
            out.append(tilted - np.logaddexp.reduce(tilted))
        return np.array(out)


def _shared_prefix_teacher(pi, c, g):
    def shared(y):
        n = 0
        while n < min(len(y), len(c)) and y[n] == c[n]:
            n += 1
        return n - 1

    raw = {y: p * math.exp(g * shared(y)) for y, p in pi.items()}
    total = sum(raw.values())
    return {y: w / total for y, w in raw.items()}
