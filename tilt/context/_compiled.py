"""Compiled inner loops (numba) of the ``edge`` model: its token-forward target, and the
search for sibling groups with equal own conditionals and move masses (the key of every
teacher class), which the token-forward target and ``jsd`` share.

Private to :mod:`tilt.context.edge`, which imports it lazily and only when
:func:`tilt._numerics.jit` says so (numba installed, ``TILT_NO_JIT`` unset, at least
``JIT_MIN_SIZE`` prefixes): small commands never import numba.  The numpy twin of the
target is the block path of :meth:`tilt.context.EdgeContext.token_mean_log_target`; both
give the same values to rounding (``tests/context/test_compiled_context.py`` checks them to
1e-12); the search finds the classes of numpy's ``distinct_columns`` of the gathered key
(``tests/objectives/test_compiled_objectives.py``).
Compiled with ``numba.njit(cache=True)``, as :mod:`tilt._compiled`.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = ["edge_mean_target", "distinct_groups", "spread_columns"]

_F = NDArray[np.float64]
_I = NDArray[np.int64]


def _edge_mean_target(
    starts: _I,
    count: int,
    move: NDArray[np.int32],
    own: _F,
    marginal: _F,
    lift_factor: float,
    rounding: float,
    near_below: float,
    parent: NDArray[np.int32],
    out: _F,
) -> _I:
    """``log E_c T_c(u | h)`` of the groups of ``count`` siblings that begin at ``starts``,
    in the linear domain, into ``out``; the groups whose ``1 - sum m`` lies below
    ``near_below`` (not at the root) are skipped and their positions in ``starts``
    returned, for the caller to sum from the demonstrations.

    Per group, with ``pi = exp(own)``, ``m`` the moves' marginals, ``Z - 1 = lift_factor pi``:
    ``pi (none + sum m / Z) + m (Z - 1) / Z``, divided by its sum, as the numpy twin, in the
    same order; ``none = 1 - sum m`` is 0 below ``rounding x count``.
    """
    near = np.empty(16, dtype=np.int64)
    n_near = 0
    cond = np.empty(count)
    mass = np.empty(count)
    boosted = np.empty(count)
    for g in range(starts.size):
        start = starts[g]
        if count == 2:  # most groups: the loops below written out, the same operations
            m0, m1 = marginal[move[start]], marginal[move[start + 1]]
            none = 1.0 - (0.0 + m0 + m1)
        else:
            total = 0.0
            for j in range(count):
                mass[j] = marginal[move[start + j]]
                total += mass[j]
            none = 1.0 - total
        if none <= rounding * count:
            none = 0.0
        if none < near_below and parent[start] != 0:
            if n_near == near.size:
                grown = np.empty(2 * near.size, dtype=np.int64)
                grown[:n_near] = near
                near = grown
            near[n_near] = g
            n_near += 1
            continue
        if count == 2:  # without the scratch arrays: 0.2 s against 0.27 s on grid6
            c0, c1 = math.exp(own[start]), math.exp(own[start + 1])
            lift0, lift1 = lift_factor * c0, lift_factor * c1
            inverse0, inverse1 = 1.0 / (1.0 + lift0), 1.0 / (1.0 + lift1)
            rest = none + (0.0 + m0 * inverse0 + m1 * inverse1)
            c0 = c0 * rest + m0 * lift0 * inverse0
            c1 = c1 * rest + m1 * lift1 * inverse1
            total = 0.0 + c0 + c1
            out[start] = math.log(c0 / total)
            out[start + 1] = math.log(c1 / total)
            continue
        rest = 0.0
        for j in range(count):
            c = math.exp(own[start + j])
            lift = lift_factor * c
            inverse_z = 1.0 / (1.0 + lift)
            cond[j] = c
            boosted[j] = mass[j] * lift * inverse_z
            rest += mass[j] * inverse_z
        rest = none + rest
        total = 0.0
        for j in range(count):
            cond[j] = cond[j] * rest + boosted[j]
            total += cond[j]
        for j in range(count):
            out[start + j] = math.log(cond[j] / total)
    return near[:n_near].copy()


def _distinct_groups(
    first_row: _F, second_row: _F, move: NDArray[np.int32], children: _I
) -> tuple[_I, _I]:
    """:func:`_distinct_columns` of the key ``[first_row[children], second_row[children]]``
    (shape ``(2n, G)``), read from the two per-prefix arrays without gathering it; with a
    ``move`` per prefix, ``second_row`` is per move and the key's second half
    ``second_row[move[children]]``."""
    n, count = children.shape
    by_move = move.size > 0
    multipliers = np.empty(2 * n, dtype=np.uint64)
    state = np.uint64(0x9E3779B97F4A7C15)
    for f in range(2 * n):  # fixed odd multipliers (splitmix64)
        state += np.uint64(0x9E3779B97F4A7C15)
        z = state
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        multipliers[f] = (z ^ (z >> np.uint64(31))) | np.uint64(1)
    first_bits = first_row.view(np.uint64)
    second_bits = second_row.view(np.uint64)
    size = 1024
    table = np.full(size, -1, dtype=np.int64)
    first = np.empty(count, dtype=np.int64)
    class_hash = np.empty(count, dtype=np.uint64)
    inverse = np.empty(count, dtype=np.int64)
    n_classes = 0
    for c in range(count):
        key = np.uint64(0)
        for j in range(n):
            q = children[j, c]
            key ^= first_bits[q] * multipliers[j]
            key = (key << np.uint64(13)) | (key >> np.uint64(51))
            key ^= second_bits[move[q] if by_move else q] * multipliers[n + j]
            key = (key << np.uint64(13)) | (key >> np.uint64(51))
        key ^= key >> np.uint64(29)
        mask = size - 1
        slot = np.int64(key & np.uint64(mask))
        while True:
            e = table[slot]
            if e < 0:  # a new class
                table[slot] = n_classes
                first[n_classes] = c
                class_hash[n_classes] = key
                inverse[c] = n_classes
                n_classes += 1
                break
            if class_hash[e] == key:
                f0 = first[e]
                same = True
                for j in range(n):
                    q, r = children[j, c], children[j, f0]
                    q2, r2 = (move[q], move[r]) if by_move else (q, r)
                    if not (first_row[q] == first_row[r] and second_row[q2] == second_row[r2]):
                        same = False
                        break
                if same:
                    inverse[c] = e
                    break
            slot = (slot + 1) & mask
        if 2 * n_classes > size:  # grow the table: rehash every class
            size *= 4
            mask = size - 1
            table = np.full(size, -1, dtype=np.int64)
            for e in range(n_classes):
                slot = np.int64(class_hash[e] & np.uint64(mask))
                while table[slot] >= 0:
                    slot = (slot + 1) & mask
                table[slot] = e
    return first[:n_classes].copy(), inverse


def _spread_columns(out: _F, children: _I, distinct: _I, inverse: _I) -> None:
    """``out[children] = out[distinct][:, inverse]``: each group takes the values of its
    class's first group, without the gathered blocks."""
    n, count = children.shape
    for c in range(count):
        e = inverse[c]
        for j in range(n):
            out[children[j, c]] = out[distinct[j, e]]


_jit = numba.njit(cache=True, nogil=True)
edge_mean_target = _jit(_edge_mean_target)
distinct_groups = _jit(_distinct_groups)
spread_columns = _jit(_spread_columns)
