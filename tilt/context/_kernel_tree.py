"""The ``kernel`` model's passes with the chains of only children folded, compiled.

The kernel model's bottom-up pass (:func:`tilt.context._pairwise.kernel_pass`) computes
``r_c(p)`` for every prefix ``p`` and demonstration ``c``.  Below a prefix with one child
nothing mixes: ``r_c(p) = (1 + b [move(q) in c]) r_c(q)`` for its only child ``q``
(``pi(q | p) = 1``).  So the pass here keeps ``r_c`` only at the *stops* (the root and every
prefix with two or more children) and multiplies the factors of each chain of only
children into one vector before adding it to the chain's stop; the per-prefix expectation
``E_c log r_c(p)`` needs logs at the stops only, and follows along a chain by
``E_c log r_c(p) = E_c log r_c(q) + gamma m(move(q))``.  On grid5 (90,111 prefixes, 24,082
stops, 8,512 demonstrations) the pass writes and reads back 2.0e8 values and takes 2.0e8
logs where the plain pass does 7.7e8 of each.

The forward mixture ``sum_c w(c) exp(gamma |E(y) & E(c)|)`` is a population count per pair
too, with the ``max_depth + 1`` powers tabulated: no product of matrices, no ``exp`` per pair.

Private to :mod:`tilt.context.kernel`; the compiled loops live in
:mod:`tilt.context._kernel_compiled`, imported only when :func:`kernel_kernels` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType

import numpy as np
from numpy.typing import NDArray

from tilt._numerics import FloatArray, IntArray, jit_allowed
from tilt.context._pairwise import incidence_rows
from tilt.space import RolloutSpace

__all__ = [
    "kernel_kernels",
    "move_masks",
    "ChainTree",
    "chain_tree",
    "stop_pass",
    "kernel_mixture",
]

STOP_BLOCK = 1 << 20
"""Entries of one block of the stop pass (stops by demonstrations: 8 MiB)."""


def kernel_kernels(size: int) -> ModuleType | None:
    """:mod:`tilt.context._kernel_compiled` when the compiled kernels serve an input of ``size``
    entries (the gate of :func:`tilt._numerics.jit`: numba installed, ``TILT_NO_JIT`` unset,
    ``size`` at least ``TILT_JIT_MIN_SIZE``), else ``None``."""
    if not jit_allowed(size):
        return None
    try:
        from tilt.context import _kernel_compiled
    except ImportError:  # numba is not installed: the numpy paths
        return None
    return _kernel_compiled


def move_masks(space: RolloutSpace, rollouts: IntArray) -> NDArray[np.uint64]:
    """The moves of each rollout as bits: shape ``(words, len(rollouts))``, 64 moves a word."""
    words = max(1, -(-space.n_moves // 64))
    out = np.zeros((words, rollouts.size), dtype=np.uint64)
    moves = space.path_moves(rollouts)
    columns = np.arange(rollouts.size)
    for step in moves.T:
        made = step >= 0
        move = step[made].astype(np.int64)
        bit = np.left_shift(np.uint64(1), (move % 64).astype(np.uint64))
        np.bitwise_or.at(out, (move // 64, columns[made]), bit)
    return out


@dataclass(frozen=True)
class ChainTree:
    """The prefix tree with its chains of only children folded into edges between stops.

    ``stop_prefix`` (increasing) are the root and the prefixes with two or more children;
    stop ``s`` has the edges ``edge_start[s]:edge_start[s + 1]``, one per child ``q``
    (``edge_child``), each the chain from ``q`` down to the first prefix that is not an
    only-child parent: a stop (``edge_end``, a stop index) or a leaf (``-1``).
    """

    stop_prefix: IntArray
    edge_start: IntArray
    edge_child: IntArray
    edge_end: IntArray


def chain_tree(space: RolloutSpace) -> ChainTree:
    """:class:`ChainTree` of ``space``: one pass up the levels."""
    count = space.child_count
    is_stop = count >= 2
    is_stop[0] = True
    stop_prefix = np.flatnonzero(is_stop)
    level_start = space.level_start
    children, ends = [], []
    below_end = np.zeros(0, dtype=np.int64)
    for d in range(space.max_depth, 0, -1):
        lo, hi = int(level_start[d]), int(level_start[d + 1])
        end = np.arange(lo, hi, dtype=np.int64)
        single = np.flatnonzero(count[lo:hi] == 1)
        end[single] = below_end[space.child_start[lo:hi][single] - int(level_start[d + 1])]
        edge = np.flatnonzero(is_stop[space.parent[lo:hi]])
        children.append(edge + lo)
        ends.append(end[edge])
        below_end = end
    empty = np.zeros(0, dtype=np.int64)
    edge_child = np.concatenate(children[::-1]) if children else empty
    end_prefix = np.concatenate(ends[::-1]) if ends else empty
    edge_end = np.where(count[end_prefix] >= 2, np.searchsorted(stop_prefix, end_prefix), -1)
    edge_start = np.zeros(stop_prefix.size + 1, dtype=np.int64)
    np.cumsum(count[stop_prefix], out=edge_start[1:])
    return ChainTree(stop_prefix, edge_start, edge_child, edge_end)


def stop_pass(
    kernels: ModuleType,
    gamma: float,
    space: RolloutSpace,
    cond: FloatArray,
    support: IntArray,
    weight: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """``(log Z(c) for c in support, sum_c w(c) log r_c(p) / sum_c w(c) per prefix)``, as
    :func:`tilt.context._pairwise.kernel_pass` with ``want_prefixes``, compiled and folded.

    ``cond[p] = pi(p | parent)`` (0 below a zero-mass prefix, where the expectation is
    meaningless but finite).  Needs ``gamma * max_depth <= LINEAR_RANGE``.
    """
    tree = chain_tree(space)
    n_stops = tree.stop_prefix.size
    edge_cond = np.ascontiguousarray(cond[tree.edge_child])
    all_positive = bool(np.all(edge_cond > 0))
    incidence_t = np.ascontiguousarray(incidence_rows(space, support).T)  # (n_moves, |supp D|)
    boost = math.expm1(gamma)
    log_z = np.empty(support.size)
    at_stops = np.zeros(n_stops)
    cols = int(min(support.size, max(8, STOP_BLOCK // max(n_stops, 1))))
    block = np.empty((n_stops, cols))
    for c0 in range(0, support.size, cols):
        k = min(cols, support.size - c0)
        r = block if k == cols else np.empty((n_stops, k))
        factor = 1.0 + boost * incidence_t[:, c0 : c0 + k]  # (n_moves, k)
        kernels.stop_pass(
            tree.edge_start,
            tree.edge_child,
            tree.edge_end,
            edge_cond,
            space.child_start,
            space.child_count,
            space.move,
            factor,
            r,
        )
        with np.errstate(divide="ignore"):
            log_z[c0 : c0 + k] = np.log(r[0])
        if all_positive:
            np.log(r, out=r)
        else:
            positive = r > 0
            np.log(r, out=r, where=positive)
            r[~positive] = 0.0  # below a zero-mass prefix: unused
        at_stops += np.einsum("ij,j->i", r, weight[c0 : c0 + k])
    total = float(weight.sum())
    expected = np.zeros(space.n_prefixes)
    expected[tree.stop_prefix] = at_stops / total
    marginal = (incidence_t @ weight) / total
    _down_the_chains(space, expected, gamma * marginal)
    return log_z, expected


def _down_the_chains(space: RolloutSpace, expected: FloatArray, per_move: FloatArray) -> None:
    """``expected[p] = expected[q] + per_move[move(q)]`` for every prefix ``p`` with one child
    ``q``, filled up the levels (the stops and leaves hold their values)."""
    count = space.child_count
    level_start = space.level_start
    for d in range(space.max_depth - 1, 0, -1):  # the root is a stop
        lo, hi = int(level_start[d]), int(level_start[d + 1])
        single = np.flatnonzero(count[lo:hi] == 1) + lo
        child = space.child_start[single]
        expected[single] = expected[child] + per_move[space.move[child]]


def kernel_mixture(
    kernels: ModuleType,
    gamma: float,
    space: RolloutSpace,
    support: IntArray,
    log_w: FloatArray,
) -> FloatArray:
    """``log sum_c exp(gamma |E(y) & E(c)| + log_w[c])`` for every rollout ``y``, compiled.

    The powers ``exp(gamma (j - max_depth))`` are tabulated (all within ``e^-600`` of 1 when
    ``gamma * max_depth <= LINEAR_RANGE``), and the weights shifted by their largest: a
    weight that underflows weighs less than ``e^-145`` of the largest term.
    """
    out = np.full(space.n_rollouts, -np.inf)
    finite = np.isfinite(log_w)
    if not finite.any():
        return out
    members = support[finite]
    top = float(log_w[finite].max())
    weight = np.exp(log_w[finite] - top)
    depth = space.max_depth
    power = np.exp(gamma * (np.arange(depth + 1, dtype=np.float64) - depth))
    total = np.empty(space.n_rollouts)
    kernels.pair_sum(
        move_masks(space, np.arange(space.n_rollouts)),
        move_masks(space, members),
        weight,
        power,
        total,
    )
    with np.errstate(divide="ignore"):
        out = np.log(total)
    out += top + gamma * depth
    return out
