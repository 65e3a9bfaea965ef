"""Compiled passes (numba) of the DP engine over the state DAG, layer by layer.

Private to :mod:`tilt.engines.dp.passes` and :mod:`tilt.engines.dp.measures`, which import
it lazily behind :func:`tilt._numerics.jit` (the project's gate: numba installed,
``TILT_NO_JIT`` unset, an input of at least ``JIT_MIN_SIZE`` state edges).  Each kernel
stands in for a numpy path of those modules, kept as it was, and gives the same values
to rounding (``tests/engines/dp/test_compiled_passes.py`` checks both to 1e-12, on
logits hundreds of nats apart too): the same linear-domain rule (one shift per layer
when the weights and the values below span at most ``SAFE_RANGE`` nats, the exponential
taken per state) and the same log-space fallback (a shift per state) as the numpy
passes, but one loop over the edges instead of a dozen numpy calls per layer.

States are numbered layer by layer and every edge goes from a layer to a later one, so
a backward pass visits the layers last to first and a forward pass first to last.
"""

from __future__ import annotations

import ctypes
import math

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.core.extending import intrinsic
from numpy.typing import NDArray

__all__ = [
    "NUMPY_LOOPS",
    "backward_exact",
    "forward_exact",
    "backward_logsumexp",
    "forward_logsumexp",
    "head_spans",
    "backward_max",
    "backward_mean",
    "backward_spread",
    "centred_dot",
    "correct_cond",
    "tilted_cond",
    "ratio_cond",
    "softmax_exact",
    "edge_form",
    "move_marginals",
    "chain_moments",
    "edge_flow",
    "node_layers",
    "state_edges",
]

_F = NDArray[np.float64]
_I = NDArray[np.int64]
_B = NDArray[np.bool_]

# division by zero gives inf or nan as in numpy (the callers' rules take over), not an error
_jit = numba.njit(cache=True, nogil=True, error_model="numpy")


def _add_compensated(total: float, carry: float, x: float) -> tuple[float, float]:
    """Neumaier's compensated sum: ``(total + x, carry)`` with the lost low bits in ``carry``
    (a long sum then has the error of one rounding, as numpy's pairwise sum nearly has)."""
    new = total + x
    if abs(total) >= abs(x):
        carry += (total - new) + x
    else:
        carry += (x - new) + total
    return new, carry


_add = _jit(_add_compensated)


class _UFuncHead(ctypes.Structure):
    """The head of numpy's ``PyUFuncObject`` (``numpy/ufuncobject.h``): its loops and their
    data, one per type signature."""

    _fields_ = [
        ("ob_refcnt", ctypes.c_ssize_t),
        ("ob_type", ctypes.c_void_p),
        ("nin", ctypes.c_int),
        ("nout", ctypes.c_int),
        ("nargs", ctypes.c_int),
        ("identity", ctypes.c_int),
        ("functions", ctypes.POINTER(ctypes.c_void_p)),
        ("data", ctypes.POINTER(ctypes.c_void_p)),
        ("ntypes", ctypes.c_int),
    ]


_LOOP = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


def _numpy_loop(ufunc: np.ufunc) -> tuple[int, int]:
    """``(function, data)`` addresses of ``ufunc``'s float64 loop: the code ``ufunc`` runs on a
    contiguous float64 array, so the same bits."""
    head = _UFuncHead.from_address(id(ufunc))
    if (head.nin, head.nout, head.ntypes) != (ufunc.nin, ufunc.nout, ufunc.ntypes):
        raise RuntimeError(f"numpy.{ufunc.__name__}: an unknown ufunc layout")
    i = ufunc.types.index("d->d")
    return int(head.functions[i] or 0), int(head.data[i] or 0)


def _numpy_loops() -> NDArray[np.intp] | None:
    """``[exp, exp data, log, log data]``: numpy's own loops (:func:`_numpy_loop`), checked on
    values where two ``exp`` implementations differ; ``None`` if they cannot be found or do
    not give numpy's bits (then the exact passes are numpy's own)."""
    try:
        loops = [*_numpy_loop(np.exp), *_numpy_loop(np.log)]
    except (RuntimeError, ValueError):
        return None
    if not loops[0] or not loops[2]:
        return None
    x = np.linspace(-745.0, 3.0, 4099)
    for (fn, data), arg in (((loops[0], loops[1]), x), ((loops[2], loops[3]), np.exp(x) + 1e-3)):
        out = np.empty_like(arg)
        ptrs = (ctypes.c_void_p * 2)(arg.ctypes.data, out.ctypes.data)
        dims, steps = (ctypes.c_ssize_t * 1)(arg.size), (ctypes.c_ssize_t * 2)(8, 8)
        _LOOP(fn)(ctypes.addressof(ptrs), ctypes.addressof(dims), ctypes.addressof(steps), data)
        expected = np.exp(arg) if fn == loops[0] else np.log(arg)
        if not np.array_equal(out, expected):
            return None
    return np.array(loops, dtype=np.intp)


NUMPY_LOOPS = _numpy_loops()
"""numpy's float64 ``exp`` and ``log`` loops for :func:`backward_exact` (``None``: unavailable)."""


