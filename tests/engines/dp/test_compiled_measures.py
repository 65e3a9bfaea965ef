"""The DP engine's compiled measures (``tilt.engines.dp._compiled_measures``) against numpy.

Each measure is computed with the kernels on every input (``TILT_JIT_MIN_SIZE=0``) and off
(``TILT_NO_JIT=1``, numpy's paths), on token lattices (their logits, and the same times
300: conditionals hundreds of nats apart), on named DAGs whose state edges are not in move
order (``routes``), on policies with zero-probability edges (RL at ``beta -> 0``, a point
mass) and on random DAGs with extreme logits.  Tolerance ``1e-12`` relative to
``max(1, |value|)`` (the engine's): the means are summed in another order (with
compensation), the per-move values are the same operations; the worst move of each OOD
reading must be the same move.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from _compiled_paths import assert_close, kernels_on_and_off
from _instances import dp_rows, scaled_lattice_table
from hypothesis import given, settings
from hypothesis import strategies as st

from tilt.engines.dp import acyclic_space
from tilt.engines.dp import measures as dpm
from tilt.engines.dp import passes as dp_passes
from tilt.engines.dp import policy as dpp
from tilt.engines.dp.space import AcyclicSpace, MoveTable
from tilt.tasks.graphs import named_task
from tilt.testing import dag_instances

pytest.importorskip("numba")

KS = (1, 3, 8, 64)
LATTICES = ["lattice:V=4,L=6,seed=0", "lattice:V=3,L=5,seed=1,M=3", "lattice:V=8,L=16,seed=2"]


def _scaled_space(name: str, scale: float) -> AcyclicSpace:
    return acyclic_space(scaled_lattice_table(name, scale))


def _policies(space: AcyclicSpace, logits: np.ndarray | None = None) -> dict[str, dpp.MarkovPolicy]:
    """The rows of ``python -m tilt.compare`` (:func:`_instances.dp_rows`), and the base's
    likeliest correct rollout (a point mass: probability 0 off the path)."""
    rows = dp_rows(space, logits)
    rows["point"] = dpp.point_mass(space, dpp.reference_edges(rows["base"]))
    return rows


def _ood(passes: list) -> list[tuple[float, float, int]]:  # type: ignore[type-arg]
    return [(p.mean, p.worst, p.n_moves) for p in passes]


def _measures(build: object, logits: np.ndarray | None = None) -> dict[str, object]:
    """Every measure the compiled measures serve, on every policy of :func:`_policies`
    (the OOD readings' worst moves apart, as strings)."""
    space = build() if callable(build) else build
    assert isinstance(space, AcyclicSpace)
    policies = _policies(space, logits)
    base = policies["base"]
    out: dict[str, object] = {}
    for key, q in policies.items():
        measures, distinct = dpm.measure_with_distinct(q, base, KS)
        out[f"{key} measures"] = measures
        out[f"{key} distinct"] = {k: (d.value, d.error, d.listed) for k, d in distinct.items()}
        fresh = dpp.MarkovPolicy(space, q.log_cond)  # one measure at a time, nothing shared
        out[f"{key} entropy"] = dpm.correct_entropy(fresh)
        out[f"{key} blocked"] = dpm.ood_blocked(fresh, KS)
        out[f"{key} reroute"] = dpm.ood_reroute(dpp.MarkovPolicy(space, q.log_cond), KS)
        out[f"{key} distortion"] = dpm.ratio_distortion(dpp.MarkovPolicy(space, q.log_cond), base)
    return out


def _check(compiled: dict[str, object], plain: dict[str, object]) -> None:
    assert compiled.keys() == plain.keys()
    for key, value in compiled.items():
        expected = plain[key]
        if key.endswith("measures"):
            got, want = value.as_dict(), expected.as_dict()  # type: ignore[attr-defined]
            for name in ("gap_slope", "weighted_gap_slope"):  # to their conditioning, in
                got.pop(name), want.pop(name)  # test_compiled_passes (the same kernels here)
            _close_dict(got, want, key)  # the worst moves (strings) equal
        elif key.endswith(("blocked", "reroute")):
            assert [p.worst_move for p in value] == [p.worst_move for p in expected], key  # type: ignore[attr-defined]
            assert_close(_ood(value), _ood(expected))  # type: ignore[arg-type]
        elif key.endswith("distinct"):
            _close_dict(value, expected, key)  # type: ignore[arg-type]
        else:
            assert_close(value, expected)


def _close_dict(got: dict, want: dict, where: str) -> None:  # type: ignore[type-arg]
    assert got.keys() == want.keys(), where
    for name in got:
        if isinstance(got[name], dict):
            _close_dict(got[name], want[name], f"{where}.{name}")
        elif isinstance(got[name], str) or got[name] is None:
            assert got[name] == want[name], (where, name)
        else:
            assert_close(got[name], want[name])


@pytest.mark.parametrize("scale", [1.0, 300.0])
@pytest.mark.parametrize("name", LATTICES)
def test_measures_agree_on_lattices(
    monkeypatch: pytest.MonkeyPatch, name: str, scale: float
) -> None:
    compiled, plain = kernels_on_and_off(
        monkeypatch, lambda: _measures(lambda: _scaled_space(name, scale))
    )
    _check(compiled, plain)


@pytest.mark.parametrize("name", ["diamonds", "routes"])
def test_measures_agree_on_named_dags(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    compiled, plain = kernels_on_and_off(
        monkeypatch, lambda: _measures(lambda: acyclic_space(named_task(name)))
    )
    _check(compiled, plain)


def test_the_worst_move_is_the_first_in_move_order_when_edges_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # routes' state edges are not in move order, and a uniform base ties many moves (the
    # same fail for every move out of a state with the same mass below): the compiled
    # scan, in edge order, must pick numpy's first minimum in move order
    space = acyclic_space(named_task("routes"))
    _, edges = dpm._used_moves(space)
    assert isinstance(edges, np.ndarray)
    assert not bool((np.diff(edges) > 0).all())
    uniform = np.zeros(space.n_moves)

    def run() -> list[str]:
        q = dpp.edge_softmax(acyclic_space(named_task("routes")), uniform)
        return [p.worst_move for p in dpm.ood_blocked(q, KS) + dpm.ood_reroute(q, KS)]

    compiled, plain = kernels_on_and_off(monkeypatch, run)
    assert compiled == plain


def test_a_tie_goes_to_the_first_move_of_the_move_table(monkeypatch: pytest.MonkeyPatch) -> None:
    # s -> a -> t and s -> b -> t, with dead ends a -> d and b -> d, uniform: q(C) = 1/2 and
    # every used move carries all of one of the two correct rollouts' mass, so blocking any
    # of them fails with 1 - 1/4 = 3/4 (pass@1 1/4) and re-routing at its tail leaves a
    # dead end or the other branch: a four-way tie.  Nodes a, b come first, so the move
    # table starts a>t, a>d, b>t, b>d, s>a, s>b while the states (edges) start at s: the
    # first minimum in move order is a>t, met after s>a in edge order.
    table = MoveTable(
        "ties",
        ("a", "b", "s", "t", "d"),
        2,
        3,
        None,
        np.array([0, 0, 1, 1, 2, 2]),
        np.array([3, 4, 3, 4, 0, 1]),
        np.zeros(6),
    )

    def run() -> list[tuple[str, float]]:
        q = dpp.edge_softmax(acyclic_space(table), np.zeros(6))
        return [(p.worst_move, p.worst) for p in dpm.ood_blocked(q, KS) + dpm.ood_reroute(q, KS)]

    compiled, plain = kernels_on_and_off(monkeypatch, run)
    assert compiled == plain
    assert compiled[0] == ("a>t", 0.25)  # blocked, k = 1


def test_complements_from_the_logs_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    # logits 3000 times the lattice's: complements far below 1e-280, redone from the logs
    # inside the scan when compiled, against numpy's _redo_tiny; then every complement
    # so (_TINY above 1)
    compiled, plain = kernels_on_and_off(
        monkeypatch, lambda: _measures(lambda: _scaled_space(LATTICES[0], 3000.0))
    )
    _check(compiled, plain)
    monkeypatch.setattr(dpm, "_TINY", 2.0)
    compiled, plain = kernels_on_and_off(
        monkeypatch, lambda: _measures(lambda: _scaled_space(LATTICES[0], 300.0))
    )
    _check(compiled, plain)


@settings(max_examples=20, deadline=None)
@given(dag_instances(logit_strategy=st.sampled_from([-900.0, -400.0, -30.0, 0.0, 1.0, 400.0])))
def test_measures_agree_on_random_dags_with_extreme_logits(instance) -> None:  # type: ignore[no-untyped-def]
    with pytest.MonkeyPatch.context() as patch:
        compiled, plain = kernels_on_and_off(
            patch, lambda: _measures(lambda: acyclic_space(instance.task), instance.move_logit)
        )
    _check(compiled, plain)


def test_the_power_is_numpys_repeated_squaring() -> None:
    # the same products in the same order: the same bits as measures._power, for every k
    from tilt.engines.dp import _compiled_measures as cm

    x = np.random.default_rng(0).random(200)
    x[:3] = (0.0, 1.0, 1.0 - 2.0**-52)
    for k in (1, 2, 3, 7, 8, 13, 64, 100, 1000):
        expected = dpm._power(x, k)
        got = np.array([cm._power_of(float(v), k) for v in x])
        np.testing.assert_array_equal(got, expected, err_msg=str(k))


@pytest.mark.parametrize("safe_range", [350.0, -1.0])
@pytest.mark.parametrize("scale", [1.0, 300.0])
def test_the_sweep_is_the_separate_passes_bits(
    monkeypatch: pytest.MonkeyPatch, scale: float, safe_range: float
) -> None:
    """The fused backward sweep gives the bits of the kernels it stands in for (the same
    operations in the same order): the max-plus pass, the spread, the sum of squares and
    both centred dots; and the OOD scan the entropy's sum."""
    monkeypatch.delenv("TILT_NO_JIT", raising=False)
    monkeypatch.setenv("TILT_JIT_MIN_SIZE", "0")
    monkeypatch.setattr(dp_passes, "SAFE_RANGE", safe_range)  # -1: every layer in log space
    space = _scaled_space(LATTICES[2], scale)
    policies = _policies(space)
    base = policies["base"]
    leaf = np.where(space.correct, 0.0, -np.inf)
    checked = 0
    seen_finite: set[bool] = set()
    for key, q in policies.items():
        swept = dpp.MarkovPolicy(space, q.log_cond)
        dpm._backward_sweep(swept, base)
        alone = dpp.MarkovPolicy(space, q.log_cond)
        best = dpm.backward_max(space, alone.log_cond, leaf)
        np.testing.assert_array_equal(swept._memo["max_below"], best, err_msg=key)
        assert dpm.ratio_distortion(swept, base) == dpm.ratio_distortion(alone, base) or (
            math.isnan(dpm.ratio_distortion(alone, base))
        ), key
        slopes = swept._memo.get(f"slopes:{id(base)}")
        if slopes is not None:
            apart = (dpm._slope(alone, base, uniform=True), dpm._slope(alone, base, uniform=False))
            np.testing.assert_array_equal(slopes, apart, err_msg=key)
            checked += 1
        assert swept._memo["all_finite"] == bool(np.isfinite(q.log_cond).all()), key
        on_path = dpm._on_correct_paths(space)
        finite = bool(np.all(np.isfinite(q.log_cond) | ~on_path))  # the numpy path's test
        assert dpm._finite_on_paths(dpp.MarkovPolicy(space, q.log_cond)) == finite, key
        seen_finite.add(finite)
        squares = dp_passes.backward_logsumexp(
            space, alone.linear, leaf, compiled=True, square=True
        )[0]
        assert swept._memo["log_square_mass"] == squares, key
        # the OOD scan's entropy sum: the bits of correct_log_sum's own pass
        scanned = dpp.MarkovPolicy(space, q.log_cond)
        dpm._ood_scans(scanned, KS)
        assert "correct_log_sum" in scanned._memo, key
        assert dpm.correct_entropy(scanned) == dpm.correct_entropy(alone), key
    assert checked >= 3  # the slopes' part ran
    assert seen_finite == {True, False}  # the point mass has -inf on correct paths
