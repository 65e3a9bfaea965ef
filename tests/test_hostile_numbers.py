"""Hostile numbers for the library: extreme strengths and logits, underflowing accuracies.

Every optimum is a distribution (sums to 1 within 1e-12) or the call refuses with the
legal range; where a closed form applies it is checked against a reference computed
differently (mpmath at 60 digits, written plainly here from the definitions).
"""

from __future__ import annotations

import json
import math
import time

import mpmath
import networkx as nx
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.special import expit

from tilt import space as space_module
from tilt.context import make_context
from tilt.context.base import MAX_GAMMA
from tilt.engines.dp.space import BYTES_PER_STATE_EDGE, acyclic_space, lattice_table
from tilt.measures import gap_slope, measure, ratio_distortion, widening_fraction
from tilt.objectives import (
    MATCH_TOLERANCE,
    OBJECTIVES,
    matched_beta,
    rl_matched,
    rl_optimum,
    sd_optimum,
)
from tilt.policy import Policy, base_policy, edge_softmax
from tilt.share import ShareObjective, share_suite, split_suite, suite_student
from tilt.share import _train as share_train
from tilt.share._run import ShareRun, mean_accuracy
from tilt.share._train import MATCH_TOL as SHARE_MATCH_TOL
from tilt.share._train import match_run, matched_theta, train_shared
from tilt.space import TooLargeError, enumerate_rollouts
from tilt.suite import MATCH_TOL, SuiteConfig, builtin_suite, load_suite, run_suite, shared_beta
from tilt.tasks.graphs import make_task, named_task
from tilt.tasks.lattice import lattice_move_count, parse_lattice
from tilt.testing import instances
from tilt.train import train

# --------------------------------------------------------------------------
# item 1: context models at every legal strength

mpmath.mp.dps = 60


def _tree(space):
    """Rollouts as label tuples, the available next labels of every prefix, each move's index."""
    labels = space.labels
    rollouts, move_of = [], {}
    for row, moves in zip(space.paths(), space.path_moves(), strict=True):
        nodes = tuple(labels[i] for i in row if i >= 0)
        rollouts.append(nodes)
        for t, e in enumerate(m for m in moves if m >= 0):
            move_of[(nodes[t], nodes[t + 1])] = int(e)
    avail: dict[tuple, set] = {}
    for y in rollouts:
        for t in range(len(y) - 1):
            avail.setdefault(y[: t + 1], set()).add(y[t + 1])
    return rollouts, avail, move_of


