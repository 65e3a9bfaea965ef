"""Feature maps of the shared-weight (log-linear) student.

The student of a suite of prompts has one parameter vector ``theta`` shared by
every prompt: at prefix ``h`` of prompt ``x`` ending in ``v``, the move to an
available ``u`` has logit ``theta . phi(h, u, x)`` and
``q(u | h, x) = softmax over avail(h) of those logits`` (``docs/sharing.md``).

A feature map turns the prompts' rollout spaces (and their base policies) into
:class:`SharedFeatures`: one sparse matrix per prompt, row ``p`` holding
``phi`` of the move that leads to prefix ``p`` (row 0, the root, is empty), and
the initial ``theta``.  Built in (:data:`FEATURES`):

* ``prefix`` — one parameter per prefix of every prompt: the tabular softmax,
  started at each prompt's base conditionals (no sharing; the closed forms of
  :mod:`tilt.objectives` holds its optima);
* ``edge`` — one parameter per directed move ``v -> u`` *and target*: every
  prefix of every prompt with the same target that ends in ``v`` uses it;
  started at the graph's ``logit`` attribute;
* ``closer`` — a small generalising set: ``[u is closer to the target than v]``
  (graph distance), on grids (nodes that are pairs of numbers) one indicator per
  direction (``+0``, ``-0``, ``+1``, ``-1``: which coordinate changes and how),
  and one parameter per directed move shared by *all* targets (the edge's own
  logit, started at the graph's ``logit``); the others start at 0.

Shared maps start at the graph's ``logit`` attributes, so the prompts' ``base``
field (``random``, ``uniform``) is honoured by ``prefix`` only; where two
prompts give the same shared move different logits, the first prompt's wins.

A user map is a callable ``(spaces, bases) -> SharedFeatures``.  Masks are not
supported: a map that leaves any available move out is refused (one line).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from tilt._numerics import FloatArray
from tilt.policy import Policy
from tilt.space import RolloutSpace

__all__ = ["SharedFeatures", "FeatureMap", "FEATURES", "make_features", "feature_names"]


@dataclass(frozen=True, eq=False)
class SharedFeatures:
    """``phi`` for every prefix of every prompt, and the initial parameters.

    Attributes
    ----------
    matrices : tuple of scipy.sparse.csr_array, each shape (n_prefixes_i, n_params)
        Row ``p`` is ``phi`` of the move into prefix ``p``; row 0 is unused.
    initial : ndarray of float64, shape (n_params,)
        ``theta`` at the start of training.
    names : tuple of str
        A name per parameter (for reports).
    allowed : tuple of bool arrays (n_prefixes_i,) or None
        Moves the student may take (``None``: all).
    """

    matrices: tuple[sparse.csr_array, ...]
    initial: FloatArray
    names: tuple[str, ...]
    allowed: tuple[NDArray[np.bool_], ...] | None = None

    @property
    def n_params(self) -> int:
        """Length of ``theta``."""
        return int(self.initial.size)


FeatureMap = Callable[[Sequence[RolloutSpace], Sequence[Policy]], SharedFeatures]
"""``(spaces, bases) -> SharedFeatures``."""


def _one_hot(space: RolloutSpace, column: NDArray[np.int64], n_params: int) -> sparse.csr_array:
    """Rows ``p >= 1`` with a single 1 in ``column[p - 1]``."""
    rows = np.arange(1, space.n_prefixes)
    return sparse.csr_array(
        (np.ones(rows.size), (rows, column)), shape=(space.n_prefixes, n_params)
    )


def _prefix(spaces: Sequence[RolloutSpace], bases: Sequence[Policy]) -> SharedFeatures:
    offsets = np.cumsum([0] + [s.n_prefixes - 1 for s in spaces])
    n = int(offsets[-1])
    matrices = tuple(
        _one_hot(s, offsets[i] + np.arange(s.n_prefixes - 1), n) for i, s in enumerate(spaces)
    )
    initial = np.concatenate([b.log_conditionals()[1:] for b in bases])
    names = tuple(
        f"prompt{i}:prefix{p}" for i, s in enumerate(spaces) for p in range(1, s.n_prefixes)
    )
    return SharedFeatures(matrices, initial, names)


def _move_keys(space: RolloutSpace) -> list[tuple[str, str]]:
    return [
        (space.labels[t], space.labels[h])
        for t, h in zip(space.move_tail, space.move_head, strict=True)
    ]


def _edge(spaces: Sequence[RolloutSpace], bases: Sequence[Policy]) -> SharedFeatures:
    del bases
    index: dict[tuple[str, str, str], int] = {}
    initial: list[float] = []
    columns = []
    for space in spaces:
        target = space.labels[space.target]
        column = np.empty(space.n_moves, dtype=np.int64)
        for m, (tail, head) in enumerate(_move_keys(space)):  # a loop over graph moves
            key = (target, tail, head)
            if key not in index:
                index[key] = len(initial)
                initial.append(float(space.move_logit[m]))
            column[m] = index[key]
        columns.append(column)
    n = len(initial)
    matrices = tuple(_one_hot(s, c[s.move[1:]], n) for s, c in zip(spaces, columns, strict=True))
    names = tuple(f"to {t}: {a}>{b}" for (t, a, b) in index)
    return SharedFeatures(matrices, np.asarray(initial), names)


_DIRECTIONS = ("+0", "-0", "+1", "-1")


def _direction(tail: object, head: object) -> int | None:
    """Index in ``_DIRECTIONS`` of a unit grid move between pairs of numbers, else ``None``."""
    if not (isinstance(tail, tuple) and isinstance(head, tuple) and len(tail) == len(head) == 2):
        return None
    try:
        delta = [float(head[i]) - float(tail[i]) for i in range(2)]
    except (TypeError, ValueError):
        return None
    for axis in range(2):
        if delta[1 - axis] == 0 and delta[axis] != 0:
            return 2 * axis + (0 if delta[axis] > 0 else 1)
    return None


def _closer(spaces: Sequence[RolloutSpace], bases: Sequence[Policy]) -> SharedFeatures:
    del bases
    fixed = ("closer",) + tuple(f"direction {d}" for d in _DIRECTIONS)
    index: dict[tuple[str, str], int] = {}
    initial = [0.0] * len(fixed)
    per_prompt = []
    for space in spaces:
        graph = space.task.graph
        nodes = list(graph.nodes)
        target = nodes[space.target]
        dist = nx.single_source_shortest_path_length(graph.reverse(copy=False), target)
        closer = np.zeros(space.n_moves)
        direction = np.full(space.n_moves, -1, dtype=np.int64)
        column = np.empty(space.n_moves, dtype=np.int64)
        for m in range(space.n_moves):  # a loop over graph moves, not prefixes
            tail, head = nodes[space.move_tail[m]], nodes[space.move_head[m]]
            closer[m] = float(tail in dist and head in dist and dist[head] < dist[tail])
            d = _direction(tail, head)
            direction[m] = -1 if d is None else d
            key = (space.labels[space.move_tail[m]], space.labels[space.move_head[m]])
            if key not in index:
                index[key] = len(initial)
                initial.append(float(space.move_logit[m]))
            column[m] = index[key]
        per_prompt.append((closer, direction, column))
    n = len(initial)
    matrices = []
    for space, (closer, direction, column) in zip(spaces, per_prompt, strict=True):
        move = space.move[1:]
        rows = np.arange(1, space.n_prefixes)
        has_dir = direction[move] >= 0
        r = np.concatenate([rows, rows, rows[has_dir]])
        c = np.concatenate(
            [np.zeros(rows.size, dtype=np.int64), column[move], 1 + direction[move][has_dir]]
        )
        v = np.concatenate([closer[move], np.ones(rows.size), np.ones(int(has_dir.sum()))])
        matrices.append(sparse.csr_array((v, (r, c)), shape=(space.n_prefixes, n)))
    names = fixed + tuple(f"edge {a}>{b}" for (a, b) in index)
    return SharedFeatures(tuple(matrices), np.asarray(initial), names)


FEATURES: dict[str, FeatureMap] = {"prefix": _prefix, "edge": _edge, "closer": _closer}
"""Built-in feature maps by name."""


def feature_names() -> str:
    """The built-in names, comma separated."""
    return ", ".join(FEATURES)


def make_features(
    features: str | FeatureMap, spaces: Sequence[RolloutSpace], bases: Sequence[Policy]
) -> SharedFeatures:
    """Build and validate the features of ``spaces`` (a built-in name or a user map).

    Raises
    ------
    ValueError
        On an unknown name, matrices of the wrong shape, a non-finite entry or
        initial parameter, or a prefix where the features leave no available move.
    """
    if isinstance(features, str):
        if features not in FEATURES:
            raise ValueError(f"unknown feature map {features!r}: choose one of {feature_names()}")
        built = FEATURES[features](spaces, bases)
    elif callable(features):
        built = features(spaces, bases)
        if not isinstance(built, SharedFeatures):
            raise TypeError(f"a feature map must return SharedFeatures, got {type(built).__name__}")
    else:
        raise TypeError(f"features must be a name or a callable, got {type(features).__name__}")
    _validate(built, spaces)
    return built


def _validate(built: SharedFeatures, spaces: Sequence[RolloutSpace]) -> None:
    initial = np.asarray(built.initial, dtype=np.float64)
    if initial.ndim != 1 or not np.isfinite(initial).all():
        raise ValueError("the feature map's initial parameters must be a finite 1-D array")
    if len(built.matrices) != len(spaces):
        raise ValueError(
            f"the feature map gave {len(built.matrices)} matrices for {len(spaces)} prompts"
        )
    for i, (matrix, space) in enumerate(zip(built.matrices, spaces, strict=True)):
        if matrix.shape != (space.n_prefixes, initial.size):
            raise ValueError(
                f"the feature matrix of prompt {i} has shape {matrix.shape}, expected "
                f"({space.n_prefixes}, {initial.size})"
            )
        if not np.isfinite(matrix.data).all():
            raise ValueError(f"the features of prompt {i} are not all finite")
    if built.allowed is None:
        return
    for i, (allowed, space) in enumerate(zip(built.allowed, spaces, strict=True)):
        allowed = np.asarray(allowed, dtype=bool)
        if allowed.shape != (space.n_prefixes,):
            raise ValueError(f"the move mask of prompt {i} must have shape ({space.n_prefixes},)")
        count = np.bincount(space.parent[1:], weights=allowed[1:], minlength=space.n_prefixes)
        stuck = np.flatnonzero((space.child_count > 0) & (count == 0))
        if stuck.size:
            raise ValueError(
                f"the features give prompt {i} ({space.task.name}) no available move at "
                f"{stuck.size} prefixes (first: prefix {int(stuck[0])}): allow at least one "
                "move wherever the walk can go on"
            )
        if not allowed[1:].all():
            raise ValueError(
                f"the features mask some moves of prompt {i}: partial masks are not supported yet "
                "(the exact objectives need every rollout reachable); allow every move"
            )
