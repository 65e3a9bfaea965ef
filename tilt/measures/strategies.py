"""Strategies: functional diversity among the correct rollouts.

A *strategy map* labels every correct rollout (``docs/theory.md``,
"Observables of the paper").  Built in:

* ``first-move`` — the first node after the source;
* ``side`` — which way round each hole of the graph the rollout goes: ``ccw``
  when it winds counter-clockwise around the hole's centre (the hole on its
  left), ``cw`` otherwise, one letter group per hole.  Needs the graph
  attribute ``holes`` (a list of centre points) and node positions (node
  attribute ``pos``, or nodes that are pairs of numbers); catalogue graph
  ``holed5``;
* ``landmarks`` — the set of designated nodes the rollout visits, from the
  graph attribute ``landmarks`` or an explicit list;
* a user function ``module:function`` (or ``path/to/file.py:function``),
  called with the rollout as a tuple of graph nodes and returning a hashable
  label.

Measures of a policy ``q`` over strategies ``s`` (with ``q(s)`` the mass of the
correct rollouts labelled ``s``):

* shares ``q(s | C) = q(s) / q(C)``;
* strategy entropy ``H = -sum_s q(s | C) log q(s | C)`` and the effective
  number of strategies ``exp(H)``;
* expected distinct strategies in ``k`` samples,
  ``sum_s 1 - (1 - q(s))^k`` (failures count as no strategy).

RL's optimum keeps every share exactly (it keeps the ratios among correct
rollouts, so every sum of them); SD's need not.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from tilt._numerics import IntArray, logsumexp
from tilt.policy import Policy
from tilt.space import RolloutSpace

__all__ = [
    "STRATEGIES",
    "Strategies",
    "StrategyMeasures",
    "strategy_labels",
    "strategy_measures",
    "measures_from_mass",
    "load_function",
]

STRATEGIES = ("first-move", "side", "landmarks")
"""Built-in strategy maps; anything with a ``:`` is a user function."""


@dataclass(frozen=True, eq=False)
class Strategies:
    """The strategy of every correct rollout of a space.

    Attributes
    ----------
    name : str
        The map's name (``first-move``, ``side``, ``landmarks`` or ``module:function``).
    names : tuple of str
        Distinct strategy labels, sorted.
    label : ndarray of int64, shape (n_rollouts,)
        Index into ``names`` of each correct rollout's strategy; ``-1`` for
        incorrect rollouts.
    """

    name: str
    names: tuple[str, ...]
    label: IntArray

    @property
    def n_strategies(self) -> int:
        """How many strategies the correct set holds."""
        return len(self.names)


def _nodes(space: RolloutSpace) -> list[object]:
    return list(space.task.graph.nodes)


def _correct_paths(space: RolloutSpace) -> tuple[IntArray, NDArray[np.int32]]:
    correct = np.flatnonzero(space.correct)
    return correct, space.paths(correct)


def _from_values(
    name: str, space: RolloutSpace, correct: IntArray, values: Sequence[str]
) -> Strategies:
    names, index = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    label = np.full(space.n_rollouts, -1, dtype=np.int64)
    label[correct] = index.ravel()
    return Strategies(name, tuple(str(n) for n in names), label)


def _first_move(space: RolloutSpace) -> Strategies:
    correct, paths = _correct_paths(space)
    labels = np.array(space.labels, dtype=object)
    return _from_values("first-move", space, correct, list(labels[paths[:, 1]]))


def _positions(space: RolloutSpace) -> NDArray[np.float64]:
    graph = space.task.graph
    out = np.empty((len(space.labels), 2))
    for i, node in enumerate(_nodes(space)):
        pos = graph.nodes[node].get("pos", node)
        try:
            x, y = (float(v) for v in pos)
        except (TypeError, ValueError):
            raise ValueError(
                f"strategy 'side' needs node positions: node {node!s} has no 'pos' attribute "
                "and is not a pair of numbers"
            ) from None
        out[i] = (x, y)
    return out


def _side(space: RolloutSpace) -> Strategies:
    holes = space.task.graph.graph.get("holes")
    if not holes:
        raise ValueError(
            f"strategy 'side' needs a graph with holes (graph attribute 'holes', a list of "
            f"centre points): {space.task.name} has none; try --graph holed5"
        )
    pos = _positions(space)
    correct, paths = _correct_paths(space)
    parts = []
    for hole in holes:
        cx, cy = (float(v) for v in hole)
        rel = pos - np.array([cx, cy])
        if (np.hypot(rel[:, 0], rel[:, 1]) < 1e-12).any():
            raise ValueError(f"hole centre {hole!r} coincides with a node: it must be empty")
        angle = np.arctan2(rel[:, 1], rel[:, 0])
        valid = paths[:, 1:] >= 0
        step = angle[paths[:, 1:].clip(0)] - angle[paths[:, :-1].clip(0)]
        step = (step + np.pi) % (2 * np.pi) - np.pi  # each move turns by less than half a turn
        winding = np.where(valid, step, 0.0).sum(axis=1)
        turns = np.floor(np.abs(winding) / (2 * np.pi)).astype(int)
        parts.append(
            [
                ("ccw" if w > 0 else "cw") + (f"+{t}" if t else "")
                for w, t in zip(winding.tolist(), turns.tolist(), strict=True)
            ]
        )
    values = ["/".join(p) for p in zip(*parts, strict=True)]
    return _from_values("side", space, correct, values)


def _landmarks(space: RolloutSpace, landmarks: Sequence[object] | None) -> Strategies:
    graph = space.task.graph
    chosen = graph.graph.get("landmarks") if landmarks is None else landmarks
    if not chosen:
        raise ValueError(
            f"strategy 'landmarks' needs designated nodes: give --landmarks NODE ... "
            f"({space.task.name} has no graph attribute 'landmarks')"
        )
    by_label = {label: i for i, label in enumerate(space.labels)}
    nodes = _nodes(space)
    index = []
    for mark in chosen:
        if mark in graph:
            index.append(nodes.index(mark))
        elif str(mark) in by_label:
            index.append(by_label[str(mark)])
        else:
            raise ValueError(f"landmark {mark!s} is not a node of {space.task.name}")
    correct, paths = _correct_paths(space)
    visits = np.stack([(paths == i).any(axis=1) for i in index], axis=1)
    names = [space.labels[i] for i in index]
    values = [
        "+".join(n for n, v in zip(names, row, strict=True) if v) or "none"
        for row in visits.tolist()
    ]
    return _from_values("landmarks", space, correct, values)


def load_function(spec: str) -> Callable[..., object]:
    """The function named by ``module:function`` or ``path/to/file.py:function``.

    Raises
    ------
    ValueError
        When the module cannot be imported or has no such callable.
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"strategy function {spec!r} must be given as module:function")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ValueError(f"cannot load strategy function {spec!r}: no file {module_name!r}")
            unique = f"_tilt_strategy_{abs(hash(path.resolve()))}"
            loader_spec = importlib.util.spec_from_file_location(unique, path)
            if loader_spec is None or loader_spec.loader is None:
                raise ValueError(f"cannot load strategy function {spec!r}: not a Python file")
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[unique] = module
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ValueError:
        raise
    except Exception as exc:  # any import-time failure is the user's module: one line
        raise ValueError(
            f"cannot load strategy function {spec!r}: {type(exc).__name__}: {exc}"
        ) from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise ValueError(
            f"cannot load strategy function {spec!r}: {module_name} has no function {attr!r}"
        )
    return function