@intrinsic
def _call_loop(typingctx, fn, args, dims, steps, data):  # type: ignore[no-untyped-def]
    """Call the ufunc loop at address ``fn``: ``void (char **, npy_intp *, npy_intp *, void *)``."""
    sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, llargs):  # type: ignore[no-untyped-def]
        byte = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [byte, byte, byte, byte])
        target = builder.inttoptr(llargs[0], fnty.as_pointer())
        builder.call(target, [builder.inttoptr(a, byte) for a in llargs[1:]])
        return context.get_dummy_value()

    return sig, codegen


def _apply(
    loops: NDArray[np.intp], which: int, x: _F, out: _F, n: int, frame: NDArray[np.intp]
) -> None:
    """``out[:n] = f(x[:n])`` by numpy's loop ``which`` (0: exp, 1: log)."""
    frame[0] = x.ctypes.data
    frame[1] = out.ctypes.data
    frame[2] = n
    frame[3] = 8
    frame[4] = 8
    base = frame.ctypes.data
    _call_loop(loops[2 * which], base, base + 16, base + 24, loops[2 * which + 1])  # type: ignore[call-arg]


_numpy_apply = numba.njit(cache=True, nogil=True, error_model="numpy")(_apply)


def _pairwise(x: _F, first: int, n: int) -> float:
    """numpy's pairwise sum of ``x[first:first + n]`` for ``n <= 128`` (``DOUBLE_pairwise_sum``:
    in order below 8, else eight running sums combined as a tree, then the rest in order)."""
    if n < 8:
        res = -0.0
        for i in range(first, first + n):
            res += x[i]
        return res
    r0, r1, r2, r3 = x[first], x[first + 1], x[first + 2], x[first + 3]
    r4, r5, r6, r7 = x[first + 4], x[first + 5], x[first + 6], x[first + 7]
    i = 8
    while i < n - n % 8:
        j = first + i
        r0 += x[j]
        r1 += x[j + 1]
        r2 += x[j + 2]
        r3 += x[j + 3]
        r4 += x[j + 4]
        r5 += x[j + 5]
        r6 += x[j + 6]
        r7 += x[j + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += x[first + i]
        i += 1
    return res


_numpy_pairwise = numba.njit(cache=True, nogil=True, error_model="numpy")(_pairwise)


def _backward_exact(
    layer_start: _I,
    out_start: _I,
    edge_head: _I,
    entry_layer: _I,
    entry_lo: _I,
    entry_hi: _I,
    prob: _F,
    shift: _F,
    unsafe_tail: _B,
    safe_range: float,
    out: _F,
    entry: int,
    loops: NDArray[np.intp],
) -> int:
    """The numpy backward pass (:func:`tilt.engines.dp.passes._backward_layers`, ``discount``
    1) with its bits, from layer entry ``entry`` down: the same shift, numpy's own ``exp``
    and ``log`` loops on the same contiguous values, the products and ``reduceat``'s sums
    (the first term plus numpy's pairwise sum of the rest) in numpy's order.  Returns the
    first entry it leaves to numpy (a log-space layer, a value ``nan`` or ``inf``, a state
    of more than 129 edges), or ``-1`` when done."""
    frame = np.empty(5, dtype=np.intp)
    shifted = np.empty(0)
    scaled = np.empty(0)
    terms = np.empty(0)
    totals = np.empty(0)
    logs = np.empty(0)
    for i in range(entry, -1, -1):
        layer = entry_layer[i]
        s0, s1 = layer_start[layer], layer_start[layer + 1]
        e0, e1 = out_start[s0], out_start[s1]
        lo, hi = entry_lo[i], entry_hi[i]
        if unsafe_tail[layer]:
            return i
        narrow = hi - lo <= 4 * (e1 - e0)
        m = hi - lo if narrow else e1 - e0
        top, low = -np.inf, np.inf
        for j in range(m):
            v = out[lo + j] if narrow else out[edge_head[e0 + j]]
            if v != v or v == np.inf:
                return i
            if v > top:
                top = v
            if v != -np.inf and v < low:
                low = v
        n_states = 0
        for s in range(s0, s1):
            if out_start[s + 1] > out_start[s]:
                n_states += 1
                if out_start[s + 1] - out_start[s] > 129:
                    return i
        if top == -np.inf:
            for s in range(s0, s1):
                if out_start[s + 1] > out_start[s]:
                    out[s] = -np.inf
            continue
        if not top - low <= safe_range:
            return i
        if shifted.size < m:
            shifted = np.empty(2 * m)
            scaled = np.empty(2 * m)
        for j in range(m):
            v = out[lo + j] if narrow else out[edge_head[e0 + j]]
            shifted[j] = v - top
        _numpy_apply(loops, 0, shifted, scaled, m, frame)
        if totals.size < n_states:
            totals = np.empty(2 * n_states)
            logs = np.empty(2 * n_states)
        k = 0
        for s in range(s0, s1):
            a, b = out_start[s], out_start[s + 1]
            if b == a:
                continue
            if terms.size < b - a:
                terms = np.empty(256)
            for e in range(a, b):
                terms[e - a] = prob[e] * (scaled[edge_head[e] - lo] if narrow else scaled[e - e0])
            totals[k] = terms[0] + _numpy_pairwise(terms, 1, b - a - 1) if b - a > 1 else terms[0]
            k += 1
        _numpy_apply(loops, 1, totals, logs, n_states, frame)
        offset = top + shift[layer]
        k = 0
        for s in range(s0, s1):
            if out_start[s + 1] > out_start[s]:
                out[s] = logs[k] + offset
                k += 1
    return -1


def _forward_exact(
    layer_start: _I,
    edge_tail: _I,
    edge_head: _I,
    prob: _F,
    safe_range: float,
    out: _F,
    loops: NDArray[np.intp],
) -> bool:
    """The numpy forward pass (:func:`tilt.engines.dp.passes.forward_logsumexp`, every layer
    in the linear domain) with its bits: the edges entering each layer grouped by head in
    edge order (a counting sort: the order of the stable ``argsort``), the same shift,
    numpy's own ``exp`` and ``log`` loops, ``reduceat``'s sums in numpy's order.  False
    (``out`` then partly written) when a layer needs numpy's log-space path (values ``nan``
    or ``inf``, spread beyond ``safe_range``) or a state has more than 129 in-edges."""
    n = out.size
    in_start = np.zeros(n + 1, dtype=np.int64)
    for e in range(edge_head.size):
        in_start[edge_head[e] + 1] += 1
    for s in range(n):
        if in_start[s + 1] > 129:
            return False
        in_start[s + 1] += in_start[s]
    fill = in_start[:-1].copy()
    order = np.empty(edge_head.size, dtype=np.int64)
    for e in range(edge_head.size):
        h = edge_head[e]
        order[fill[h]] = e
        fill[h] += 1
    frame = np.empty(5, dtype=np.intp)
    shifted = np.empty(0)
    scaled = np.empty(0)
    terms = np.empty(256)
    totals = np.empty(0)
    logs = np.empty(0)
    for layer in range(1, layer_start.size - 1):
        h0, h1 = layer_start[layer], layer_start[layer + 1]
        i0, i1 = in_start[h0], in_start[h1]
        if i1 == i0:
            continue
        lo, hi = n, -1
        for i in range(i0, i1):
            t = edge_tail[order[i]]
            lo = min(lo, t)
            hi = max(hi, t)
        hi += 1
        narrow = hi - lo <= 4 * (i1 - i0)
        m = hi - lo if narrow else i1 - i0
        top, low = -np.inf, np.inf
        for j in range(m):
            v = out[lo + j] if narrow else out[edge_tail[order[i0 + j]]]
            if v != v or v == np.inf:
                return False
            if v > top:
                top = v
            if v != -np.inf and v < low:
                low = v
        if top == -np.inf:
            for h in range(h0, h1):
                if in_start[h + 1] > in_start[h]:
                    out[h] = -np.inf
            continue
        if not top - low <= safe_range:
            return False
        if shifted.size < m:
            shifted = np.empty(2 * m)
            scaled = np.empty(2 * m)
        for j in range(m):
            v = out[lo + j] if narrow else out[edge_tail[order[i0 + j]]]
            shifted[j] = v - top
        _numpy_apply(loops, 0, shifted, scaled, m, frame)
        if totals.size < h1 - h0:
            totals = np.empty(2 * (h1 - h0))
            logs = np.empty(2 * (h1 - h0))
        k = 0
        for h in range(h0, h1):
            a, b = in_start[h], in_start[h + 1]
            if b == a:
                continue
            for i in range(a, b):
                e = order[i]
                terms[i - a] = prob[e] * (scaled[edge_tail[e] - lo] if narrow else scaled[i - i0])
            totals[k] = terms[0] + _numpy_pairwise(terms, 1, b - a - 1) if b - a > 1 else terms[0]
            k += 1
        _numpy_apply(loops, 1, totals, logs, k, frame)
        offset = top + 0.0
        k = 0
        for h in range(h0, h1):
            if in_start[h + 1] > in_start[h]:
                out[h] = logs[k] + offset
                k += 1
    return True


def _state_logsumexp(
    e0: int, e1: int, edge_head: _I, log_weight: _F, power: float, below: _F, discount: float
) -> float:
    """``log sum over e0:e1 of exp(power w_e + discount B(head))``, shifted by its maximum."""
    peak = -np.inf
    for e in range(e0, e1):
        v = below[edge_head[e]]
        if discount != 1.0 and v != -np.inf:
            v = discount * v
        x = power * log_weight[e] + v
        if x > peak or x != x:
            peak = x
            if x != x:
                return x
    if peak == -np.inf or peak == np.inf:
        return peak
    total = 0.0
    for e in range(e0, e1):
        v = below[edge_head[e]]
        if discount != 1.0 and v != -np.inf:
            v = discount * v
        total += math.exp(power * log_weight[e] + v - peak)
    return peak + math.log(total)


_logsumexp_state = _jit(_state_logsumexp)


def _layer_rule(
    layer: int,
    e0: int,
    e1: int,
    edge_head: _I,
    head_lo: _I,
    head_hi: _I,
    log_weight: _F,
    unsafe_tail: _B,
    power: float,
    discount: float,
    safe_range: float,
    square: bool,
    out: _F,
    scratch: _F,
) -> tuple[int, float, bool]:
    """How :func:`backward_logsumexp` sums the layer of edges ``e0:e1``: ``(mode, top,
    narrow)``, ``mode`` 0 in the linear domain shifted by ``top`` (with ``narrow``,
    ``scratch[h - lo] = exp(discount out[h] - top)`` over the heads' span ``lo:hi + 1``,
    the span when it is at most four times the edges: one layer on a lattice), 1 in log
    space state by state (values ``nan`` or ``inf``, a spread beyond ``safe_range``, an
    unsafe layer, or with ``square`` a finite ``w < -safe_range / power``), 2 nothing
    below (``-inf``)."""
    lo, hi = head_lo[layer], head_hi[layer]
    narrow = hi - lo + 1 <= 4 * (e1 - e0)
    top, low = -np.inf, np.inf
    bad = False
    for i in range(lo, hi + 1) if narrow else range(e0, e1):
        v = out[i] if narrow else out[edge_head[i]]
        if discount != 1.0 and v != -np.inf:
            v = discount * v
        if v != v or v == np.inf:
            bad = True
        elif v != -np.inf:
            top, low = max(top, v), min(low, v)
    linear = not unsafe_tail[layer] and not bad and (top == -np.inf or top - low <= safe_range)
    if square and linear:
        floor = -safe_range / power
        for e in range(e0, e1):
            w = log_weight[e]
            if w < floor and w != -np.inf:
                linear = False
                break
    if not linear:
        return 1, top, narrow
    if top == -np.inf:
        return 2, top, narrow
    if narrow:  # the exponential per state of the span
        for h in range(lo, hi + 1):
            v = out[h]
            if discount != 1.0 and v != -np.inf:
                v = discount * v
            scratch[h - lo] = math.exp(v - top)
    return 0, top, narrow


_rule_of_layer = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")(
    _layer_rule
)