def _mp_reference(instance, name: str, strength: float) -> dict[str, list]:
    """``log q`` of sequence, token, forward and token-forward SD (own demonstrations), in mpmath.

    Straight from the definitions: teachers as products of explicit softmaxes (edge),
    explicit normalised tilts (kernel) or mixtures (copy); no closed form of tilt's.
    """
    space, logit = instance.space, instance.move_logit
    rollouts, avail, move_of = _tree(space)
    target = space.labels[space.target]
    g = mpmath.mpf(strength)

    def cond(h, u, boosted=None):
        v = h[-1]
        w = {
            x: mpmath.exp(mpmath.mpf(logit[move_of[(v, x)]]) + (g if x == boosted else 0))
            for x in avail[h]
        }
        return w[u] / mpmath.fsum(w.values())

    def path_prob(y, nxt=None):
        p = mpmath.mpf(1)
        for t in range(len(y) - 1):
            h = y[: t + 1]
            p *= cond(h, y[t + 1], None if nxt is None else nxt.get(h[-1]))
        return p

    pi = {y: path_prob(y) for y in rollouts}
    correct = [y for y in rollouts if y[-1] == target]
    total = mpmath.fsum(pi[c] for c in correct)
    demos = {c: pi[c] / total for c in correct}

    def teacher(c):
        if name == "edge":
            nxt = {c[i]: c[i + 1] for i in range(len(c) - 1)}
            return {y: path_prob(y, nxt) for y in rollouts}
        if name == "kernel":
            ec = set(zip(c, c[1:], strict=False))
            raw = {
                y: pi[y] * mpmath.exp(g * len(ec & set(zip(y, y[1:], strict=False))))
                for y in rollouts
            }
            z = mpmath.fsum(raw.values())
            return {y: r / z for y, r in raw.items()}
        return {y: (1 - g) * pi[y] + (g if y == c else 0) for y in rollouts}

    teachers = {c: teacher(c) for c in demos}
    score = {
        y: mpmath.fsum(
            d * (mpmath.log(teachers[c][y]) - mpmath.log(pi[y])) for c, d in demos.items()
        )
        for y in rollouts
    }
    seq = {y: mpmath.log(pi[y]) + score[y] for y in rollouts}
    fwd = {
        y: mpmath.log(mpmath.fsum(d * teachers[c][y] for c, d in demos.items())) for y in rollouts
    }

    def prefix_mass(dist, h):
        return mpmath.fsum(p for y, p in dist.items() if y[: len(h)] == h)

    token = {}
    for y in rollouts:
        log_q = mpmath.mpf(0)
        for t in range(len(y) - 1):
            h = y[: t + 1]
            logits = {}
            for u in avail[h]:
                logits[u] = mpmath.fsum(
                    d * mpmath.log(prefix_mass(teachers[c], h + (u,)) / prefix_mass(teachers[c], h))
                    for c, d in demos.items()
                )
            log_q += logits[y[t + 1]] - mpmath.log(
                mpmath.fsum(mpmath.exp(v) for v in logits.values())
            )
        token[y] = log_q

    token_forward = {}
    for y in rollouts:
        log_q = mpmath.mpf(0)
        for t in range(len(y) - 1):
            h = y[: t + 1]
            mean = mpmath.fsum(
                d * prefix_mass(teachers[c], h + (y[t + 1],)) / prefix_mass(teachers[c], h)
                for c, d in demos.items()
            )
            log_q += mpmath.log(mean)
        token_forward[y] = log_q

    def normalised(log_w):
        z = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in log_w.values()))
        return [float(log_w[y] - z) for y in rollouts]

    return {
        "sequence": normalised(seq),
        "forward": normalised(fwd),
        "token": normalised(token),
        "token-forward": normalised(token_forward),
    }


strengths = st.one_of(
    st.sampled_from([0.0, 1e-300, 1e-9, 1.0, 50.0, 700.0, 710.0, 1e3, MAX_GAMMA]),
    st.floats(0.0, MAX_GAMMA),
)
logits_wide = st.one_of(st.floats(-3.0, 3.0), st.sampled_from([-700.0, 700.0, -30.0, 30.0]))


