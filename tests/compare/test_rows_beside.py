"""compare() measures a row on a second thread beside the next optimum when the engine
allows (a large DP instance, two CPUs): the rows are the same as one at a time."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tilt._numerics import threads_allowed
from tilt.compare import compare, methods, sd_variants
from tilt.engines import DPInstance, InstanceSpec, build_instance

VARIANTS = sd_variants(["jsd=0.5"])
MEASURE = DPInstance.measure


def _instance(graph: str) -> DPInstance:
    spec = InstanceSpec(graph=graph)
    instance = build_instance(spec, methods(VARIANTS), engine="dp")
    assert isinstance(instance, DPInstance)
    return instance


def _compare(graph: str, monkeypatch: pytest.MonkeyPatch, setting: str) -> tuple[Any, set[str]]:
    """The rows, strategy rows and tilt score of ``graph``, and the threads that measured."""
    monkeypatch.setenv("TILT_THREADS", setting)
    monkeypatch.setenv("TILT_JIT_MIN_SIZE", "0")  # every size counts as large
    measured_on: set[str] = set()

    def measure(self: DPInstance, policy: Any, ks: Any) -> Any:
        measured_on.add(threading.current_thread().name)
        return MEASURE(self, policy, ks)

    monkeypatch.setattr(DPInstance, "measure", measure)
    instance = _instance(graph)
    comparison = compare(instance, variants=VARIANTS, strategies=instance.strategies("first-move"))
    rows = [(r.key, r.label, r.beta, r.note, r.measures) for r in comparison.rows]
    return (rows, comparison.strategy_rows), measured_on


@pytest.mark.parametrize("graph", ["diamonds", "routes", "lattice:V=4,L=6,M=3"])
def test_rows_measured_beside_the_next_optimum_are_the_same(
    graph: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every row (measures, notes, matched beta, strategy shares) is the same with the
    rows measured beside the next optimum as one at a time, and the second thread is used
    only when allowed."""
    monkeypatch.setenv("TILT_JIT_MIN_SIZE", "0")
    if not threads_allowed(0):
        pytest.skip("one CPU: rows are measured one at a time")
    one, threads_one = _compare(graph, monkeypatch, "1")
    two, threads_two = _compare(graph, monkeypatch, "2")
    assert one == two
    assert threads_one == {"MainThread"}
    assert {name.split("_")[0] for name in threads_two} == {"tilt-rows"}


def test_an_error_while_measuring_beside_reaches_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An error raised by a row's measures on the second thread is raised by compare()."""
    monkeypatch.setenv("TILT_JIT_MIN_SIZE", "0")
    if not threads_allowed(0):
        pytest.skip("one CPU: rows are measured one at a time")
    calls = []

    def measure(self: DPInstance, policy: Any, ks: Any) -> Any:
        calls.append(threading.current_thread().name)
        if len(calls) == 2:
            raise ValueError("measure failed")
        return MEASURE(self, policy, ks)

    monkeypatch.setattr(DPInstance, "measure", measure)
    instance = _instance("routes")
    with pytest.raises(ValueError, match="measure failed"):
        compare(instance, variants=VARIANTS)
    assert calls == ["tilt-rows_0"] * 2  # on the second thread; nothing after the failure
    assert not [t for t in threading.enumerate() if t.name.startswith("tilt-rows")]


def test_rows_are_measured_one_at_a_time_unless_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No second thread for a space below the size gate, nor on the enumeration engine
    (whose rows are large), whatever the CPUs."""
    from tilt.engines import EnumeratedInstance

    measured_on: set[str] = set()

    def measure(self: DPInstance, policy: Any, ks: Any) -> Any:
        measured_on.add(threading.current_thread().name)
        return MEASURE(self, policy, ks)

    monkeypatch.setattr(DPInstance, "measure", measure)
    monkeypatch.delenv("TILT_JIT_MIN_SIZE", raising=False)
    instance = _instance("routes")  # some hundred state edges: below the gate
    assert not instance.measures_beside
    compare(instance, variants=VARIANTS)
    assert measured_on == {"MainThread"}
    monkeypatch.setenv("TILT_JIT_MIN_SIZE", "0")
    enumerated = build_instance(InstanceSpec(graph="grid3"), methods(VARIANTS))
    assert isinstance(enumerated, EnumeratedInstance)
    assert not enumerated.measures_beside


def test_at_most_three_rows_wait_for_the_second_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller waits for a place rather than queuing every row: with slow measures, at
    most three rows are queued or being measured whenever it queues one."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("TILT_JIT_MIN_SIZE", "0")
    if not threads_allowed(0):
        pytest.skip("one CPU: rows are measured one at a time")
    queued, finished, in_flight = [0], [0], []
    real_submit = ThreadPoolExecutor.submit

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        if threading.current_thread().name == "MainThread" and fn.__name__ == "_measure_beside":
            queued[0] += 1
            in_flight.append(queued[0] - finished[0])
        return real_submit(self, fn, *args, **kwargs)

    def measure(self: DPInstance, policy: Any, ks: Any) -> Any:
        time.sleep(0.05)  # slower than the optima: the caller runs ahead
        try:
            return MEASURE(self, policy, ks)
        finally:
            finished[0] += 1

    monkeypatch.setattr(ThreadPoolExecutor, "submit", submit)
    monkeypatch.setattr(DPInstance, "measure", measure)
    variants = sd_variants(["jsd=0.5", "discount=0.5", "token-forward"])
    instance = build_instance(InstanceSpec(graph="diamonds"), methods(variants), engine="dp")
    compare(instance, variants=variants)
    assert queued[0] >= 6
    assert max(in_flight) == 3
