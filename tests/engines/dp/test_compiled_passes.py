"""The DP engine's compiled passes (``tilt.engines.dp._compiled``, numba) against its numpy paths.

Each quantity is computed twice in one process: with ``TILT_JIT_MIN_SIZE=0`` (the kernels
serve every input, however small) and with ``TILT_NO_JIT=1`` (the numpy paths, as on a
machine without numba).  Spaces: small token lattices, the catalogue's DAGs and random
DAGs, with their logits and with logits hundreds of nats apart (conditionals below
``e^-350``, outside the linear-domain range, and complements below ``1e-280``), so that
both the linear-domain layers and the log-space fallbacks of each kernel run.

Tolerance ``1e-12`` relative to ``max(1, |value|)`` (the engine's, ``test_dp.py``): the
kernels sum in another order than numpy's ``reduceat`` and take ``exp`` and ``log`` from
another library, so they agree to rounding, not to the bit; the max-plus passes, the
conditioned chain and the state DAG itself are the same operations and agree exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from _instances import dp_rows, scaled_lattice_table
from hypothesis import given, settings
from hypothesis import strategies as st

from tilt.engines.dp import acyclic_space, lattice_table
from tilt.engines.dp import measures as dpm
from tilt.engines.dp import passes as dp_passes
from tilt.engines.dp import policy as dpp
from tilt.engines.dp.space import AcyclicSpace, MoveTable
from tilt.tasks.graphs import make_task, named_task
from tilt.testing import dag_instances

pytest.importorskip("numba")

TOL = 1e-12
KS = (1, 3, 64)
LATTICES = ["lattice:V=4,L=6,seed=0", "lattice:V=3,L=5,seed=1,M=3", "lattice:V=8,L=4,seed=2"]
SCALES = [1.0, 300.0]  # the lattices' logits, and the same times 300 (hundreds of nats apart)


@contextlib.contextmanager
def _setting(compiled: bool) -> Iterator[None]:
    """The kernels on every input (``compiled``) or off, restored afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        if compiled:
            patch.delenv("TILT_NO_JIT", raising=False)
            patch.setenv("TILT_JIT_MIN_SIZE", "0")
        else:
            patch.setenv("TILT_NO_JIT", "1")
        yield


def _both(compute: Callable[[], object]) -> tuple[object, object]:
    with _setting(True):
        compiled = compute()
    with _setting(False):
        plain = compute()
    return compiled, plain


def _close(a: object, b: object, where: str = "", tol: float = TOL) -> None:
    """Every number of ``a`` within ``tol * max(1, |b|)`` of ``b``; infinities and nans equal."""
    if isinstance(a, dict):
        assert isinstance(b, dict), where
        assert a.keys() == b.keys(), where
        for key in a:
            _close(a[key], b[key], f"{where}.{key}", tol)
        return
    if isinstance(a, str):
        assert a == b, where
        return
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert x.shape == y.shape, where
    same = (x == y) | (np.isnan(x) & np.isnan(y))
    assert np.array_equal(np.isinf(x), np.isinf(y)), where
    with np.errstate(invalid="ignore"):  # inf - inf where both are the same infinity
        gap = np.abs(np.where(same, 0.0, x - y))
    assert np.all(same | (gap <= tol * np.maximum(1.0, np.abs(y)))), (where, float(gap.max()))


def _policies(space: AcyclicSpace, logits: np.ndarray | None = None) -> dict[str, dpp.MarkovPolicy]:
    """The rows of ``python -m tilt.compare`` (:func:`_instances.dp_rows`)."""
    rows = dp_rows(space, logits)
    return rows