def _backward_logsumexp(
    layer_start: _I,
    out_start: _I,
    edge_head: _I,
    head_lo: _I,
    head_hi: _I,
    prob: _F,
    log_weight: _F,
    shift: _F,
    unsafe_tail: _B,
    power: float,
    discount: float,
    safe_range: float,
    out: _F,
    square: bool = False,
) -> None:
    """``out[s] = log sum_e exp(power w_e + discount out[head e])`` over the internal states,
    layers last to first (``out`` holds the leaf values, ``-inf`` elsewhere).  The heads of
    the edges leaving layer ``l`` lie in ``head_lo[l]:head_hi[l] + 1`` (:func:`head_spans`):
    one shift for the layer when their values span at most ``safe_range`` nats
    (:func:`_layer_rule`).

    ``square``: the weights squared on the fly, ``prob ** 2`` (``power`` is then twice the
    weights' own, ``shift`` must be 0) and a layer with a finite ``w < -safe_range / power``
    summed in log space, as :meth:`tilt.engines.dp.passes.LinearWeights.squared` flags it."""
    n_layers = layer_start.size - 1
    scratch = np.empty(0)
    for layer in range(n_layers - 1, -1, -1):
        s0, s1 = layer_start[layer], layer_start[layer + 1]
        e0, e1 = out_start[s0], out_start[s1]
        if e0 == e1:
            continue
        lo = head_lo[layer]
        span = head_hi[layer] - lo + 1
        if span <= 4 * (e1 - e0) and scratch.size < span:
            scratch = np.empty(span)
        mode, top, narrow = _rule_of_layer(
            layer, e0, e1, edge_head, head_lo, head_hi, log_weight, unsafe_tail, power,
            discount, safe_range, square, out, scratch,
        )  # fmt: skip
        if mode == 1:
            for s in range(s0, s1):
                if out_start[s + 1] > out_start[s]:
                    out[s] = _logsumexp_state(
                        out_start[s], out_start[s + 1], edge_head, log_weight, power, out, discount
                    )
            continue
        if mode == 2:
            for s in range(s0, s1):
                if out_start[s + 1] > out_start[s]:
                    out[s] = -np.inf
            continue
        offset = top + shift[layer]
        for s in range(s0, s1):
            a, b = out_start[s], out_start[s + 1]
            if b == a:
                continue
            total = 0.0
            for e in range(a, b):
                p = prob[e] * prob[e] if square else prob[e]
                if narrow:
                    total += p * scratch[edge_head[e] - lo]
                else:
                    v = out[edge_head[e]]
                    if discount != 1.0 and v != -np.inf:
                        v = discount * v
                    total += p * math.exp(v - top)
            out[s] = math.log(total) + offset if total > 0 else -np.inf


