"""Blocked sums over rollout-by-demonstration pairs, for the context models.

Pure array functions behind :mod:`tilt.context`: a row-wise ``logsumexp``, the
pairwise mixture ``log sum_c exp(W[y] . A[c] + log w(c))`` of the forward SD
targets, and the bottom-up pass of the kernel model over blocks of
demonstrations.  Callers check sizes (``TooLargeError``) before calling.
"""

from __future__ import annotations

import math

import numpy as np

from tilt._numerics import (
    LINEAR_RANGE,
    FloatArray,
    IntArray,
    logsumexp_rows,
)
from tilt.space import RolloutSpace

__all__ = [
    "log_mixture",
    "incidence_rows",
    "kernel_pass",
    "reached_conditionals",
]


BLOCK_ENTRIES = 1 << 23
"""Entries of one block of the pairwise mixture (64 MiB): large enough that a threaded BLAS
product is worth its synchronisation (small blocks are much slower with OpenBLAS threads on a
busy machine), small enough to stay far below the memory of the space."""

KERNEL_BLOCK = 1 << 19
"""Entries of one level block of the kernel pass (4 MiB, cache-sized)."""


def log_mixture(weights: FloatArray, members: FloatArray, log_w: FloatArray) -> FloatArray:
    """``out[y] = log sum_c exp(weights[y] . members[c] + log_w[c])`` for 0/1 rows ``members``.

    ``members`` is a 0/1 matrix, so ``weights[y] . members[c]`` lies in
    ``[lo(y), hi(y)]``, the sums of the negative and positive entries of
    ``weights[y]``: each row is shifted by ``hi(y)`` inside the product (one extra
    column) and the mixture is ``exp(block) @ w``, in cache-sized blocks, with no
    max pass.  Rows whose spread ``hi - lo`` (plus that of ``log_w``) exceeds
    :data:`LINEAR_RANGE` take the exact max-shifted path instead.
    """
    n_rows = weights.shape[0]
    out = np.full(n_rows, -np.inf)
    finite = np.isfinite(log_w)
    if not finite.any() or n_rows == 0:
        return out
    members = members[finite]
    log_w = log_w[finite]
    top = float(log_w.max())
    w = np.exp(log_w - top)
    hi = np.maximum(weights, 0.0).sum(axis=1)
    lo = np.minimum(weights, 0.0).sum(axis=1)
    w_spread = top - float(log_w.min())
    fast = (hi - lo) + w_spread <= LINEAR_RANGE
    shifted = np.empty((n_rows, weights.shape[1] + 1))
    shifted[:, :-1] = weights
    shifted[:, -1] = -hi
    ones = np.empty((members.shape[0], members.shape[1] + 1))
    ones[:, :-1] = members
    ones[:, -1] = 1.0
    ones_t = np.ascontiguousarray(ones.T)
    cols = members.shape[0]
    col_step = max(256, min(cols, BLOCK_ENTRIES // 64))
    row_step = max(1, BLOCK_ENTRIES // min(col_step, cols))
    rows_fast = np.flatnonzero(fast)
    total = np.zeros(n_rows)
    for r0 in range(0, rows_fast.size, row_step):
        rows = rows_fast[r0 : r0 + row_step]
        left = shifted[rows]
        acc = np.zeros(rows.size)
        for c0 in range(0, cols, col_step):
            block = left @ ones_t[:, c0 : c0 + col_step]
            np.exp(block, out=block)
            acc += np.einsum("ij,j->i", block, w[c0 : c0 + col_step])
        total[rows] = acc
    with np.errstate(divide="ignore"):
        out[fast] = np.log(total[fast]) + hi[fast] + top
    slow = np.flatnonzero(~fast)
    members_t = np.ascontiguousarray(members.T)
    step = max(1, BLOCK_ENTRIES // max(cols, 1))
    for r0 in range(0, slow.size, step):
        rows = slow[r0 : r0 + step]
        block = weights[rows] @ members_t
        block += log_w
        out[rows] = logsumexp_rows(block)
    return out


def incidence_rows(space: RolloutSpace, rollouts: IntArray) -> FloatArray:
    """``A[i, e] = 1`` when rollout ``rollouts[i]`` makes move ``e``: shape (k, n_moves)."""
    out = np.zeros((rollouts.size, space.n_moves))
    moves = space.path_moves(rollouts)
    rows = np.broadcast_to(np.arange(rollouts.size)[:, None], moves.shape)
    keep = moves >= 0
    out[rows[keep], moves[keep]] = 1.0
    return out


def reached_conditionals(space: RolloutSpace, log_mass: FloatArray) -> FloatArray:
    """``pi(p | parent)`` from the prefix log-masses, 0 below a zero-mass parent (and at the
    root)."""
    cond = np.zeros(space.n_prefixes)
    parent = space.parent[1:]
    reached = np.isfinite(log_mass[parent])
    cond[1:][reached] = np.exp(log_mass[1:][reached] - log_mass[parent][reached])
    return cond


def kernel_pass(
    gamma: float,
    space: RolloutSpace,
    log_mass: FloatArray,
    support: IntArray,
    weight: FloatArray,
    want_prefixes: bool,
) -> tuple[FloatArray, FloatArray | None]:
    """Bottom-up pass of the kernel model over blocks of demonstrations.

    ``r_c(h) = sum_{q child of h} pi(q | h) (1 + (e^gamma - 1) [move(q) in c]) r_c(q)``,
    ``r_c = 1`` at a leaf, with ``pi(q | h)`` from the prefix log-masses
    ``log_mass``.  Returns ``log Z(c) = log r_c(root)`` for each ``c`` in
    ``support`` and, when ``want_prefixes``, ``sum_c w(c) log r_c(p) / sum_c w(c)``
    per prefix (meaningless below a zero-mass prefix).  Values are held one depth
    at a time, prefix-major (``(width, k)``), so each level is a contiguous block.
    Needs ``gamma * max_depth <= LINEAR_RANGE`` (no overflow).
    """
    cond = reached_conditionals(space, log_mass)
    boost = math.expm1(gamma)
    moves = space.move
    level_start = space.level_start
    levels = space.bottom_up_levels
    widest = int(np.diff(level_start).max())
    log_z = np.empty(support.size)
    expected: FloatArray | None = np.zeros(space.n_prefixes) if want_prefixes else None
    cols = int(min(support.size, max(8, KERNEL_BLOCK // max(widest, 1))))
    incidence_t = np.ascontiguousarray(incidence_rows(space, support).T)  # (n_moves, |supp D|)
    # sibling groups by slot: group g of a level has children offsets[g] + j for j < count[g]
    slot_groups = []
    for lo, hi, _, offsets in levels:
        count = np.diff(np.r_[offsets, hi - lo])
        slot_groups.append([np.flatnonzero(count > j) for j in range(1, int(count.max(initial=1)))])
    all_positive = bool(np.all(cond[1:] > 0))
    below_buffer = np.empty(widest * cols)
    above_buffer = np.empty(widest * cols)
    for c0 in range(0, support.size, cols):
        factor = 1.0 + boost * incidence_t[:, c0 : c0 + cols]  # (n_moves, k)
        k = factor.shape[1]
        w = weight[c0 : c0 + k]
        d = space.max_depth
        below = below_buffer[: (level_start[d + 1] - level_start[d]) * k].reshape(-1, k)
        below.fill(1.0)
        for (lo, hi, internal, offsets), groups in zip(levels, slot_groups, strict=True):
            if expected is not None:
                expected[lo:hi] += np.einsum("ij,j->i", _log_rows(below, all_positive), w)
            below *= cond[lo:hi, None]
            below *= factor[moves[lo:hi]]
            up_lo = int(level_start[d - 1])
            above = above_buffer[: (lo - up_lo) * k].reshape(-1, k)
            above.fill(1.0)
            rows = internal - up_lo
            summed = below[offsets]
            for j, has in enumerate(groups, start=1):
                summed[has] += below[offsets[has] + j]
            above[rows] = summed
            below_buffer, above_buffer = above_buffer, below_buffer
            below = above
            d -= 1
        if expected is not None:
            expected[:1] += np.einsum("ij,j->i", _log_rows(below, all_positive), w)
        with np.errstate(divide="ignore"):
            log_z[c0 : c0 + k] = np.log(below[0])
    if expected is not None:
        expected /= float(weight.sum())
    return log_z, expected


def _log_rows(values: FloatArray, all_positive: bool) -> FloatArray:
    """``log`` of a block of values; zeros (below zero-mass prefixes, unused) give 0."""
    if all_positive:
        return np.log(values)
    out = np.zeros_like(values)
    np.log(values, out=out, where=values > 0)
    return out