@settings(max_examples=40, deadline=None)
@given(
    instance=instances(max_nodes=5, max_rollouts=12, logit_strategy=logits_wide, min_correct=2),
    name=st.sampled_from(["edge", "kernel", "copy"]),
    strength=strengths,
    lam=st.sampled_from([0.0, 1e-12, 0.5, 1 - 1e-9]),
)
def test_optima_match_a_60_digit_reference_at_every_strength(instance, name, strength, lam):
    base = instance.base
    # known limit, left for later: the per-token classes (TeacherClasses) weigh demonstrations
    # by their linear mass, so the kernel's token-forward target loses a demonstration below
    # float64's normal range (2.2e-308: 3e-9 nats at log q = -972, kernel(242), logits -700)
    correct = base.space.correct
    demos_log = base.log_prob[correct] - np.logaddexp.reduce(base.log_prob[correct])
    assume(name != "kernel" or bool(np.all(demos_log > math.log(np.finfo(float).tiny))))
    value = lam if name == "copy" else strength
    model = make_context(name, value)
    reference = _mp_reference(instance, name, value)
    # discount=1 is sequence SD and discount=0 token SD (THEORY, per-prefix objectives)
    for method, closed_form in (
        ("sequence", "sequence"),
        ("token", "token"),
        ("forward", "forward"),
        ("token-forward", "token-forward"),
        ("discount=1", "sequence"),
        ("discount=0", "token"),
    ):
        q = sd_optimum(base, model, method)
        assert abs(float(q.prob.sum()) - 1.0) <= 1e-12
        ref = np.asarray(reference[closed_form])
        # rounding: gamma x (moves) x 2^-52 nats from the marginals (MAX_GAMMA's docstring),
        # below 1e-10 on these <= 4-move rollouts; relative 1e-13 for log q of order gamma
        tol = 1e-10 + 1e-13 * np.abs(ref)
        assert np.all(np.abs(q.log_prob - ref) <= tol), (method, q.log_prob, ref)
        expected = Policy.from_log_weights(base.space, ref)
        for reading in (gap_slope, ratio_distortion):
            got, want = reading(q, base), reading(expected, base)
            assert (math.isnan(got) and math.isnan(want)) or abs(got - want) <= 1e-9 * max(
                1.0, abs(want)
            ), (method, reading.__name__, got, want)
    # hybrid=beta: pi exp(S + r / beta) / Z keeps sequence SD's ratios among correct rollouts
    hybrid = sd_optimum(base, model, "hybrid=0.5")
    assert abs(float(hybrid.prob.sum()) - 1.0) <= 1e-12
    correct = base.space.correct
    sequence = np.asarray(reference["sequence"])[correct]
    shift = hybrid.log_prob[correct] - sequence
    # the tolerance of the closed forms above: log q of order gamma carries gamma x 2^-52
    assert np.ptp(shift) <= 1e-10 + 1e-13 * float(np.abs(sequence).max())


SPECS = [
    "sequence",
    "token",
    "forward",
    "token-forward",
    "jsd=0.5",
    "jsd=1e-300",
    "discount=0.5",
    "length-weighted",
    "hybrid=1e-3",
]
"""Every objective family of tilt.objectives (tilt.objectives.OBJECTIVES), one spec or two each."""


def test_specs_cover_every_objective():
    assert {spec.partition("=")[0] for spec in SPECS} == set(OBJECTIVES)


@settings(max_examples=25, deadline=None)
@given(
    instance=instances(max_nodes=6, max_rollouts=60, logit_strategy=logits_wide),
    name=st.sampled_from(["edge", "kernel", "copy"]),
    strength=strengths,
    spec=st.sampled_from(SPECS),
)
def test_every_objective_is_a_distribution_at_every_legal_strength(instance, name, strength, spec):
    model = make_context(name, 0.5 if name == "copy" else strength)
    q = sd_optimum(instance.base, model, spec)
    assert abs(float(q.prob.sum()) - 1.0) <= 1e-12
    assert not np.isnan(q.log_prob).any()


def test_the_forward_mixture_keeps_ratios_at_the_largest_strength():
    # edge(gamma -> inf) with own demonstrations: the teacher copies c entirely, so forward SD
    # is D = pi0 restricted to C: gap slope 1, no widening, distortion 0 (it printed 2 / 1 /
    # 2.31 at gamma = 1e20, and widening 0.57 at 1e8, before the per-step form)
    base = base_policy(enumerate_rollouts(named_task("grid3")), "default")
    q = sd_optimum(base, make_context("edge", MAX_GAMMA), "forward")
    assert abs(gap_slope(q, base) - 1.0) <= 1e-12
    assert widening_fraction(q, base) == 0.0
    assert ratio_distortion(q, base) <= 1e-12


def test_edge_teachers_sum_to_one_at_the_largest_strength():
    # each row summed to 1.35 at gamma = 1e15 and to 1 + 3e-12 at 1e4 (gamma - l cancelled)
    base = base_policy(enumerate_rollouts(named_task("grid4")), "random", seed=3, scale=5.0)
    model = make_context("edge", MAX_GAMMA)
    correct = base.space.correct_rollouts
    rows = np.exp(model.teacher_log_prob(base, correct)).sum(axis=1)
    assert np.abs(rows - 1.0).max() <= 1e-13