def _head_spans(layer_start: _I, out_start: _I, edge_head: _I) -> tuple[_I, _I]:
    """``(lo, hi)`` per layer: the least and largest head of the edges leaving it (``hi < lo``
    for a layer without edges)."""
    n_layers = layer_start.size - 1
    lo = np.zeros(n_layers, dtype=np.int64)
    hi = np.full(n_layers, -1, dtype=np.int64)
    for layer in range(n_layers):
        e0, e1 = out_start[layer_start[layer]], out_start[layer_start[layer + 1]]
        if e0 == e1:
            continue
        least, most = edge_head[e0], edge_head[e0]
        for e in range(e0 + 1, e1):
            least, most = min(least, edge_head[e]), max(most, edge_head[e])
        lo[layer], hi[layer] = least, most
    return lo, hi


def _merge(peak: _F, total: _F, h: int, shift: float, part: float) -> None:
    """Add ``exp(shift) part`` to the sum ``exp(peak[h]) total[h]`` (kept shifted by its
    largest shift)."""
    if part == 0.0:
        return
    if peak[h] == -np.inf:
        peak[h], total[h] = shift, part
    elif shift > peak[h]:
        total[h] = total[h] * math.exp(peak[h] - shift) + part
        peak[h] = shift
    else:
        total[h] += part * math.exp(shift - peak[h])


