"""The acyclic rollout space: states and moves of a DAG, in topological layers.

On a directed acyclic graph every path is simple, so the moves available after
a prefix ``h`` ending in ``v`` are all the successors of ``v``: ``avail(h)``
depends on the last node only (and, with a horizon, on the depth).  The
rollouts of ``docs/theory.md`` are then the source-to-leaf paths of a *state*
DAG whose states are the nodes (``(depth, node)`` pairs when a horizon or a
depth-dependent objective needs the depth), and every distribution the engine
computes is a Markov chain on it: one conditional per state edge.

States are stored in topological layers (the longest-path distance from the
source, or the depth), edges sorted by tail state, so that a backward pass
touches the edges of one layer at a time and a forward pass the edges whose
head is in one layer (:mod:`tilt.engines.dp.passes`).  Nothing here enumerates paths.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from types import ModuleType
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from tilt._numerics import jit_allowed, threads_allowed
from tilt.space import TooLargeError, memory_shortfall
from tilt.tasks import Task

__all__ = [
    "AcyclicSpace",
    "MoveTable",
    "move_table",
    "lattice_table",
    "acyclic_space",
    "DP_EDGE_LIMIT",
]

DP_EDGE_LIMIT = 200_000_000
"""Most state edges the DP engine builds, whatever the memory (a hard ceiling)."""

BYTES_PER_STATE_EDGE = 270
"""Peak bytes per state edge of a DP run of ``python -m tilt.compare`` (the state DAG,
the base, every optimum and its measures), measured with ``/usr/bin/time -v``
(maximum resident set size minus the 70 MB of an empty run) on token lattices:
195 B at ``lattice:V=16,L=50,M=16`` (0.2 M edges), 245 B at ``V=32,L=50,M=32`` (1.6 M),
232 B at ``V=64,L=20,M=64`` (5.2 M), 236 B at ``V=64,L=40,M=8`` (1.3 M), and 260 B at
``V=64,L=200,M=64`` (52 M edges, 13.6 GB).  :func:`acyclic_space` refuses a DAG whose
edges times this exceed the available memory, before building it."""

_T = TypeVar("_T")
IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class MoveTable:
    """The directed moves of a graph as arrays (no networkx in the hot path).

    Attributes
    ----------
    name : str
    labels : tuple of str
        ``str(node)`` for each node index.
    source, target : int
    horizon : int or None
    move_tail, move_head : ndarray of int64, shape (n_moves,)
        Sorted by tail (CSR order); self-loops dropped.
    move_logit : ndarray of float64, shape (n_moves,)
    """

    name: str
    labels: tuple[str, ...]
    source: int
    target: int
    horizon: int | None
    move_tail: IntArray
    move_head: IntArray
    move_logit: FloatArray

    @property
    def n_nodes(self) -> int:
        return len(self.labels)

    @cached_property
    def indptr(self) -> IntArray:
        """CSR offsets: the moves of node ``v`` are ``indptr[v]:indptr[v + 1]``."""
        out = np.zeros(self.n_nodes + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.move_tail, minlength=self.n_nodes), out=out[1:])
        return out


def move_table(task: Task) -> MoveTable:
    """The moves of ``task`` in the node and move order of :func:`tilt.space.enumerate_rollouts`."""
    nodes = list(task.graph.nodes)
    index = {node: i for i, node in enumerate(nodes)}
    tails, heads, logits = [], [], []
    for v, u, data in task.graph.edges(data=True):
        if v == u:
            continue
        tails.append(index[v])
        heads.append(index[u])
        logits.append(float(data.get("logit", 0.0)))
    tail = np.asarray(tails, dtype=np.int64)
    order = np.argsort(tail, kind="stable")
    return MoveTable(
        name=task.name,
        labels=tuple(str(n) for n in nodes),
        source=index[task.source],
        target=index[task.target],
        horizon=task.horizon,
        move_tail=tail[order],
        move_head=np.asarray(heads, dtype=np.int64)[order],
        move_logit=np.asarray(logits, dtype=np.float64)[order],
    )


def lattice_table(name: str, horizon: int | None = None) -> MoveTable:
    """The :class:`MoveTable` of a token lattice ``lattice:V=..,L=..``, built without networkx.

    Same node and move order as ``move_table(named_task(name))``.

    Raises
    ------
    ValueError
        On a bad name (:func:`tilt.tasks.lattice.parse_lattice`), or
        :class:`~tilt.space.TooLargeError` when a run would not fit in the available
        memory (:func:`check_edges_fit`), before anything is allocated.
    """
    from tilt.tasks.lattice import lattice_move_count, lattice_moves, parse_lattice

    spec = parse_lattice(name)
    # before building the moves: the run's memory, counted as the moves times the automaton
    # states (lattice_move_count), at BYTES_PER_STATE_EDGE each
    size = lattice_move_count(spec)
    check_edges_fit(spec.name, size, "use a smaller V, L or M")
    load_compiled_passes(size)  # numba loads while the moves are built
    moves = lattice_moves(spec)
    return MoveTable(
        name=spec.name,
        labels=moves.labels,
        source=moves.source,
        target=moves.target,
        horizon=horizon,
        move_tail=moves.tail,
        move_head=moves.head,
        move_logit=moves.logit,
    )


@dataclass(frozen=True, eq=False)
class AcyclicSpace:
    """The state DAG of an acyclic task: states in layers, edges sorted by tail.

    Attributes
    ----------
    moves : MoveTable
        The graph's moves; ``edge_move`` indexes them.
    with_depth : bool
        States are ``(depth, node)`` pairs (else nodes).
    state_node, state_depth : ndarray of int64, shape (n_states,)
        ``state_depth`` is the depth when ``with_depth``, else the layer.
    layer_start : ndarray of int64, shape (n_layers + 1,)
        States of layer ``l`` are ``layer_start[l]:layer_start[l + 1]``; state 0
        is the source.
    edge_tail, edge_head, edge_move : ndarray of int64, shape (n_edges,)
        Sorted by tail; ``out_start[s]:out_start[s + 1]`` are the edges of ``s``.
    correct : ndarray of bool, shape (n_states,)
        The state is a leaf at the target.
    edges_are_moves : bool
        Every state edge is its own move (``edge_move[e] == e``, and the edge arrays are the
        move table's): every node is a state, in node order, and every move is made (a
        token lattice).
    """

    moves: MoveTable
    with_depth: bool
    state_node: IntArray
    state_depth: IntArray
    layer_start: IntArray
    edge_tail: IntArray
    edge_head: IntArray
    edge_move: IntArray
    out_start: IntArray
    correct: NDArray[np.bool_]
    edges_are_moves: bool = False
    _memo: dict[str, object] = field(default_factory=dict, init=False, repr=False)

    def memo(self, key: str, compute: Callable[[], _T]) -> _T:
        """``compute()`` remembered under ``key`` for this space (structural quantities)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]  # type: ignore[return-value]

    @property
    def n_states(self) -> int:
        return int(self.state_node.size)

    @property
    def n_edges(self) -> int:
        return int(self.edge_tail.size)

    @property
    def n_layers(self) -> int:
        return int(self.layer_start.size - 1)

    @property
    def n_moves(self) -> int:
        return int(self.moves.move_tail.size)

    @property
    def name(self) -> str:
        return self.moves.name

    @cached_property
    def out_count(self) -> IntArray:
        return np.diff(self.out_start)

    @cached_property
    def leaf(self) -> NDArray[np.bool_]:
        """States with no move: the target, dead ends, and states at the horizon."""
        return self.out_count == 0

    @cached_property
    def groups(self) -> tuple[IntArray, IntArray]:
        """``(internal, starts)``: states with moves and where their edges start."""
        internal = np.flatnonzero(self.out_count > 0)
        return internal, self.out_start[internal]

    @cached_property
    def tail_layers(self) -> tuple[tuple[int, int, IntArray, IntArray, IntArray], ...]:
        """Per layer with moves: ``(e0, e1, internal, starts, sizes)``: the edges
        ``e0:e1`` leaving the layer, grouped by tail (``internal``, starting at
        ``starts`` within the slice, ``sizes`` edges each)."""
        internal, starts = self.groups
        sizes = self.out_count[internal]
        bounds = np.searchsorted(internal, self.layer_start)
        out = []
        for layer in range(self.n_layers):
            lo, hi = int(bounds[layer]), int(bounds[layer + 1])
            if lo == hi:
                continue
            e0 = int(self.out_start[self.layer_start[layer]])
            e1 = int(self.out_start[self.layer_start[layer + 1]])
            out.append((e0, e1, internal[lo:hi], starts[lo:hi] - e0, sizes[lo:hi]))
        return tuple(out)

    @cached_property
    def state_layer(self) -> IntArray:
        """The layer of every state."""
        return np.repeat(np.arange(self.n_layers, dtype=np.int64), np.diff(self.layer_start))

    @cached_property
    def tail_spans(self) -> tuple[IntArray, IntArray, IntArray]:
        """``(layer, lo, hi)`` per entry of :attr:`tail_layers`: the heads of its edges are
        states ``lo:hi`` (one layer below, on a layered DAG such as a token lattice)."""
        if not self.tail_layers:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        e0s = np.array([entry[0] for entry in self.tail_layers], dtype=np.int64)
        lo = np.minimum.reduceat(self.edge_head, e0s)
        hi = np.maximum.reduceat(self.edge_head, e0s) + 1
        return self.state_layer[self.edge_tail[e0s]], lo, hi

    @cached_property
    def head_spans(self) -> tuple[IntArray, IntArray, IntArray]:
        """``(layer, lo, hi)`` per entry of :attr:`head_layers`: the tails of its edges are
        states ``lo:hi``."""
        layer, lo, hi = [], [], []
        for edges, heads, _, _ in self.head_layers:
            tails = self.edge_tail[edges]
            layer.append(self.state_layer[heads[0]])
            lo.append(tails.min())
            hi.append(tails.max() + 1)
        return (
            np.asarray(layer, dtype=np.int64),
            np.asarray(lo, dtype=np.int64),
            np.asarray(hi, dtype=np.int64),
        )

    @cached_property
    def head_layers(self) -> tuple[tuple[IntArray, IntArray, IntArray, IntArray], ...]:
        """Per layer ``l >= 1`` with in-edges: ``(edges, heads, starts, sizes)``, the
        edges entering layer ``l`` grouped by head state."""
        order = np.argsort(self.edge_head, kind="stable")
        sorted_head = self.edge_head[order]
        bounds = np.searchsorted(sorted_head, self.layer_start)
        out = []
        for layer in range(1, self.n_layers):
            edges = order[bounds[layer] : bounds[layer + 1]]
            heads = sorted_head[bounds[layer] : bounds[layer + 1]]
            if not heads.size:
                continue
            starts = np.flatnonzero(np.concatenate(([True], heads[1:] != heads[:-1])))
            sizes = np.diff(np.append(starts, heads.size))
            out.append((edges, heads[starts], starts, sizes))
        return tuple(out)

    def edge_label(self, edge: int) -> str:
        m = int(self.edge_move[edge])
        return self.move_label(m)

    def move_label(self, move: int) -> str:
        labels = self.moves.labels
        return f"{labels[self.moves.move_tail[move]]}>{labels[self.moves.move_head[move]]}"

    def summary(self) -> str:
        return (
            f"{self.name}: {self.n_states:,} states, {self.n_edges:,} state edges, "
            f"{self.n_layers} layers"
        )


