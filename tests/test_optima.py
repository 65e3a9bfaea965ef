"""Closed forms of the RL and SD optima and of the tilt score, against the brute-force oracle.

Tolerances: the engine and the oracle both compute exact sums over an
enumerated space, so they differ by rounding only; ``1e-10`` (the project's
bar for closed forms against brute force) leaves room for the oracle's plain
products and sums of a few hundred terms.
"""

from __future__ import annotations

import math
import warnings
from functools import cache

import networkx as nx
import numpy as np
import oracle
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

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
from tilt.graphs import make_task, named_task
from tilt.optimal import (
    iterate,
    matched_beta,
    rl_matched,
    rl_optimum,
    sd_forward,
    sd_optimum,
    sd_sequence,
    sd_token,
    tilt_score,
)
from tilt.policy import Policy, as_generator, base_policy
from tilt.space import enumerate_rollouts

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


# ---------------------------------------------------------------------- RL


@pytest.mark.parametrize("name", list(INSTANCES))
@pytest.mark.parametrize("beta", [0.0, 0.05, 0.3, 1.0, 4.0])
def test_rl_optimum_matches_oracle(name, beta):
    space, policy, truth, pi = _base(name)
    q = rl_optimum(policy, beta)
    _close_policy(q, oracle.rl_optimum(pi, truth, beta))
    # RL keeps the ratios among correct rollouts: log q - log pi0 is constant on C
    diff = q.log_prob[space.correct] - policy.log_prob[space.correct]
    assert diff.max() - diff.min() <= 1e-12


def test_rl_by_hand():
    # s -> a -> t, s -> b (dead end), logits 0: pi0(C) = 1/2.
    # pi_RL(C) = e^{1/beta} / (e^{1/beta} + 1);
    # at beta = 1/log 3 that is 3/4.
    graph = nx.DiGraph([("s", "a"), ("a", "t"), ("s", "b")])
    space = enumerate_rollouts(make_task(graph, "s", "t"))
    pi0 = base_policy(space)
    assert pi0.accuracy == pytest.approx(0.5, abs=1e-15)
    assert rl_optimum(pi0, 1 / math.log(3)).accuracy == pytest.approx(0.75, abs=1e-14)
    assert rl_optimum(pi0, 0.0).accuracy == 1.0
    assert matched_beta(0.5, 0.75) == pytest.approx(1 / math.log(3), rel=1e-14)


@pytest.mark.parametrize("name", ["grid3", "diamonds", "routes", "grid3-random"])
@pytest.mark.parametrize("fraction", [0.01, 0.3, 0.5, 0.9, 0.999])
def test_matched_beta_reaches_the_target(name, fraction):
    _, policy, _, _ = _base(name)
    p = policy.accuracy
    target = p + fraction * (1 - p)
    matched = rl_matched(policy, target)
    assert matched.beta is not None
    assert matched.beta > 0
    assert matched.policy.accuracy == pytest.approx(target, abs=1e-10)
    assert matched.message == ""


def test_matched_beta_edge_cases():
    _, policy, _, _ = _base("grid3")
    p = policy.accuracy
    # a = p: RL at beta = inf is the base
    same = rl_matched(policy, p)
    assert same.beta == math.inf
    _close(same.policy.prob, policy.prob, atol=0)
    # a = 1: the beta -> 0 limit
    assert matched_beta(p, 1.0) == 0.0
    assert rl_matched(policy, 1.0).policy.accuracy == pytest.approx(1.0, abs=1e-15)
    # a < p: no beta
    below = rl_matched(policy, p / 2)
    assert below.beta is None
    assert below.policy is None
    assert "no beta reaches" in below.message
    for bad in [(0.0, 0.5), (1.5, 0.5), (0.5, -0.1), (0.5, 1.1)]:
        with pytest.raises(ValueError, match="accuracies"):
            matched_beta(*bad)


@pytest.mark.parametrize("bad", [-1.0, -1e-300, math.nan])
def test_negative_beta_is_value_error(bad):
    _, policy, _, _ = _base("grid3")
    with pytest.raises(ValueError, match="beta"):
        rl_optimum(policy, bad)


# ----------------------------------------------------------- tilt score and SD