_merge_into = _jit(_merge)


def _forward_logsumexp(
    layer_start: _I,
    out_start: _I,
    edge_head: _I,
    head_lo: _I,
    head_hi: _I,
    prob: _F,
    log_weight: _F,
    unsafe: _B,
    power: float,
    safe_range: float,
    out: _F,
) -> None:
    """``out[h] = log sum over the edges into h of exp(power w_e + out[tail e])``, pushed
    layer by layer along the edges (sorted by tail: one sequential read); ``out`` is 0 at
    the source.  A layer whose values span at most ``safe_range`` nats (and whose weights are
    safe: not ``unsafe``) adds ``prob_e exp(out[tail] - M)`` with one shift ``M`` and one
    exponential per state; the sums that reach a head from several layers are merged with
    one exponential per head and layer.  Other layers add edge by edge in log space."""
    n_states = out.size
    n_layers = layer_start.size - 1
    peak = np.full(n_states, -np.inf)
    total = np.zeros(n_states)
    part = np.zeros(0)
    peak[0], total[0] = 0.0, 1.0
    for layer in range(n_layers):
        s0, s1 = layer_start[layer], layer_start[layer + 1]
        top, low = -np.inf, np.inf
        bad = False
        for s in range(s0, s1):
            v = peak[s] + math.log(total[s]) if total[s] > 0 else -np.inf
            out[s] = v
            if v != v or v == np.inf:
                bad = True
            elif v != -np.inf:
                top, low = max(top, v), min(low, v)
        e0, e1 = out_start[s0], out_start[s1]
        if e0 == e1 or top == -np.inf:
            continue
        lo, hi = head_lo[layer], head_hi[layer]
        narrow = hi - lo + 1 <= 4 * (e1 - e0)
        if not unsafe[layer] and not bad and top - low <= safe_range and narrow:
            if part.size < hi - lo + 1:
                part = np.zeros(hi - lo + 1)
            for s in range(s0, s1):
                scaled = math.exp(out[s] - top)
                for e in range(out_start[s], out_start[s + 1]):
                    part[edge_head[e] - lo] += prob[e] * scaled
            for h in range(lo, hi + 1):
                _merge_into(peak, total, h, top, part[h - lo])
                part[h - lo] = 0.0
            continue
        for s in range(s0, s1):
            if out[s] == -np.inf:
                continue
            for e in range(out_start[s], out_start[s + 1]):
                x = power * log_weight[e] + out[s]
                if x == -np.inf or x != x:
                    continue
                _merge_into(peak, total, edge_head[e], x, 1.0)


def _backward_max(out_start: _I, edge_head: _I, edge_value: _F, out: _F) -> None:
    """Max-plus: ``out[s] = max_e (v_e + out[head e])`` over the internal states, last to first
    (``nan`` edge values, and ``inf + -inf``, count as ``-inf``)."""
    n = out_start.size - 1
    for s in range(n - 1, -1, -1):
        a, b = out_start[s], out_start[s + 1]
        if b == a:
            continue
        best = -np.inf
        for e in range(a, b):
            x = edge_value[e] + out[edge_head[e]]
            if x > best:  # nan never is
                best = x
        out[s] = best


def _backward_spread(out_start: _I, edge_head: _I, a: _F, b: _F, leaf: _F) -> tuple[float, float]:
    """``(max, -min)`` over the paths from state 0 of ``sum of (a_e - b_e) + leaf``: the two
    max-plus passes of ``d = a - b`` and ``-d`` at once (``nan`` differences count as
    ``-inf`` in both), with the additions of :func:`_backward_max` (the same bits)."""
    n = out_start.size - 1
    high = leaf.copy()
    low = leaf.copy()
    for s in range(n - 1, -1, -1):
        first, last = out_start[s], out_start[s + 1]
        if last == first:
            continue
        best, worst = -np.inf, -np.inf
        for e in range(first, last):
            d = a[e] - b[e]
            if d != d:
                continue
            h = edge_head[e]
            x = d + high[h]
            if x > best:
                best = x
            y = -d + low[h]
            if y > worst:
                worst = y
        high[s], low[s] = best, worst
    return high[0], low[0]


def _backward_mean(out_start: _I, edge_head: _I, prob: _F, x: _F) -> _F:
    """``E[X | s]``, ``X`` the sum of ``x_e`` down to the leaf, under the chain ``prob``."""
    n = out_start.size - 1
    out = np.zeros(n)
    for s in range(n - 1, -1, -1):
        a, b = out_start[s], out_start[s + 1]
        if b == a:
            continue
        acc = 0.0
        for e in range(a, b):
            acc += prob[e] * (x[e] + out[edge_head[e]])
        out[s] = acc
    return out