def _passes(space: AcyclicSpace, logits: np.ndarray | None = None) -> dict[str, object]:
    """Every pass the kernels stand in for, on every policy of :func:`_policies`."""
    out: dict[str, object] = {}
    policies = _policies(space, logits)
    base = policies["base"]
    correct = np.where(space.correct, 0.0, -np.inf)
    wrong = np.where(space.leaf & ~space.correct, 0.0, -np.inf)
    unnormalised = base.log_cond + np.linspace(-3.0, 5.0, space.n_edges)  # shifted layers
    for key, q in policies.items():
        lin = q.linear
        out[f"{key} backward"] = dp_passes.backward_logsumexp(space, lin, correct, compiled=True)
        out[f"{key} backward wrong"] = dp_passes.backward_logsumexp(
            space, lin, wrong, compiled=True
        )
        out[f"{key} backward discounted"] = dp_passes.backward_logsumexp(
            space, lin, correct, 0.5, compiled=True
        )
        out[f"{key} backward squared"] = dp_passes.backward_logsumexp(
            space, lin.squared(space), correct, compiled=True
        )
        out[f"{key} backward squared on the fly"] = dp_passes.backward_logsumexp(
            space, lin, correct, compiled=True, square=True
        )
        out[f"{key} forward"] = dp_passes.forward_logsumexp(space, lin)
        out[f"{key} exact backward"] = dp_passes.backward_logsumexp(space, lin, correct)
        out[f"{key} exact forward"] = dp_passes.forward_logsumexp(space, lin)
        out[f"{key} exact backward wrong"] = dp_passes.backward_logsumexp(space, lin, wrong)
        out[f"{key} exact tilted"] = np.concatenate(
            dp_passes.tilted_conditionals(
                space, q.log_cond + np.linspace(-2.0, 3.0, space.n_edges), correct, q.log_cond
            )
        )
        out[f"{key} max"] = dp_passes.backward_max(space, q.log_cond, correct)
        finite = np.where(np.isfinite(q.log_cond), q.log_cond, 0.0)
        out[f"{key} mean"] = dp_passes.backward_mean(space, q.prob, finite)
        out[f"{key} conditioned chain"] = q.correct_cond
        out[f"{key} re-route"] = dpm.reroute_accuracy(q)[1]
        out[f"{key} measures"] = dpm.measure(q, base, KS).as_dict()
        out[f"{key} slope conditioning"] = _slope_conditioning(q, base)
    out["shifted backward"] = dp_passes.backward_logsumexp(
        space, unnormalised, correct, compiled=True
    )
    out["shifted forward"] = dp_passes.forward_logsumexp(space, unnormalised)
    out["shifted exact backward"] = dp_passes.backward_logsumexp(space, unnormalised, correct)
    return out


def _slope_conditioning(q: dpp.MarkovPolicy, base: dpp.MarkovPolicy) -> dict[str, float]:
    """Per gap slope ``1 + Cov(X, D) / Var X``, ``Cov(X, D) = sum_e F_e dx_e (d_e + M(head) -
    M(tail))`` with ``M`` the mean of ``D`` below: ``sum_e |F_e dx_e| (|d_e| + |M(head)| +
    |M(tail)|) / Var X``, by how much rounding each term (``eps`` of its parts) can move the
    slope, over ``eps``."""
    out = {}
    space = q.space
    for key, uniform in (("gap_slope", True), ("weighted_gap_slope", False)):
        chain = dpm._counted_chain(q, base, uniform)
        with np.errstate(invalid="ignore"):
            diff = np.where(chain.support, q.log_cond - base.log_cond, 0.0)
        mean = np.abs(dp_passes.backward_mean(space, chain.prob, diff))
        size = np.abs(diff) + mean[space.edge_head] + mean[space.edge_tail]
        terms = float(np.abs(chain.scaled * size).sum())
        out[key] = terms / chain.var if chain.usable else 0.0
    return out


EXACT = ("max", "conditioned chain")
"""Passes that make the same operations in the same order as numpy: the same bits, given the
same conditionals (those of the base and of RL, which no compiled pass computes; SD's
conditionals depend on the demonstrations' reach, a forward pass, so they differ by
rounding)."""