@pytest.mark.parametrize("gamma", [MAX_GAMMA * (1 + 1e-15), 1e20, 1e300])
def test_strengths_beyond_what_float64_resolves_are_refused_with_the_range(gamma):
    with pytest.raises(ValueError, match=r"gamma = .* too large.*0 <= gamma <= 10000"):
        make_context("edge", gamma)


# --------------------------------------------------------------------------
# item 2: jsd=a with conditionals below e^-745


def _stationarity_spread(policy, model, q, a):
    """Per group, max - min over its children of ``phi_u = E_c log(1 - a + a T_c(u|h) / q(u|h))``,
    in log space (the children's q lie far below e^-745)."""
    from tilt.context import demonstrations

    space = policy.space
    classes = model.teacher_classes(policy, demonstrations(policy, "own"))
    log_q = q.log_conditionals()
    phi = np.zeros(space.n_prefixes)
    for w, lc in zip(classes.weight, classes.log_cond, strict=True):
        term = np.logaddexp(math.log1p(-a), math.log(a) + lc - log_q)
        phi += np.where(w > 0, w * term, 0.0)
    spread = 0.0
    for _, children in space.sibling_groups_by_size:
        values = phi[children] / classes.weight.sum(axis=0)[children]
        spread = max(spread, float((values.max(axis=0) - values.min(axis=0)).max()))
    return spread