def _centred_dot(
    out_start: _I, edge_head: _I, prob: _F, a: _F, b: _F, support: _B, weight: _F
) -> float:
    """``sum_e weight_e (y_e + E[Y | head] - E[Y | tail])`` under the chain ``prob``, with
    ``y = a - b`` on ``support`` and 0 elsewhere (no edge-sized temporary)."""
    n = out_start.size - 1
    mean = np.zeros(n)
    total, carry = 0.0, 0.0
    for s in range(n - 1, -1, -1):
        first, last = out_start[s], out_start[s + 1]
        if last == first:
            continue
        acc = 0.0
        for e in range(first, last):
            y = a[e] - b[e] if support[e] else 0.0
            acc += prob[e] * (y + mean[edge_head[e]])
        mean[s] = acc
        part = 0.0
        for e in range(first, last):
            y = a[e] - b[e] if support[e] else 0.0
            part += weight[e] * (y + mean[edge_head[e]] - acc)
        total, carry = _add(total, carry, part)
    return total + carry


def _chain_moments(
    layer_start: _I, out_start: _I, edge_head: _I, prob: _F, reach: _F, x: _F
) -> tuple[_B, _F, float, bool, float]:
    """``(support, scaled, var, branching, bound)`` of the chain ``prob`` with reach ``reach``
    (linear) and ``X`` the sum of ``x`` on the edges of positive flow ``F``: ``scaled = F dx``
    with ``dx`` the centred increments, ``var = sum F dx^2``, whether some state has two
    edges of positive flow, and the sum over layers of the largest ``|x|`` (as
    :func:`tilt.engines.dp.measures._chain`, in two passes)."""
    n = out_start.size - 1
    support = np.empty(prob.size, dtype=np.bool_)
    scaled = np.empty(prob.size)
    mean = np.zeros(n)
    for s in range(n - 1, -1, -1):
        acc = 0.0
        for e in range(out_start[s], out_start[s + 1]):
            live = reach[s] * prob[e] > 0
            support[e] = live
            acc += prob[e] * ((x[e] if live else 0.0) + mean[edge_head[e]])
        if out_start[s + 1] > out_start[s]:
            mean[s] = acc
    var, carry = 0.0, 0.0
    branching = False
    for s in range(n):
        count = 0
        part = 0.0
        for e in range(out_start[s], out_start[s + 1]):
            dx = (x[e] if support[e] else 0.0) + mean[edge_head[e]] - mean[s]
            value = (reach[s] * prob[e]) * dx
            scaled[e] = value
            part += value * dx
            count += support[e]
        branching = branching or count >= 2
        var, carry = _add(var, carry, part)
    bound = 0.0
    for layer in range(layer_start.size - 1):
        e0, e1 = out_start[layer_start[layer]], out_start[layer_start[layer + 1]]
        if e1 == e0:
            continue
        most = abs(x[e0]) if support[e0] else 0.0
        for e in range(e0 + 1, e1):
            most = max(most, abs(x[e]) if support[e] else 0.0)
        bound += most
    return support, scaled, var + carry, branching, bound


def _correct_cond(out_start: _I, edge_head: _I, log_cond: _F, below: _F) -> _F:
    """``log_cond[e] + below[head] - below[tail]`` (``log_cond`` where ``below[tail] = -inf``,
    ``-inf`` for ``nan``): the same operations in the same order as numpy, so the same bits."""
    n = out_start.size - 1
    out = np.empty(log_cond.size)
    for s in range(n):
        norm = below[s]
        for e in range(out_start[s], out_start[s + 1]):
            if norm == -np.inf:
                out[e] = log_cond[e]
                continue
            x = log_cond[e] + below[edge_head[e]] - norm
            out[e] = -np.inf if x != x else x
    return out


def _ratio_cond(out_start: _I, edge_head: _I, below: _F, uniform: _F) -> _F:
    """``below[head] - below[tail]`` per edge, ``uniform[tail]`` where ``below[tail] = -inf``,
    ``-inf`` for ``nan`` (:func:`tilt.engines.dp.measures._ratio_conditionals`, the same
    operations, so the same bits)."""
    n = out_start.size - 1
    out = np.empty(edge_head.size)
    for s in range(n):
        norm = below[s]
        for e in range(out_start[s], out_start[s + 1]):
            x = uniform[s] if norm == -np.inf else below[edge_head[e]] - norm
            out[e] = -np.inf if x != x else x
    return out


def _tilted_cond(out_start: _I, edge_head: _I, weight: _F, back: _F, fallback: _F) -> _F:
    """``(weight[e] + back[head]) - back[tail]``, ``fallback[e]`` where ``back[tail] = -inf``,
    ``-inf`` for ``nan``: :func:`tilt.engines.dp.passes.tilted_conditionals` (``discount`` 1)
    by the same operations in the same order, so the same bits."""
    n = out_start.size - 1
    out = np.empty(weight.size)
    for s in range(n):
        norm = back[s]
        for e in range(out_start[s], out_start[s + 1]):
            x = fallback[e] if norm == -np.inf else weight[e] + back[edge_head[e]] - norm
            out[e] = -np.inf if x != x else x
    return out