def _check(compiled: dict[str, object], plain: dict[str, object]) -> None:
    assert compiled.keys() == plain.keys()
    for key, value in compiled.items():
        if key.endswith("slope conditioning"):
            continue
        if key.endswith("measures"):  # the gap slopes to their conditioning (SD on logits
            # 300 times the lattice's: Var log pi0 near 1e-26, a condition number of 8e12)
            measures = dict(value)  # type: ignore[call-overload]
            expected = dict(plain[key])  # type: ignore[call-overload]
            kappa = plain[key.replace("measures", "slope conditioning")]
            for slope in ("gap_slope", "weighted_gap_slope"):
                tol = TOL + 16 * np.finfo(float).eps * kappa[slope]  # type: ignore[index]
                _close(measures.pop(slope), expected.pop(slope), f"{key}.{slope}", tol)
            _close(measures, expected, key)
            continue
        # numpy's passes (kernels or not: numpy's bits), and the passes of EXACT
        same_ops = key.endswith(EXACT) and key.split()[0] in ("base", "rl0", "rl")
        if " exact " in key or same_ops:
            np.testing.assert_array_equal(value, plain[key], err_msg=key)
        else:
            _close(value, plain[key], key)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", LATTICES)
def test_passes_agree_on_lattices(name: str, scale: float) -> None:
    def run() -> dict[str, object]:
        return _passes(acyclic_space(scaled_lattice_table(name, scale)))

    compiled, plain = _both(run)
    _check(compiled, plain)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["diamonds", "routes"])
def test_passes_agree_on_named_dags(name: str) -> None:
    compiled, plain = _both(lambda: _passes(acyclic_space(named_task(name))))
    _check(compiled, plain)  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(
    dag_instances(logit_strategy=st.sampled_from([-900.0, -400.0, -30.0, 0.0, 1.0, 400.0, 900.0]))
)
def test_passes_agree_on_random_dags_with_extreme_logits(instance) -> None:  # type: ignore[no-untyped-def]
    def run() -> dict[str, object]:
        return _passes(acyclic_space(instance.task), instance.move_logit)

    compiled, plain = _both(run)
    _check(compiled, plain)  # type: ignore[arg-type]


def test_log_space_fallbacks_agree() -> None:
    # every layer in log space (SAFE_RANGE below 0) and every re-route complement from the
    # logs (_TINY above 1): the kernels' fallbacks against numpy's
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dp_passes, "SAFE_RANGE", -1.0)
        patch.setattr(dpm, "_TINY", 2.0)
        compiled, plain = _both(
            lambda: _passes(acyclic_space(scaled_lattice_table(LATTICES[0], 300.0)))
        )
    _check(compiled, plain)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", [*LATTICES, "diamonds", "routes", "diamonds-depth"])
def test_the_state_dag_is_the_same(name: str) -> None:
    def build() -> AcyclicSpace:
        if name.startswith("lattice:"):
            return acyclic_space(lattice_table(name))
        if name == "diamonds-depth":  # (depth, node) states: the numpy build, kernels' layers
            return acyclic_space(named_task("diamonds"), with_depth=True)
        return acyclic_space(named_task(name))

    compiled, plain = _both(build)
    for field in ("state_node", "state_depth", "layer_start", "edge_tail", "edge_head"):
        np.testing.assert_array_equal(
            getattr(compiled, field), getattr(plain, field), err_msg=field
        )
    np.testing.assert_array_equal(compiled.edge_move, plain.edge_move)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(compiled.out_start, plain.out_start)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(compiled.correct, plain.correct)  # type: ignore[attr-defined]
    if name.startswith("lattice:"):  # every node a state in node order: the moves, shared
        assert compiled.edges_are_moves  # type: ignore[attr-defined]
        assert compiled.edge_tail is compiled.moves.move_tail  # type: ignore[attr-defined]
        assert compiled.edge_head is compiled.moves.move_head  # type: ignore[attr-defined]


