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

import math

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "backward_logsumexp",
    "forward_logsumexp",
    "in_edges",
    "backward_max",
    "backward_mean",
    "centred_dot",
    "correct_cond",
    "edge_flow",
    "reroute_change",
    "ood_powers",
]

_F = NDArray[np.float64]
_I = NDArray[np.int64]
_B = NDArray[np.bool_]

# division by zero gives inf or nan as in numpy (the callers' rules take over), not an error
_jit = numba.njit(cache=True, nogil=True, error_model="numpy")


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


def _backward_logsumexp(
    layer_start: _I,
    out_start: _I,
    edge_head: _I,
    prob: _F,
    log_weight: _F,
    shift: _F,
    unsafe_tail: _B,
    power: float,
    discount: float,
    safe_range: float,
    out: _F,
) -> None:
    """``out[s] = log sum_e exp(power w_e + discount out[head e])`` over the internal states,
    layers last to first (``out`` holds the leaf values, ``-inf`` elsewhere)."""
    n_layers = layer_start.size - 1
    scratch = np.empty(0)
    for layer in range(n_layers - 1, -1, -1):
        s0, s1 = layer_start[layer], layer_start[layer + 1]
        e0, e1 = out_start[s0], out_start[s1]
        if e0 == e1:
            continue
        lo, hi = edge_head[e0], edge_head[e0]
        top, low = -np.inf, np.inf
        bad = False
        for e in range(e0, e1):
            h = edge_head[e]
            lo, hi = min(lo, h), max(hi, h)
            v = out[h]
            if discount != 1.0 and v != -np.inf:
                v = discount * v
            if v != v or v == np.inf:
                bad = True
            elif v != -np.inf:
                top, low = max(top, v), min(low, v)
        linear = not unsafe_tail[layer] and not bad and (top == -np.inf or top - low <= safe_range)
        if not linear:
            for s in range(s0, s1):
                if out_start[s + 1] > out_start[s]:
                    out[s] = _logsumexp_state(
                        out_start[s], out_start[s + 1], edge_head, log_weight, power, out, discount
                    )
            continue
        if top == -np.inf:
            for s in range(s0, s1):
                if out_start[s + 1] > out_start[s]:
                    out[s] = -np.inf
            continue
        # the exponential per state of the heads' span (narrow on a layered DAG)
        if scratch.size < hi - lo + 1:
            scratch = np.empty(hi - lo + 1)
        for h in range(lo, hi + 1):
            v = out[h]
            if discount != 1.0 and v != -np.inf:
                v = discount * v
            scratch[h - lo] = math.exp(v - top)
        offset = top + shift[layer]
        for s in range(s0, s1):
            a, b = out_start[s], out_start[s + 1]
            if b == a:
                continue
            total = 0.0
            for e in range(a, b):
                total += prob[e] * scratch[edge_head[e] - lo]
            out[s] = math.log(total) + offset if total > 0 else -np.inf


def _in_edges(edge_head: _I, n_states: int) -> tuple[_I, _I]:
    """``(in_start, in_edge)``: the edges sorted by head (stable), by a counting sort."""
    in_start = np.zeros(n_states + 1, dtype=np.int64)
    for e in range(edge_head.size):
        in_start[edge_head[e] + 1] += 1
    for s in range(n_states):
        in_start[s + 1] += in_start[s]
    fill = in_start[:-1].copy()
    in_edge = np.empty(edge_head.size, dtype=np.int64)
    for e in range(edge_head.size):
        h = edge_head[e]
        in_edge[fill[h]] = e
        fill[h] += 1
    return in_start, in_edge