def _user(space: RolloutSpace, spec: str) -> Strategies:
    function = load_function(spec)
    nodes = np.array(_nodes(space) + [None], dtype=object)
    correct, paths = _correct_paths(space)
    values: list[str] = []
    for row in paths:
        path = tuple(nodes[row[row >= 0]])
        try:
            value = function(path)
            hash(value)
        except Exception as exc:
            shown = ">".join(str(v) for v in path)
            raise ValueError(
                f"strategy function {spec!r} failed on path {shown}: {type(exc).__name__}: {exc}"
            ) from None
        values.append(str(value))
    return _from_values(spec, space, correct, values)


def strategy_labels(
    space: RolloutSpace, name: str, landmarks: Sequence[Hashable] | None = None
) -> Strategies:
    """Label every correct rollout of ``space`` with the strategy map ``name``.

    Parameters
    ----------
    name : str
        ``first-move``, ``side``, ``landmarks``, or ``module:function``.
    landmarks : sequence of node labels, optional
        For ``landmarks``: the designated nodes (default: the graph attribute).

    Raises
    ------
    ValueError
        On an unknown name, a graph the map does not apply to, a function that
        cannot be loaded or that raises on some path (the message names it).

    Examples
    --------
    >>> from tilt.tasks import named_task
    >>> from tilt.space import enumerate_rollouts
    >>> strategy_labels(enumerate_rollouts(named_task("holed5")), "side").names
    ('ccw', 'cw')
    """
    if name == "first-move":
        return _first_move(space)
    if name == "side":
        return _side(space)
    if name == "landmarks":
        return _landmarks(space, landmarks)
    if ":" in name:
        return _user(space, name)
    raise ValueError(
        f"unknown strategy map {name!r}: choose one of {', '.join(STRATEGIES)}, "
        "or give a function as module:function"
    )