def test_a_cycle_is_refused_in_the_same_words() -> None:
    table = MoveTable(
        "cycle",
        ("s", "a", "b", "t"),
        0,
        3,
        None,
        np.array([0, 1, 2, 2], dtype=np.int64),
        np.array([1, 2, 1, 3], dtype=np.int64),
        np.zeros(4),
    )

    def message() -> str:
        with pytest.raises(ValueError, match="cycle") as info:
            acyclic_space(table)
        return str(info.value)

    compiled, plain = _both(message)
    assert compiled == plain


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", LATTICES)
def test_fused_kernels_are_the_unfused_bits(name: str, scale: float) -> None:
    """The pass squaring the weights on the fly gives the bits of the pass on the squared
    weights, and both gap slopes' centred dots in one pass the bits of one pass each (the
    same sums in the same order), with the kernels on every input."""
    with _setting(True):
        space = acyclic_space(scaled_lattice_table(name, scale))
        policies = _policies(space)
        base = policies["base"]
        correct = np.where(space.correct, 0.0, -np.inf)
        for key, q in policies.items():
            squared = dp_passes.backward_logsumexp(
                space, q.linear.squared(space), correct, compiled=True
            )
            on_the_fly = dp_passes.backward_logsumexp(
                space, q.linear, correct, compiled=True, square=True
            )
            np.testing.assert_array_equal(on_the_fly, squared, err_msg=key)
            apart = (dpm._slope(q, base, uniform=True), dpm._slope(q, base, uniform=False))
            np.testing.assert_array_equal(dpm._slopes(q, base), apart, err_msg=key)


@pytest.mark.parametrize("name", LATTICES)
@pytest.mark.parametrize("scale", [0.0, 1.0, 30.0, 90.0, 300.0])
def test_the_compiled_softmax_gives_numpy_bits(name: str, scale: float) -> None:
    """The edge softmax and its exponential by the compiled pass, bit for bit numpy's
    ``group_normalise`` and ``exp``: on spreads inside its one-shift range (up to 600
    nats), and outside it (``scale`` 90 and 300, a ``-inf`` or ``nan`` logit), where it
    hands the input to numpy."""
    space = acyclic_space(lattice_table(name))
    rng = np.random.default_rng(int(scale))
    logits = rng.normal(0.0, 1.0, space.n_moves) * scale
    cases = [logits, np.where(np.arange(space.n_moves) == 3, -np.inf, logits)]
    cases.append(np.where(np.arange(space.n_moves) == 5, np.nan, logits))
    for values in cases:
        with np.errstate(invalid="ignore"):
            expected = dp_passes.group_normalise(space, values[space.edge_move])
        with _setting(True):
            cond, prob = dp_passes.softmax_conditionals(space, values, index=space.edge_move)
        np.testing.assert_array_equal(cond, expected)
        spread = np.ptp(values) if np.isfinite(values).all() else np.inf
        assert (prob is not None) == (spread <= 600.0)
        if prob is not None:
            np.testing.assert_array_equal(prob, np.exp(expected))
        with _setting(True):  # the gathered values given directly
            direct, _ = dp_passes.softmax_conditionals(space, values[space.edge_move])
        np.testing.assert_array_equal(direct, expected)


@pytest.mark.parametrize("name", LATTICES)
@pytest.mark.parametrize("scale", SCALES)
def test_the_compiled_edge_form_gives_numpy_bits(name: str, scale: float) -> None:
    """``edge(gamma)``'s per-edge form (move weights, boost normalisers, steps, none
    weights) by the compiled pass is numpy's, bit for bit, for every kind of
    demonstration and for gamma 0 (no boost), 2 and 40."""
    from tilt.engines.dp.context import edge_form

    space = acyclic_space(scaled_lattice_table(name, scale))
    base = dpp.edge_softmax(space, space.moves.move_logit)
    for kind in ("own", "uniform", "tempered"):
        demos = dpp.demonstrations(base, kind, 0.5)
        for gamma in (0.0, 2.0, 40.0):
            forms = []
            for compiled in (True, False):
                base.release(f"edge_form:{gamma!r}:{id(demos)}")
                with _setting(compiled):
                    forms.append(edge_form(base, gamma, demos))
            assert forms[0] is not forms[1]  # computed twice, not remembered
            for field in ("move_weight", "none_weight", "log_boost_norm", "step"):
                a, b = getattr(forms[0], field), getattr(forms[1], field)
                np.testing.assert_array_equal(a, b, err_msg=f"{kind} {gamma} {field}")


