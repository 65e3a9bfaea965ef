"""Suites for the shared student, and their train/held-out splits.

Suites (:data:`SHARE_SUITES`, besides every suite of :mod:`tilt.suite` and JSON
suite files):

* ``grid5-corner`` — the 5x5 grid with all logits 0, target ``(4, 4)``,
  horizon 10, every other node a source (24 prompts; far sources are hard);
* ``holed5-corner`` — the same on the grid with its centre removed (23 prompts);
* ``grid-holed`` — both (47 prompts, one target: the issue's prototype);
* ``grid-holed-hard`` — ``grid-holed`` with horizon 8, so that far sources must
  take a shortest path (base accuracy 0.049 at the lowest) and
  pass@k moves up to large ``k``;
* ``grid4-targets`` — the 4x4 grid, all logits 0, horizon 6, every ordered pair
  (240 prompts, 16 targets).

Splits (:data:`SPLITS`), each returning training and held-out prompt indices:

* ``region`` — sources whose first coordinate lies at or below the middle of the
  sources' range train, the rest are held out (nodes must be pairs of numbers);
* ``random`` — a seeded half of the prompts train;
* ``distance`` — prompts whose source is at most the median distance from its
  target train, the farther ones are held out;
* ``targets`` — a seeded half of the targets train, prompts to the other targets are held out.
"""

from __future__ import annotations

from collections.abc import Callable

import networkx as nx
import numpy as np

from tilt._numerics import IntArray
from tilt.suite import SUITES, Prompt, Suite, builtin_suite, load_suite
from tilt.tasks.graphs import make_task, named_task

__all__ = ["SHARE_SUITES", "SPLITS", "share_suite", "split_suite", "Split"]


def _flat(graph: nx.DiGraph) -> nx.DiGraph:
    graph = graph.copy()
    for _, _, data in graph.edges(data=True):
        data["logit"] = 0.0
    return graph


def _corner(name: str, catalogue: str, horizon: int = 10) -> list[Prompt]:
    graph = _flat(named_task(catalogue).graph)
    target = (4, 4)
    return [
        Prompt(f"{name} {s}", make_task(graph, s, target, horizon, name=name))
        for s in sorted(graph.nodes)
        if s != target
    ]


def _grid5_corner(seed: int) -> Suite:
    del seed
    return Suite(
        "grid5-corner",
        "5x5 grid, logits 0, to (4, 4), horizon 10",
        tuple(_corner("grid5", "grid5")),
    )


def _holed5_corner(seed: int) -> Suite:
    del seed
    return Suite(
        "holed5-corner",
        "5x5 grid without its centre, logits 0, to (4, 4), horizon 10",
        tuple(_corner("holed5", "holed5")),
    )


def _grid_holed(seed: int) -> Suite:
    del seed
    return Suite(
        "grid-holed",
        "grid5-corner and holed5-corner together (one target)",
        tuple(_corner("grid5", "grid5") + _corner("holed5", "holed5")),
    )


def _grid_holed_hard(seed: int) -> Suite:
    del seed
    return Suite(
        "grid-holed-hard",
        "grid-holed with horizon 8: far sources must take a shortest path (base accuracy >= 0.049)",
        tuple(_corner("grid5", "grid5", 8) + _corner("holed5", "holed5", 8)),
    )


def _grid4_targets(seed: int) -> Suite:
    del seed
    graph = _flat(named_task("grid4").graph)
    nodes = sorted(graph.nodes)
    return Suite(
        "grid4-targets",
        "4x4 grid, logits 0, horizon 6, every ordered pair",
        tuple(
            Prompt(f"grid4 {s}->{t}", make_task(graph, s, t, 6, name="grid4"))
            for t in nodes
            for s in nodes
            if s != t
        ),
    )


SHARE_SUITES: dict[str, Callable[[int], Suite]] = {
    "grid5-corner": _grid5_corner,
    "holed5-corner": _holed5_corner,
    "grid-holed": _grid_holed,
    "grid-holed-hard": _grid_holed_hard,
    "grid4-targets": _grid4_targets,
}
"""Suites designed for the shared student, by name."""


def share_suite(name: str, seed: int = 0) -> Suite:
    """A suite of :data:`SHARE_SUITES`, of :data:`tilt.suite.SUITES`, or a JSON suite file."""
    if name in SHARE_SUITES:
        return SHARE_SUITES[name](seed)
    if name in SUITES:
        return builtin_suite(name, seed)
    if name.endswith(".json"):
        return load_suite(name)
    raise ValueError(
        f"unknown suite {name!r}: choose one of {', '.join([*SHARE_SUITES, *SUITES])}, "
        "or give a JSON file"
    )


Split = tuple[IntArray, IntArray]


def _coordinate(prompt: Prompt) -> float:
    source = prompt.task.source
    if not (isinstance(source, tuple) and len(source) == 2):
        raise ValueError(
            f"split 'region' needs grid nodes (pairs of numbers); prompt {prompt.name!r} "
            f"starts at {source!r}: use 'random' or 'distance'"
        )
    return float(source[0])


def _region(suite: Suite, rng: np.random.Generator) -> IntArray:
    del rng
    x = np.array([_coordinate(p) for p in suite.prompts])
    return np.flatnonzero(x <= (x.min() + x.max()) / 2)


def _random(suite: Suite, rng: np.random.Generator) -> IntArray:
    n = len(suite.prompts)
    return np.sort(rng.permutation(n)[: (n + 1) // 2])


def _distance(suite: Suite, rng: np.random.Generator) -> IntArray:
    del rng
    d = np.array(
        [
            nx.shortest_path_length(p.task.graph, p.task.source, p.task.target)
            if nx.has_path(p.task.graph, p.task.source, p.task.target)
            else np.inf
            for p in suite.prompts
        ]
    )
    return np.flatnonzero(d <= np.median(d))


def _targets(suite: Suite, rng: np.random.Generator) -> IntArray:
    targets = sorted({str(p.task.target) for p in suite.prompts})
    chosen = set(np.asarray(targets)[rng.permutation(len(targets))[: (len(targets) + 1) // 2]])
    return np.flatnonzero([str(p.task.target) in chosen for p in suite.prompts])


SPLITS: dict[str, Callable[[Suite, np.random.Generator], IntArray]] = {
    "region": _region,
    "random": _random,
    "distance": _distance,
    "targets": _targets,
}
"""Splits by name: each returns the training prompts' indices."""


def split_suite(suite: Suite, split: str, seed: int = 0) -> Split:
    """``(train, held_out)`` prompt indices of ``suite`` under ``split``.

    Raises
    ------
    ValueError
        On an unknown split, or one that leaves no training or no held-out prompt.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    train = SPLITS[split](suite, np.random.default_rng(seed))
    held = np.setdiff1d(np.arange(len(suite.prompts)), train)
    if train.size == 0 or held.size == 0:
        which = "training" if train.size == 0 else "held-out"
        raise ValueError(
            f"split {split!r} leaves no {which} prompt in suite {suite.name!r} "
            f"({len(suite.prompts)} prompts): use a larger suite or another split"
        )
    return train.astype(np.int64), held.astype(np.int64)