@pytest.mark.parametrize("a", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("gamma", [1e-12, 1e-6])
def test_jsd_keeps_children_below_the_float_range(a, gamma):
    # logits of +-700 give conditionals of e^-1400: the solver set every child below e^-745 to
    # q = 0 (log q = -inf), so distortion printed inf and the gap slope n/a, where the optimum
    # is the base to O(gamma)
    space = enumerate_rollouts(named_task("grid3"))
    base = edge_softmax(space, np.where(np.arange(space.n_moves) % 2 == 0, 700.0, -700.0))
    model = make_context("edge", gamma)
    q = sd_optimum(base, model, f"jsd={a}")
    assert abs(float(q.prob.sum()) - 1.0) <= 1e-12
    assert np.all(np.isfinite(q.log_prob))
    # O(gamma) from the base per move (edge tilts each conditional by at most gamma), plus
    # the solver's stopping rule for these children (steps below 1e-15 x |log q(u | h)|,
    # log-conditionals of -1400 here) on each of 4 moves: 4 x 1.4e-12
    assert np.abs(q.log_prob - base.log_prob).max() <= 4 * gamma + 2e-11
    assert ratio_distortion(q, base) <= 8 * gamma + 1e-11
    assert abs(gap_slope(q, base) - 1.0) <= 1e-6
    # every group at its stationarity point (Newton's stopping rule: steps below 1e-13)
    assert _stationarity_spread(base, model, q, a) <= 1e-10


# --------------------------------------------------------------------------
# item 3: matched RL when an accuracy underflows


def _underflowing_task():
    """s -> t with logit -800 beside a dead end s -> x: base accuracy e^-800 (0.0 in float64)."""
    graph = nx.DiGraph()
    graph.add_edge("s", "t", logit=-800.0)
    graph.add_edge("s", "x", logit=0.0)
    return make_task(graph, "s", "t", None, name="underflow")


def test_rl_matched_works_from_log_odds_when_the_accuracy_underflows():
    base = base_policy(enumerate_rollouts(_underflowing_task()), "default")
    assert base.accuracy == 0.0  # e^-800
    matched = rl_matched(base, 0.5)
    # pi_RL(C) = expit(-800 + 1 / beta) = 1/2 at beta = 1/800 exactly
    assert matched.beta == pytest.approx(1 / 800, rel=1e-15)
    assert abs(matched.policy.accuracy - 0.5) <= MATCH_TOLERANCE
    with pytest.raises(ValueError, match="base_accuracy"):
        matched_beta(base.accuracy, 0.5)  # the float has lost the log-odds: refused, named


@pytest.mark.parametrize(
    ("p", "a", "error", "fragment"),
    [
        (0.0, 0.5, ValueError, "base_accuracy"),
        (math.nan, 0.5, ValueError, "base_accuracy"),
        (0.5, math.nan, ValueError, "target_accuracy"),
        (0.5, 1.5, ValueError, "target_accuracy"),
        ("0.5", 0.5, TypeError, "base_accuracy"),
        (0.5, None, TypeError, "target_accuracy"),
        (True, 0.5, TypeError, "base_accuracy"),
    ],
)
def test_matched_beta_refuses_what_it_cannot_match(p, a, error, fragment):
    with pytest.raises(error, match=fragment):
        matched_beta(p, a)


def test_rl_matched_reports_a_target_it_cannot_reach():
    base = base_policy(enumerate_rollouts(named_task("grid3")), "default")
    below = rl_matched(base, base.accuracy / 2)
    assert below.beta is None
    assert below.policy is None
    assert "below the base" in below.message
    with pytest.raises(TypeError, match="policy"):
        rl_matched(base.log_prob, 0.5)


@pytest.mark.parametrize(
    ("p", "fail", "target", "fragment"),
    [
        ([0.0, 0.5], [1.0, 0.5], 0.6, r"base_accuracy\[0\] is 0"),  # returned 0.0 before
        ([0.5, 0.5], [0.5, 0.5], math.nan, "target"),  # brentq on nan
        ([0.5, 0.5], [0.5, 0.5], 1.5, "target"),  # returned 0.0 before
        ([0.5], [0.5, 0.5], 0.6, "same length"),
        ([], [], 0.6, "non-empty"),
        ([0.5, 0.7], [0.5, 0.5], 0.6, r"base_accuracy\[1\] \+ base_incorrect\[1\]"),
        ([0.5, -0.1], [0.5, 1.1], 0.6, r"base_accuracy\[1\] must lie in \[0, 1\]"),
        ([0.5, math.nan], [0.5, 0.5], 0.6, r"base_accuracy\[1\]"),
    ],
)
def test_shared_beta_refuses_inputs_it_cannot_match(p, fail, target, fragment):
    with pytest.raises(ValueError, match=fragment):
        shared_beta(p, fail, target)


def test_shared_beta_matches_to_its_tolerance_on_tiny_accuracies():
    # accuracies down to the smallest subnormal have log-odds >= -745: the root is bracketed
    p = np.array([5e-324, 1e-300, 0.3, 0.9])
    beta = shared_beta(p, 1.0 - p, 0.95)
    rl = expit(np.log(p) - np.log1p(-p) + 1.0 / beta)
    assert abs(float(rl.mean()) - 0.95) <= 1e-12  # shared_beta's documented tolerance


def test_a_prompt_whose_accuracy_underflows_is_reported_not_averaged(tmp_path):
    # before: the e^-800 prompt entered every mean as accuracy 0, and RL at the "matched"
    # beta 0 gave it accuracy 1
    graph = nx.node_link_data(_underflowing_task().graph, edges="links")
    suite_file = tmp_path / "suite.json"
    suite_file.write_text(
        json.dumps([{"graph": "grid3"}, {"graph": graph, "source": "s", "target": "t"}])
    )
    suite = load_suite(suite_file)
    result = run_suite(suite, SuiteConfig(methods=("sequence",)), ks=[1, 2])
    assert [r.index for r in result.prompts] == [0]
    (skipped,) = result.skipped
    assert skipped.index == 1
    assert "underflows float64" in skipped.skipped
    base = base_policy(enumerate_rollouts(named_task("grid3")), "default")
    assert result.base_curve[1] == pytest.approx(base.accuracy, abs=1e-15)
    (variant,) = result.variants
    assert abs(variant.rl_shared_curve[1] - variant.sd_curve[1]) <= MATCH_TOL


@pytest.mark.parametrize(
    ("ks", "error"),
    [([0], ValueError), ([], ValueError), ([1, True], TypeError), ("12", TypeError)],
)
def test_run_suite_refuses_bad_ks_before_solving(ks, error):
    suite = builtin_suite("chain-traps")
    with pytest.raises(error, match="ks"):
        run_suite(suite, SuiteConfig(), ks=ks)


# --------------------------------------------------------------------------
# item 4: sharing, matched along a run


@pytest.fixture(scope="module")
def shared_student():
    suite = share_suite("grid-holed", 0)
    train, _ = split_suite(suite, "region", 0)
    built = suite_student(suite, "edge")
    return built.student, built.initial, train


@pytest.mark.parametrize("lr", [1e10, 1e20])
def test_a_huge_step_is_matched_to_the_documented_tolerance(shared_student, lr):
    # lr = 1e10: brentq's xtol of 1e-14 on the segment left theta 1e-4 off and the accuracy
    # 1e-8 off; lr = 1e20 gave the starting policy while the table printed the target
    student, bases, train = shared_student
    run = train_shared(student, ShareObjective("rl", bases, beta=0.1), train, steps=1, lr=lr)
    for target in (0.6, 0.8):
        match = match_run(student, run, train, target)
        assert match.theta is not None, match.message
        assert abs(mean_accuracy(student, match.theta, train) - target) <= SHARE_MATCH_TOL
        assert not np.array_equal(match.theta, run.thetas[0])


def test_a_run_that_jumps_across_the_target_is_reported_not_matched(shared_student, monkeypatch):
    # an accuracy that jumps from 0.2 to 0.9 between neighbouring floats of the segment: no
    # point matches 0.6, and the result says so (it returned the jump's edge before)
    student, bases, train = shared_student
    run = train_shared(student, ShareObjective("rl", bases, beta=0.1), train, steps=1, lr=1.0)
    first, second = run.thetas

    def jumpy(student, theta, train):
        return 0.2 if np.abs(theta - first).sum() < 0.5 * np.abs(second - first).sum() else 0.9

    monkeypatch.setattr(share_train, "mean_accuracy", jumpy)
    jumped = ShareRun(
        run.objective,
        run.teacher,
        run.optimizer,
        run.thetas,
        np.array([0.2, 0.9]),
        run.value,
        run.lr,
    )
    match = match_run(student, jumped, train, 0.6)
    assert match.theta is None
    assert "jumps across it" in match.message
    assert matched_theta(student, jumped, train, 0.6) is None


# --------------------------------------------------------------------------
# item 6: wrong types at the public entry points name the argument


@pytest.fixture(scope="module")
def grid3_base():
    return base_policy(enumerate_rollouts(named_task("grid3")), "default")


WRONG = [None, "x", [1], True, math.nan, 2]
EDGE = make_context("edge", 1.0)


@pytest.mark.parametrize("value", WRONG, ids=repr)
@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda b, v: enumerate_rollouts(v), "task"),
        (lambda b, v: base_policy(v, "default"), "space"),
        (lambda b, v: sd_optimum(v, make_context("edge", 1.0)), "policy"),
        (lambda b, v: rl_optimum(v, 0.1), "policy"),
        (lambda b, v: rl_matched(v, 0.9), "policy"),
        (lambda b, v: measure(v, b), "policy"),
        (lambda b, v: measure(b, v), "base"),
        (lambda b, v: train(v, "rl", beta=0.1, steps=1), "base"),
    ],
    ids=[
        "enumerate_rollouts",
        "base_policy",
        "sd_optimum",
        "rl_optimum",
        "rl_matched",
        "measure-policy",
        "measure-base",
        "train",
    ],
)
def test_a_wrong_object_is_a_type_error_naming_the_argument(grid3_base, call, name, value):
    # each gave AttributeError ('NoneType' object has no attribute 'space' ...) before
    with pytest.raises(TypeError, match=rf"^{name} must be"):
        call(grid3_base, value)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda b: base_policy(b.space, "random", scale=True), "scale"),
        (lambda b: sd_optimum(b, make_context("edge", 1.0), "sequence", "tempered", True), "alpha"),
        (
            lambda b: sd_optimum(b, make_context("edge", 1.0), "sequence", "own", 1.0, True),
            "anchor",
        ),
        (lambda b: sd_optimum(b, make_context("edge", 1.0), "sequence", "own", 1.0, "1"), "anchor"),
        (lambda b: train(b, "rl", beta="0.1", steps=1), "beta"),
        (lambda b: rl_matched(b, "0.9"), "target_accuracy"),
    ],
    ids=["scale-bool", "alpha-bool", "anchor-bool", "anchor-str", "train-beta-str", "target-str"],
)
def test_a_bool_or_string_for_a_number_is_a_type_error(grid3_base, call, name):
    # a bool was taken as 1.0 before, a string gave a ValueError that named nothing
    with pytest.raises(TypeError, match=rf"^{name} must be a number"):
        call(grid3_base)


