"""Numeric kernels shared by every layer: log-sum-exp variants, shifts, sums, array types.

Private: the engines, context models, objectives and measures import from here;
nothing here imports from tilt.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "FloatArray",
    "IntArray",
    "LINEAR_RANGE",
    "logsumexp",
    "logsumexp_rows",
    "shifted_logsumexp",
    "linear_shift",
    "linear_shift_of",
    "group_logsumexp",
    "column_logsumexp",
    "others_sum",
    "dot",
    "log_expm1",
    "JIT_MIN_SIZE",
    "jit",
    "jit_allowed",
    "tree_reroute",
    "tree_reroute_kept",
    "tree_subtree_sum",
    "tree_path_sum",
    "sweep_dominated_total",
]


LINEAR_RANGE = 600.0
"""Largest spread of log-values summed in the linear domain, shifted by their maximum
(``e^-600`` is far from underflow); tree sums here and the pairwise sums of
:mod:`tilt.context._pairwise` share it."""


IntArray = NDArray[np.int64]


FloatArray = NDArray[np.float64]


def linear_shift(values: FloatArray) -> float | None:
    """The largest value when every finite value lies within ``LINEAR_RANGE`` of it, else ``None``.

    ``None`` also when there is a ``nan`` or ``+inf`` or no finite value (the
    per-group log-domain path handles those).  Then ``exp(values - top)`` is
    exact to rounding: no term underflows.
    """
    return linear_shift_of([values])


def group_logsumexp(values: FloatArray, starts: IntArray, sizes: IntArray) -> FloatArray:
    """``log sum exp`` of ``values`` over the contiguous groups that begin at ``starts``.

    One shift for all groups (the largest value) when every finite value lies
    within ``LINEAR_RANGE`` of it, so that no term underflows; one shift per
    group otherwise.  ``-inf`` for a group of ``-inf`` values.
    """
    top = linear_shift(values)
    if top is not None:
        shifted = np.subtract(values, top)
        np.exp(shifted, out=shifted)
        with np.errstate(divide="ignore"):
            out = np.log(np.add.reduceat(shifted, starts))
        out += top
        return out
    peak = np.maximum.reduceat(values, starts)
    safe = np.where(np.isfinite(peak), peak, 0.0)
    total = np.add.reduceat(np.exp(values - np.repeat(safe, sizes)), starts)
    with np.errstate(divide="ignore"):
        return np.where(np.isfinite(peak), safe + np.log(total), -np.inf)


def dot(a: FloatArray, b: FloatArray) -> float:
    """``a . b`` by numpy's pairwise sum, not BLAS ``ddot``: no thread start-up or spin-wait
    (a threaded BLAS wakes its threads for every long vector), and the same digits
    whatever the BLAS and its number of threads."""
    return float(np.multiply(a, b).sum())


def linear_shift_of(blocks: Sequence[FloatArray]) -> float | None:
    """:func:`linear_shift` of the values of several arrays together."""
    filled = [b for b in blocks if b.size]
    tops = [float(b.max()) for b in filled]  # nan where a block holds one
    if not tops or not all(math.isfinite(t) for t in tops):
        return None
    top = max(tops)
    low = math.inf
    for b in filled:
        least = float(b.min())
        if least == -math.inf:
            least = float(np.min(b, initial=math.inf, where=b != -math.inf))
        low = min(low, least)
    return top if top - low <= LINEAR_RANGE else None


def column_logsumexp(block: FloatArray, top: float | None = None) -> FloatArray:
    """``log sum exp`` down each column of a (n, G) block; ``-inf`` for a column of ``-inf``.

    Shifted by ``top`` when given (:func:`linear_shift`: no term underflows),
    by each column's maximum otherwise (a column holding ``+inf`` or ``nan``
    gives ``+inf`` or ``nan``, which the callers' checks refuse).
    """
    if top is not None:
        shifted = np.subtract(block, top)
        np.exp(shifted, out=shifted)
        total = shifted.sum(axis=0)
        with np.errstate(divide="ignore"):
            out = np.log(total, out=total)
        out += top
        return out
    peak = block.max(axis=0)
    safe = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        total = np.exp(block - safe).sum(axis=0)
        return np.where(np.isfinite(peak), safe + np.log(total), peak)


def others_sum(values: FloatArray) -> FloatArray:
    """Per entry of a (n, G) block, the sum of the other entries of its column.

    The running sum of the entries above plus that of the entries below, each
    added term by term: never a column total minus the entry itself, so an
    entry holding almost all of its column leaves the others exact.
    """
    if values.shape[0] == 2:
        return values[::-1].copy()  # each entry's one sibling
    before = np.zeros_like(values)
    after = np.zeros_like(values)
    np.cumsum(values[:-1], axis=0, out=before[1:])
    after[:-1] = np.cumsum(values[:0:-1], axis=0)[::-1]
    before += after
    return before


def logsumexp(values: FloatArray) -> float:
    """``log sum exp(values)`` of a 1-D array, shifted by its maximum.

    ``-inf`` if ``values`` is empty or all ``-inf``.

    Plain numpy (no scipy import at start-up, none of its array-API conversions).
    """
    if values.size == 0:
        return -np.inf
    peak = float(values.max())
    if not np.isfinite(peak):
        return peak
    return shifted_logsumexp(values, peak)


def shifted_logsumexp(values: FloatArray, top: float) -> float:
    """:func:`logsumexp` given the maximum ``top`` of ``values`` (finite or ``-inf``)."""
    if top == -np.inf:
        return top
    return top + float(np.log(np.exp(values - top).sum()))


def log_expm1(gamma: float) -> float:
    """``log(exp(gamma) - 1)`` without overflow; ``-inf`` at 0."""
    if gamma == 0:
        return -math.inf
    return gamma + math.log(-math.expm1(-gamma))


def logsumexp_rows(values: FloatArray) -> FloatArray:
    """``log sum_j exp(values[i, j])`` for each row ``i``, in place (``values`` is overwritten).

    Plain numpy, faster than ``scipy.special.logsumexp`` on wide blocks; ``-inf``
    rows stay ``-inf``.
    """
    peak = values.max(axis=1)
    safe = np.where(np.isfinite(peak), peak, 0.0)
    values -= safe[:, None]
    np.exp(values, out=values)
    total = values.sum(axis=1)
    with np.errstate(divide="ignore"):
        return np.where(np.isfinite(peak), safe + np.log(total), -np.inf)


# --------------------------------------------------------------------------
# compiled kernels (tilt._compiled, numba), behind one gate

JIT_MIN_SIZE = 1 << 20
"""Smallest input (prefixes, or points of a sweep) that the compiled kernels serve: below it
numpy's per-call overhead is small, and importing numba (about 0.3 s, more on a first
compilation) would cost more than it saves.  ``TILT_JIT_MIN_SIZE`` overrides it (0: always,
as the tests do); ``TILT_NO_JIT=1`` turns the kernels off."""


def _kernels() -> ModuleType | None:
    """:mod:`tilt._compiled`, or ``None`` when numba is absent or ``TILT_NO_JIT`` is set."""
    if os.environ.get("TILT_NO_JIT", "") not in ("", "0"):
        return None
    try:
        from tilt import _compiled
    except ImportError:  # numba is not installed: every caller keeps its numpy path
        return None
    return _compiled


def jit_allowed(size: int) -> bool:
    """Whether compiled kernels may serve an input of ``size`` entries: ``TILT_NO_JIT`` unset
    and ``size`` at least ``TILT_JIT_MIN_SIZE`` (or :data:`JIT_MIN_SIZE`).  Imports nothing:
    a module of kernels of its own (:mod:`tilt.context._kernel_compiled`) asks this, then
    imports itself, falling back to numpy when numba is missing."""
    if os.environ.get("TILT_NO_JIT", "") not in ("", "0"):
        return False
    return size >= _least_size(JIT_MIN_SIZE)


THREADS_MIN_SIZE = 1 << 20
"""Smallest input (state edges) whose measures run on two threads (:func:`threads_allowed`)."""


def threads_allowed(size: int) -> bool:
    """Whether independent measures of an input of ``size`` entries may run on two threads:
    at least two CPUs available to this process, ``size`` at least ``TILT_JIT_MIN_SIZE`` (or
    :data:`THREADS_MIN_SIZE`), and ``TILT_THREADS`` not ``0`` or ``1`` (either keeps one
    thread, as on a one-CPU machine; other values are ignored).  The CPUs are the process's
    affinity, not a container's quota.  The results do not depend on it: each measure is
    computed by the same operations either way."""
    setting = os.environ.get("TILT_THREADS", "").strip()
    if setting.isdigit() and int(setting) <= 1:
        return False
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cpus or 1) >= 2 and size >= _least_size(THREADS_MIN_SIZE)


_A = TypeVar("_A")
_B = TypeVar("_B")


def both(
    size: int, first: Callable[[], _A], second: Callable[[], _B], name: str = "tilt-beside"
) -> tuple[_A, _B]:
    """``(first(), second())``, ``second`` on a thread named ``name`` beside ``first`` when
    :func:`threads_allowed` for ``size`` (the compiled passes and numpy's loops release the
    GIL); else one after the other.  The same values either way, each computed by the same
    operations."""
    if not threads_allowed(size):
        return first(), second()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=name) as pool:
        later = pool.submit(second)
        return first(), later.result()


def _least_size(default: int) -> int:
    """``TILT_JIT_MIN_SIZE`` when it is a whole number, else ``default``."""
    limit = os.environ.get("TILT_JIT_MIN_SIZE", "")
    return int(limit) if limit.strip().isdigit() else default


def jit(size: int) -> bool:
    """Whether the compiled kernels serve an input of ``size`` entries (importing them then)."""
    return jit_allowed(size) and _kernels() is not None


def _compiled() -> ModuleType:
    kernels = _kernels()
    if kernels is None:  # pragma: no cover - callers ask jit() first
        raise RuntimeError("the compiled kernels are not available (numba, TILT_NO_JIT)")
    return kernels


def tree_reroute(
    child_start: IntArray,
    child_count: IntArray,
    correct_leaf: FloatArray,
    units: NDArray[np.int32],
    n_units: int,
    cond: FloatArray | None = None,
    total_leaf: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray]:
    """``(flow, bonus)`` per unit of the OOD pass (:mod:`tilt.measures.ood`), compiled.

    ``correct_leaf`` (one per rollout) is each correct rollout's mass, 0 elsewhere;
    ``units`` the unit of each prefix ``p > 0`` (shape ``(n_prefixes - 1,)``).
    Within a sibling group the moves weigh their conditionals ``cond``, or, given
    ``total_leaf`` (every rollout's mass, any common scale), the mass below each.
    """
    empty = np.zeros(0)
    flow, bonus = _compiled().reroute_pass(
        child_start,
        child_count,
        correct_leaf,
        units,
        n_units,
        empty if cond is None else cond,
        empty if total_leaf is None else total_leaf,
    )
    return flow, bonus


def tree_reroute_kept(
    child_count: NDArray[np.uint8] | IntArray,
    prefixes: NDArray[np.int32],
    correct_leaf: FloatArray,
    units: NDArray[np.int16] | NDArray[np.int32],
    n_units: int,
    weight: FloatArray,
    weight_by_prefix: bool,
) -> tuple[FloatArray, FloatArray]:
    """:func:`tree_reroute` over a tree given by its child counts only, its children blocks
    in the order of their parents (``tilt.measures.ood``'s kept ``prefixes``), compiled.
    ``units`` per original prefix but the root; ``weight`` per original prefix when
    ``weight_by_prefix``, else per kept prefix."""
    flow, bonus = _compiled().reroute_pass_kept(
        child_count, prefixes, correct_leaf, units, n_units, weight, weight_by_prefix
    )
    return flow, bonus


def tree_subtree_sum(child_start: IntArray, child_count: IntArray, leaf: FloatArray) -> FloatArray:
    """Per prefix, the sum of ``leaf`` (one value per rollout) below it, compiled."""
    out: FloatArray = _compiled().subtree_sum(child_start, child_count, leaf)
    return out


def tree_path_sum(parent: NDArray[np.int32], values: FloatArray) -> FloatArray:
    """``out[p] = out[parent[p]] + values[p]`` down the tree, compiled."""
    out = np.empty(values.size)  # numpy's allocation: huge pages, cheaper to fill than numba's
    _compiled().path_sum(parent, values, out)
    return out


def sweep_dominated_total(
    x_rank: IntArray, d_rank: IntArray, weight: FloatArray, x_order: IntArray, n_d: int
) -> float:
    """``sum of w[i] w[j]`` over the pairs with ``x_rank[j] < x_rank[i]`` and
    ``d_rank[j] < d_rank[i]`` (``x_order`` sorts ``x_rank``; ``n_d`` classes of ``d``),
    compiled: a Fenwick tree over ``d`` swept in ``x`` order."""
    return float(_compiled().dominated_total(x_rank, d_rank, weight, x_order, n_d))
