"""The compiled kernels of the per-prefix fixed points (``tilt.objectives._compiled``) agree
with their numpy twins in :mod:`tilt.objectives.per_prefix`.

Each optimum is computed with ``TILT_JIT_MIN_SIZE=0`` (the kernels serve every input) and
with ``TILT_NO_JIT=1`` (numpy).  The ``discount`` kernel shifts each group by its own
largest value where numpy shifts a whole depth by one, and the ``jsd`` group search finds
the same distinct groups in another order: the two agree to rounding, 1e-12 (the
tolerance of exact enumeration), on log-probabilities and conditionals.
"""

from __future__ import annotations

import numpy as np
import pytest
from _compiled_paths import assert_close, kernels_on_and_off

from tilt.context import CopyContext, EdgeContext, KernelContext
from tilt.objectives import sd_optimum
from tilt.objectives.per_prefix import distinct_columns
from tilt.policy import Policy, base_policy
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import named_task

pytest.importorskip("numba")


@pytest.fixture(scope="module", params=["grid3", "grid4", "routes", "diamonds"])
def space(request):
    return enumerate_rollouts(named_task(request.param))


def _bases(space):
    """The default base, a random one and a sharply peaked random one (logits of scale 40)."""
    return [
        base_policy(space, "default"),
        base_policy(space, "random", seed=3),
        base_policy(space, "random", seed=8, scale=40.0),
    ]


@pytest.mark.parametrize(
    "model",
    [EdgeContext(2.0), EdgeContext(800.0), EdgeContext(0.0), CopyContext(0.4), KernelContext(0.8)],
    ids=["edge2", "edge800", "edge0", "copy", "kernel"],
)
@pytest.mark.parametrize("spec", ["discount=0.5", "discount=1", "discount=0.01", "jsd=0.5"])
def test_optima_with_and_without_kernels(space, monkeypatch, model, spec):
    if spec.startswith("jsd") and isinstance(model, KernelContext) and space.n_rollouts > 100:
        pytest.skip("jsd with the kernel model's classes is slow on grid4: grid3, diamonds do")
    for base in _bases(space):

        def optimum(base=base):
            fresh = Policy(space, base.log_prob.copy())  # nothing remembered from the other path
            out = sd_optimum(fresh, model, spec)
            return out.log_prob, out.log_conditionals()

        compiled, plain = kernels_on_and_off(monkeypatch, optimum)
        for a, b in zip(compiled, plain, strict=True):
            assert_close(a, b)


def test_discount_with_a_silent_group(space, monkeypatch):
    """A teacher that gives a whole sibling group no mass: the policy keeps its own
    conditionals there (the softmax path), with the kernel as without."""
    from tilt.objectives.per_prefix import _discount_pass, _kernels

    rng = np.random.default_rng(2)
    target = rng.normal(size=space.n_prefixes)
    parent = int(np.flatnonzero(space.child_count >= 2)[-1])
    start, count = space.child_start[parent], space.child_count[parent]
    target[start : start + count] = -np.inf
    target[0] = 0.0
    monkeypatch.setenv("TILT_JIT_MIN_SIZE", "0")
    kernels = _kernels(space.n_prefixes)
    assert kernels is not None
    for g in (0.3, 1.0):
        # the kernel stops at the silent group (its caller then takes the numpy pass)
        assert kernels.discount_pass(
            space.child_start, space.child_count, target, g, np.zeros(space.n_prefixes)
        )
        assert _discount_pass(space, target, g)[2]
        # with no silent group, the same conditionals as the numpy pass
        finite = np.where(np.isneginf(target), -5.0, target)
        log_cond = np.zeros(space.n_prefixes)
        assert not kernels.discount_pass(space.child_start, space.child_count, finite, g, log_cond)
        _, log_cond_np, silent_np = _discount_pass(space, finite, g)
        assert not silent_np
        log_cond[0] = log_cond_np[0]  # the kernel leaves V(root) there; entry 0 is never read
        assert_close(log_cond, log_cond_np)


def test_distinct_columns_against_numpy(monkeypatch):
    """The compiled search finds the same classes as the numpy twin: equal columns share
    one, a column with ``nan`` stands alone, ``-0.0`` and ``0.0`` columns may differ."""
    from tilt.objectives.per_prefix import _kernels

    monkeypatch.setenv("TILT_JIT_MIN_SIZE", "0")
    kernels = _kernels(1)
    assert kernels is not None
    rng = np.random.default_rng(5)
    for rows, count, distinct in [(2, 1, 1), (4, 50, 3), (6, 5000, 40), (4, 200_000, 900)]:
        pool = rng.normal(size=(rows, distinct))
        columns = np.ascontiguousarray(pool[:, rng.integers(0, distinct, size=count)])
        if count > 10:
            columns[:, 7] = np.nan
            columns[:, 9] = np.nan
        first, inverse = kernels.distinct_columns(columns)
        assert np.array_equal(columns[:, first][:, inverse], columns, equal_nan=True)
        first_np, inverse_np = distinct_columns(columns)
        # numpy keeps a class for colliding nan columns that it then sets apart: count the used
        assert first.size == np.unique(inverse_np).size
        # the same partition of the columns into classes
        pairs = set(zip(inverse.tolist(), inverse_np.tolist(), strict=True))
        assert len(pairs) == first.size


def test_distinct_groups_from_rows(space, monkeypatch):
    """The compiled search from the per-prefix rows (``tilt.context._compiled``) finds the
    classes of the gathered key, with the second row per prefix or read through
    ``space.move``; the edge classes' :meth:`~tilt.context.TeacherClasses.group_classes`
    are the classes of their :meth:`~tilt.context.TeacherClasses.group_key` columns."""
    import tilt.context._compiled as kernels
    from tilt.context import demonstrations

    monkeypatch.setenv("TILT_JIT_MIN_SIZE", "0")
    monkeypatch.delenv("TILT_NO_JIT", raising=False)
    rng = np.random.default_rng(1)
    base = base_policy(space, "random", seed=2)
    classes = EdgeContext(2.0).teacher_classes(base, demonstrations(base, "own"))
    own, mass = classes.group_key_rows()
    random_rows = (
        rng.integers(0, 3, size=space.n_prefixes).astype(float),
        rng.integers(0, 2, size=space.n_prefixes).astype(float),
    )
    random_by_move = rng.integers(0, 2, size=space.n_moves).astype(float)
    direct = np.empty(0, dtype=np.int32)
    cases = [
        (own, mass, direct),
        (*random_rows, direct),
        (random_rows[0], random_by_move, space.move),  # the second row through the moves
    ]
    for first_row, second_row, move in cases:
        second = second_row if move.size == 0 else second_row[move]
        for _, children in space.sibling_groups_by_size:
            key = np.concatenate([first_row[children], second[children]])
            first, inverse = kernels.distinct_groups(first_row, second_row, move, children)
            assert np.array_equal(key[:, first][:, inverse], key)
            _, inverse_np = distinct_columns(key)
            assert first.size == np.unique(inverse_np).size
            assert len(set(zip(inverse.tolist(), inverse_np.tolist(), strict=True))) == first.size
    for n, children in space.sibling_groups_by_size:
        found = classes.group_classes(n, children)
        assert found is not None
        first, inverse = found
        key = classes.group_key(children)
        assert np.array_equal(key[:, first][:, inverse], key)
        assert first.size == distinct_columns(key)[0].size
        assert classes.group_classes(n, children) is found  # remembered on the policy
    monkeypatch.setenv("TILT_NO_JIT", "1")
    assert classes.group_classes(2, space.sibling_groups_by_size[0][1]) is None
