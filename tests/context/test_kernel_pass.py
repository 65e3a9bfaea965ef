"""The kernel model's shared pass: the compiled pass with chains folded, the popcount forward
mixture and the per-policy cache against the plain-numpy paths they stand in for.

Both sides are exact sums over an enumerated space in different orders (the compiled pass
multiplies each chain's factors before its stop's sum; the mixture sums tabulated powers), so
they agree to rounding: 1e-12 relative to ``max(1, |value|)``, the tolerance of exact
enumeration.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest

from tilt.context import KernelContext
from tilt.context import demonstrations as _demonstrations
from tilt.context._kernel_tree import chain_tree, kernel_kernels, kernel_mixture, stop_pass
from tilt.context._pairwise import incidence_rows, kernel_pass, log_mixture, reached_conditionals
from tilt.context.demos import point_mass
from tilt.context.generic import support_of
from tilt.policy import Policy, base_policy
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import make_task, named_task

pytest.importorskip("numba")

TOL = 1e-12

DEMOS = [("own", 0.5), ("uniform", 0.5), ("tempered", 0.3), ("reference", 0.5)]


def demonstrations(policy, kind="own", alpha=1.0):
    """``D`` of ``kind``; ``reference``: one demonstration, the last correct rollout."""
    if kind == "reference":
        return point_mass(policy, int(np.flatnonzero(policy.space.correct)[-1]))
    return _demonstrations(policy, kind, alpha)


def _source_with_one_move():
    """``s`` has one neighbour: the root of the prefix tree is an only-child parent."""
    graph = nx.Graph([("s", "a"), ("a", "b"), ("a", "c"), ("b", "t"), ("c", "t"), ("b", "c")])
    return make_task(graph, "s", "t")


def _wide():
    """A 7 x 7 grid with a horizon: 168 moves, three words of bits per rollout."""
    return make_task(nx.grid_2d_graph(7, 7), (0, 0), (2, 2), horizon=6)


SPACES = {
    "grid3": lambda: named_task("grid3"),
    "grid4": lambda: named_task("grid4"),
    "routes": lambda: named_task("routes"),
    "diamonds": lambda: named_task("diamonds"),
    "one-move-source": _source_with_one_move,
    "wide": _wide,
}


@pytest.fixture(scope="module", params=sorted(SPACES))
def space(request):
    return enumerate_rollouts(SPACES[request.param]())


def _close(a, b, tol=TOL):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    diff = np.abs(np.where(same, 0.0, a - b))
    assert np.all(same | (diff <= tol * np.maximum(1.0, np.abs(b)))), float(np.max(diff))


def _bases(space):
    """The default base, a random one, and one with zero-mass rollouts (unreached prefixes)."""
    default = base_policy(space, "default")
    random = base_policy(space, "random", seed=7)
    weights = random.log_prob.copy()
    weights[np.arange(space.n_rollouts) % 3 == 1] = -np.inf
    weights[np.flatnonzero(space.correct)[:1]] = 0.0  # keep a correct rollout
    return [default, random, Policy.from_log_weights(space, weights)]


def _largest_linear_gamma(space):
    """The largest gamma with ``gamma * max_depth <= 600`` (the pass's linear range)."""
    return 600.0 / max(space.max_depth, 1)


@pytest.fixture
def compiled(monkeypatch):
    monkeypatch.delenv("TILT_NO_JIT", raising=False)
    monkeypatch.setenv("TILT_JIT_MIN_SIZE", "0")
    kernels = kernel_kernels(1)
    assert kernels is not None
    return kernels


def test_chain_tree_covers_every_move_once(space):
    """Every non-root prefix lies on exactly one chain; each chain ends at a stop or a leaf."""
    tree = chain_tree(space)
    count = space.child_count
    seen = np.zeros(space.n_prefixes, dtype=int)
    for e, q in enumerate(tree.edge_child):
        x = int(q)
        seen[x] += 1
        while count[x] == 1:
            x = int(space.child_start[x])
            seen[x] += 1
        end = tree.edge_end[e]
        if count[x] == 0:
            assert end == -1
        else:
            assert tree.stop_prefix[end] == x
    assert seen[0] == 0
    assert np.all(seen[1:] == 1)
    assert np.array_equal(np.diff(tree.edge_start), count[tree.stop_prefix])


@pytest.mark.parametrize(("demos_kind", "alpha"), DEMOS)
def test_stop_pass_equals_the_numpy_pass(space, compiled, demos_kind, alpha):
    for base in _bases(space):
        demos = demonstrations(base, demos_kind, alpha)
        support = support_of(demos)
        mass = base.prefix_log_mass()
        reached = np.isfinite(mass)
        cond = reached_conditionals(space, mass)
        for gamma in (0.5, 3.0, _largest_linear_gamma(space)):
            weight = demos.prob[support]
            log_z, expected = stop_pass(compiled, gamma, space, cond, support, weight)
            plain_z, plain = kernel_pass(gamma, space, mass, support, weight, True)
            assert plain is not None
            _close(log_z, plain_z)
            _close(expected[reached], plain[reached])
            assert np.all(np.isfinite(expected))


@pytest.mark.parametrize(("demos_kind", "alpha"), DEMOS)
def test_popcount_mixture_equals_the_matrix_product(space, compiled, demos_kind, alpha):
    for base in _bases(space):
        demos = demonstrations(base, demos_kind, alpha)
        support = support_of(demos)
        rng = np.random.default_rng(3)
        log_w = demos.log_prob[support] + rng.normal(size=support.size)
        log_w[: support.size // 4] -= 700.0  # weights that underflow once shifted
        incidence = space.move_incidence()
        for gamma in (0.0, 0.5, 3.0, _largest_linear_gamma(space)):
            fast = kernel_mixture(compiled, gamma, space, support, log_w)
            plain = log_mixture(gamma * incidence, incidence_rows(space, support), log_w)
            _close(fast, plain)


@pytest.mark.parametrize(("demos_kind", "alpha"), DEMOS)
def test_the_model_compiled_and_numpy(space, monkeypatch, demos_kind, alpha):
    """Every target of the model, compiled on every input and in plain numpy."""
    for base in _bases(space)[:2]:
        for gamma in (0.5, _largest_linear_gamma(space), 800.0):
            model = KernelContext(gamma)
            out = []
            for setting in ("jit", "numpy"):
                if setting == "jit":
                    monkeypatch.delenv("TILT_NO_JIT", raising=False)
                    monkeypatch.setenv("TILT_JIT_MIN_SIZE", "0")
                else:
                    monkeypatch.setenv("TILT_NO_JIT", "1")
                fresh = Policy(space, base.log_prob.copy())
                demos = demonstrations(fresh, demos_kind, alpha)
                out.append(
                    (
                        model.tilt_score(fresh, demos),
                        model.token_log_target(fresh, demos),
                        model.forward_log_prob(fresh, demos),
                    )
                )
            for a, b in zip(*out, strict=True):
                _close(a, b)


def test_one_pass_serves_every_target(monkeypatch):
    """The sequence, token and forward targets of one policy share one remembered pass, and
    give what a fresh policy (nothing remembered) gives; ``release`` lets it go."""
    monkeypatch.delenv("TILT_NO_JIT", raising=False)
    monkeypatch.setenv("TILT_JIT_MIN_SIZE", "0")
    space = enumerate_rollouts(named_task("grid4"))
    base = base_policy(space, "random", seed=2)
    model = KernelContext(2.0)
    demos = demonstrations(base, "tempered", 0.4)
    shared = [
        model.tilt_score(base, demos),
        model.token_log_target(base, demos),
        model.forward_log_prob(base, demos),
    ]
    passes = [k for k in base._memo if k.startswith("kernel_pass@")]
    assert len(passes) == 1
    remembered = base.remembered(passes[0])
    assert all(not array.flags.writeable for array in remembered)
    for i, target in enumerate((model.tilt_score, model.token_log_target, model.forward_log_prob)):
        fresh = Policy(space, base.log_prob.copy())
        _close(shared[i], target(fresh, demonstrations(fresh, "tempered", 0.4)))
    base.release()
    assert base.remembered(passes[0]) is None


def test_the_gate_keeps_numpy(monkeypatch):
    monkeypatch.setenv("TILT_NO_JIT", "1")
    assert kernel_kernels(1 << 40) is None
    monkeypatch.delenv("TILT_NO_JIT")
    monkeypatch.delenv("TILT_JIT_MIN_SIZE", raising=False)
    assert kernel_kernels(10) is None
    monkeypatch.setenv("TILT_JIT_MIN_SIZE", "0")
    assert kernel_kernels(10) is not None


def test_large_gamma_keeps_to_the_linear_range():
    """Beyond ``gamma * max_depth = 600`` the model takes its log-domain paths (no overflow)."""
    space = enumerate_rollouts(named_task("grid4"))
    base = base_policy(space, "default")
    demos = demonstrations(base)
    gamma = 2 * _largest_linear_gamma(space)
    model = KernelContext(gamma)
    for target in (model.tilt_score, model.token_log_target, model.forward_log_prob):
        values = target(base, demos)
        assert not np.any(np.isnan(values))
        assert math.isfinite(float(np.max(values)))
