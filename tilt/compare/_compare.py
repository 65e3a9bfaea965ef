"""RL against self-distillation on one instance, exactly, on any engine.

:func:`compare` computes one row per method (base, RL at ``beta``, RL at SD's
accuracy, then one row per SD variant: sequence, token and forward by default,
plus any objective spec or preset) with every measure of ``docs/theory.md``,
through the engine protocol of :mod:`tilt.engines`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tilt._numerics import FloatArray
from tilt.engines import EngineInstance, Method
from tilt.measures import Measures, Strategies, StrategyMeasures
from tilt.objectives import Objective, iterate, parse_objective, preset, rl_matched
from tilt.space import TooLargeError

__all__ = [
    "MethodResult",
    "Comparison",
    "SDVariant",
    "sd_variants",
    "compare",
    "methods",
    "DEFAULT_VARIANTS",
    "METHODS",
]

METHODS = ("base", "rl", "rl_matched", "sd", "sd_token", "sd_forward")
"""Keys of the rows every comparison has, also CSV column names of the probabilities."""


@dataclass(frozen=True)
class SDVariant:
    """One SD row: its key (the CSV column), label, objective and demonstrations.

    ``demos`` is ``None`` for the instance's own ``--demos``.
    """

    key: str
    label: str
    objective: Objective
    demos: str | None = None


DEFAULT_VARIANTS = (
    SDVariant("sd", "SD sequence", parse_objective("sequence")),
    SDVariant("sd_token", "SD token", parse_objective("token")),
    SDVariant("sd_forward", "SD forward", parse_objective("forward")),
)
"""The three rows of every comparison."""


def sd_variants(
    specs: Sequence[str | Objective] = (), presets: Sequence[str] = ()
) -> list[SDVariant]:
    """The default rows, then one per spec (key ``sd[SPEC]``) and per preset (``preset[NAME]``)."""
    out = list(DEFAULT_VARIANTS)
    for spec in specs:
        objective = parse_objective(spec)
        out.append(SDVariant(f"sd[{objective.spec}]", f"SD {objective.spec}", objective))
    for name in presets:
        p = preset(name)
        label = f"preset {p.name}"
        out.append(SDVariant(f"preset[{p.name}]", label, parse_objective(p.objective), p.demos))
    return out


@dataclass(frozen=True)
class MethodResult:
    """One method's optimum and its measures (``policy is None`` when skipped)."""

    key: str
    label: str
    policy: Any
    """The engine's policy (a :class:`~tilt.policy.Policy` or a Markov policy), or ``None``."""
    measures: Measures | None
    beta: float | None = None
    note: str = ""
    objective: str | None = None
    demos: str | None = None


@dataclass(frozen=True)
class Comparison:
    """Every method of one instance, and the tilt score of the first round.

    ``engine`` names the engine (``'enumerate'`` or ``'dp'``); the DP engine keeps no
    per-rollout tilt score (``tilt is None``) and its rows hold Markov policies
    (:mod:`tilt.engines.dp`).
    """

    instance: EngineInstance
    ks: tuple[int, ...]
    rounds: int
    rows: tuple[MethodResult, ...]
    tilt: FloatArray | None
    engine: str = "enumerate"
    strategies: Strategies | None = None
    strategy_rows: tuple[tuple[str, StrategyMeasures], ...] = ()

    def row(self, key: str) -> MethodResult:
        """The row of method ``key`` (one of ``METHODS``)."""
        return next(r for r in self.rows if r.key == key)


def methods(variants: Sequence[SDVariant]) -> list[Method]:
    """The SD methods of ``variants`` for :func:`tilt.engines.build_instance` (the default
    rows are not required: an engine that cannot compute them keeps them as notes)."""
    return [Method(v.objective, v.demos, required=v not in DEFAULT_VARIANTS) for v in variants]


def _step(
    instance: EngineInstance, variant: SDVariant, demos: str, anchor: float
) -> Callable[[Any], Any]:
    def step(policy: Any) -> Any:
        return instance.sd_optimum(policy, variant.objective, demos, anchor)

    return step


def compare(
    instance: EngineInstance,
    ks: Sequence[int] = (1, 8, 64),
    rounds: int = 1,
    variants: Sequence[SDVariant] = DEFAULT_VARIANTS,
    strategies: Strategies | None = None,
) -> Comparison:
    """Compute base, RL, matched RL and every SD variant of ``instance``, with measures.

    ``instance`` is an engine instance (:class:`tilt.engines.EngineInstance`: the
    enumeration engine, the DP engine, or a network's tables on the enumeration
    engine).  Each method is applied ``rounds`` times (iterated from its own
    output, with demonstrations drawn from it; a reference demonstration stays
    fixed); RL is matched to the accuracy of the first SD row (sequence SD by
    default) after the same rounds.  A method the engine cannot compute (no
    Markov form, or a size limit) is kept as a row with a note, and so is the
    anchor where an objective has none.  With ``strategies``
    (:meth:`EngineInstance.strategies`), every method also gets its strategy
    shares and diversity.
    """
    ks = tuple(ks)
    base = instance.base
    rows = _Rows(instance, ks, strategies)
    try:
        measured = [rows.add("base", "base", base)]
        rl = iterate(base, lambda p: instance.rl_optimum(p, instance.beta), rounds)[-1]
        rl_label = "RL beta->0" if instance.beta == 0 else f"RL beta={instance.beta:g}"
        measured.append(rows.add("rl", rl_label, rl, beta=instance.beta))
        sd_rows = [_sd_row(instance, v, rounds, rows) for v in variants]
        # RL is matched to the first SD optimum's accuracy (its measures' accuracy, read
        # from the policy before its row may be measured and released)
        first = next((accuracy for _, accuracy in sd_rows if accuracy is not None), None)
        measured.append(_matched_row(instance, first, rows))
        measured.extend(row for row, _ in sd_rows)
        results = [finish() for finish in measured]
    finally:
        rows.close()
    order = {r.key: i for i, r in enumerate(results)}
    return Comparison(
        instance,
        ks,
        rounds,
        tuple(results),
        instance.tilt_score(),
        engine=instance.engine,
        strategies=strategies,
        strategy_rows=tuple(sorted(rows.strategy_rows, key=lambda kv: order[kv[0]])),
    )


