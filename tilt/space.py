"""The rollout space: every maximal simple path from the source, as a prefix tree.

A rollout is a simple path ``y = (s, v1, ..., vL)`` that stops at the target,
at a dead end, or after ``H`` moves (``docs/theory.md``, "Rollout spaces").
The set ``Y`` of rollouts is stored as flat numpy arrays over its prefix tree,
in breadth-first (depth) order, so that every computation vectorises over the
prefixes of one depth and loops only over depth.

Prefix ``0`` is the root (the path ``(s,)``).  For a prefix ``p > 0``:
``parent[p] < p``, ``node[p]`` is its last node and ``move[p]`` the directed
move ``node[parent[p]] -> node[p]``.  The children of a prefix are contiguous
(``child_start[p] : child_start[p] + child_count[p]``) and the prefixes of depth
``d`` are ``level_start[d] : level_start[d + 1]``.  Rollouts are the leaves, in
increasing prefix order: ``rollout_prefix[r]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from tilt._checks import check_instance
from tilt._numerics import (
    FloatArray,
    IntArray,
    column_logsumexp,
    jit,
    linear_shift,
    linear_shift_of,
    others_sum,
    tree_path_sum,
    tree_subtree_sum,
)
from tilt.tasks import Task

__all__ = [
    "RolloutSpace",
    "TooLargeError",
    "enumerate_rollouts",
    "DEFAULT_MAX_ROLLOUTS",
    "DENSE_LIMIT",
    "check_same_space",
]

DEFAULT_MAX_ROLLOUTS = 30_000_000
"""Default size guard: enumeration stops once the space is known to exceed this."""

DENSE_LIMIT = 60_000_000
"""Most entries of a dense rollout-by-move matrix (480 MB of float64)."""


class TooLargeError(ValueError):
    """A computation would exceed a size limit; the message says how large and what to do."""


@dataclass(frozen=True, eq=False)
class RolloutSpace:
    """All maximal simple paths of a task, as flat arrays over the prefix tree.

    Attributes
    ----------
    task : Task
        The instance it enumerates.
    labels : tuple of str
        ``str(node)`` for each node index.
    source, target : int
        Node indices of ``s`` and ``t``.
    move_tail, move_head : ndarray of int32, shape (n_moves,)
        Node indices of each directed move ``v -> u`` of the graph.
    move_logit : ndarray of float64, shape (n_moves,)
        The ``logit`` attribute of each move (0 when absent).
    parent, node, move : ndarray of int32, shape (n_prefixes,)
        Prefix tree; ``parent[0] = move[0] = -1``.
    depth : ndarray of int16, shape (n_prefixes,)
        Number of moves of each prefix.
    level_start : ndarray of int64, shape (max_depth + 2,)
        Prefixes of depth ``d`` are ``level_start[d]:level_start[d + 1]``.
    child_start, child_count : ndarray of int64, shape (n_prefixes,)
        Children of each prefix (count 0 for a leaf).
    rollout_prefix : ndarray of int64, shape (n_rollouts,)
        Leaf prefix of each rollout, increasing.
    correct : ndarray of bool, shape (n_rollouts,)
        ``r(y)``: the rollout ends at the target.
    """

    task: Task
    labels: tuple[str, ...]
    source: int
    target: int
    move_tail: NDArray[np.int32]
    move_head: NDArray[np.int32]
    move_logit: FloatArray
    parent: NDArray[np.int32]
    node: NDArray[np.int32]
    move: NDArray[np.int32]
    depth: NDArray[np.int16]
    level_start: IntArray
    child_start: IntArray
    child_count: IntArray
    rollout_prefix: IntArray
    correct: NDArray[np.bool_]

    # ---------------------------------------------------------------- sizes
    @property
    def n_rollouts(self) -> int:
        """``|Y|``."""
        return int(self.rollout_prefix.size)

    @property
    def n_correct(self) -> int:
        """``|C|``."""
        return int(np.count_nonzero(self.correct))

    @property
    def n_prefixes(self) -> int:
        """Number of nodes of the prefix tree (root included)."""
        return int(self.parent.size)

    @property
    def n_moves(self) -> int:
        """Number of directed moves of the graph."""
        return int(self.move_tail.size)

    @property
    def max_depth(self) -> int:
        """Length in moves of the longest rollout."""
        return int(self.level_start.size - 2)

    @property
    def length(self) -> IntArray:
        """Number of moves of each rollout, shape (n_rollouts,)."""
        return self.depth[self.rollout_prefix].astype(np.int64)

    @cached_property
    def correct_rollouts(self) -> IntArray:
        """Indices of the correct rollouts, increasing (read-only)."""
        out = np.flatnonzero(self.correct)
        out.flags.writeable = False
        return out

    @property
    def is_leaf(self) -> NDArray[np.bool_]:
        """Whether each prefix is a complete rollout, shape (n_prefixes,)."""
        return self.child_count == 0

    def move_label(self, move: int) -> str:
        """``'v>u'`` for a move index."""
        return f"{self.labels[self.move_tail[move]]}>{self.labels[self.move_head[move]]}"

    # ------------------------------------------------------------ tree sums
    @cached_property
    def bottom_up_levels(self) -> tuple[tuple[int, int, IntArray, IntArray], ...]:
        """Per depth ``d`` from the deepest to 1: ``(lo, hi, internal, offsets)``.

        ``lo:hi`` are the prefixes of depth ``d``; ``internal`` the prefixes of depth
        ``d - 1`` that have children (in order) and ``offsets`` where each one's
        children start within ``lo:hi``, so that
        ``np.add.reduceat(values[..., lo:hi], offsets, axis=-1)`` sums every sibling
        group into its parent.  Computed once per space.
        """
        internal = np.flatnonzero(self.child_count > 0)
        bounds = np.searchsorted(internal, self.level_start)
        out = []
        for d in range(self.max_depth, 0, -1):
            lo, hi = int(self.level_start[d]), int(self.level_start[d + 1])
            inner = internal[bounds[d - 1] : bounds[d]]
            out.append((lo, hi, inner, self.child_start[inner] - lo))
        return tuple(out)

    def path_sum(self, per_prefix: FloatArray) -> FloatArray:
        """Sum ``per_prefix`` along the path of every prefix (root value included).

        ``out[..., p] = out[..., parent[p]] + per_prefix[..., p]``, one depth at a
        time; leading axes (for example one row per demonstration) are batched.
        """
        if np.ndim(per_prefix) == 1 and jit(self.n_prefixes):
            return tree_path_sum(self.parent, np.asarray(per_prefix, dtype=np.float64))
        out = np.array(per_prefix, dtype=np.float64, copy=True)
        for d in range(1, self.max_depth + 1):
            lo, hi = self.level_start[d], self.level_start[d + 1]
            out[..., lo:hi] += out[..., self.parent[lo:hi]]
        return out

    def subtree_sum(self, per_rollout: FloatArray, rollouts: IntArray | None = None) -> FloatArray:
        """Per prefix, the sum of ``per_rollout`` over the rollouts below it.

        With ``rollouts`` (indices), ``per_rollout`` holds their values only and
        every other rollout counts 0.
        """
        if jit(self.n_prefixes):
            leaf = np.asarray(per_rollout, dtype=np.float64)
            if rollouts is not None:
                leaf = np.zeros(self.n_rollouts)
                leaf[rollouts] = per_rollout
            return tree_subtree_sum(self.child_start, self.child_count, leaf)
        out = np.zeros(self.n_prefixes)
        out[self.rollout_prefix if rollouts is None else self.rollout_prefix[rollouts]] = (
            per_rollout
        )
        for d in range(self.max_depth, 0, -1):
            lo, hi = int(self.level_start[d]), int(self.level_start[d + 1])
            up_lo, up_hi = int(self.level_start[d - 1]), lo
            out[up_lo:up_hi] += np.bincount(
                self.parent[lo:hi] - up_lo, weights=out[lo:hi], minlength=up_hi - up_lo
            )
        return out

    def subtree_logsumexp(self, per_rollout: FloatArray) -> FloatArray:
        """Per prefix, ``log sum exp`` of ``per_rollout`` over the rollouts below it.

        ``-inf`` where every rollout below has ``-inf``; never ``nan``.  When the
        finite values span at most ``LINEAR_RANGE`` nats the sums run in the
        linear domain, shifted by the largest value (one :meth:`subtree_sum`, no
        underflow: every term is at least ``e^-600``); otherwise one depth at a
        time with a max shift per sibling group.
        """
        values = np.asarray(per_rollout, dtype=np.float64)
        top = linear_shift(values)
        if top is not None:
            shifted = np.subtract(values, top)
            total = self.subtree_sum(np.exp(shifted, out=shifted))
            with np.errstate(divide="ignore"):
                out = np.log(total, out=total)
            out += top
            return out
        return self._subtree_logsumexp_levels(values)

    def _subtree_logsumexp_levels(self, per_rollout: FloatArray) -> FloatArray:
        out = np.full(self.n_prefixes, -np.inf)
        out[self.rollout_prefix] = per_rollout
        for d in range(self.max_depth, 0, -1):
            lo, hi = int(self.level_start[d]), int(self.level_start[d + 1])
            parents = self.parent[lo:hi]
            values = out[lo:hi]
            starts = np.flatnonzero(np.r_[True, parents[1:] != parents[:-1]])
            group_parent = parents[starts]
            peak = np.maximum.reduceat(values, starts)
            safe = np.where(np.isfinite(peak), peak, 0.0)
            shifted = np.exp(values - np.repeat(safe, np.diff(np.r_[starts, values.size])))
            total = np.add.reduceat(shifted, starts)
            with np.errstate(divide="ignore"):
                out[group_parent] = np.where(np.isfinite(peak), safe + np.log(total), -np.inf)
        return out

    def sibling_logsumexp(self, per_prefix: FloatArray) -> FloatArray:
        """For each prefix ``p > 0``, ``log sum exp`` of ``per_prefix`` over ``p``'s siblings.

        Returns shape (n_prefixes,); entry 0 is 0.  Used to normalise softmaxes.
        An only child's value is its own (no arithmetic); groups of two or
        more are summed as in :meth:`sibling_log_softmax`.
        """
        values = np.asarray(per_prefix, dtype=np.float64)
        out = values.copy()
        out[0] = 0.0
        blocks = [values[children] for _, children in self.sibling_groups_by_size]
        top = linear_shift_of(blocks)
        for (_, children), block in zip(self.sibling_groups_by_size, blocks, strict=True):
            out[children] = column_logsumexp(block, top)
        return out

    def sibling_log_softmax(
        self, logits: FloatArray, fallback: FloatArray | None = None
    ) -> FloatArray:
        """``logits[p] - log sum exp`` of ``p``'s siblings' logits: the log-softmax of every group.

        Entry 0 and every only child are 0.  A group whose logits are all
        ``-inf`` takes ``fallback``'s entries (``nan`` without one).  Groups of
        two or more are summed in the linear domain, shifted by the largest
        value, when every finite value lies within ``LINEAR_RANGE`` of it, with
        a max shift per group otherwise (:func:`column_logsumexp`), one block
        of groups of each size at a time.
        """
        values = np.asarray(logits, dtype=np.float64)
        out = np.zeros(self.n_prefixes)
        blocks = [values[children] for _, children in self.sibling_groups_by_size]
        top = linear_shift_of(blocks)
        for (_, children), block in zip(self.sibling_groups_by_size, blocks, strict=True):
            norm = column_logsumexp(block, top)
            with np.errstate(invalid="ignore"):
                block -= norm
            if fallback is not None:
                dead = np.isneginf(norm)
                if dead.any():
                    block[:, dead] = np.asarray(fallback)[children[:, dead]]
            out[children] = block
        return out

    @cached_property
    def sibling_groups_by_size(self) -> tuple[tuple[int, IntArray], ...]:
        """The groups of two or more siblings, by size: ``(n, children)`` per size ``n``,
        ``children`` of shape (n, G) sibling-major (column ``g`` is one group, in order)."""
        counts = self.child_count
        out = []
        for n in np.unique(counts[counts > 1]):
            children = np.arange(n)[:, None] + self.child_start[np.flatnonzero(counts == n)]
            children.flags.writeable = False
            out.append((int(n), children))
        return tuple(out)

    def other_siblings_sum(self, per_prefix: FloatArray) -> FloatArray:
        """For each prefix ``p > 0``, the sum of ``per_prefix`` over its siblings other than ``p``.

        Entry 0 is 0.  The sum over the siblings before ``p`` plus the sum over
        those after it (:func:`others_sum`): sums of the terms only, never a
        group total minus ``p``'s own value (no cancellation when ``p`` holds
        almost all of it).  Touches only the prefixes that have siblings.
        """
        values = np.asarray(per_prefix, dtype=np.float64)
        out = np.zeros(self.n_prefixes)
        for _, children in self.sibling_groups_by_size:
            out[children] = others_sum(values[children])
        return out

    def sibling_sum(self, per_prefix: FloatArray) -> FloatArray:
        """For each prefix ``p > 0``, the sum of ``per_prefix`` over ``p``'s children-of-parent.

        Returns shape (n_prefixes,) indexed by *parent*: ``out[h] = sum over children``.
        """
        return np.bincount(
            self.parent[1:], weights=per_prefix[1:], minlength=self.n_prefixes
        ).astype(np.float64, copy=False)

    # ---------------------------------------------------------------- paths
    def paths(self, rollouts: IntArray | None = None) -> NDArray[np.int32]:
        """Node indices of each rollout, shape (n, max_depth + 1), padded with ``-1``."""
        leaves = self.rollout_prefix if rollouts is None else self.rollout_prefix[rollouts]
        out = np.full((leaves.size, self.max_depth + 1), -1, dtype=np.int32)
        cursor = leaves.copy()
        depth = self.depth[cursor].astype(np.int64)
        rows = np.arange(leaves.size)
        for _ in range(self.max_depth + 1):
            alive = cursor >= 0
            out[rows[alive], depth[alive]] = self.node[cursor[alive]]
            cursor[alive] = self.parent[cursor[alive]]
            depth -= 1
        return out

    def path_moves(self, rollouts: IntArray | None = None) -> NDArray[np.int32]:
        """Move indices of each rollout, shape (n, max_depth), padded with ``-1``."""
        leaves = self.rollout_prefix if rollouts is None else self.rollout_prefix[rollouts]
        out = np.full((leaves.size, max(self.max_depth, 0)), -1, dtype=np.int32)
        cursor = leaves.copy()
        depth = self.depth[cursor].astype(np.int64)
        rows = np.arange(leaves.size)
        for _ in range(self.max_depth):
            alive = depth > 0
            out[rows[alive], depth[alive] - 1] = self.move[cursor[alive]]
            cursor[alive] = self.parent[cursor[alive]]
            depth -= 1
        return out

    def path_labels(self, rollouts: IntArray | None = None) -> list[str]:
        """Each rollout as its node labels joined by ``>``."""
        paths = self.paths(rollouts)
        labels = np.array(self.labels, dtype=object)
        return [">".join(labels[row[row >= 0]]) for row in paths]

    def _check_dense(self, what: str) -> None:
        entries = self.n_rollouts * self.n_moves
        if entries > DENSE_LIMIT:
            raise TooLargeError(
                f"{what} of {self.task.name} needs a {self.n_rollouts:,} x {self.n_moves} matrix "
                f"({entries:,} entries, limit {DENSE_LIMIT:,}): use a horizon or a smaller graph"
            )

    def move_incidence(self) -> FloatArray:
        """``A[y, e] = 1`` when rollout ``y`` makes move ``e``; shape (n_rollouts, n_moves).

        Dense float64; raises ``ValueError`` beyond ``DENSE_LIMIT`` entries.
        """
        self._check_dense("the rollout-move incidence")
        out = np.zeros((self.n_rollouts, self.n_moves))
        moves = self.path_moves()
        rows = np.broadcast_to(np.arange(self.n_rollouts)[:, None], moves.shape)
        keep = moves >= 0
        out[rows[keep], moves[keep]] = 1.0
        return out

    def sibling_move_weights(self, per_prefix: FloatArray) -> FloatArray:
        """``B[y, e] = sum over prefixes h on y (not its end) of the children q of h
        with move e of per_prefix[q]``; shape (n_rollouts, n_moves).

        With ``per_prefix[q] = f(pi(q | h))`` this collects, for each rollout,
        the weight of every move that was *available* along it.  Summed in path
        order (no cancellation).  Dense; raises beyond ``DENSE_LIMIT`` entries.
        """
        self._check_dense("the rollout-available-move matrix")
        out = np.zeros((self.n_rollouts, self.n_moves))
        rows = np.arange(self.n_rollouts)
        cursor = self.rollout_prefix.copy()
        max_children = int(self.child_count.max(initial=0))
        for _ in range(self.max_depth):
            alive = cursor > 0
            cursor = np.where(alive, self.parent[np.maximum(cursor, 0)], -1)
            here = cursor >= 0
            h = cursor[here]
            for k in range(max_children):
                has = self.child_count[h] > k
                q = self.child_start[h[has]] + k
                out[rows[here][has], self.move[q]] += per_prefix[q]  # one entry per row
        return out

    def summary(self) -> str:
        """One line: instance, rollouts, correct rollouts, prefixes, depth."""
        horizon = "none" if self.task.horizon is None else str(self.task.horizon)
        return (
            f"{self.task.name}: {self.n_rollouts} rollouts, {self.n_correct} correct, "
            f"{self.n_prefixes} prefixes, longest {self.max_depth} moves, "
            f"{self.labels[self.source]} -> {self.labels[self.target]}, horizon {horizon}"
        )


def check_same_space(first: RolloutSpace, second: RolloutSpace, what: str) -> None:
    """Raise ``ValueError`` unless two spaces hold the same rollouts in the same order.

    The same object passes at once; two enumerations of one task pass after
    comparing their prefix trees (linear in the number of prefixes).
    """
    if first is second:
        return
    same = (
        first.n_prefixes == second.n_prefixes
        and first.labels == second.labels
        and np.array_equal(first.parent, second.parent)
        and np.array_equal(first.node, second.node)
        and first.target == second.target
    )
    if not same:
        raise ValueError(
            f"{what} are on different rollout spaces ({first.task.name}: "
            f"{first.n_rollouts:,} rollouts; {second.task.name}: {second.n_rollouts:,} rollouts): "
            "build both from one enumerated space"
        )


# --------------------------------------------------------------------------
# enumeration


def _csr(task: Task) -> tuple[list[object], IntArray, NDArray[np.int32], FloatArray]:
    nodes = list(task.graph.nodes)
    index = {node: i for i, node in enumerate(nodes)}
    tails, heads, logits = [], [], []
    for v, u, data in task.graph.edges(data=True):
        if v == u:
            continue  # a self-loop is never a move of a simple path
        tails.append(index[v])
        heads.append(index[u])
        logits.append(float(data.get("logit", 0.0)))
    tail = np.asarray(tails, dtype=np.int64)
    order = np.argsort(tail, kind="stable")
    head = np.asarray(heads, dtype=np.int32)[order]
    logit = np.asarray(logits, dtype=np.float64)[order]
    indptr = np.zeros(len(nodes) + 1, dtype=np.int64)
    np.add.at(indptr, tail + 1, 1)
    return nodes, np.cumsum(indptr), head, logit


_BLOCK_ENTRIES = 1 << 22
"""Prefix-by-slot entries examined at once by the enumeration (4 MiB of booleans)."""

BYTES_PER_PREFIX = 100
"""Bytes the enumeration and the finished space hold per prefix, measured (docs/guide.md,
'Memory'): the tree arrays, per-level work arrays and the policy arrays of one optimum."""


def _available_memory() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes, or ``None`` where it is not known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_shortfall(need: int) -> int | None:
    """The available memory in bytes when ``need`` bytes exceed it, else ``None`` (also where
    the available memory is not known).  Shared by the size guards of every engine."""
    available = _available_memory()
    return available if available is not None and need > available else None


def _check_memory(task: Task, prefixes: int, width: int, words: int, depth: int) -> None:
    """Refuse, before allocating, a level whose prefixes would not fit in available memory."""
    need = prefixes * BYTES_PER_PREFIX + width * 16 * words
    available = memory_shortfall(need)
    if available is not None:
        raise TooLargeError(
            f"rollout space of {task.name} does not fit in memory: depth {depth} brings it to "
            f"{prefixes:,} prefixes, about {need / 2**30:.1f} GiB, and {available / 2**30:.1f} GiB "
            "is available: pass --horizon or a lower --max-rollouts"
        )


def _too_large(
    task: Task, limit: int, counted: int, depth: int, fits: list[tuple[int, int]]
) -> str:
    best = max((h for h, n in fits if n <= limit), default=None)
    hint = (
        f"a horizon of {best} gives {dict(fits)[best]:,} rollouts: pass --horizon {best}"
        if best is not None and best > 0
        else "no horizon makes it fit"
    )
    return (
        f"rollout space of {task.name} is too large to enumerate: more than {counted:,} rollouts "
        f"by depth {depth} (limit {limit:,}); {hint}, or raise --max-rollouts"
    )


def enumerate_rollouts(task: Task, max_rollouts: int = DEFAULT_MAX_ROLLOUTS) -> RolloutSpace:
    """Enumerate every maximal simple path of ``task`` into a :class:`RolloutSpace`.

    Parameters
    ----------
    task : Task
        Graph, source, target, horizon.
    max_rollouts : int
        Size guard.  Enumeration stops, before memory runs out, as soon as the
        rollouts finished plus the open prefixes (each ends in at least one
        rollout) exceed it.

    Returns
    -------
    RolloutSpace

    Raises
    ------
    ValueError
        If the space exceeds ``max_rollouts`` (the message names the count
        reached and the largest horizon that fits), or if no rollout is correct
        (no path from source to target within the horizon).

    Notes
    -----
    Level by level: the open prefixes of depth ``d`` carry their visited set as
    a bitmask (``ceil(n_nodes / 64)`` words of uint64); each level expands all of
    them at once with one gather over the CSR adjacency.  Time and memory are
    linear in the number of prefixes, which grows like the number of simple
    paths: use a horizon on large graphs.

    Examples
    --------
    >>> from tilt.tasks import named_task
    >>> space = enumerate_rollouts(named_task("grid3"))
    >>> space.n_rollouts, space.n_correct
    (18, 12)
    """
    check_instance("task", task, Task)
    if (
        isinstance(max_rollouts, bool)
        or not isinstance(max_rollouts, (int, np.integer))
        or max_rollouts < 1
    ):
        raise ValueError(f"max_rollouts must be a positive integer, got {max_rollouts!r}")
    try:
        return _enumerate(task, int(max_rollouts))
    except MemoryError:
        raise TooLargeError(
            f"rollout space of {task.name} does not fit in memory: pass --horizon or a lower "
            "--max-rollouts (docs/guide.md, 'Memory')"
        ) from None


def _enumerate(task: Task, max_rollouts: int) -> RolloutSpace:
    nodes, indptr, head, logit = _csr(task)
    n_nodes = len(nodes)
    index = {node: i for i, node in enumerate(nodes)}
    source, target = index[task.source], index[task.target]
    words = max(1, -(-n_nodes // 64))
    horizon = task.horizon
    degree = np.diff(indptr)
    # padded adjacency: slot k of node v is the move indptr[v] + k; an empty slot
    # points at the source, which every path has visited, so it is never open
    span = max(1, int(degree.max(initial=0)))
    slots = np.arange(span)
    valid = slots[:, None] < degree[None, :]  # (span, n_nodes)
    slot_move = np.where(valid, indptr[None, :-1] + slots[:, None], -1)
    slot_head = np.full((span, n_nodes), source, dtype=np.int64)
    slot_head[valid] = head[slot_move[valid]]
    slot_word = slot_head // 64
    slot_bit = np.left_shift(np.uint64(1), (slot_head % 64).astype(np.uint64))
    flat_head = slot_head.T.ravel()  # entry v * span + k
    flat_move = slot_move.T.ravel()
    flat_word = slot_word.T.ravel()
    flat_bit = slot_bit.T.ravel()

    # level 0
    level_node = [np.array([source], dtype=np.int32)]
    level_parent = [np.array([-1], dtype=np.int32)]
    level_move = [np.array([-1], dtype=np.int32)]
    level_children: list[IntArray] = []
    mask = np.zeros((1, words), dtype=np.uint64)
    mask[0, source // 64] = np.uint64(1) << np.uint64(source % 64)
    frontier_node = np.array([source], dtype=np.int64)
    offset = 0  # global index of the first prefix of the current level
    leaves_so_far = 0
    fits: list[tuple[int, int]] = []  # (horizon h, rollouts with horizon h)
    d = 0
    while True:
        width = frontier_node.size
        fits.append((d, leaves_so_far + width))
        if horizon is not None and d >= horizon:
            open_idx = np.zeros(0, dtype=np.int64)
        else:
            open_idx = np.flatnonzero(frontier_node != target)
        v = frontier_node[open_idx]
        # children of the open prefixes, a block of prefixes at a time: the count is checked
        # against the guard after each block, so no array grows far beyond max_rollouts
        settled = leaves_so_far + (width - open_idx.size)  # leaves so far, closed prefixes
        found, cand_parts, key_parts = 0, [], []
        step = max(1, _BLOCK_ENTRIES // span)
        for b0 in range(0, open_idx.size, step):
            vb = v[b0 : b0 + step]
            free = np.empty((vb.size, span), dtype=bool)
            if words == 1:
                m = mask[open_idx[b0 : b0 + step], 0]
                for k in range(span):
                    np.equal(m & slot_bit[k][vb], 0, out=free[:, k])
            else:
                m2 = mask[open_idx[b0 : b0 + step]]
                rows_b = np.arange(vb.size)
                for k in range(span):
                    np.equal(m2[rows_b, slot_word[k][vb]] & slot_bit[k][vb], 0, out=free[:, k])
            flat = np.flatnonzero(free)
            del free
            rows = flat // span
            found += rows.size
            if settled + found > max_rollouts:
                raise TooLargeError(_too_large(task, max_rollouts, settled + found, d + 1, fits))
            cand_parts.append(open_idx[b0 + rows])
            key_parts.append(vb[rows] * span + (flat - rows * span))
            del flat, rows
        cand = np.concatenate(cand_parts) if cand_parts else np.zeros(0, dtype=np.int64)
        key = np.concatenate(key_parts) if key_parts else np.zeros(0, dtype=np.int64)
        del cand_parts, key_parts
        n_children = np.bincount(cand, minlength=width)
        level_children.append(n_children)
        leaves_so_far += width - int(np.count_nonzero(n_children))
        if cand.size == 0:
            break
        if leaves_so_far + cand.size > max_rollouts:
            raise TooLargeError(
                _too_large(task, max_rollouts, leaves_so_far + cand.size, d + 1, fits)
            )
        _check_memory(task, offset + width + cand.size, cand.size, words, d + 1)
        if words == 1:
            mask = (mask[cand, 0] | flat_bit[key])[:, None]
        else:
            new_mask = mask[cand]
            new_mask[np.arange(cand.size), flat_word[key]] |= flat_bit[key]
            mask = new_mask
        frontier_node = flat_head[key]
        level_node.append(frontier_node.astype(np.int32))
        level_parent.append((cand + offset).astype(np.int32))
        level_move.append(flat_move[key].astype(np.int32))
        offset += width
        d += 1

    node = np.concatenate(level_node)
    parent = np.concatenate(level_parent)
    move = np.concatenate(level_move)
    child_count = np.concatenate(level_children).astype(np.int64, copy=False)
    sizes = np.array([a.size for a in level_node], dtype=np.int64)
    level_start = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    depth = np.repeat(np.arange(sizes.size, dtype=np.int16), sizes)
    child_start = np.empty_like(child_count)
    child_start[0] = 1
    np.cumsum(child_count[:-1], out=child_start[1:])
    child_start[1:] += 1
    rollout_prefix = np.flatnonzero(child_count == 0).astype(np.int64, copy=False)
    correct = node[rollout_prefix] == target
    if not correct.any():
        within = "" if horizon is None else f" within a horizon of {horizon} moves"
        raise ValueError(
            f"no path from {nodes[source]!s} to {nodes[target]!s} in {task.name}{within}: "
            "no rollout is correct (check the source, target, edge directions or horizon)"
        )
    return RolloutSpace(
        task=task,
        labels=tuple(str(n) for n in nodes),
        source=source,
        target=target,
        move_tail=np.repeat(np.arange(n_nodes, dtype=np.int32), degree),
        move_head=head,
        move_logit=logit,
        parent=parent,
        node=node,
        move=move,
        depth=depth,
        level_start=level_start,
        child_start=child_start,
        child_count=child_count,
        rollout_prefix=rollout_prefix,
        correct=correct,
    )
