"""Compiled inner loops (numba) of the per-prefix fixed points: ``discount``'s bottom-up pass
and the search for ``jsd``'s distinct sibling groups.

Private to :mod:`tilt.objectives.per_prefix`, which imports it lazily and only when
:func:`tilt._numerics.jit` says so (numba installed, ``TILT_NO_JIT`` unset, an input of at
least ``JIT_MIN_SIZE`` prefixes): small commands never import numba.  Each kernel has a
numpy twin in :mod:`tilt.objectives.per_prefix` that gives the same values to rounding
(``tests/objectives/test_compiled_objectives.py`` checks both to 1e-12).  Compiled with
``numba.njit(cache=True)``, as :mod:`tilt._compiled`.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = ["discount_pass", "distinct_columns", "scatter_columns"]

_F = NDArray[np.float64]
_I = NDArray[np.int64]


def _discount_pass(child_start: _I, child_count: _I, target: _F, g: float, log_cond: _F) -> bool:
    """The ``discount=g`` pass, prefix by prefix bottom-up, into ``log_cond`` (zeros, given:
    numpy maps a large array in huge pages, numba does not, and touching its pages costs half
    as much again); ``True``, and an unfinished ``log_cond``, as soon as a group has no finite
    ``x`` (the caller then runs the numpy twin, which keeps ``V``).

    ``x(q) = target(q) + g V(q)`` for each child ``q`` of ``h``; ``V(h) = x`` of an only
    child (whose ``log q`` is 0), the log-sum-exp of the group's ``x`` otherwise (shifted by
    the group's largest), and ``log q(u | h) = x(hu) - V(h)``; ``V = 0`` at a leaf.  ``V(h)``
    is kept in ``log_cond[h]`` until ``h``'s parent reads it and writes ``h``'s conditional
    there (``log_cond[0]`` ends as ``V`` of the root): no array of values.
    """
    n = child_count.size
    for p in range(n - 1, -1, -1):
        count = child_count[p]
        if count == 0:  # V = 0: log_cond[p] is 0 as given
            continue
        start = child_start[p]
        if count == 1:
            log_cond[p] = target[start] + g * log_cond[start]
            log_cond[start] = 0.0
            continue
        if count == 2:  # log(e^a + e^b) = top + log1p(e^(low - top)): one exp, one log
            a = target[start] + g * log_cond[start]
            b = target[start + 1] + g * log_cond[start + 1]
            top, low = (a, b) if a >= b else (b, a)
            if top == -math.inf:
                return True
            if math.isnan(top) or math.isnan(low):
                log_cond[p] = math.nan
                log_cond[start] = math.nan
                log_cond[start + 1] = math.nan
                continue
            norm = top + math.log1p(math.exp(low - top))
            log_cond[p] = norm
            log_cond[start] = a - norm
            log_cond[start + 1] = b - norm
            continue
        top = -math.inf
        for j in range(count):
            x = target[start + j] + g * log_cond[start + j]
            log_cond[start + j] = x
            if x > top:
                top = x
        if top == -math.inf:  # no signal in the group
            return True
        total = 0.0
        for j in range(count):
            total += math.exp(log_cond[start + j] - top)
        norm = top + math.log(total)
        log_cond[p] = norm
        for j in range(count):
            log_cond[start + j] -= norm
    return False


def _distinct_columns(columns: _F) -> tuple[_I, _I]:
    """``(first, inverse)`` of the distinct columns of a (rows, count) block, in order of
    first appearance: an open-addressing table keyed on a hash of each column's bits, then
    an exact comparison (``==``) with the class's first column, so that a column holding
    ``nan`` stands alone (as in the numpy twin)."""
    rows, count = columns.shape
    multipliers = np.empty(rows, dtype=np.uint64)
    state = np.uint64(0x9E3779B97F4A7C15)
    for f in range(rows):  # fixed odd multipliers (splitmix64)
        state += np.uint64(0x9E3779B97F4A7C15)
        z = state
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        multipliers[f] = (z ^ (z >> np.uint64(31))) | np.uint64(1)
    bits = columns.view(np.uint64)
    size = 1024
    while size < 4 * min(count, 1 << 16):
        size *= 2
    table = np.full(size, -1, dtype=np.int64)
    first = np.empty(count, dtype=np.int64)
    class_hash = np.empty(count, dtype=np.uint64)
    inverse = np.empty(count, dtype=np.int64)
    n_classes = 0
    for c in range(count):
        key = np.uint64(0)
        for f in range(rows):
            key ^= bits[f, c] * multipliers[f]
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
                for f in range(rows):
                    if columns[f, c] != columns[f, f0]:
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


def _scatter_columns(out: _F, children: _I, solved: _F, inverse: _I) -> None:
    """``out[children] = solved[:, inverse]`` without the gathered block."""
    n, count = children.shape
    for c in range(count):
        e = inverse[c]
        for j in range(n):
            out[children[j, c]] = solved[j, e]


_jit = numba.njit(cache=True, nogil=True)
discount_pass = _jit(_discount_pass)
distinct_columns = _jit(_distinct_columns)
scatter_columns = _jit(_scatter_columns)
