"""Compiled measures (numba) of the DP engine: one pass over the edges, no edge-sized temporary.

Private to :mod:`tilt.engines.dp.measures`, which imports it behind the gate of
:mod:`tilt.engines.dp._compiled` (:func:`tilt.engines.dp.passes.kernels`).  Each kernel
stands in for a numpy path of that module, kept as it was:

* :func:`ood_scan` for the per-move values of both out-of-distribution readings
  (:func:`~tilt.engines.dp.measures.ood_blocked`,
  :func:`~tilt.engines.dp.measures.reroute_accuracy`) and
  :func:`~tilt.engines.dp.measures._ood`'s mean and worst case: the same operations per
  move (the power by the same repeated squaring, so the same bits), read in edge order
  with the tie for the worst case going to the smallest move (the first in move order,
  as ``np.argmin`` there), the means as compensated sums; and the correct entropy's sum
  on the way;
* :func:`correct_log_sum` for :func:`~tilt.engines.dp.measures.correct_entropy`'s dot
  (the same products, a compensated sum instead of BLAS's);
* :func:`backward_sweep` for the backward passes of the gap slopes, the ratio
  distortion and distinct@k, one pass for all (each the same operations in the same
  order as its own kernel in :mod:`tilt.engines.dp._compiled`, so the same bits);
* :func:`finite_where` for :func:`~tilt.engines.dp.measures._finite_on_paths`.

``tests/engines/dp/test_compiled_measures.py`` checks them against the numpy paths.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from tilt.engines.dp._compiled import (
    _B,
    _F,
    _I,
    _add,
    _jit,
    _logsumexp_state,
    _rule_of_layer,
    _sum_others,
)

__all__ = [
    "backward_sweep",
    "correct_log_sum",
    "finite_where",
    "first_moves",
    "ood_scan",
    "reroute_changes",
]


def _correct_log_sum(out_start: _I, reach: _F, chain: _F, cond: _F) -> float:
    """``sum_e F_e cond_e`` over the edges of positive flow ``F_e = reach[tail] chain_e``
    (the products of :func:`tilt.engines.dp._compiled.edge_flow`), summed with Neumaier's
    compensation."""
    n = out_start.size - 1
    total, carry = 0.0, 0.0
    for s in range(n):
        r = reach[s]
        part = 0.0
        for e in range(out_start[s], out_start[s + 1]):
            flow = r * chain[e]
            if flow > 0:
                part += flow * cond[e]
        total, carry = _add(total, carry, part)
    return total + carry


def _power(x: float, k: int) -> float:
    """``x ** k`` by the repeated squaring of :func:`tilt.engines.dp.measures._power`."""
    result, started = 1.0, False
    square = x
    while True:
        if k & 1:
            if started:
                result = result * square
            else:
                result, started = square, True
        k >>= 1
        if not k:
            return result
        square = square * square


_power_of = _jit(_power)


def _finish(power: _F, square: _F, m: int, started: bool) -> float:
    """``power[j] = power[j] * square[j]`` (``square[j]`` when not ``started``) for ``j < m``,
    and the sum of ``1 - power[j]`` (four running sums: the loop waits on none)."""
    p0, p1, p2, p3 = 0.0, 0.0, 0.0, 0.0
    j = 0
    while j + 4 <= m:
        for t in range(4):
            x = power[j + t] * square[j + t] if started else square[j + t]
            power[j + t] = x
            if t == 0:
                p0 += 1.0 - x
            elif t == 1:
                p1 += 1.0 - x
            elif t == 2:
                p2 += 1.0 - x
            else:
                p3 += 1.0 - x
        j += 4
    part = (p0 + p1) + (p2 + p3)
    while j < m:
        x = power[j] * square[j] if started else square[j]
        power[j] = x
        part += 1.0 - x
        j += 1
    return part


_finish_power = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")(_finish)


def _take(
    square: _F,
    top: float,
    edge: _I,
    edge_move: _I,
    m: int,
    first_move: int,
    ks: _I,
    power: _F,
    total: _F,
    carry: _F,
    worst: _F,
    worst_move: _I,
) -> None:
    """Add ``1 - x[j]^k`` over ``j < m`` (``x = square``, clipped to ``[0, 1]``, its largest
    ``top``; overwritten) to the sums of each ``k`` (added with compensation); keep the
    least, ties to the smallest move ``edge_move[edge[j]]`` (none below ``first_move``;
    ``nan`` is never the least).

    ``x^k`` by the repeated squaring of :func:`tilt.engines.dp.measures._power` (the same
    products in the same order, so the same bits), the squares shared by every ``k``
    (rows of ``power``).  Rounding is monotone, so ``1 - x^k`` never increases with ``x``:
    the least here is that of the largest ``x``, and the values are searched only when it
    may replace the least so far."""
    if m == 0:
        return
    bit = 0
    while True:
        more = False
        for i in range(ks.size):
            k = ks[i]
            if (k >> bit) & 1:
                started = (k & ((1 << bit) - 1)) != 0  # a lower bit set: the product has begun
                if k >> (bit + 1):
                    for j in range(m):
                        power[i, j] = power[i, j] * square[j] if started else square[j]
                    more = True
                else:  # the last factor: the sum on the way
                    part = _finish_power(power[i], square, m, started)
                    total[i], carry[i] = _add(total[i], carry[i], part)
            elif k >> (bit + 1):
                more = True
        if not more:
            break
        for j in range(m):
            square[j] = square[j] * square[j]
        bit += 1
    for i in range(ks.size):
        here = 1.0 - _power_of(top, ks[i]) if top >= 0.0 else np.nan
        if not (here < worst[i] or (here == worst[i] and first_move < worst_move[i])):
            continue
        least, least_move = worst[i], worst_move[i]
        for j in range(m):
            value = 1.0 - power[i, j]
            if value <= least and (value < least or edge_move[edge[j]] < least_move):
                least, least_move = value, edge_move[edge[j]]
        worst[i], worst_move[i] = least, least_move


_take_into = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")(_take)


def _others_logsumexp(a: int, b: int, values: _F, skip: int) -> float:
    """``log sum exp`` of ``values[a:b]`` but ``values[skip]``, shifted by its largest."""
    peak = -np.inf
    for e in range(a, b):
        if e != skip and values[e] > peak:
            peak = values[e]
    if peak == -np.inf:
        return peak
    total = 0.0
    for e in range(a, b):
        if e != skip:
            total += math.exp(values[e] - peak)
    return math.log(total) + peak


_others_lse = _jit(_others_logsumexp)


def _state_change(
    a: int,
    b: int,
    prob: _F,
    chain: _F,
    cond: _F,
    log_cond: _F,
    here: float,
    log_here: float,
    tiny_below: float,
    change: _F,
) -> None:
    """``change[e - a]`` for the edges ``a:b`` of one state: the operations of
    :func:`tilt.engines.dp._compiled.reroute_change` (the same bits), and an edge whose
    complement is below ``tiny_below`` redone from the logs as
    :func:`tilt.engines.dp.measures._redo_tiny` does."""
    first_p, first_t = a, a
    top_p, top_t = prob[a], chain[a]
    for e in range(a + 1, b):
        if prob[e] > top_p:
            top_p, first_p = prob[e], e
        if chain[e] > top_t:
            top_t, first_t = chain[e], e
    if here == 0.0:
        change[: b - a] = 0.0
    else:
        for e in range(a, b):
            change[e - a] = ((1.0 - chain[e]) / (1.0 - prob[e]) - 1.0) * here
    if not (prob[first_p] > 0.5 or chain[first_t] > 0.5):
        return
    # the largest move of a state, above 1/2: its complement from the others
    if not prob[first_p] > 0.5:
        first_p = -1
    if not chain[first_t] > 0.5:
        first_t = -1
    for which in range(2):
        e = first_p if which == 0 else first_t
        if e < 0 or (which == 1 and e == first_p):
            continue
        keep_p = _sum_others(a, b, prob, e) if e == first_p else 1.0 - prob[e]
        keep_t = _sum_others(a, b, chain, e) if e == first_t else 1.0 - chain[e]
        ratio = 0.0 if e == first_p and keep_p == 0.0 else keep_t / keep_p
        change[e - a] = 0.0 if here == 0.0 else (ratio - 1.0) * here
        if (keep_p < tiny_below or keep_t < tiny_below) and np.isfinite(log_here) and b - a > 1:
            num = _others_lse(a, b, cond, e)
            den = _others_lse(a, b, log_cond, e)
            gain = 0.0 if den == -np.inf else math.exp(log_here + num - den)
            change[e - a] = gain - here


_change_of_state = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")(
    _state_change
)


def _reroute_changes(
    out_start: _I,
    prob: _F,
    chain: _F,
    cond: _F,
    log_cond: _F,
    through: _F,
    log_through: _F,
    tiny_below: float,
) -> _F:
    """:func:`tilt.engines.dp.measures.reroute_accuracy`'s per-edge change, state by state
    (:func:`_state_change`: the tiny complements redone from the logs on the way)."""
    change = np.empty(prob.size)
    for s in range(out_start.size - 1):
        a, b = out_start[s], out_start[s + 1]
        if b > a:
            _change_of_state(
                a, b, prob, chain, cond, log_cond, through[s], log_through[s], tiny_below,
                change[a:b],
            )  # fmt: skip
    return change


def _first_moves(out_start: _I, edge_move: _I, used: _B) -> _I:
    """The smallest move of the ``used`` edges of each state (``n_moves`` bound: none)."""
    n = out_start.size - 1
    out = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    for s in range(n):
        for e in range(out_start[s], out_start[s + 1]):
            if used[e] and edge_move[e] < out[s]:
                out[s] = edge_move[e]
    return out


def _ood_scan(
    out_start: _I,
    edge_move: _I,
    used: _B,
    first_move: _I,
    prob: _F,
    log_cond: _F,
    chain: _F,
    cond: _F,
    reach: _F,
    through: _F,
    log_through: _F,
    incorrect: float,
    accuracy: float,
    tiny_below: float,
    ks: _I,
) -> tuple[_F, _F, _I, _F, _F, _I, float]:
    """Both readings of :func:`tilt.engines.dp.measures._ood` in one pass over the ``used``
    edges: ``(sums, worst, worst_move)`` per ``k`` of ``1 - clip(fail)^k`` for *blocked =
    fail* (``fail = incorrect + accuracy (reach[tail] chain_e)``), then for *re-route*
    (``fail = 1 - clip(accuracy + change_e)``, ``change`` per state by
    :func:`_state_change`), and last :func:`correct_log_sum` on the way (the same sums in
    the same order, so the same bits); no edge-sized array."""
    n_states = out_start.size - 1
    widest = 1
    for s in range(n_states):
        widest = max(widest, out_start[s + 1] - out_start[s])
    n = ks.size
    sums = np.zeros((2, n))
    carry = np.zeros((2, n))
    worst = np.full((2, n), np.inf)
    worst_move = np.full((2, n), -1, dtype=np.int64)
    change = np.empty(widest)
    blocked = np.empty(widest)
    rerouted = np.empty(widest)
    edge = np.empty(widest, dtype=np.int64)
    power = np.empty((n, widest))
    log_sum, log_carry = 0.0, 0.0
    for s in range(n_states):
        a, b = out_start[s], out_start[s + 1]
        if b == a:
            continue
        _change_of_state(
            a, b, prob, chain, cond, log_cond, through[s], log_through[s], tiny_below, change
        )
        r = reach[s]
        m = 0
        top_blocked, top_rerouted = -1.0, -1.0
        part = 0.0
        for e in range(a, b):
            flow = r * chain[e]
            if flow > 0:
                part += flow * cond[e]
            if used[e]:
                x = incorrect + accuracy * flow
                x = 0.0 if x < 0.0 else (1.0 if x > 1.0 else x)
                blocked[m] = x
                top_blocked = x if x > top_blocked else top_blocked
                acc = accuracy + change[e - a]
                if acc > 1.0:
                    acc = 1.0
                if acc < 0.0:
                    acc = 0.0
                x = 1.0 - acc  # in [0, 1] (or nan) already
                rerouted[m] = x
                top_rerouted = x if x > top_rerouted else top_rerouted
                edge[m] = e
                m += 1
        log_sum, log_carry = _add(log_sum, log_carry, part)
        _take_into(
            blocked,
            top_blocked,
            edge,
            edge_move,
            m,
            first_move[s],
            ks,
            power,
            sums[0],
            carry[0],
            worst[0],
            worst_move[0],
        )
        _take_into(
            rerouted,
            top_rerouted,
            edge,
            edge_move,
            m,
            first_move[s],
            ks,
            power,
            sums[1],
            carry[1],
            worst[1],
            worst_move[1],
        )
    total = sums + carry
    log_total = log_sum + log_carry
    return total[0], worst[0], worst_move[0], total[1], worst[1], worst_move[1], log_total


def _backward_sweep(
    layer_start: _I,
    out_start: _I,
    edge_head: _I,
    head_lo: _I,
    head_hi: _I,
    a: _F,
    b: _F,
    leaf: _F,
    squares: bool,
    prob_a: _F,
    unsafe_tail: _B,
    power: float,
    safe_range: float,
    slopes: bool,
    prob: _F,
    support: _B,
    weight: _F,
    prob2: _F,
    support2: _B,
    weight2: _F,
) -> tuple[_F, float, float, float, float, float, bool]:
    """One backward pass over the edges for the measures that read ``a = log q`` (and
    ``b = log pi0``) state by state: ``(best, top, low, square, cov, cov2, finite)``.

    ``best``: :func:`tilt.engines.dp._compiled.backward_max` of ``a`` from ``leaf``;
    ``(top, low)``: :func:`tilt.engines.dp._compiled.backward_spread` of ``a - b``; with
    ``squares``, ``square``: :func:`tilt.engines.dp._compiled.backward_logsumexp` of the
    weights ``a`` squared on the fly (``prob_a = exp(a)``, no shift, its ``unsafe_tail``,
    ``power`` twice the weights')
    at state 0 (else ``nan``); with ``slopes``, ``(cov, cov2)``:
    :func:`tilt.engines.dp._compiled.centred_dot` of each of the two chains (else 0);
    ``finite``: every ``a`` finite.  Each the same operations in the same order as there,
    so the same bits."""
    n = out_start.size - 1
    best = leaf.copy()
    high = leaf.copy()
    low = leaf.copy()
    below = leaf.copy()
    mean = np.zeros(n)
    mean2 = np.zeros(n)
    scratch = np.empty(0)
    total, carry = 0.0, 0.0
    total2, carry2 = 0.0, 0.0
    finite = True
    for layer in range(layer_start.size - 2, -1, -1):
        s0, s1 = layer_start[layer], layer_start[layer + 1]
        e0, e1 = out_start[s0], out_start[s1]
        if e0 == e1:
            continue
        mode, shift, narrow = 2, 0.0, False
        if squares:
            if scratch.size < head_hi[layer] - head_lo[layer] + 1:
                scratch = np.empty(head_hi[layer] - head_lo[layer] + 1)
            mode, shift, narrow = _rule_of_layer(
                layer, e0, e1, edge_head, head_lo, head_hi, a, unsafe_tail, power, 1.0,
                safe_range, True, below, scratch,
            )  # fmt: skip
        lo = head_lo[layer]
        for s in range(s1 - 1, s0 - 1, -1):
            first, last = out_start[s], out_start[s + 1]
            if last == first:
                continue
            top, up, down = -np.inf, -np.inf, -np.inf
            acc, acc2 = 0.0, 0.0
            mass = 0.0
            for e in range(first, last):
                h = edge_head[e]
                x = a[e]
                finite &= x - x == 0.0
                v = x + best[h]
                top = v if v > top else top  # nan never is
                d = x - b[e]
                y = d + high[h]
                up = y if y > up else up  # nor is a nan difference
                y = -d + low[h]
                down = y if y > down else down
                if slopes:
                    acc += prob[e] * ((d if support[e] else 0.0) + mean[h])
                    acc2 += prob2[e] * ((d if support2[e] else 0.0) + mean2[h])
                if squares and mode == 0:
                    p = prob_a[e] * prob_a[e]
                    if narrow:
                        mass += p * scratch[h - lo]
                    else:
                        mass += p * math.exp(below[h] - shift)
            best[s], high[s], low[s] = top, up, down
            if squares:
                if mode == 0:
                    below[s] = math.log(mass) + (shift + 0.0) if mass > 0 else -np.inf
                elif mode == 1:
                    below[s] = _logsumexp_state(first, last, edge_head, a, power, below, 1.0)
                else:
                    below[s] = -np.inf
            if not slopes:
                continue
            mean[s] = acc
            mean2[s] = acc2
            part, part2 = 0.0, 0.0
            for e in range(first, last):
                d = a[e] - b[e]
                h = edge_head[e]
                part += weight[e] * ((d if support[e] else 0.0) + mean[h] - acc)
                part2 += weight2[e] * ((d if support2[e] else 0.0) + mean2[h] - acc2)
            total, carry = _add(total, carry, part)
            total2, carry2 = _add(total2, carry2, part2)
    square = below[0] if squares else np.nan
    return best, high[0], low[0], square, total + carry, total2 + carry2, finite


def _finite_where(values: _F, mask: _B) -> bool:
    """Whether every ``values[e]`` with ``mask[e]`` is finite (stops at the first that is not)."""
    for e in range(values.size):
        x = values[e]
        if mask[e] and x - x != 0.0:  # nan or infinite
            return False
    return True


correct_log_sum = _jit(_correct_log_sum)
first_moves = _jit(_first_moves)
ood_scan = _jit(_ood_scan)
finite_where = _jit(_finite_where)
backward_sweep = _jit(_backward_sweep)
reroute_changes = _jit(_reroute_changes)