# --------------------------------------------------------------------------
# construction


def _gather_moves(table: MoveTable, nodes: IntArray) -> tuple[IntArray, IntArray]:
    """``(owner, move)``: every move of every node in ``nodes`` (owner indexes ``nodes``)."""
    indptr = table.indptr
    counts = indptr[nodes + 1] - indptr[nodes]
    owner = np.repeat(np.arange(nodes.size), counts)
    first = np.repeat(indptr[nodes] - np.cumsum(np.r_[0, counts[:-1]]), counts)
    return owner, first + np.arange(owner.size)


def _distinct(values: IntArray) -> tuple[IntArray, IntArray]:
    """Sorted distinct values and their counts (sort-based: faster than ``np.unique`` here)."""
    if values.size == 0:
        return values, values
    ordered = np.sort(values)
    first = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    return ordered[first], np.diff(np.append(first, ordered.size))


def _cycle_message(table: MoveTable, open_nodes: IntArray) -> str:
    import networkx as nx

    graph = nx.DiGraph()
    keep = np.zeros(table.n_nodes, dtype=bool)
    keep[open_nodes] = True
    sel = keep[table.move_tail] & keep[table.move_head]
    graph.add_edges_from(
        zip(table.move_tail[sel].tolist(), table.move_head[sel].tolist(), strict=True)
    )
    try:
        cycle = [table.labels[v] for v, _ in nx.find_cycle(graph)]
    except nx.NetworkXNoCycle:  # pragma: no cover - Kahn found one
        cycle = []
    shown = " -> ".join([*cycle[:6], cycle[0]] if cycle else [])
    return (
        f"{table.name} has a cycle reachable from the source ({shown}): the DP engine needs "
        "an acyclic directed graph; use --engine enumerate (engine='enumerate')"
    )