def test_measures_of_another_space_are_refused(grid3_base):
    other = base_policy(enumerate_rollouts(named_task("grid2")), "default")
    with pytest.raises(ValueError, match="different rollout spaces"):
        measure(grid3_base, other)


def test_make_context_names_its_arguments():
    with pytest.raises(TypeError, match="^name must be a str"):
        make_context(["edge"], 1.0)  # was "unhashable type: 'list'"
    with pytest.raises(TypeError, match="^gamma must be a number"):
        make_context("edge", "2")


# --------------------------------------------------------------------------
# item 7: the lattice guard counts what a run allocates


@pytest.fixture
def four_gib(monkeypatch):
    monkeypatch.setattr(space_module, "_available_memory", lambda: 4 * 2**30)


def test_a_lattice_that_would_not_fit_is_refused_before_building(four_gib):
    # lattice:V=64,L=200,M=64 passed the guard and peaked at 13.6 GB (52 M state edges at
    # 260 B each, /usr/bin/time -v); now its 52,428,800 moves x 270 B are compared with the
    # available memory first
    started = time.perf_counter()
    with pytest.raises(TooLargeError, match=r"52,428,800 state edges: a run needs about 13\.2"):
        lattice_table("lattice:V=64,L=200,M=64")
    assert time.perf_counter() - started < 1.0  # refused before anything is allocated
    assert lattice_table("lattice:V=8,L=16").move_tail.size > 0  # small ones are untouched