def _softmax_exact(
    out_start: _I,
    values: _F,
    index: _I,
    linear_range: float,
    loops: NDArray[np.intp],
    out: _F,
    prob: _F,
) -> bool:
    """:func:`tilt.engines.dp.passes.group_normalise` of ``values[index]`` (of ``values`` when
    ``index`` is empty) with its bits, on its one-shift path: ``out[e] = w_e - (top + log
    sum over the state's edges of exp(w - top))``, numpy's own ``exp`` and ``log`` loops,
    ``reduceat``'s sums in numpy's order; ``prob = exp(out)`` by the same ``exp`` (numpy's
    ``exp`` of the result).  False (nothing usable written) where numpy takes another path
    (a value ``-inf``, ``inf`` or ``nan``, a spread beyond ``linear_range``) or a state has
    more than 129 edges."""
    n = out_start.size - 1
    n_edges = out.size
    gathered = index.size > 0
    top, low = -np.inf, np.inf
    for e in range(n_edges):
        v = values[index[e]] if gathered else values[e]
        if v != v:
            return False
        top = max(top, v)
        low = min(low, v)
    if low == -np.inf or not top - low <= linear_range:
        return False
    n_groups = 0
    for s in range(n):
        if out_start[s + 1] - out_start[s] > 129:
            return False
        n_groups += out_start[s + 1] > out_start[s]
    frame = np.empty(5, dtype=np.intp)
    for e in range(n_edges):
        out[e] = (values[index[e]] if gathered else values[e]) - top
    _numpy_apply(loops, 0, out, out, n_edges, frame)
    totals = np.empty(n_groups)
    k = 0
    for s in range(n):
        a, b = out_start[s], out_start[s + 1]
        if b > a:
            totals[k] = out[a] + _numpy_pairwise(out, a + 1, b - a - 1) if b - a > 1 else out[a]
            k += 1
    _numpy_apply(loops, 1, totals, totals, n_groups, frame)
    k = 0
    for s in range(n):
        a, b = out_start[s], out_start[s + 1]
        if b == a:
            continue
        norm = top + totals[k]
        k += 1
        for e in range(a, b):
            x = (values[index[e]] if gathered else values[e]) - norm
            out[e] = x
            prob[e] = x
    _numpy_apply(loops, 0, prob, prob, n_edges, frame)
    return True


def _logaddexp(x: float, y: float) -> float:
    """numpy's ``logaddexp`` of two floats (``npy_logaddexp``: the same branches, the C
    library's ``exp`` and ``log1p``, as numpy's loop calls them)."""
    if x == y:
        return x + 0.693147180559945309417232121458176568  # log(2)
    tmp = x - y
    if tmp > 0:
        return x + math.log1p(math.exp(-tmp))
    if tmp <= 0:
        return y + math.log1p(math.exp(tmp))
    return tmp  # a nan


_logaddexp_pair = _jit(_logaddexp)


def _edge_form(
    out_start: _I,
    edge_move: _I,
    marginals: _F,
    log_cond: _F,
    log_c: float,
    gamma: float,
    move_weight: _F,
    log_boost_norm: _F,
    step: _F,
    none_weight: _F,
) -> bool:
    """:func:`tilt.engines.dp.context.edge_form` with its bits, per state in one pass: ``m``
    gathered, ``log Z = logaddexp(0, log_c + log pi)``, ``E = sum m log Z`` and ``sum m`` as
    ``reduceat`` sums them, ``none = max(0, 1 - sum m)``, ``step = gamma m - E``.  False
    (outputs unusable) when a state has more than 129 edges (numpy's longer sums)."""
    n = out_start.size - 1
    terms = np.empty(129)
    for s in range(n):
        a, b = out_start[s], out_start[s + 1]
        if b - a > 129:
            return False
        if b == a:
            none_weight[s] = 1.0
            continue
        for e in range(a, b):
            m = marginals[edge_move[e]]
            z = _logaddexp_pair(0.0, log_c + log_cond[e])
            move_weight[e] = m
            log_boost_norm[e] = z
            terms[e - a] = m * z
        k = b - a
        expected = terms[0] + _numpy_pairwise(terms, 1, k - 1) if k > 1 else terms[0]
        total = (
            move_weight[a] + _numpy_pairwise(move_weight, a + 1, k - 1) if k > 1 else move_weight[a]
        )
        left = 1.0 - total
        none_weight[s] = left if (left > 0.0 or left != left) else 0.0
        for e in range(a, b):
            step[e] = gamma * move_weight[e] - expected
    return True


