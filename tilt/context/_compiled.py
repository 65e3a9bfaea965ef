"""Compiled inner loop (numba) of the ``edge`` model's token-forward target.

Private to :mod:`tilt.context.edge`, which imports it lazily and only when
:func:`tilt._numerics.jit` says so (numba installed, ``TILT_NO_JIT`` unset, at least
``JIT_MIN_SIZE`` prefixes): small commands never import numba.  The numpy twin is the
block path of :meth:`tilt.context.EdgeContext.token_mean_log_target`; both give the same
values to rounding (``tests/context/test_compiled_context.py`` checks them to 1e-12).
Compiled with ``numba.njit(cache=True)``, as :mod:`tilt._compiled`.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = ["group_floor", "edge_mean_target"]

_F = NDArray[np.float64]
_I = NDArray[np.int64]


def _group_floor(starts: _I, count: int, own: _F) -> float:
    """The least finite ``own`` over the children of the groups of ``count`` siblings that
    begin at ``starts`` (0 at most)."""
    low = 0.0
    for g in range(starts.size):
        start = starts[g]
        for j in range(count):
            v = own[start + j]
            if v < low and v != -math.inf:
                low = v
    return low


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


_jit = numba.njit(cache=True, nogil=True)
group_floor = _jit(_group_floor)
edge_mean_target = _jit(_edge_mean_target)