def _forward_logsumexp(
    layer_start: _I,
    in_start: _I,
    in_edge: _I,
    edge_tail: _I,
    prob: _F,
    log_weight: _F,
    unsafe_head: _B,
    power: float,
    safe_range: float,
    out: _F,
) -> None:
    """``out[h] = log sum over the edges into h of exp(power w_e + out[tail e])``, layers first
    to last (``out`` is 0 at the source, ``-inf`` elsewhere); ``prob = exp(w)`` unshifted."""
    n_layers = layer_start.size - 1
    scratch = np.empty(0)
    for layer in range(1, n_layers):
        s0, s1 = layer_start[layer], layer_start[layer + 1]
        i0, i1 = in_start[s0], in_start[s1]
        if i0 == i1:
            continue
        lo, hi = edge_tail[in_edge[i0]], edge_tail[in_edge[i0]]
        top, low = -np.inf, np.inf
        bad = False
        for i in range(i0, i1):
            t = edge_tail[in_edge[i]]
            lo, hi = min(lo, t), max(hi, t)
            v = out[t]
            if v != v or v == np.inf:
                bad = True
            elif v != -np.inf:
                top, low = max(top, v), min(low, v)
        linear = not unsafe_head[layer] and not bad and (top == -np.inf or top - low <= safe_range)
        if linear and hi - lo + 1 > scratch.size:
            scratch = np.empty(hi - lo + 1)
        if linear:
            for t in range(lo, hi + 1):
                scratch[t - lo] = math.exp(out[t] - top)
        for h in range(s0, s1):
            a, b = in_start[h], in_start[h + 1]
            if b == a:
                continue
            if linear:
                if top == -np.inf:
                    out[h] = -np.inf
                    continue
                total = 0.0
                for i in range(a, b):
                    e = in_edge[i]
                    total += prob[e] * scratch[edge_tail[e] - lo]
                out[h] = math.log(total) + top if total > 0 else -np.inf
                continue
            peak = -np.inf
            for i in range(a, b):
                e = in_edge[i]
                x = power * log_weight[e] + out[edge_tail[e]]
                if x > peak or x != x:
                    peak = x
            if peak == -np.inf or peak == np.inf or peak != peak:
                out[h] = peak
                continue
            total = 0.0
            for i in range(a, b):
                e = in_edge[i]
                total += math.exp(power * log_weight[e] + out[edge_tail[e]] - peak)
            out[h] = peak + math.log(total)


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


def _centred_dot(out_start: _I, edge_head: _I, prob: _F, y: _F, weight: _F) -> float:
    """``sum_e weight_e (y_e + E[Y | head] - E[Y | tail])`` under the chain ``prob``."""
    n = out_start.size - 1
    mean = np.zeros(n)
    total, carry = 0.0, 0.0
    for s in range(n - 1, -1, -1):
        a, b = out_start[s], out_start[s + 1]
        if b == a:
            continue
        acc = 0.0
        for e in range(a, b):
            acc += prob[e] * (y[e] + mean[edge_head[e]])
        mean[s] = acc
        part = 0.0
        for e in range(a, b):
            part += weight[e] * (y[e] + mean[edge_head[e]] - acc)
        total, carry = _add(total, carry, part)
    return total + carry


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


def _edge_flow(out_start: _I, reach: _F, chain: _F) -> _F:
    """``reach[tail] * chain[e]`` per edge."""
    n = out_start.size - 1
    out = np.empty(chain.size)
    for s in range(n):
        r = reach[s]
        for e in range(out_start[s], out_start[s + 1]):
            out[e] = r * chain[e]
    return out


def _above_half(a: int, b: int, prob: _F) -> tuple[int, float]:
    """The first edge of ``a:b`` with the largest ``prob`` when that is above 1/2 (else -1),
    and the sum of the others' ``prob``."""
    best, peak = a, prob[a]
    for e in range(a + 1, b):
        if prob[e] > peak:
            best, peak = e, prob[e]
    if not peak > 0.5:
        return -1, 0.0
    others = 0.0
    for e in range(a, b):
        if e != best:
            others += prob[e]
    return best, others


_first_above_half = _jit(_above_half)