def _reachable(table: MoveTable) -> NDArray[np.bool_]:
    seen = np.zeros(table.n_nodes, dtype=bool)
    seen[table.source] = True
    frontier = np.array([table.source], dtype=np.int64)
    while frontier.size:
        frontier = frontier[frontier != table.target]
        _, moves = _gather_moves(table, frontier)
        heads, _ = _distinct(table.move_head[moves])
        frontier = heads[~seen[heads]]
        seen[frontier] = True
    return seen


def compiled_passes(size: int) -> ModuleType | None:
    """:mod:`tilt.engines.dp._compiled` when the compiled passes serve an input of ``size``
    state edges or moves (the gate of :func:`tilt._numerics.jit`: numba installed,
    ``TILT_NO_JIT`` unset, ``size`` at least ``TILT_JIT_MIN_SIZE``), else ``None`` (numpy)."""
    if not jit_allowed(size):
        return None
    try:
        from tilt.engines.dp import _compiled
    except ImportError:  # numba is not installed: the numpy paths
        return None
    return _compiled


def load_compiled_passes(size: int) -> threading.Thread | None:
    """Start loading the compiled passes on a thread, when an input of ``size`` will need
    them (:func:`compiled_passes`) and a second thread is allowed
    (:func:`tilt._numerics.threads_allowed`), and return it (else ``None``).

    Importing numba and loading its first kernel takes about half a second, mostly
    importing numba's own modules (and ``scipy.linalg``); a caller that knows the size
    before building the input (:func:`lattice_table`) starts it first, so that the build
    and the loading overlap.  A later :func:`compiled_passes` waits for the import
    (Python's import lock), and numba's compiler lock orders the rest.  Nothing here
    changes a result; an error on the thread is ignored (the caller's own import reports
    it, or falls back to numpy)."""
    if not (jit_allowed(size) and threads_allowed(size)):
        return None

    def load() -> None:
        try:
            from tilt.engines.dp import _compiled

            # a one-node graph: numba's start, and the kernel _node_layers calls first
            one = np.zeros(2, dtype=np.int64)
            _compiled.node_layers(one, one[:0], 0, 0)
        except Exception:  # noqa: BLE001, S110 - the caller's own use reports any problem
            pass

    thread = threading.Thread(target=load, name="tilt-load-kernels")
    thread.start()
    return thread


