"""The practitioners' per-prefix objectives and the spec registry, against the brute-force oracle.

``tests/oracle.py`` solves every fixed point by plain bisection at each prefix
(nested for ``jsd``), with explicit teacher distributions; the engine uses
teacher classes and vectorised Newton.  Both are exact up to rounding, so they
must agree to ``1e-10`` (the project's bar for closed forms against brute force).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import oracle
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tilt.context import demonstrations, generic_teacher_classes, make_context
from tilt.context.base import MAX_GAMMA
from tilt.objectives import OBJECTIVES, parse_objective, rl_optimum, sd_optimum
from tilt.policy import Policy, base_policy
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import named_task
from tilt.testing import context_models, instances

TOL = 1e-10
SPECS = [
    "sequence",
    "token",
    "forward",
    "token-forward",
    "jsd=0",
    "jsd=0.3",
    "jsd=0.5",
    "jsd=1",
    "discount=0",
    "discount=0.5",
    "discount=1",
    "length-weighted",
    "hybrid=2",
    "hybrid=0.01",
]


@cache
def _case(graph, kind, model_name, strength, demos_kind):
    task = named_task(graph)
    space = enumerate_rollouts(task)
    policy = base_policy(space, kind, seed=3)
    truth = oracle.oracle_space(task.graph, task.source, task.target, task.horizon)
    theta = (
        oracle.graph_logits(task.graph)
        if kind == "default"
        else {
            (space.labels[t], space.labels[h]): float(x)
            for t, h, x in zip(
                space.move_tail,
                space.move_head,
                np.random.default_rng(3).normal(size=space.n_moves),
                strict=True,
            )
        }
    )
    pi = oracle.edge_softmax(truth, theta)
    np.testing.assert_allclose(policy.prob, oracle.aligned(space, pi), atol=1e-12, rtol=0)
    demos = oracle.demonstrations(pi, truth, demos_kind)
    teach = oracle.teachers(pi, truth, demos, model_name, strength)
    return policy, pi, truth, demos, teach


def _close_policy(policy, expected_dict, atol=TOL):
    expected = np.array(oracle.aligned(policy.space, expected_dict))
    np.testing.assert_allclose(policy.prob, expected, rtol=0, atol=atol)
    assert abs(policy.prob.sum() - 1) <= 1e-12


CASES = [
    (g, k, m, s, d)
    for g in ("grid3", "diamonds", "routes")
    for k in ("default", "random")
    for (m, s) in (("copy", 0.4), ("edge", 1.3), ("kernel", 0.8))
    for d in ("own", "uniform")
]


@pytest.mark.parametrize(("graph", "kind", "model_name", "strength", "demos_kind"), CASES)
def test_per_prefix_objectives_match_oracle(graph, kind, model_name, strength, demos_kind):
    policy, pi, truth, demos, teach = _case(graph, kind, model_name, strength, demos_kind)
    model = make_context(model_name, strength)
    d = demonstrations(policy, demos_kind)
    _close_policy(
        sd_optimum(policy, model, "token-forward", d),
        oracle.sd_token_forward(pi, truth, demos, teach),
    )
    _close_policy(
        sd_optimum(policy, model, "discount=0.5", d),
        oracle.sd_discount(pi, truth, demos, teach, 0.5),
    )
    _close_policy(
        sd_optimum(policy, model, "length-weighted", d),
        oracle.sd_length_weighted(pi, truth, demos, teach),
    )


JSD_CASES = [
    ("grid3", "random", "edge", 1.3, "own", 0.3),
    ("grid3", "default", "copy", 0.4, "uniform", 0.7),
    ("routes", "default", "kernel", 0.8, "own", 0.5),
    ("routes", "random", "edge", 1.3, "uniform", 0.9),
]
SLOW_JSD_CASES = [(*case, a) for case in CASES for a in (0.3, 0.7)]


@pytest.mark.parametrize(
    ("graph", "kind", "model_name", "strength", "demos_kind", "a"),
    [*JSD_CASES, *[pytest.param(*c, marks=pytest.mark.slow) for c in SLOW_JSD_CASES]],
)
def test_jsd_matches_nested_bisection(graph, kind, model_name, strength, demos_kind, a):
    policy, pi, truth, demos, teach = _case(graph, kind, model_name, strength, demos_kind)
    model = make_context(model_name, strength)
    q = sd_optimum(policy, model, f"jsd={a}", demonstrations(policy, demos_kind))
    _close_policy(q, oracle.sd_jsd(pi, truth, demos, teach, a))


@pytest.mark.parametrize("graph", ["grid3", "diamonds", "routes", "grid4"])
@pytest.mark.parametrize(("model_name", "strength"), [("copy", 0.6), ("edge", 2.0), ("edge", 40.0)])
def test_structured_teacher_classes_match_generic(graph, model_name, strength):
    # the edge and copy models group demonstrations into branching + 1 classes; every per-token
    # target is a reduction over classes, so the class mean of T and of log T must agree
    policy = base_policy(enumerate_rollouts(named_task(graph)), "random", seed=1)
    model = make_context(model_name, strength)
    d = demonstrations(policy, "own")

    def reduce(classes):
        w = classes.weight
        mean = (w * np.exp(classes.log_cond)).sum(axis=0)
        mean_log = np.where(w > 0, w * classes.log_cond, 0.0).sum(axis=0)
        return w.sum(axis=0)[1:], mean[1:], mean_log[1:]

    for ours, theirs in zip(
        reduce(model.teacher_classes(policy, d)),
        reduce(generic_teacher_classes(model, policy, d)),
        strict=True,
    ):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ limits


@cache
def _grid_case(graph, model_name, strength):
    policy = base_policy(enumerate_rollouts(named_task(graph)), "random", seed=5)
    return policy, make_context(model_name, strength)


def _tv(p, q):
    return 0.5 * float(np.abs(p.prob - q.prob).sum())


LIMIT_CASES = [("grid4", "edge", 2.0), ("routes", "kernel", 1.0), ("diamonds", "copy", 0.5)]


@pytest.mark.parametrize(("graph", "model_name", "strength"), LIMIT_CASES)
def test_exact_limits_of_the_families(graph, model_name, strength):
    policy, model = _grid_case(graph, model_name, strength)

    def q(spec):
        return sd_optimum(policy, model, spec)

    assert _tv(q("jsd=0"), q("token-forward")) == 0.0
    assert _tv(q("jsd=1"), q("token")) == 0.0
    assert _tv(q("discount=0"), q("token")) == 0.0
    # discount = 1 is sequence SD: every teacher reaches every prefix of a built-in model
    assert _tv(q("discount=1"), q("sequence")) <= 1e-12


@pytest.mark.parametrize(("graph", "model_name", "strength"), LIMIT_CASES)
def test_families_are_continuous_at_their_ends(graph, model_name, strength):
    policy, model = _grid_case(graph, model_name, strength)

    def q(spec):
        return sd_optimum(policy, model, spec)

    # first-order in the distance to the end: TV shrinks with it
    assert _tv(q("jsd=1e-9"), q("token-forward")) <= 1e-8
    assert _tv(q("jsd=0.999999999"), q("token")) <= 1e-7
    assert _tv(q("discount=1e-9"), q("token")) <= 1e-8
    assert _tv(q("hybrid=1e9"), q("sequence")) <= 1e-8
    assert _tv(q("hybrid=1e3"), q("sequence")) > _tv(q("hybrid=1e6"), q("sequence"))


@pytest.mark.parametrize(("graph", "model_name", "strength"), LIMIT_CASES)
def test_a_single_demonstration_gives_its_teacher(graph, model_name, strength):
    # a reference demonstration (a point mass at c*): every untruncated variant fits T_{c*}
    policy, model = _grid_case(graph, model_name, strength)
    space = policy.space
    star = int(np.flatnonzero(space.correct)[-1])
    point = np.full(space.n_rollouts, -np.inf)
    point[star] = 0.0
    demos = Policy(space, point)
    teacher = model.teacher_log_prob(policy, np.array([star]))[0]
    expected = np.exp(teacher - np.logaddexp.reduce(teacher))
    for spec in [
        "sequence",
        "token",
        "forward",
        "token-forward",
        "jsd=0.5",
        "discount=0.5",
        "length-weighted",
    ]:
        q = sd_optimum(policy, model, spec, demos)
        np.testing.assert_allclose(q.prob, expected, rtol=0, atol=1e-12, err_msg=spec)


def test_hybrid_adds_the_reward_to_sequence_sd():
    # hybrid=beta is sequence SD then RL at beta: pi exp(S) exp(r / beta) / Z
    policy, model = _grid_case("grid4", "edge", 2.0)
    both = sd_optimum(policy, model, "hybrid=0.7")
    chained = rl_optimum(sd_optimum(policy, model, "sequence"), 0.7)
    np.testing.assert_allclose(both.prob, chained.prob, rtol=0, atol=1e-13)


# --------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    instance=instances(max_rollouts=150),
    model=context_models(),
    spec=st.sampled_from(SPECS),
    demos_kind=st.sampled_from(["own", "uniform"]),
)
def test_every_objective_returns_a_distribution(instance, model, spec, demos_kind):
    q = sd_optimum(instance.base, model, spec, demos_kind)
    assert np.isfinite(q.log_prob[q.log_prob > -np.inf]).all()
    assert abs(q.prob.sum() - 1.0) <= 1e-12


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    instance=instances(max_rollouts=120),
    strength=st.floats(0.0, 8.0),
    a=st.floats(0.0, 1.0),
)
def test_jsd_stationarity_holds_at_every_prefix(instance, strength, a):
    # E_c log(1 - a + a T_c(u | h) / q(u | h)) is the same for every available u (0 < a < 1)
    policy, model = instance.base, make_context("edge", strength)
    q = sd_optimum(policy, model, f"jsd={a!r}")
    if not 0 < a < 1:
        return
    space = policy.space
    classes = model.teacher_classes(policy, demonstrations(policy, "own"))
    total = classes.weight.sum(axis=0)
    log_q = q.log_conditionals()
    phi = np.zeros(space.n_prefixes)
    for w, lc in zip(classes.weight, classes.log_cond, strict=True):
        phi += np.where(w > 0, w * np.logaddexp(np.log1p(-a), np.log(a) + lc - log_q), 0.0)
    reached = (total > 0) & np.isfinite(q.prefix_log_mass()[space.parent]) & np.isfinite(log_q)
    reached[0] = False
    phi = np.where(reached, phi / np.where(reached, total, 1.0), np.nan)
    for h in np.unique(space.parent[reached]):
        values = phi[(space.parent == h) & reached]
        assert values.max() - values.min() <= 1e-10


@pytest.mark.parametrize("a", [5e-324, 1e-13, 0.3, 1 - 1e-9, 1 - 1e-13, 1 - 1e-15])
@pytest.mark.parametrize("gamma", [0.0, 50.0, 1e3, MAX_GAMMA])
def test_jsd_is_normalised_at_extreme_coefficients_and_strengths(a, gamma):
    # found by hunting: a near 0 (phi's slope underflows), a near 1 (log1p near -1 loses digits),
    # gamma = 1e6 (children whose q lies below e^-745 must end at 0.0, not sink forever; the
    # largest gamma accepted is now MAX_GAMMA = 1e4, which reaches the same regime)
    for seed, scale in ((1, 30.0), (2, 1.0)):
        policy = base_policy(
            enumerate_rollouts(named_task("grid4")), "random", seed=seed, scale=scale
        )
        q = sd_optimum(policy, make_context("edge", gamma), f"jsd={a!r}")
        assert abs(q.prob.sum() - 1.0) <= 1e-12


# ------------------------------------------------------------------ specs


@pytest.mark.parametrize("spec", SPECS)
def test_specs_parse_and_keep_their_text(spec):
    objective = parse_objective(spec)
    assert objective.spec == spec
    assert objective.name in OBJECTIVES


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("fancy", "unknown SD objective"),
        ("jsd", "needs a number"),
        ("jsd=1.5", "out of range"),
        ("jsd=-0.1", "out of range"),
        ("jsd=nan", "out of range"),
        ("discount=2", "out of range"),
        ("hybrid=0", "out of range"),
        ("hybrid=-1", "out of range"),
        ("token=1", "takes no parameter"),
        ("jsd=abc", "needs a number"),
    ],
)
def test_bad_specs_name_the_accepted_forms(spec, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        parse_objective(spec)
    assert "\n" not in str(info.value)


def test_objectives_without_an_anchor_refuse_one():
    policy, model = _grid_case("grid4", "edge", 2.0)
    with pytest.raises(ValueError, match="takes no anchor"):
        sd_optimum(policy, model, "jsd=0.5", anchor=1.0)
    sd_optimum(policy, model, "token", anchor=1.0)
    sd_optimum(policy, model, "hybrid=1", anchor=1.0)


def test_distinct_columns_is_exact():
    """Equal columns share one representative; columns that differ in one entry (``-inf``
    against ``-1e3``, or one ulp) are told apart; ``nan`` columns stand alone; the mapping
    rebuilds the input."""
    from tilt.objectives.per_prefix import distinct_columns

    rng = np.random.default_rng(3)
    pool = rng.normal(size=(4, 5))
    pool[1, 2] = -np.inf
    columns = pool[:, rng.integers(0, 5, size=200)]
    twin = pool[:, [2]].copy()
    twin[1, 0] = -1.0e3
    close = pool[:, [0]].copy()
    close[0, 0] = np.nextafter(close[0, 0], np.inf)
    odd = np.full((4, 1), np.nan)
    columns = np.concatenate([columns, twin, close, odd, odd], axis=1)
    first, inverse = distinct_columns(columns)
    rebuilt = columns[:, first][:, inverse]
    np.testing.assert_array_equal(rebuilt[:, :-2], columns[:, :-2])
    assert np.isnan(rebuilt[:, -2:]).all()
    assert np.unique(inverse).size == len({tuple(c) for c in columns[:, :-2].T}) + 2
    assert inverse[-1] != inverse[-2]  # nan is not equal to nan: solved apart


def test_jsd_on_a_markov_base_matches_a_non_markov_twin():
    """The distinct-group shortcut changes nothing: on grid4's edge-softmax base each group is
    solved once per distinct group; a twin with 1e-9 noise in log pi has every group distinct
    (solved once per prefix); the two optima agree to the size of the noise."""
    space = enumerate_rollouts(named_task("grid4"))
    pi = base_policy(space)
    model = make_context("edge", 2.0)
    markov = sd_optimum(pi, model, "jsd=0.5")
    rng = np.random.default_rng(0)
    noisy = Policy.from_log_weights(space, pi.log_prob + rng.normal(0, 1e-9, space.n_rollouts))
    demos = demonstrations(pi)
    twin = sd_optimum(noisy, model, "jsd=0.5", demos=demos)
    np.testing.assert_allclose(np.exp(twin.log_prob), np.exp(markov.log_prob), atol=1e-8)