@pytest.mark.parametrize("name", [*LATTICES, "lattice:V=3,L=4,M=5,seed=1"])
def test_the_compiled_ratio_conditionals_are_numpy_bits(name: str) -> None:
    """The uniform distribution on the correct rollouts, as conditionals (the unweighted
    gap slope's chain): the compiled pass gives numpy's bits, dead states (no correct
    rollout below) uniform."""
    space = acyclic_space(lattice_table(name))
    below = dpm._log_correct_count(space)
    assert np.isneginf(below).any()  # some state has no correct rollout below it
    outs = []
    for compiled in (True, False):
        with _setting(compiled):
            outs.append(dpm._ratio_conditionals(space, below))
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("name", [*LATTICES, "diamonds", "routes:horizon"])
def test_the_compiled_move_marginals_are_numpy_bits(name: str) -> None:
    """The demonstrations' move marginals (the flow through each move, summed over its
    state edges in edge order, as ``bincount`` sums them) by the compiled pass: numpy's
    bits, for each kind of demonstration, with depth in the state too."""
    if name == "routes:horizon":
        task = named_task("routes")
        space = acyclic_space(make_task(task.graph, task.source, task.target, 6, name="routes"))
    elif name.startswith("lattice"):
        space = acyclic_space(scaled_lattice_table(name, 1.0))
    else:
        space = acyclic_space(named_task(name))
    base = dpp.base_policy(space)
    for kind in ("own", "uniform", "tempered"):
        demos = dpp.demonstrations(base, kind, 0.5)
        marginals = []
        for compiled in (True, False):
            demos.release("edge_marginals")
            with _setting(compiled):
                marginals.append(dpp.edge_marginals(demos))
        assert marginals[0] is not marginals[1]
        np.testing.assert_array_equal(marginals[0], marginals[1], err_msg=kind)


def test_the_kernels_load_on_a_thread_only_when_they_will_serve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``load_compiled_passes`` starts a thread only for an input the kernels serve and when
    a second thread is allowed; the thread loads the first kernel, and a failure on it
    stays there (the caller's own use reports it)."""
    import threading

    from tilt._numerics import threads_allowed
    from tilt.engines.dp import _compiled
    from tilt.engines.dp import space as dp_space

    monkeypatch.setenv("TILT_JIT_MIN_SIZE", "100")
    if not threads_allowed(100):
        pytest.skip("one CPU: nothing loads on a thread")
    calls: list[str] = []
    real = _compiled.node_layers

    def recorded(*args: object) -> object:
        calls.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(_compiled, "node_layers", recorded)
    assert dp_space.load_compiled_passes(99) is None  # too small for the kernels
    thread = dp_space.load_compiled_passes(100)
    assert thread is not None
    thread.join()
    assert calls == ["tilt-load-kernels"]  # the first kernel, called on that thread
    for name, value in (("TILT_NO_JIT", "1"), ("TILT_THREADS", "1")):
        with monkeypatch.context() as setting:
            setting.setenv(name, value)
            assert dp_space.load_compiled_passes(10**9) is None

    def broken(*args: object) -> None:
        raise RuntimeError("no kernel")

    monkeypatch.setattr(_compiled, "node_layers", broken)
    thread = dp_space.load_compiled_passes(100)
    assert thread is not None
    thread.join()  # the error is ignored: the thread ends, nothing is raised here
    with _setting(True), pytest.raises(RuntimeError, match="no kernel"):
        acyclic_space(lattice_table("lattice:V=3,L=2"))