def _node_layers(table: MoveTable) -> list[IntArray]:
    """Kahn's algorithm on the part reachable from the source (the target not expanded)."""
    compiled = compiled_passes(table.move_tail.size)
    if compiled is not None:
        order, sizes, seen, indegree = compiled.node_layers(
            table.indptr, table.move_head, table.source, table.target
        )
        if not sizes.size:
            raise ValueError(_cycle_message(table, np.flatnonzero(seen)))
        if order.size < int(seen.sum()):
            raise ValueError(_cycle_message(table, np.flatnonzero(seen & (indegree > 0))))
        return np.split(order, np.cumsum(sizes)[:-1])
    seen = _reachable(table)
    live = seen[table.move_tail] & (table.move_tail != table.target)
    indegree = np.bincount(table.move_head[live], minlength=table.n_nodes)
    if indegree[table.source]:
        raise ValueError(_cycle_message(table, np.flatnonzero(seen)))
    layers = []
    frontier = np.array([table.source], dtype=np.int64)
    done = 0
    while frontier.size:
        layers.append(frontier)
        done += frontier.size
        expand = frontier[frontier != table.target]
        _, moves = _gather_moves(table, expand)
        cand, count = _distinct(table.move_head[moves])
        indegree[cand] -= count
        frontier = cand[indegree[cand] == 0]
    if done < int(seen.sum()):
        left = np.flatnonzero(seen & (indegree > 0))
        raise ValueError(_cycle_message(table, left))
    return layers


