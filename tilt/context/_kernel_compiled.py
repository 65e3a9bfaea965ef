"""Compiled inner loops (numba) of the ``kernel`` context model: its bottom-up pass over the
prefix tree with the chains of only children folded, and its sums over rollout pairs.

Private to :mod:`tilt.context._kernel_tree`, the only module that imports it (lazily, behind
the gate of :func:`tilt._numerics.jit`: ``TILT_NO_JIT=1`` or a missing numba keeps every caller
on its plain-numpy path, which gives the same values to rounding; ``tests/context`` checks
both to 1e-12).  The pass multiplies each chain's factors ``1 + b [move in E(c)]`` into one
vector per edge before adding it to its stop (loops over contiguous demonstrations, which
LLVM vectorises).  The pair sums take each rollout's moves as bits, one ``uint64`` word per
64 moves: the number of moves two rollouts share is a population count, and
``exp(gamma j)`` one entry of a table.

Compiled with ``numba.njit(cache=True)``: the machine code is kept in ``__pycache__`` (or
``NUMBA_CACHE_DIR``), so only the first run on a machine pays the compilation.  Two functions
only: each compiled function costs its own load (about 0.2 s) in every process that uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic
from numpy.typing import NDArray

__all__ = ["stop_pass", "pair_sum"]

_F = NDArray[np.float64]
_I = NDArray[np.int64]
_M = NDArray[np.uint64]


def _popcount_intrinsic(typingctx, word):  # type: ignore[no-untyped-def]  # numba's protocol
    """The number of set bits of a ``uint64`` (LLVM's ``ctpop``: one instruction)."""
    signature = types.int64(types.uint64)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        function = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(function, args)

    return signature, codegen


_popcount = cast("Callable[[Any], int]", intrinsic(_popcount_intrinsic))


def _stop_pass(
    edge_start: _I,
    edge_child: _I,
    edge_end: _I,
    edge_cond: _F,
    child_start: _I,
    child_count: _I,
    move: NDArray[np.int32],
    factor: _F,
    out: _F,
) -> None:
    """``r_c`` at every stop (the root and each prefix with two or more children) for a block
    of ``k`` demonstrations, into ``out`` (shape ``(n_stops, k)``).

    Stop ``s`` has the edges ``edge_start[s]:edge_start[s + 1]``, one per child ``q =
    edge_child[e]``: the chain of only children from ``q`` down to the next stop
    ``edge_end[e]`` (``-1``: a leaf, ``r_c = 1``), with ``pi(q | h)`` in ``edge_cond[e]``::

        r_c(s) = sum_e edge_cond[e] prod_{x in chain(e)} factor[move(x), c] r_c(edge_end[e])

    ``factor[m, c] = 1 + b [m in E(c)]``.  Stops come in prefix order, so every stop's ends
    lie after it; a stop with no edge (a root that is a leaf) has ``r_c = 1``.
    """
    n_stops, k = out.shape
    term = np.empty(k)
    for s in range(n_stops - 1, -1, -1):
        row = out[s]
        first, last = edge_start[s], edge_start[s + 1]
        if first == last:
            row[:] = 1.0
            continue
        row[:] = 0.0
        for e in range(first, last):
            weight = edge_cond[e]
            if weight == 0.0:
                continue
            x = edge_child[e]
            step = factor[move[x]]
            for c in range(k):
                term[c] = weight * step[c]
            while child_count[x] == 1:
                x = child_start[x]
                step = factor[move[x]]
                for c in range(k):
                    term[c] *= step[c]
            end = edge_end[e]
            if end < 0:
                for c in range(k):
                    row[c] += term[c]
            else:
                below = out[end]
                for c in range(k):
                    row[c] += term[c] * below[c]


def _pair_sum(query_mask: _M, member_mask: _M, member_weight: _F, power: _F, out: _F) -> None:
    """``out[i] = sum_j member_weight[j] power[|query(i) & member(j)|]`` (moves shared by query
    ``i`` and member ``j``, each a column of bits), for every query."""
    words, n = query_mask.shape
    k = member_weight.size
    for i in range(n):
        acc = 0.0
        if words == 1:
            mask = query_mask[0, i]
            for j in range(k):
                acc += member_weight[j] * power[_popcount(mask & member_mask[0, j])]
        elif words == 2:
            low, high = query_mask[0, i], query_mask[1, i]
            for j in range(k):
                count = _popcount(low & member_mask[0, j]) + _popcount(high & member_mask[1, j])
                acc += member_weight[j] * power[count]
        else:
            for j in range(k):
                count = 0
                for w in range(words):
                    count += _popcount(query_mask[w, i] & member_mask[w, j])
                acc += member_weight[j] * power[count]
        out[i] = acc


stop_pass = numba.njit(cache=True, nogil=True)(_stop_pass)
pair_sum = numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})(_pair_sum)