def _reroute_change(
    out_start: _I,
    prob: _F,
    chain: _F,
    through: _F,
    log_through: _F,
    tiny_below: float,
) -> tuple[_F, _I]:
    """``(change, tiny)`` of :func:`tilt.engines.dp.measures.reroute_accuracy`: per edge
    ``through(tail) ((1 - t_e) / (1 - q_e) - 1)``, each complement ``1 - x`` taken as the sum
    of the other edges for the one edge of a state above 1/2; ``tiny`` lists the edges whose
    complement is below ``tiny_below`` (redone from the logs by the caller)."""
    n = out_start.size - 1
    change = np.empty(prob.size)
    tiny = np.empty(0, dtype=np.int64)
    n_tiny = 0
    for s in range(n):
        a, b = out_start[s], out_start[s + 1]
        if b == a:
            continue
        first_p, others_p = _first_above_half(a, b, prob)
        first_t, others_t = _first_above_half(a, b, chain)
        here = through[s]
        for e in range(a, b):
            keep_p = others_p if e == first_p else 1.0 - prob[e]
            keep_t = others_t if e == first_t else 1.0 - chain[e]
            ratio = keep_t / keep_p
            if e == first_p and keep_p == 0.0:
                ratio = 0.0
            change[e] = 0.0 if here == 0.0 else (ratio - 1.0) * here
            if (
                e in (first_p, first_t)
                and (keep_p < tiny_below or keep_t < tiny_below)
                and np.isfinite(log_through[s])
                and b - a > 1
            ):
                if n_tiny == tiny.size:
                    grown = np.empty(2 * tiny.size + 16, dtype=np.int64)
                    grown[:n_tiny] = tiny[:n_tiny]
                    tiny = grown
                tiny[n_tiny] = e
                n_tiny += 1
    return change, tiny[:n_tiny].copy()


def _ood_powers(fail: _F, ks: _I) -> tuple[_F, _F, _I]:
    """Per ``k``: the sum of ``1 - fail^k`` over the moves (``fail`` clipped to [0, 1]), its
    least value and the first move where it is least.  ``fail^k`` by repeated squaring, the
    squares and products in the order of :func:`tilt.engines.dp.measures._power` (the same
    bits); the sums by blocks of 256 terms, the blocks' sums compensated."""
    n_k = ks.size
    top = 0
    for j in range(n_k):
        top = max(top, ks[j])
    n_bits = 1
    while (1 << n_bits) <= top:
        n_bits += 1
    square = np.empty(n_bits)
    total = np.zeros(n_k)
    carry = np.zeros(n_k)
    block = np.zeros(n_k)
    worst = np.full(n_k, np.inf)
    where = np.zeros(n_k, dtype=np.int64)
    for i in range(fail.size):
        x = fail[i]
        x = 0.0 if x < 0.0 else (1.0 if x > 1.0 else x)
        square[0] = x
        for bit in range(1, n_bits):
            square[bit] = square[bit - 1] * square[bit - 1]
        for j in range(n_k):
            k = ks[j]
            result = 1.0
            started = False
            bit = 0
            while k:
                if k & 1:
                    result = result * square[bit] if started else square[bit]
                    started = True
                k >>= 1
                bit += 1
            value = 1.0 - result
            block[j] += value
            if value < worst[j]:
                worst[j] = value
                where[j] = i
        if (i & 255) == 255 or i == fail.size - 1:
            for j in range(n_k):
                total[j], carry[j] = _add(total[j], carry[j], block[j])
                block[j] = 0.0
    return total + carry, worst, where


backward_logsumexp = _jit(_backward_logsumexp)
in_edges = _jit(_in_edges)
forward_logsumexp = _jit(_forward_logsumexp)
backward_max = _jit(_backward_max)
backward_mean = _jit(_backward_mean)
centred_dot = _jit(_centred_dot)
correct_cond = _jit(_correct_cond)
edge_flow = _jit(_edge_flow)
reroute_change = _jit(_reroute_change)
ood_powers = _jit(_ood_powers)