def acyclic_space(
    source: Task | MoveTable, with_depth: bool | None = None, max_edges: int = DP_EDGE_LIMIT
) -> AcyclicSpace:
    """The state DAG of an acyclic task (a :class:`Task` or a :class:`MoveTable`).

    Parameters
    ----------
    with_depth : bool, optional
        States are ``(depth, node)`` pairs.  Default: only with a horizon (the
        moves available at a node do not depend on the depth otherwise).
    max_edges : int
        Refuse (``ValueError``) to build more state edges than this.

    Raises
    ------
    ValueError
        If the part of the graph reachable from the source has a cycle (the
        message names one and says to use enumeration), if the state DAG would
        exceed ``max_edges``, or if no rollout reaches the target.

    Notes
    -----
    Time and memory are linear in the number of state edges: the number of
    graph moves reachable from the source, times the number of depths at which
    each is reached when ``with_depth``.
    """
    table = source if isinstance(source, MoveTable) else move_table(source)
    horizon = table.horizon
    if with_depth is None:
        with_depth = horizon is not None
    node_layers = _node_layers(table)  # also checks acyclicity
    if not with_depth:
        layers = node_layers
    else:
        layers = []
        frontier = np.array([table.source], dtype=np.int64)
        depth = 0
        total = 0
        while frontier.size:
            layers.append(frontier)
            if horizon is not None and depth >= horizon:
                break
            expand = frontier[frontier != table.target]
            _, moves = _gather_moves(table, expand)
            total += moves.size
            if total > max_edges:
                raise ValueError(_too_many(table, total, max_edges))
            check_edges_fit(table.name, total)
            frontier, _ = _distinct(table.move_head[moves])
            depth += 1
    sizes = np.array([layer.size for layer in layers], dtype=np.int64)
    layer_start = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    state_node = np.concatenate(layers).astype(np.int64)
    state_layer = np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)
    n_states = state_node.size
    # moves of every expandable state
    expandable = state_node != table.target
    if with_depth and horizon is not None:
        expandable &= state_layer < horizon
    compiled = None if with_depth else compiled_passes(table.move_tail.size)
    if compiled is not None:
        degree = table.indptr[state_node + 1] - table.indptr[state_node]
        count = int(degree[expandable].sum())
        if count > max_edges:
            raise ValueError(_too_many(table, count, max_edges))
        check_edges_fit(table.name, count)
        same = count == table.move_tail.size and np.array_equal(
            state_node, np.arange(table.n_nodes)
        )
        if same:
            # every node is a state, in node order, and every move is made: the state
            # edges are the moves themselves (a token lattice), shared, not copied
            edge_tail, edge_head = table.move_tail, table.move_head
            moves, out_start = np.arange(count), table.indptr.copy()
        else:
            state_of = np.full(table.n_nodes, -1, dtype=np.int64)
            state_of[state_node] = np.arange(n_states)
            edge_tail, edge_head, moves, out_start = compiled.state_edges(
                table.indptr, table.move_head, state_node, expandable, state_of
            )
        return _space(
            table, with_depth, state_node, state_layer, layer_start, edge_tail, edge_head,
            moves, out_start, edges_are_moves=same,
        )  # fmt: skip
    tails = np.flatnonzero(expandable)
    owner, moves = _gather_moves(table, state_node[tails])
    if moves.size > max_edges:
        raise ValueError(_too_many(table, moves.size, max_edges))
    check_edges_fit(table.name, moves.size)
    edge_tail = tails[owner]
    head_node = table.move_head[moves]
    if with_depth:
        # the head lives in the next layer, sorted by node
        next_layer = state_layer[edge_tail] + 1
        key = next_layer * table.n_nodes + head_node
        state_key = state_layer * table.n_nodes + state_node
        edge_head = np.searchsorted(state_key, key)
    else:
        state_of = np.full(table.n_nodes, -1, dtype=np.int64)
        state_of[state_node] = np.arange(n_states)
        edge_head = state_of[head_node]
    out_start = np.zeros(n_states + 1, dtype=np.int64)
    np.cumsum(np.bincount(edge_tail, minlength=n_states), out=out_start[1:])
    return _space(
        table,
        with_depth,
        state_node,
        state_layer,
        layer_start,
        edge_tail,
        edge_head,
        moves,
        out_start,
    )


