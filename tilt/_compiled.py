"""Compiled inner loops (numba) of the passes over the prefix tree and of the widening sweep.

Private to :mod:`tilt._numerics`, the only module that imports it (lazily, and
only for inputs large enough to repay numba's import; ``TILT_NO_JIT=1`` or a
missing numba keeps every caller on its plain-numpy path).  Every kernel here
has a numpy twin in the module that calls it, which gives the same values to
rounding (``tests/test_compiled.py`` checks both to 1e-12); the loops add in the
same order as the numpy paths wherever that order is cheap to keep.

The functions are written as plain Python over numpy arrays and compiled with
``numba.njit(cache=True)``: the machine code is kept in ``__pycache__`` (or
``NUMBA_CACHE_DIR``), so only the first run on a machine pays the compilation.
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "reroute_pass",
    "reroute_pass_kept",
    "dominated_total",
    "subtree_sum",
    "path_sum",
]

_F = NDArray[np.float64]
_I = NDArray[np.int64]


def _sibling_others(
    weight: _F, below: _F, start: int, count: int, other_weight: _F, other_mass: _F
) -> None:
    """For each of ``count`` siblings, the sum of the others' ``weight`` (``weight[:count]``)
    and of their ``below`` (``below[start:start + count]``), into ``other_weight`` and
    ``other_mass``: each one's sibling for two (as numpy's ``others_sum``), else the terms
    before plus the terms after, each summed in order (no cancellation)."""
    if count == 2:
        other_weight[0], other_weight[1] = weight[1], weight[0]
        other_mass[0], other_mass[1] = below[start + 1], below[start]
        return
    acc, acc_mass = 0.0, 0.0
    for j in range(count):
        other_weight[j], other_mass[j] = acc, acc_mass
        acc += weight[j]
        acc_mass += below[start + j]
    acc, acc_mass = 0.0, 0.0
    for j in range(count - 1, -1, -1):
        other_weight[j] += acc
        other_mass[j] += acc_mass
        acc += weight[j]
        acc_mass += below[start + j]


def _reroute_pass(
    child_start: _I,
    child_count: _I,
    correct_leaf: _F,
    units: NDArray[np.int32],
    n_units: int,
    cond: _F,
    total_leaf: _F,
) -> tuple[_F, _F]:
    """``(flow, bonus)`` by unit: the correct mass through each unit's moves, and the
    re-route gain ``M(h without m) w(m) / w(h without m)`` summed over every move ``m`` of a
    sibling group (``w``: the conditionals ``cond``, or, when ``total_leaf`` is given, the
    total masses below each child, summed from it).  One bottom-up pass."""
    n = child_count.size
    below = np.empty(n)  # correct mass below each prefix
    use_total = total_leaf.size > 0
    total = np.empty(n if use_total else 0)
    bonus = np.zeros(n_units)
    width = 1
    for p in range(n):
        width = max(width, child_count[p])
    weight = np.empty(width)
    other_weight = np.empty(width)
    other_mass = np.empty(width)
    leaf = correct_leaf.size
    for p in range(n - 1, -1, -1):
        count = child_count[p]
        if count == 0:
            leaf -= 1
            below[p] = correct_leaf[leaf]
            if use_total:
                total[p] = total_leaf[leaf]
            continue
        start = child_start[p]
        acc = 0.0
        for j in range(count):
            acc += below[start + j]
        below[p] = acc
        if use_total:
            acc = 0.0
            for j in range(count):
                acc += total[start + j]
            total[p] = acc
        if count < 2:
            continue
        for j in range(count):
            weight[j] = total[start + j] if use_total else cond[start + j]
        _sibling_others(weight, below, start, count, other_weight, other_mass)
        for j in range(count):
            if other_weight[j] > 0:
                bonus[units[start + j - 1]] += other_mass[j] * weight[j] / other_weight[j]
    flow = np.zeros(n_units)
    for p in range(1, n):  # in prefix order, as numpy's bincount
        flow[units[p - 1]] += below[p]
    return flow, bonus


def _reroute_pass_kept(
    child_count: NDArray[np.uint8] | _I,
    prefixes: NDArray[np.int32],
    correct_leaf: _F,
    units: NDArray[np.int16] | NDArray[np.int32],
    n_units: int,
    weight: _F,
    weight_by_prefix: bool,
) -> tuple[_F, _F]:
    """:func:`_reroute_pass` over the kept prefixes of :class:`tilt.measures.ood._CorrectTree`
    (original indices ``prefixes``): a tree whose children blocks follow each other in the
    order of their parents from its second prefix on, so that each prefix's first child is
    found by counting back from the end.  ``units`` is indexed by original prefix less one;
    ``weight`` by original prefix when ``weight_by_prefix``, else by kept prefix.  Same sums
    in the same order as the pass over the whole tree, less its zeros."""
    n = child_count.size
    below = np.empty(n)
    bonus = np.zeros(n_units)
    width = 1
    for p in range(n):
        width = max(width, int(child_count[p]))
    own = np.empty(width)
    other_weight = np.empty(width)
    other_mass = np.empty(width)
    leaf = correct_leaf.size
    end = n
    for p in range(n - 1, -1, -1):
        count = int(child_count[p])
        if count == 0:
            leaf -= 1
            below[p] = correct_leaf[leaf]
            continue
        start = end - count
        end = start
        if count == 1:  # an only child: 0.0 + its mass, and no gain
            below[p] = below[start]
            continue
        if count <= 3:  # most groups: the general step's sums written out, in its order
            # (each one's sibling for two; for three, ``((0 + b0) + b1) + b2`` and the
            # others ``b1 + b2``, ``b0 + b2``, ``b0 + b1``, as _sibling_others gives them),
            # without its loops and scratch arrays: three times faster on grid6
            first, second = prefixes[start], prefixes[start + 1]
            b0, b1 = below[start], below[start + 1]
            w0 = weight[first] if weight_by_prefix else weight[start]
            w1 = weight[second] if weight_by_prefix else weight[start + 1]
            if count == 2:
                below[p] = b0 + b1
                if w1 > 0:
                    bonus[units[first - 1]] += b1 * w0 / w1
                if w0 > 0:
                    bonus[units[second - 1]] += b0 * w1 / w0
                continue
            third = prefixes[start + 2]
            b2 = below[start + 2]
            w2 = weight[third] if weight_by_prefix else weight[start + 2]
            below[p] = b0 + b1 + b2
            other = w1 + w2
            if other > 0:
                bonus[units[first - 1]] += (b1 + b2) * w0 / other
            other = w0 + w2
            if other > 0:
                bonus[units[second - 1]] += (b0 + b2) * w1 / other
            other = w0 + w1
            if other > 0:
                bonus[units[third - 1]] += (b0 + b1) * w2 / other
            continue
        acc = 0.0
        for j in range(count):
            acc += below[start + j]
        below[p] = acc
        for j in range(count):
            own[j] = weight[prefixes[start + j]] if weight_by_prefix else weight[start + j]
        _sibling_others(own, below, start, count, other_weight, other_mass)
        for j in range(count):
            if other_weight[j] > 0:
                unit = units[prefixes[start + j] - 1]
                bonus[unit] += other_mass[j] * own[j] / other_weight[j]
    flow = np.zeros(n_units)
    for p in range(1, n):
        flow[units[prefixes[p] - 1]] += below[p]
    return flow, bonus


def _dominated_total(x_rank: _I, d_rank: _I, w: _F, order: _I, n_d: int) -> float:
    """``sum of w[i] w[j]`` over the pairs with ``x_rank[j] < x_rank[i]`` and
    ``d_rank[j] < d_rank[i]``: ``order`` sorts ``x_rank``; a Fenwick tree over the
    ``d`` classes holds the weight of the points of smaller ``x`` class."""
    tree = np.zeros(n_d + 1)
    total = 0.0
    n = order.size
    i = 0
    while i < n:
        end = i
        x = x_rank[order[i]]
        while end < n and x_rank[order[end]] == x:
            end += 1
        for k in range(i, end):  # query: the weight of d classes below d_rank[point]
            point = order[k]
            j = d_rank[point]
            acc = 0.0
            while j > 0:
                acc += tree[j]
                j -= j & -j
            total += w[point] * acc
        for k in range(i, end):  # then insert this x class
            point = order[k]
            j = d_rank[point] + 1
            while j <= n_d:
                tree[j] += w[point]
                j += j & -j
        i = end
    return total


def _subtree_sum(child_start: _I, child_count: _I, leaf_value: _F) -> _F:
    """Per prefix, the sum of ``leaf_value`` (one per rollout, in leaf order) below it;
    the children of each prefix added in order, as numpy's per-level bincount."""
    n = child_count.size
    out = np.empty(n)
    leaf = leaf_value.size
    for p in range(n - 1, -1, -1):
        count = child_count[p]
        if count == 0:
            leaf -= 1
            out[p] = leaf_value[leaf]
        else:
            start = child_start[p]
            acc = 0.0
            for j in range(count):
                acc += out[start + j]
            out[p] = acc
    return out


def _path_sum(parent: NDArray[np.int32], values: _F, out: _F) -> None:
    """``out[p] = out[parent[p]] + values[p]`` in prefix order (``out[0] = values[0]``), into
    ``out`` (given by the caller: numpy maps a large array in huge pages, numba does not)."""
    out[0] = values[0]
    for p in range(1, values.size):
        out[p] = out[parent[p]] + values[p]


_jit = numba.njit(cache=True, nogil=True)
_sibling_others = _jit(_sibling_others)  # called by both re-route passes: compiled first
reroute_pass = _jit(_reroute_pass)
reroute_pass_kept = _jit(_reroute_pass_kept)
dominated_total = _jit(_dominated_total)
subtree_sum = _jit(_subtree_sum)
path_sum = _jit(_path_sum)
