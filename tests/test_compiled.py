"""The compiled kernels (``tilt._compiled``, numba) agree with the numpy paths they stand in for.

Each quantity is computed twice on small spaces: with ``TILT_JIT_MIN_SIZE=0`` (the
kernels serve every input, however small) and with ``TILT_NO_JIT=1`` (the plain-numpy
paths, as on a machine without numba).  The kernels add in the same order as numpy
where that is cheap to keep and in another order elsewhere (the OOD gains, the widening
sweep), so the two agree to rounding: 1e-12, the tolerance of exact enumeration.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from _compiled_paths import TOL, assert_close, kernels_on_and_off

import tilt._numerics as numerics
from tilt.context import EdgeContext, KernelContext, demonstrations
from tilt.measures import measure, widening_fraction
from tilt.measures.ood import _failure_and_success
from tilt.objectives import rl_optimum, sd_optimum
from tilt.policy import Policy, base_policy
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import named_task

pytest.importorskip("numba")


@pytest.fixture(scope="module", params=["grid3", "grid4", "routes", "diamonds"])
def space(request):
    return enumerate_rollouts(named_task(request.param))


def test_the_gate(monkeypatch):
    monkeypatch.setenv("TILT_NO_JIT", "1")
    assert not numerics.jit(10**12)
    monkeypatch.delenv("TILT_NO_JIT")
    monkeypatch.setenv("TILT_JIT_MIN_SIZE", "0")
    assert numerics.jit(1)
    monkeypatch.delenv("TILT_JIT_MIN_SIZE")
    assert not numerics.jit(numerics.JIT_MIN_SIZE - 1)


def test_tree_sums_and_softmax(space, monkeypatch):
    rng = np.random.default_rng(0)
    values = rng.normal(size=space.n_prefixes)
    leaf = rng.random(space.n_rollouts)
    pick = np.flatnonzero(space.correct)
    assert_close(*kernels_on_and_off(monkeypatch, lambda: space.path_sum(values)))
    assert_close(*kernels_on_and_off(monkeypatch, lambda: space.subtree_sum(leaf)))
    assert_close(*kernels_on_and_off(monkeypatch, lambda: space.subtree_sum(leaf[pick], pick)))
    assert_close(*kernels_on_and_off(monkeypatch, lambda: space.sibling_log_softmax(values)))
    # a group of -inf logits takes the fallback's entries
    dead = values.copy()
    group = space.child_start[np.flatnonzero(space.child_count >= 2)[0]]
    count = space.child_count[np.flatnonzero(space.child_count >= 2)[0]]
    dead[group : group + count] = -np.inf
    fallback = rng.normal(size=space.n_prefixes)
    compiled, plain = kernels_on_and_off(
        monkeypatch, lambda: space.sibling_log_softmax(dead, fallback)
    )
    assert_close(compiled, plain)
    assert np.array_equal(compiled[group : group + count], fallback[group : group + count])


def _policies(space):
    """A base, RL at two betas, and SD optima: softmax-built and mass-built policies,
    ordinary and extreme strengths."""
    out = []
    for kind in ("default", "random"):
        base = base_policy(space, kind, seed=5, scale=2.0)
        out += [(base, base), (rl_optimum(base), base), (rl_optimum(base, 0.4), base)]
        for gamma in (2.0, 800.0):
            model = EdgeContext(gamma)
            out += [(sd_optimum(base, model, spec), base) for spec in ("sequence", "token")]
    return out


def test_ood_pass_and_widening(space, monkeypatch):
    for policy, base in _policies(space):

        def fresh(policy=policy):  # nothing remembered from the other path
            out = Policy(space, policy.log_prob.copy())
            known = policy.remembered("log-conditionals")
            if known is not None:
                out.memo("log-conditionals", lambda known=known: known.copy())
            return out

        compiled, plain = kernels_on_and_off(
            monkeypatch, lambda: _failure_and_success(fresh(), "reroute")
        )
        for a, b in zip(compiled, plain, strict=True):
            assert_close(a, b)
        compiled, plain = kernels_on_and_off(
            monkeypatch, lambda: _failure_and_success(fresh(), "fail")
        )
        for a, b in zip(compiled, plain, strict=True):
            assert_close(a, b)
        base_copy = Policy(space, base.log_prob.copy())
        pair = kernels_on_and_off(
            monkeypatch, lambda base_copy=base_copy: widening_fraction(fresh(), base_copy)
        )
        assert pair[0] == pytest.approx(pair[1], abs=TOL, nan_ok=True)


def test_widening_sweeps_over_either_coordinate(space, monkeypatch):
    """The widening fraction with the kernels (the points gathered in sweep order, then a
    Fenwick tree over the coordinate with fewer classes) against numpy: a tilt with two
    classes of ``d`` on a base with distinct ``log pi0`` (the tree over ``d``, swept in
    ``log pi0`` order), and one with a class of ``d`` per rollout on the default base, whose
    ``log pi0`` has ties (the tree over ``log pi0``, swept in ``d`` order)."""
    from tilt.measures._measures import _tie_classes

    index = np.arange(space.n_rollouts)
    noise = np.random.default_rng(6).normal(size=space.n_rollouts)
    random_base, default_base = base_policy(space, "random", seed=4, scale=2.0), base_policy(space)
    cases = (
        (random_base, random_base.log_prob + 0.7 * (index % 2), False),
        (default_base, default_base.log_prob + noise, True),
    )
    for base, log_weight, tree_over_x in cases:
        policy = Policy.from_log_weights(space, log_weight)
        n_x = int(_tie_classes(base.correct_log_prob(), 1e-9)[0].max()) + 1
        d = policy.correct_log_prob() - base.correct_log_prob()
        n_d = int(_tie_classes(d, 1e-9)[0].max()) + 1
        assert (n_x < n_d) == tree_over_x  # each branch of the sweep is taken
        pair = kernels_on_and_off(
            monkeypatch,
            lambda policy=policy, base=base: widening_fraction(
                Policy(space, policy.log_prob.copy()), Policy(space, base.log_prob.copy())
            ),
        )
        assert 0.0 < pair[1] < 1.0
        assert pair[0] == pytest.approx(pair[1], abs=TOL)


def test_every_measure_and_the_edge_step(space, monkeypatch):
    base = base_policy(space, "random", seed=1)
    model = EdgeContext(2.0)

    def rows():
        fresh = Policy(space, base.log_prob.copy())
        out = []
        for spec in ("sequence", "token", "token-forward", "jsd=0.5", "discount=0.5"):
            out.append(measure(sd_optimum(fresh, model, spec), fresh).as_dict())
        demos = demonstrations(fresh, "own")
        out.append(model.token_mean_log_target(fresh, demos))
        out.append(model.token_log_target(fresh, demos))
        out.append(model.tilt_score(fresh, demos))
        return out

    compiled, plain = kernels_on_and_off(monkeypatch, rows)
    for a, b in zip(compiled[:-3], plain[:-3], strict=True):
        for key, value in b.items():
            if key.endswith("worst_move"):  # ties go to the first edge within 1e-12 of the least
                assert a[key] == value, key
            elif isinstance(value, dict):
                for k, v in value.items():
                    assert a[key][k] == pytest.approx(v, abs=TOL, nan_ok=True), (key, k)
            else:
                assert a[key] == pytest.approx(value, abs=TOL, nan_ok=True), key
    for a, b in zip(compiled[-3:], plain[-3:], strict=True):
        assert_close(a, b)


def test_kernel_model_pass(monkeypatch):
    space = enumerate_rollouts(named_task("grid4"))
    base = base_policy(space, "random", seed=4)
    model = KernelContext(0.5)

    def targets():
        fresh = Policy(space, base.log_prob.copy())
        demos = demonstrations(fresh, "own")
        return model.token_log_target(fresh, demos), model.tilt_score(fresh, demos)

    compiled, plain = kernels_on_and_off(monkeypatch, targets)
    for a, b in zip(compiled, plain, strict=True):
        assert_close(a, b)


def test_a_small_command_does_not_import_numba():
    """Below ``JIT_MIN_SIZE`` nothing loads the kernels: no import or compile cost."""
    code = (
        "import contextlib, io, sys\n"
        "from tilt.cli import compare\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    compare.main(['--graph', 'grid3', '--sd', 'jsd=0.5'])\n"
        "print('numba' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_widening_sweep_against_pairs(monkeypatch):
    """The Fenwick sweep against the plain double loop over pairs (hand-checkable sizes)."""
    monkeypatch.delenv("TILT_NO_JIT", raising=False)  # the kernel itself, whatever the shell says
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(2, 40))
        x_rank = rng.integers(0, 6, size=n)
        d_rank = rng.integers(0, 5, size=n)
        w = rng.random(n)
        order = np.argsort(x_rank, kind="stable")
        fast = numerics.sweep_dominated_total(x_rank, d_rank, w, order, int(d_rank.max()) + 1)
        slow = sum(
            w[i] * w[j]
            for i in range(n)
            for j in range(n)
            if x_rank[j] < x_rank[i] and d_rank[j] < d_rank[i]
        )
        assert math.isclose(fast, slow, rel_tol=1e-12, abs_tol=1e-15)


def test_ood_pass_over_the_kept_prefixes(space, monkeypatch):
    """The pass over the prefixes below correct mass (and their children) adds the same
    numbers in the same order as the pass over the whole tree: equal to the last bit, for
    policies with conditionals and for policies of rollout weights."""
    from tilt.measures.ood import _compiled_pass, blocked_edges

    monkeypatch.setenv("TILT_JIT_MIN_SIZE", "0")
    monkeypatch.delenv("TILT_NO_JIT", raising=False)
    edges = blocked_edges(space)
    tree = edges.correct_tree(space)
    assert tree.prefixes[0] == 0
    assert tree.n_leaves == np.count_nonzero(tree.child_count == 0)
    assert tree.leaf_of_correct.size == space.correct_rollouts.size
    assert np.array_equal(edges.narrow_prefix_units(space), edges.prefix_units(space))
    for policy, _ in _policies(space):
        correct_leaf = np.zeros(space.n_rollouts)
        correct_leaf[space.correct_rollouts] = np.exp(policy.correct_log_prob())
        log_cond = policy.remembered("log-conditionals")
        whole = (space.child_start, space.child_count, correct_leaf, edges.prefix_units(space))
        top = numerics.linear_shift(policy.log_prob)
        if log_cond is None and top is not None:  # weights: the masses below, shifted
            total_leaf = np.exp(policy.log_prob - top)
            flow, bonus = numerics.tree_reroute(*whole, edges.n_edges + 1, None, total_leaf)
        else:
            if log_cond is None:
                log_cond = policy.log_conditionals()
            flow, bonus = numerics.tree_reroute(*whole, edges.n_edges + 1, np.exp(log_cond))
        kept_flow, kept_bonus = _compiled_pass(policy, edges)
        assert np.array_equal(kept_flow, flow[:-1])
        assert np.array_equal(kept_bonus, bonus[:-1])