def _space(
    table: MoveTable,
    with_depth: bool,
    state_node: IntArray,
    state_layer: IntArray,
    layer_start: IntArray,
    edge_tail: IntArray,
    edge_head: IntArray,
    moves: IntArray,
    out_start: IntArray,
    edges_are_moves: bool = False,
) -> AcyclicSpace:
    """The :class:`AcyclicSpace` of these arrays, once some rollout is correct."""
    horizon = table.horizon
    correct = (state_node == table.target) & (np.diff(out_start) == 0)
    if not correct.any():
        within = "" if horizon is None else f" within a horizon of {horizon} moves"
        raise ValueError(
            f"no path from {table.labels[table.source]} to {table.labels[table.target]} in "
            f"{table.name}{within}: no rollout is correct (check the source, target, edge "
            "directions or horizon)"
        )
    return AcyclicSpace(
        moves=table,
        with_depth=bool(with_depth),
        state_node=state_node,
        state_depth=state_layer,
        layer_start=layer_start,
        edge_tail=edge_tail,
        edge_head=edge_head,
        edge_move=moves,
        out_start=out_start,
        correct=correct,
        edges_are_moves=edges_are_moves,
    )


def check_edges_fit(name: str, edges: int, hint: str = "use a horizon or a smaller graph") -> None:
    """Refuse (:class:`~tilt.space.TooLargeError`) a state DAG of ``edges`` state edges whose
    run would not fit in the available memory (:data:`BYTES_PER_STATE_EDGE` each)."""
    need = edges * BYTES_PER_STATE_EDGE
    available = memory_shortfall(need)
    if available is not None:
        raise TooLargeError(
            f"the state DAG of {name} has {edges:,} state edges: a run needs about "
            f"{need / 2**30:.1f} GiB ({BYTES_PER_STATE_EDGE} bytes each) and "
            f"{available / 2**30:.1f} GiB is available: {hint}"
        )


def _too_many(table: MoveTable, count: int, limit: int) -> str:
    return (
        f"the state DAG of {table.name} needs more than {count:,} state edges (limit {limit:,}): "
        "use a horizon or a smaller graph"
    )