def _move_marginals(
    out_start: _I,
    edge_move: _I,
    log_reach: _F,
    log_cond: _F,
    loops: NDArray[np.intp],
    flow: _F,
    out: _F,
    scatter: bool,
) -> None:
    """``out[m] += exp(log_reach[tail] + log_cond[e])`` over the edges in order (``out``
    zeros): :func:`tilt.engines.dp.policy.edge_marginals`'s ``bincount`` of the flows, with
    numpy's own ``exp`` loop (``flow`` is scratch), so the same bits.  Without ``scatter``
    (edge ``e`` is move ``e``) the flows stay in ``flow``: ``0 + x`` is ``x``."""
    n = out_start.size - 1
    for s in range(n):
        r = log_reach[s]
        for e in range(out_start[s], out_start[s + 1]):
            flow[e] = r + log_cond[e]
    frame = np.empty(5, dtype=np.intp)
    _numpy_apply(loops, 0, flow, flow, flow.size, frame)
    if scatter:
        for e in range(flow.size):
            out[edge_move[e]] += flow[e]


def _edge_flow(out_start: _I, reach: _F, chain: _F) -> _F:
    """``reach[tail] * chain[e]`` per edge."""
    n = out_start.size - 1
    out = np.empty(chain.size)
    for s in range(n):
        r = reach[s]
        for e in range(out_start[s], out_start[s + 1]):
            out[e] = r * chain[e]
    return out


def _others(a: int, b: int, values: _F, skip: int) -> float:
    """The sum of ``values[a:b]`` but ``values[skip]``."""
    total = 0.0
    for e in range(a, b):
        if e != skip:
            total += values[e]
    return total


_sum_others = _jit(_others)


def _node_layers(indptr: _I, move_head: _I, source: int, target: int) -> tuple[_I, _I, _B, _I]:
    """Kahn's algorithm on the nodes reachable from ``source`` (``target`` not expanded):
    ``(order, sizes, seen, indegree)``, the nodes layer by layer (each layer sorted) and the
    layers' sizes; a node of ``seen`` left out of ``order`` (positive ``indegree``) is on a
    cycle, and so is the source when ``sizes`` is empty (as
    :func:`tilt.engines.dp.space._node_layers`)."""
    n = indptr.size - 1
    seen = np.zeros(n, dtype=np.bool_)
    seen[source] = True
    stack = np.empty(n, dtype=np.int64)
    stack[0], top = source, 1
    while top:
        top -= 1
        v = stack[top]
        if v == target:
            continue
        for m in range(indptr[v], indptr[v + 1]):
            h = move_head[m]
            if not seen[h]:
                seen[h] = True
                stack[top] = h
                top += 1
    indegree = np.zeros(n, dtype=np.int64)
    for v in range(n):
        if seen[v] and v != target:
            for m in range(indptr[v], indptr[v + 1]):
                indegree[move_head[m]] += 1
    order = np.empty(n, dtype=np.int64)
    sizes = np.empty(n, dtype=np.int64)
    if indegree[source]:
        return order[:0], sizes[:0], seen, indegree
    order[0], done, n_layers, start = source, 1, 0, 0
    while done > start:
        end = done
        sizes[n_layers] = end - start
        n_layers += 1
        for i in range(start, end):
            v = order[i]
            if v == target:
                continue
            for m in range(indptr[v], indptr[v + 1]):
                h = move_head[m]
                indegree[h] -= 1
                if indegree[h] == 0:
                    order[done] = h
                    done += 1
        order[end:done] = np.sort(order[end:done])
        start = end
    return order[:done].copy(), sizes[:n_layers].copy(), seen, indegree


def _state_edges(
    indptr: _I, move_head: _I, state_node: _I, expandable: _B, state_of: _I
) -> tuple[_I, _I, _I, _I]:
    """``(edge_tail, edge_head, edge_move, out_start)`` of a state DAG whose states are
    nodes (``state_of`` maps a node to its state): the moves of every expandable state in
    state order, each in the order of the move table."""
    n = state_node.size
    out_start = np.zeros(n + 1, dtype=np.int64)
    for s in range(n):
        v = state_node[s]
        out_start[s + 1] = out_start[s] + (indptr[v + 1] - indptr[v] if expandable[s] else 0)
    n_edges = out_start[n]
    edge_tail = np.empty(n_edges, dtype=np.int64)
    edge_head = np.empty(n_edges, dtype=np.int64)
    edge_move = np.empty(n_edges, dtype=np.int64)
    for s in range(n):
        if not expandable[s]:
            continue
        v = state_node[s]
        e = out_start[s]
        for m in range(indptr[v], indptr[v + 1]):
            edge_tail[e] = s
            edge_head[e] = state_of[move_head[m]]
            edge_move[e] = m
            e += 1
    return edge_tail, edge_head, edge_move, out_start


backward_logsumexp = _jit(_backward_logsumexp)
backward_exact = _jit(_backward_exact)
forward_exact = _jit(_forward_exact)
head_spans = _jit(_head_spans)
forward_logsumexp = _jit(_forward_logsumexp)
backward_max = _jit(_backward_max)
backward_mean = _jit(_backward_mean)
backward_spread = _jit(_backward_spread)
centred_dot = _jit(_centred_dot)
correct_cond = _jit(_correct_cond)
tilted_cond = _jit(_tilted_cond)
ratio_cond = _jit(_ratio_cond)
softmax_exact = _jit(_softmax_exact)
edge_form = _jit(_edge_form)
move_marginals = _jit(_move_marginals)
chain_moments = _jit(_chain_moments)
edge_flow = _jit(_edge_flow)
node_layers = _jit(_node_layers)
state_edges = _jit(_state_edges)