@pytest.mark.parametrize(("name", "model_name", "strength", "demos_kind", "alpha"), CASES)
def test_tilt_score_and_sd_optima_match_oracle(name, model_name, strength, demos_kind, alpha):
    space, policy, truth, pi, demos, teach = _bundle(name, model_name, strength, demos_kind, alpha)
    model = make_context(model_name, strength)
    d = demonstrations(policy, demos_kind, alpha)
    _close(
        d.prob, oracle.aligned(space, {y: demos.get(y, 0.0) for y in truth.rollouts}), atol=1e-12
    )
    # teachers, one per demonstration
    rollouts = oracle.label_rollouts(space)
    index = {y: i for i, y in enumerate(rollouts)}
    some = sorted(demos, key=lambda c: index[c])[:: max(1, len(demos) // 7)]
    got = model.teacher_log_prob(policy, np.array([index[c] for c in some]))
    for row, c in zip(got, some, strict=True):
        _close(row, np.log(oracle.aligned(space, teach[c])))
    # tilt score, structured and generic
    expected_score = oracle.aligned(space, oracle.tilt_score(pi, demos, teach))
    _close(tilt_score(policy, model, demos_kind, alpha), expected_score)
    _close(tilt_score(policy, model, d), expected_score)
    # sequence SD, with and without an anchor
    score = oracle.tilt_score(pi, demos, teach)
    for anchor in (0.0, 1.5):
        _close_policy(
            sd_sequence(policy, model, demos_kind, alpha, anchor),
            oracle.sd_sequence(pi, score, anchor),
        )
    # token SD by the explicit per-prefix average
    for anchor in (0.0, 0.7):
        _close_policy(
            sd_token(policy, model, demos_kind, alpha, anchor),
            oracle.sd_token(pi, truth, demos, teach, anchor),
        )
    # forward SD: the mixture of teachers
    _close_policy(sd_forward(policy, model, demos_kind, alpha), oracle.sd_forward(pi, demos, teach))


@pytest.mark.parametrize(("name", "model_name", "strength", "demos_kind", "alpha"), CASES)
def test_structured_forms_equal_generic_paths(name, model_name, strength, demos_kind, alpha):
    _, policy, _, _ = _base(name)
    model = make_context(model_name, strength)
    d = demonstrations(policy, demos_kind, alpha)
    _close(model.tilt_score(policy, d), generic_tilt_score(model, policy, d))
    _close(model.token_log_target(policy, d), generic_token_log_target(model, policy, d))
    _close(model.forward_log_prob(policy, d), generic_forward_log_prob(model, policy, d))


@pytest.mark.parametrize("name", ["grid3", "diamonds", "routes"])
@pytest.mark.parametrize(("model_name", "strength"), MODELS)
def test_sd_of_a_policy_with_zero_mass_rollouts(name, model_name, strength):
    # SD after RL's beta -> 0 limit (every incorrect rollout has mass 0): context models are defined
    # for any tabular policy.  S is compared on the support only: where pi(y) = 0 the pointwise CMI
    # is undefined (the structured forms extend their formula there, the generic path gives -inf)
    space, policy0, truth, pi0 = _base(name)
    policy = rl_optimum(policy0, 0.0)
    pi = oracle.rl_optimum(pi0, truth, 0.0)
    model = make_context(model_name, strength)
    demos = oracle.demonstrations(pi, truth)
    teach = oracle.teachers(pi, truth, demos, model_name, strength)
    score = oracle.tilt_score(pi, demos, teach)
    support = space.correct
    _close(tilt_score(policy, model)[support], np.array(oracle.aligned(space, score))[support])
    _close_policy(sd_sequence(policy, model), oracle.sd_sequence(pi, score))
    for anchor in (0.0, 0.5):
        _close_policy(
            sd_token(policy, model, anchor=anchor), oracle.sd_token(pi, truth, demos, teach, anchor)
        )
    _close_policy(sd_forward(policy, model), oracle.sd_forward(pi, demos, teach))


@pytest.mark.parametrize("name", ["grid3", "routes"])
@pytest.mark.parametrize(("model_name", "strength"), MODELS)
@pytest.mark.parametrize("method", ["sequence", "token", "forward"])
def test_iterated_sd_matches_oracle(name, model_name, strength, method):
    # pi_2 = SD(SD(pi_0)): the second round's demonstrations and teacher come from pi_1, a tabular
    # policy that is not an edge softmax (its conditionals depend on the whole prefix)
    space, policy, truth, pi = _base(name)
    model = make_context(model_name, strength)
    rounds = iterate(policy, lambda p: sd_optimum(p, model, method), 2)
    current = pi
    for step in (1, 2):
        demos = oracle.demonstrations(current, truth)
        teach = oracle.teachers(current, truth, demos, model_name, strength)
        if method == "sequence":
            current = oracle.sd_sequence(current, oracle.tilt_score(current, demos, teach))
        elif method == "token":
            current = oracle.sd_token(current, truth, demos, teach)
        else:
            current = oracle.sd_forward(current, demos, teach)
        _close_policy(rounds[step], current)


@pytest.mark.parametrize("name", ["grid3", "diamonds"])
def test_tempered_demonstrations_interpolate(name):
    # THEORY.md: tempered pi^alpha on C; alpha = 1 is D (own), alpha = 0 is uniform over C
    _, policy, _, _ = _base(name)
    _close(
        demonstrations(policy, "tempered", 1.0).prob, demonstrations(policy, "own").prob, atol=1e-15
    )
    _close(
        demonstrations(policy, "tempered", 0.0).prob,
        demonstrations(policy, "uniform").prob,
        atol=1e-15,
    )


def test_sd_optimum_dispatches():
    _, policy, _, _ = _base("routes")
    model = EdgeContext(1.0)
    for method, fn in (("sequence", sd_sequence), ("token", sd_token)):
        _close(
            sd_optimum(policy, model, method, "uniform", 1.0, 0.4).prob,
            fn(policy, model, "uniform", 1.0, 0.4).prob,
            atol=0,
        )
    _close(
        sd_optimum(policy, model, "forward", "uniform").prob,
        sd_forward(policy, model, "uniform").prob,
        atol=0,
    )


def test_edge_marginals_by_loop():
    space, policy, truth, pi = _base("grid3")
    d = demonstrations(policy)
    m = edge_marginals(d)
    moves = [oracle._moves(y) for y in oracle.label_rollouts(space)]
    for e in range(space.n_moves):
        label = (space.labels[space.move_tail[e]], space.labels[space.move_head[e]])
        expected = sum(p for p, mv in zip(d.prob, moves, strict=True) if label in mv)
        assert m[e] == pytest.approx(expected, abs=1e-14)


def test_token_sd_is_not_sequence_sd():
    # THEORY.md: the token fixed point is not the sequence optimum in general
    _, policy, _, _ = _base("grid3")
    model = EdgeContext(2.0)
    gap = np.abs(sd_token(policy, model).prob - sd_sequence(policy, model).prob).max()
    assert gap > 1e-3


@pytest.mark.parametrize("model", [CopyContext(0.0), EdgeContext(0.0), KernelContext(0.0)])
def test_zero_strength_changes_nothing(model):
    _, policy, _, _ = _base("grid3-random")
    _close(tilt_score(policy, model), np.zeros(policy.space.n_rollouts), atol=1e-13)
    for method in ("sequence", "token", "forward"):
        _close(sd_optimum(policy, model, method).prob, policy.prob, atol=1e-13)


# --------------------------------------------------------- hand-computed values


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


# -------------------------------------------------------- user-defined model


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


# ------------------------------------------------------------ random graphs


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    instance=oracle.random_instances(),
    model_name=st.sampled_from(["copy", "edge", "kernel"]),
    strength=st.floats(0.0, 0.95),
    demos_kind=st.sampled_from(["own", "uniform", "tempered"]),
    beta=st.sampled_from([0.0, 0.2, 2.0]),
)
def test_random_graphs_optima_match_oracle(instance, model_name, strength, demos_kind, beta):
    graph, source, target, horizon = instance
    truth = oracle.oracle_space(graph, source, target, horizon)
    if not any(truth.correct.values()):
        event("no correct rollout")
        return
    space = enumerate_rollouts(make_task(graph, source, target, horizon))
    policy = base_policy(space)
    pi = oracle.edge_softmax(truth, oracle.graph_logits(graph))
    _close_policy(rl_optimum(policy, beta), oracle.rl_optimum(pi, truth, beta))
    strength = strength * 4 if model_name != "copy" else strength
    model = make_context(model_name, strength)
    demos = oracle.demonstrations(pi, truth, demos_kind, 0.5)
    teach = oracle.teachers(pi, truth, demos, model_name, strength)
    score = oracle.tilt_score(pi, demos, teach)
    _close(tilt_score(policy, model, demos_kind, 0.5), oracle.aligned(space, score))
    _close_policy(sd_sequence(policy, model, demos_kind, 0.5), oracle.sd_sequence(pi, score))
    _close_policy(
        sd_token(policy, model, demos_kind, 0.5), oracle.sd_token(pi, truth, demos, teach)
    )
    _close_policy(sd_forward(policy, model, demos_kind, 0.5), oracle.sd_forward(pi, demos, teach))


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


# ------------------------------------------------------------ extreme values


def _extreme_task():
    """grid3 with logits +-50 alternating over its moves."""
    task = named_task("grid3")
    graph = task.graph.copy()
    for i, (_, _, data) in enumerate(graph.edges(data=True)):
        data["logit"] = 50.0 if i % 3 else -50.0
    return make_task(graph, task.source, task.target, name="grid3-extreme")


def _finite_normalised(policy):
    assert not np.isnan(policy.log_prob).any()
    assert not np.isposinf(policy.log_prob).any()
    assert abs(policy.prob.sum() - 1.0) <= 1e-12


@pytest.mark.parametrize(
    "model",
    [
        CopyContext(0.999999),
        EdgeContext(60.0),
        KernelContext(60.0),
        CopyContext(0.5),
        EdgeContext(2.0),
    ],
)
@pytest.mark.parametrize("which", ["grid3", "extreme"])
def test_extreme_values_are_finite_and_normalised(model, which):
    task = named_task("grid3") if which == "grid3" else _extreme_task()
    space = enumerate_rollouts(task)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pi0 = base_policy(space)
        _finite_normalised(pi0)
        assert np.isfinite(tilt_score(pi0, model)).all()
        for method in ("sequence", "token", "forward"):
            q = sd_optimum(pi0, model, method, anchor=0.0 if method == "forward" else 0.3)
            _finite_normalised(q)
            assert np.isfinite(q.log_prob).all()
        for beta in (1e-12, 0.0, 1e12):
            _finite_normalised(rl_optimum(pi0, beta))


def test_extreme_values_match_oracle():
    task = _extreme_task()
    space = enumerate_rollouts(task)
    truth = oracle.oracle_space(task.graph, task.source, task.target)
    pi = oracle.edge_softmax(truth, oracle.graph_logits(task.graph))
    policy = base_policy(space)
    _close_policy(policy, pi)
    for name, strength in (("copy", 0.999999), ("edge", 60.0), ("kernel", 60.0)):
        demos = oracle.demonstrations(pi, truth)
        teach = oracle.teachers(pi, truth, demos, name, strength)
        model = make_context(name, strength)
        score = oracle.tilt_score(pi, demos, teach)
        _close(tilt_score(policy, model), oracle.aligned(space, score), atol=TOL)
        _close_policy(sd_forward(policy, model), oracle.sd_forward(pi, demos, teach))


def test_tiny_beta_equals_the_limit():
    # beta = 1e-12: the incorrect weight is exp(-1e12) = 0, so pi_RL is the beta -> 0 limit exactly
    _, policy, _, _ = _base("grid3")
    tiny = rl_optimum(policy, 1e-12)
    limit = rl_optimum(policy, 0.0)
    _close(tiny.prob, limit.prob, atol=1e-15)
    correct = policy.space.correct
    _close(tiny.log_prob[correct], limit.log_prob[correct], atol=1e-12)


# --------------------------------------------------------------- validation


def test_bad_arguments_are_value_errors():
    _, policy, _, _ = _base("grid3")
    with pytest.raises(ValueError, match="lam"):
        CopyContext(1.0)
    with pytest.raises(ValueError, match="lam"):
        CopyContext(-0.1)
    with pytest.raises(ValueError, match="gamma"):
        EdgeContext(-1.0)
    with pytest.raises(ValueError, match="gamma"):
        KernelContext(math.inf)
    with pytest.raises(ValueError, match="unknown context model 'nope'"):
        make_context("nope", 1.0)
    with pytest.raises(ValueError, match="unknown demonstrations 'nope'"):
        demonstrations(policy, "nope")
    with pytest.raises(ValueError, match="alpha"):
        demonstrations(policy, "tempered", -1.0)
    with pytest.raises(ValueError, match="anchor"):
        sd_sequence(policy, CopyContext(0.5), anchor=-1.0)
    with pytest.raises(ValueError, match="unknown SD objective"):
        sd_optimum(policy, CopyContext(0.5), "nope")
    with pytest.raises(ValueError, match="rounds"):
        iterate(policy, lambda p: p, -1)
    only_wrong = Policy.from_log_weights(policy.space, np.where(policy.space.correct, -np.inf, 0.0))
    with pytest.raises(ValueError, match="no mass on correct"):
        demonstrations(only_wrong)
    with pytest.raises(ValueError, match="no mass on correct"):
        rl_optimum(only_wrong, 0.0)


def test_iterate_rl_keeps_ratios():
    _, policy, _, _ = _base("diamonds")
    rounds = iterate(policy, lambda p: rl_optimum(p, 0.5), 3)
    assert len(rounds) == 4
    assert rounds[0] is policy
    c = policy.space.correct
    for q in rounds[1:]:
        diff = q.log_prob[c] - policy.log_prob[c]
        assert diff.max() - diff.min() <= 1e-12
    # three rounds at beta = 0.5 are one round at beta = 0.5 / 3 (the exponents add)
    _close(rounds[-1].prob, rl_optimum(policy, 0.5 / 3).prob, atol=1e-12)