def test_the_state_dag_guard_counts_edges_against_memory(monkeypatch):
    table = lattice_table("lattice:V=8,L=16")
    edges = acyclic_space(table).n_edges
    monkeypatch.setattr(space_module, "_available_memory", lambda: edges * BYTES_PER_STATE_EDGE - 1)
    with pytest.raises(TooLargeError, match=f"{edges:,} state edges"):
        acyclic_space(table)


def test_lattice_move_count_is_moves_times_automaton_states():
    # V^2 L min(M, V): at M = V every (token, state) node of a position has V moves
    assert lattice_move_count(parse_lattice("lattice:V=64,L=200,M=64")) == 64 * 64 * 200 * 64
    assert lattice_move_count(parse_lattice("lattice:V=4,L=10,M=64")) == 4 * 4 * 10 * 4
    # an exact count on a small lattice: at most the bound
    table = lattice_table("lattice:V=5,L=6,M=3")
    assert table.move_tail.size <= lattice_move_count(parse_lattice("lattice:V=5,L=6,M=3"))


def test_a_lattice_too_large_for_networkx_is_refused():
    with pytest.raises(ValueError, match="too many for a networkx graph"):
        named_task("lattice:V=64,L=380,M=64")  # 99.6 M moves: the enumeration route ran OOM