@dataclass(frozen=True)
class StrategyMeasures:
    """Strategy shares and diversity of one policy.

    Attributes
    ----------
    shares : dict str -> float
        ``q(s | C)`` per strategy (``nan`` when ``q(C) = 0``).
    entropy : float
        ``H(q(. | C))`` over strategies, nats.
    effective : float
        ``exp(entropy)``.
    distinct_at_k : dict int -> float
        ``sum_s 1 - (1 - q(s))^k``.
    """

    shares: dict[str, float]
    entropy: float
    effective: float
    distinct_at_k: dict[int, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready (non-finite numbers become ``None``)."""

        def clean(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "shares": {k: clean(v) for k, v in self.shares.items()},
            "entropy": clean(self.entropy),
            "effective": clean(self.effective),
            "distinct_at_k": {str(k): clean(v) for k, v in self.distinct_at_k.items()},
        }


def strategy_mass(policy: Policy, strategies: Strategies) -> NDArray[np.float64]:
    """``q(s)`` for every strategy, summed in log space; shape (n_strategies,)."""
    out = np.empty(strategies.n_strategies)
    label = strategies.label
    order = np.argsort(label, kind="stable")
    sorted_label = label[order]
    bounds = np.searchsorted(sorted_label, np.arange(strategies.n_strategies + 1))
    lp = policy.log_prob[order]
    for s in range(strategies.n_strategies):
        out[s] = math.exp(logsumexp(lp[bounds[s] : bounds[s + 1]]))
    return out


def strategy_measures(
    policy: Policy, strategies: Strategies, ks: Sequence[int] = (1, 8, 64)
) -> StrategyMeasures:
    """Shares, entropy, effective number and distinct strategies in ``k`` samples."""
    return measures_from_mass(strategies.names, strategy_mass(policy, strategies), ks)


def measures_from_mass(
    names: Sequence[str], mass: NDArray[np.float64], ks: Sequence[int] = (1, 8, 64)
) -> StrategyMeasures:
    """:class:`StrategyMeasures` from ``q(s)``, the mass of each strategy's correct rollouts
    (any engine: enumeration sums rollouts, the DP engine reads flows)."""
    total = float(mass.sum())
    if total <= 0:
        shares = np.full(mass.size, math.nan)
        entropy = math.nan
    else:
        shares = mass / total
        nz = shares[shares > 0]
        entropy = float(max(0.0, -(nz * np.log(nz)).sum()))
    distinct = {}
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        with np.errstate(divide="ignore"):
            distinct[int(k)] = float(0.0 - np.expm1(k * np.log1p(-np.minimum(mass, 1.0))).sum())
    return StrategyMeasures(
        {n: float(v) for n, v in zip(names, shares, strict=True)},
        entropy,
        math.exp(entropy) if math.isfinite(entropy) else math.nan,
        distinct,
    )