_IN_FLIGHT = 3
"""Rows queued for the second thread or being measured there at once (:class:`_Rows`)."""


class _Rows:
    """Each row's measures (and strategy measures), then its release.

    When the instance allows (:attr:`EngineInstance.measures_beside`), the rows are
    measured in order on a second thread while the caller goes on to the next optima, at
    most :data:`_IN_FLIGHT` rows queued or being measured at once (the caller waits for a
    place: memory does not grow with the number of rows); that thread releases each row
    once measured, and the caller releases the base once the thread has stopped (every
    optimum reads it).  After an error the thread measures nothing more, and the caller
    raises it as it queues its next row (or at the end).  The numbers are the same either
    way: each row is measured by the same operations.
    """

    def __init__(
        self, instance: EngineInstance, ks: tuple[int, ...], strategies: Strategies | None
    ) -> None:
        self.instance = instance
        self.ks = ks
        self.strategies = strategies
        self.strategy_rows: list[tuple[str, StrategyMeasures]] = []
        self.pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="tilt-rows")
            if instance.measures_beside
            else None
        )
        self.places = threading.BoundedSemaphore(_IN_FLIGHT)
        self.error: BaseException | None = None

    def add(self, key: str, label: str, policy: Any, **fields: Any) -> Callable[[], MethodResult]:
        """The row of ``policy`` (measured now, or queued for the second thread): call it
        for the :class:`MethodResult`."""
        if self.pool is None:
            result = self._measure(key, label, policy, fields)
            self.instance.release(policy)
            return lambda: result
        self.places.acquire()  # given back by the second thread when a row is measured
        if self.error is not None:
            self.places.release()
            raise self.error
        return self.pool.submit(self._measure_beside, key, label, policy, fields).result

    def close(self) -> None:
        """Wait for the second thread's rows, stop it and release the base."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.instance.release(self.instance.base)

    def _measure_beside(
        self, key: str, label: str, policy: Any, fields: dict[str, Any]
    ) -> MethodResult:
        try:
            if self.error is not None:
                raise self.error
            result = self._measure(key, label, policy, fields)
            if policy is not self.instance.base:
                self.instance.release(policy)
            return result
        except BaseException as exc:
            self.error = self.error or exc
            raise
        finally:
            self.places.release()

    def _measure(self, key: str, label: str, policy: Any, fields: dict[str, Any]) -> MethodResult:
        measures, bound = self.instance.measure(policy, self.ks)
        if self.strategies is not None:
            shares = self.instance.strategy_measures(policy, self.strategies, self.ks)
            self.strategy_rows.append((key, shares))
        note = "; ".join(n for n in (fields.pop("note", ""), bound) if n)
        return MethodResult(key, label, policy, measures, note=note, **fields)


def _sd_row(
    instance: EngineInstance, v: SDVariant, rounds: int, rows: _Rows
) -> tuple[Callable[[], MethodResult], float | None]:
    """The row of SD variant ``v`` (its optimum after ``rounds``, or a note saying why none)
    and the optimum's accuracy (``None`` without one)."""
    demos = instance.demos if v.demos is None else v.demos
    anchor, notes = instance.anchor, []
    reason = instance.unavailable(v.objective, demos)
    q = None
    if reason is not None:
        notes = [f"skipped: {reason}"]
    else:
        if anchor > 0 and not v.objective.kind.takes_anchor:
            anchor = 0.0
            notes.append(f"{v.objective.spec} has no anchor: b = 0 here")
        if v.demos == "reference" and instance.demos != "reference":
            notes.append(f"reference demonstration {instance.reference_label()}")
        try:
            q = iterate(instance.base, _step(instance, v, demos, anchor), rounds)[-1]
        except TooLargeError as exc:
            notes = [f"skipped: {exc}"]
    fields: dict[str, Any] = {
        "note": "; ".join(notes),
        "objective": v.objective.spec,
        "demos": demos,
    }
    if q is None:
        result = MethodResult(v.key, v.label, None, None, **fields)
        return (lambda: result), None
    accuracy = float(q.accuracy)
    return rows.add(v.key, v.label, q, **fields), accuracy


def _matched_row(
    instance: EngineInstance, accuracy: float | None, rows: _Rows
) -> Callable[[], MethodResult]:
    """RL at ``accuracy``, the first SD optimum's (``None``: no SD row has one)."""
    label = "RL @ SD acc"
    if accuracy is None:
        result = MethodResult("rl_matched", label, None, None, note="no SD row to match")
        return lambda: result
    matched = rl_matched(instance.base, accuracy, instance.rl_optimum)
    if matched.policy is None:
        result = MethodResult("rl_matched", label, None, None, note=matched.message)
        return lambda: result
    return rows.add("rl_matched", label, matched.policy, beta=matched.beta)
