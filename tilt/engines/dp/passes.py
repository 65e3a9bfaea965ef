"""Forward and backward passes over an :class:`~tilt.engines.dp.space.AcyclicSpace`.

Every pass loops over the topological layers and vectorises over the edges of
one layer (grouped by tail for a backward pass, by head for a forward pass):
cost ``O(n_edges)`` numpy work plus ``O(n_layers)`` Python steps.  Sums of
probabilities keep their results as logs: within a layer whose weights and
values span at most ``SAFE_RANGE`` nats they are summed in the linear domain
with one shift per layer (the exponential taken per state, the weights'
exponentials once per policy); any other layer is summed in log space with a
shift per state.  Either way no value underflows to ``-inf`` unless it is ``-inf``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np
from numpy.typing import NDArray

from tilt._numerics import LINEAR_RANGE, FloatArray, IntArray
from tilt.engines.dp.space import AcyclicSpace, compiled_passes

__all__ = [
    "segment_logsumexp",
    "segment_sum",
    "backward_logsumexp",
    "forward_logsumexp",
    "backward_max",
    "group_normalise",
    "softmax_conditionals",
    "layer_head_spans",
    "tilted_conditionals",
    "backward_mean",
    "LinearWeights",
    "linear_weights",
    "SAFE_RANGE",
]


def segment_logsumexp(
    values: FloatArray, starts: IntArray, sizes: IntArray | None = None
) -> FloatArray:
    """``log sum exp`` of each contiguous group ``values[starts[i]:starts[i + 1]]``.

    ``sizes`` (the group lengths) may be given to save a diff.  ``-inf`` for a
    group of ``-inf``; never ``nan`` for values in ``[-inf, inf)``.  When all
    values lie within ``LINEAR_RANGE`` (600 nats) of the largest, one shift
    serves every group (no term underflows); otherwise each group is shifted
    by its own maximum.
    """
    if starts.size == 0:
        return np.zeros(0)
    top, low = values.max(), values.min()
    if low != -np.inf and top - low <= LINEAR_RANGE:
        # every value within 600 nats of the largest (none -inf): one shift for all
        # groups, no term underflows, and every group sum is at least e^-600
        return top + np.log(np.add.reduceat(np.exp(values - top), starts))
    if sizes is None:
        sizes = np.diff(np.append(starts, values.size))
    peak = np.maximum.reduceat(values, starts)
    finite = np.isfinite(peak)
    if finite.all():  # the common case: no warning possible, no errstate needed
        total = np.add.reduceat(np.exp(values - np.repeat(peak, sizes)), starts)
        return peak + np.log(total)
    safe = np.where(finite, peak, 0.0)
    with np.errstate(invalid="ignore"):
        shifted = np.exp(values - np.repeat(safe, sizes))
    total = np.add.reduceat(shifted, starts)
    with np.errstate(divide="ignore"):
        return np.where(finite, safe + np.log(total), peak)


def segment_sum(values: FloatArray, starts: IntArray) -> FloatArray:
    """Sum of each contiguous group (``values`` may be 2-D: groups along the last axis)."""
    if starts.size == 0:
        return np.zeros(values.shape[:-1] + (0,))
    return np.add.reduceat(values, starts, axis=-1)


def group_normalise(
    space: AcyclicSpace, log_weight: FloatArray, fallback: FloatArray | None = None
) -> FloatArray:
    """Per-state softmax of edge log-weights: ``w_e - log sum_{e' of tail(e)} exp(w_e')``.

    A state whose weights are all ``-inf`` gets ``fallback`` (default uniform).
    """
    internal, starts = space.groups
    norm = segment_logsumexp(log_weight, starts)
    counts = space.out_count[internal]
    per_edge = np.repeat(norm, counts)
    dead = ~np.isfinite(per_edge)
    with np.errstate(invalid="ignore"):
        out = log_weight - per_edge
    if dead.any():
        if fallback is None:
            out[dead] = -np.log(np.repeat(counts, counts)[dead])
        else:
            out[dead] = fallback[dead]
    return out


def softmax_conditionals(
    space: AcyclicSpace,
    log_weight: FloatArray,
    fallback: FloatArray | None = None,
    index: IntArray | None = None,
) -> tuple[FloatArray, FloatArray | None]:
    """``(group_normalise(space, log_weight[index], fallback), exp of it or None)``.

    The compiled pass (:func:`tilt.engines.dp._compiled.softmax_exact`) gives numpy's bits
    and the exponential with them, in two passes over the edges and with no gathered
    copy; where it does not apply, numpy's :func:`group_normalise` (no exponential).
    """
    compiled = kernels(space)
    if compiled is not None and compiled.NUMPY_LOOPS is not None and space.n_edges:
        out, prob = np.empty(space.n_edges), np.empty(space.n_edges)
        empty = np.zeros(0, dtype=np.int64)
        if compiled.softmax_exact(
            space.out_start,
            log_weight,
            empty if index is None else index,
            LINEAR_RANGE,
            compiled.NUMPY_LOOPS,
            out,
            prob,
        ):
            return out, prob
    values = log_weight if index is None else log_weight[index]
    return group_normalise(space, values, fallback), None


SAFE_RANGE = 350.0
"""Largest spread, in nats, of the edge weights (and, separately, of the state values)
that a pass sums in the linear domain within one layer: each product of a weight
and a value is then at least ``e^-700``, a normal float64, so nothing underflows
and the sums are exact to rounding.  A layer outside it is summed in log space
with a shift per state."""


@dataclass(frozen=True, eq=False)
class LinearWeights:
    """Edge log-weights ``w`` and ``exp(w - shift)``, ready for the linear-domain passes.

    Attributes
    ----------
    log_weight : ndarray, shape (n_edges,)
        ``w / power``.
    prob : ndarray, shape (n_edges,)
        ``exp(w_e - shift[layer of tail(e)])``.
    shift : ndarray, shape (n_layers,)
        The largest finite weight leaving each layer (0 for policies' conditionals).
    unsafe_tail, unsafe_head : ndarray of bool, shape (n_layers,)
        Some finite ``w_e - shift`` of an edge leaving (entering) the layer is below
        ``-SAFE_RANGE``: that layer is summed in log space.
    """

    log_weight: FloatArray
    prob: FloatArray
    shift: FloatArray
    unsafe_tail: NDArray[np.bool_]
    unsafe_head: NDArray[np.bool_]
    power: float = 1.0

    def squared(self, space: AcyclicSpace) -> LinearWeights:
        """The weights ``2 w`` (``prob ** 2``, no new exponential)."""
        power = 2.0 * self.power
        return _flag(space, self.log_weight, self.prob * self.prob, 2.0 * self.shift, power)


def _flag(
    space: AcyclicSpace,
    log_weight: FloatArray,
    prob: FloatArray,
    shift: FloatArray,
    power: float = 1.0,
) -> LinearWeights:
    unsafe_tail = np.zeros(space.n_layers, dtype=bool)
    unsafe_head = np.zeros(space.n_layers, dtype=bool)
    if not shift.any():
        if not log_weight.size or log_weight.min() >= -SAFE_RANGE / power:
            # no weight below the range (nor -inf): every layer is safe, no edge to find
            return LinearWeights(log_weight, prob, shift, unsafe_tail, unsafe_head, power)
        low = np.flatnonzero((log_weight < -SAFE_RANGE / power) & (log_weight != -np.inf))
        unsafe_tail[space.state_layer[space.edge_tail[low]]] = True
        unsafe_head[space.state_layer[space.edge_head[low]]] = True
        return LinearWeights(log_weight, prob, shift, unsafe_tail, unsafe_head, power)
    # shifted weights: per tail layer, the smallest finite weight against the shift; the
    # forward pass runs such weights in log space (unsafe_head everywhere)
    layer, _, _ = space.tail_spans
    if layer.size:
        e0s = np.array([entry[0] for entry in space.tail_layers], dtype=np.int64)
        finite = np.where(log_weight != -np.inf, log_weight, np.inf)
        smallest = power * np.minimum.reduceat(finite, e0s)
        unsafe_tail[layer] = smallest < shift[layer] - SAFE_RANGE
    unsafe_head[:] = True
    return LinearWeights(log_weight, prob, shift, unsafe_tail, unsafe_head, power)


def linear_weights(
    space: AcyclicSpace, log_weight: FloatArray | LinearWeights, prob: FloatArray | None = None
) -> LinearWeights:
    """:class:`LinearWeights` of ``log_weight``; ``prob = exp(log_weight)`` may be given
    (then every shift is 0: the weights are conditionals, at most 1).

    Weights must lie in ``[-inf, inf)`` (no ``nan``).
    """
    if isinstance(log_weight, LinearWeights):
        return log_weight
    log_weight = np.asarray(log_weight, dtype=np.float64)
    shift = np.zeros(space.n_layers)
    if prob is not None:
        return _flag(space, log_weight, prob, shift)
    if not log_weight.any():  # all zero: counting
        return _flag(space, log_weight, np.ones_like(log_weight), shift)
    # one shift per tail layer (its largest weight), the exponential layer by layer
    prob = np.empty_like(log_weight)
    unsafe_tail = np.zeros(space.n_layers, dtype=bool)
    layers, _, _ = space.tail_spans
    for (e0, e1, _, _, _), layer in zip(space.tail_layers, layers.tolist(), strict=True):
        seg = log_weight[e0:e1]
        top = float(seg.max())
        if top == -np.inf:
            prob[e0:e1] = 0.0
            continue
        shift[layer] = top
        np.exp(seg - top, out=prob[e0:e1])
        low = float(seg.min())
        if low == -np.inf:
            low = float(seg[seg != -np.inf].min())
        unsafe_tail[layer] = low < top - SAFE_RANGE
    if not shift.any():
        return _flag(space, log_weight, prob, shift)
    # the forward pass runs shifted weights in log space (unsafe_head everywhere)
    return LinearWeights(log_weight, prob, shift, unsafe_tail, np.ones(space.n_layers, dtype=bool))


def kernels(space: AcyclicSpace) -> ModuleType | None:
    """:mod:`tilt.engines.dp._compiled` when the compiled passes serve ``space`` (the gate
    :func:`tilt._numerics.jit` on its number of edges), else ``None`` (the numpy paths)."""
    return compiled_passes(space.n_edges)


def layer_head_spans(space: AcyclicSpace, compiled: ModuleType) -> tuple[IntArray, IntArray]:
    """The least and largest head of the edges leaving each layer (cached)."""
    spans: tuple[IntArray, IntArray] = space.memo(
        "head_spans",
        lambda: compiled.head_spans(space.layer_start, space.out_start, space.edge_head),
    )
    return spans


def _value_shift(values: FloatArray) -> float | None:
    """The largest value when every finite one lies within ``SAFE_RANGE`` of it (or none is
    finite: ``-inf``), else ``None``."""
    top = float(values.max()) if values.size else -np.inf
    if top == -np.inf:
        return top
    low = float(values.min())
    if low == -np.inf:
        low = float(values[values != -np.inf].min())
    return top if top - low <= SAFE_RANGE and top < np.inf else None


def backward_logsumexp(
    space: AcyclicSpace,
    edge_log_weight: FloatArray | LinearWeights,
    leaf_log_value: FloatArray,
    discount: float = 1.0,
    *,
    compiled: bool = False,
    square: bool = False,
) -> FloatArray:
    """``B(s) = log sum_{e out of s} exp(w_e + discount * B(head e))``; ``B = f`` at a leaf.

    With ``discount = 1`` this is ``log sum over paths from s of exp(sum of w + f(leaf))``.
    ``compiled``: the compiled pass may run (:func:`kernels`), the same values to
    rounding but not to the last bit; the default keeps numpy's digits, which the
    accuracy of every policy and the conditionals of every optimum need (the beta of RL
    matched to SD's accuracy is ill-conditioned: a last-bit change in the accuracy moves
    it by 1e-11).  ``square``: the weights ``2 w`` (:meth:`LinearWeights.squared`), which
    the compiled pass squares on the fly (no edge-sized temporary) when the weights need
    no shift.

    Notes
    -----
    A layer whose weights and whose values below each lie within ``SAFE_RANGE``
    nats is summed in the linear domain: ``B(s) = M + log sum_e p_e exp(B(head) - M)``
    with one shift ``M`` per layer, so the exponential is taken per state, not
    per edge (``p = exp(w)`` once per call, or given as :class:`LinearWeights`);
    every term is a normal float, so this is exact to rounding.  Any other
    layer is summed in log space with a shift per state.
    """
    weights = linear_weights(space, edge_log_weight)
    out = np.where(space.leaf, leaf_log_value, -np.inf).astype(np.float64)
    passes = kernels(space) if compiled else None
    if square and (passes is None or weights.shift.any()):
        weights, square = weights.squared(space), False
    if passes is not None:
        head_lo, head_hi = layer_head_spans(space, passes)
        passes.backward_logsumexp(
            space.layer_start,
            space.out_start,
            space.edge_head,
            head_lo,
            head_hi,
            weights.prob,
            weights.log_weight,
            weights.shift,
            weights.unsafe_tail,
            2.0 * weights.power if square else float(weights.power),
            float(discount),
            SAFE_RANGE,
            out,
            square,
        )
        return out
    with np.errstate(divide="ignore"):
        _backward_layers(space, weights, out, discount, kernels(space))
    return out


def _backward_layers(
    space: AcyclicSpace,
    weights: LinearWeights,
    out: FloatArray,
    discount: float,
    compiled: ModuleType | None = None,
) -> None:
    """The numpy backward pass, layer by layer; with ``compiled`` (and ``discount`` 1), its
    linear-domain layers by :func:`tilt.engines.dp._compiled.backward_exact`, which keeps
    numpy's bits (numpy's own ``exp`` and ``log`` loops, numpy's order of sums), and only
    the layers it leaves here by numpy."""
    w, prob = weights.log_weight, weights.prob
    head = space.edge_head
    layers, los, his = space.tail_spans
    exact = None
    if compiled is not None and compiled.NUMPY_LOOPS is not None and discount == 1.0:
        exact = compiled.backward_exact
    i = len(space.tail_layers) - 1
    while i >= 0:
        if exact is not None:
            i = exact(
                space.layer_start,
                space.out_start,
                head,
                layers,
                los,
                his,
                prob,
                weights.shift,
                weights.unsafe_tail,
                SAFE_RANGE,
                out,
                i,
                compiled.NUMPY_LOOPS,  # type: ignore[union-attr]
            )
            if i < 0:
                break
        e0, e1, internal, starts, sizes = space.tail_layers[i]
        layer, lo, hi = int(layers[i]), int(los[i]), int(his[i])
        heads = head[e0:e1]
        narrow = hi - lo <= 4 * (e1 - e0)
        below = out[lo:hi] if narrow else out[heads]
        if discount != 1.0:
            below = np.where(np.isneginf(below), -np.inf, discount * below)
        out[internal] = _group_logsumexp(
            below,
            heads - lo if narrow else None,
            prob[e0:e1],
            w[e0:e1],
            weights.shift[layer],
            starts,
            sizes,
            bool(weights.unsafe_tail[layer]),
            weights.power,
        )
        i -= 1


def forward_logsumexp(
    space: AcyclicSpace, edge_log_weight: FloatArray | LinearWeights, *, compiled: bool = False
) -> FloatArray:
    """``A(s) = log sum over paths from the source to s of exp(sum of w)``; ``A(source) = 0``.

    Linear-domain layers as in :func:`backward_logsumexp` when the weights need
    no shift (conditionals: ``w <= 0``); otherwise every layer in log space.
    ``compiled``: the compiled pass may run (the same values to rounding, not to the
    bit), as in :func:`backward_logsumexp`; the default keeps numpy's digits, which the
    demonstrations' reach needs (it feeds the edge marginals, so SD's conditionals).
    """
    weights = linear_weights(space, edge_log_weight)
    w, prob = weights.log_weight, weights.prob
    unsafe = weights.unsafe_head | bool(weights.shift.any())
    out = np.full(space.n_states, -np.inf)
    out[0] = 0.0
    passes = kernels(space) if compiled else None
    if passes is not None:
        head_lo, head_hi = layer_head_spans(space, passes)
        passes.forward_logsumexp(
            space.layer_start,
            space.out_start,
            space.edge_head,
            head_lo,
            head_hi,
            prob,
            w,
            weights.unsafe_tail | bool(weights.shift.any()),
            float(weights.power),
            SAFE_RANGE,
            out,
        )
        return out
    exact = kernels(space)
    if exact is not None and exact.NUMPY_LOOPS is not None and not unsafe.any():
        # numpy's bits by the kernel (numpy's exp and log loops, numpy's order of sums)
        done = exact.forward_exact(
            space.layer_start,
            space.edge_tail,
            space.edge_head,
            prob,
            SAFE_RANGE,
            out,
            exact.NUMPY_LOOPS,
        )
        if done:
            return out
        out = np.full(space.n_states, -np.inf)
        out[0] = 0.0
    tail = space.edge_tail
    layers, los, his = space.head_spans
    with np.errstate(divide="ignore"):
        for i, (edges, heads, starts, sizes) in enumerate(space.head_layers):
            layer, lo, hi = int(layers[i]), int(los[i]), int(his[i])
            tails = tail[edges]
            narrow = hi - lo <= 4 * edges.size
            out[heads] = _group_logsumexp(
                out[lo:hi] if narrow else out[tails],
                tails - lo if narrow else None,
                prob[edges],
                w[edges],
                0.0,
                starts,
                sizes,
                bool(unsafe[layer]),
                weights.power,
            )
    return out


def _group_logsumexp(
    values: FloatArray,
    pick: IntArray | None,
    prob: FloatArray,
    log_weight: FloatArray,
    shift: float,
    starts: IntArray,
    sizes: IntArray,
    unsafe: bool,
    power: float = 1.0,
) -> FloatArray:
    """``log sum over each group of exp(w_e + v_e)``, ``v_e = values[pick_e]`` (``pick`` None:
    one value per edge) and ``prob = exp(w - shift)``: in the linear domain with one
    shift when ``values`` span at most ``SAFE_RANGE`` nats and the weights are safe,
    else in log space with a shift per group."""
    top = None if unsafe else _value_shift(values)
    if top is None:
        per_edge = values if pick is None else values[pick]
        weight = log_weight if power == 1.0 else power * log_weight
        return segment_logsumexp(weight + per_edge, starts, sizes)
    if top == -np.inf:
        return np.full(starts.size, -np.inf)
    scaled = np.exp(values - top)
    if pick is not None:
        scaled = scaled[pick]
    total = np.add.reduceat(prob * scaled, starts)
    return np.log(total) + (top + shift)  # log 0 = -inf: the callers ignore the warning


def backward_mean(space: AcyclicSpace, prob: FloatArray, x: FloatArray) -> FloatArray:
    """``E[X | s]`` per state, ``X`` the sum of ``x_e`` along the path from ``s`` to its leaf,
    under the chain with conditionals ``prob`` (``x`` must be finite where ``prob > 0``)."""
    compiled = kernels(space)
    if compiled is not None:
        mean: FloatArray = compiled.backward_mean(space.out_start, space.edge_head, prob, x)
        return mean
    out = np.zeros(space.n_states)
    head = space.edge_head
    for e0, e1, internal, starts, _ in reversed(space.tail_layers):
        out[internal] = np.add.reduceat(prob[e0:e1] * (x[e0:e1] + out[head[e0:e1]]), starts)
    return out


def backward_max(space: AcyclicSpace, edge_value: FloatArray, leaf_value: FloatArray) -> FloatArray:
    """Max-plus: ``M(s) = max_{e out of s} (v_e + M(head e))``, ``M = f`` at a leaf.

    ``nan`` edge values count as ``-inf`` (no path).
    """
    out = np.where(space.leaf, leaf_value, -np.inf).astype(np.float64)
    compiled = kernels(space)
    if compiled is not None:
        compiled.backward_max(
            space.out_start, space.edge_head, np.asarray(edge_value, dtype=np.float64), out
        )
        return out
    plus_inf = bool((edge_value == np.inf).any())
    if np.isnan(edge_value).any():
        edge_value = np.where(np.isnan(edge_value), -np.inf, edge_value)
    head = space.edge_head
    with np.errstate(invalid="ignore"):
        for e0, e1, internal, starts, _ in reversed(space.tail_layers):
            vals = edge_value[e0:e1] + out[head[e0:e1]]
            if plus_inf:
                vals[np.isnan(vals)] = -np.inf  # inf + -inf: no path below
            out[internal] = np.maximum.reduceat(vals, starts)
    return out


def tilted_conditionals(
    space: AcyclicSpace,
    edge_log_weight: FloatArray,
    leaf_log_weight: FloatArray,
    fallback: FloatArray | None = None,
    discount: float = 1.0,
) -> tuple[FloatArray, FloatArray]:
    """The Markov conditionals of the path measure ``exp(sum of w + f(leaf)) / Z``.

    Returns ``(log_cond, B)`` with ``log_cond[e] = w_e + B(head) - B(tail)`` and
    ``B`` from :func:`backward_logsumexp`: ``B(tail)`` is the ``log sum exp`` of
    exactly these values over the edges of the state, so each conditional sums
    to 1 to rounding.  Where ``B(tail) = -inf`` (no path of positive weight
    below: the state is never reached) the conditional is ``fallback``
    (default uniform).
    """
    back = backward_logsumexp(
        space, edge_log_weight, leaf_log_value=leaf_log_weight, discount=discount
    )
    compiled = kernels(space)
    if compiled is not None and discount == 1.0 and fallback is not None:
        # the same operations per edge (no edge-sized temporaries): the same bits
        cond_: FloatArray = compiled.tilted_cond(
            space.out_start,
            space.edge_head,
            np.asarray(edge_log_weight, dtype=np.float64),
            back,
            np.asarray(fallback, dtype=np.float64),
        )
        return cond_, back
    below = back[space.edge_head]
    if discount != 1.0:
        below = np.where(np.isneginf(below), -np.inf, discount * below)
    norm = back[space.edge_tail]
    dead = np.isneginf(norm)
    with np.errstate(invalid="ignore"):
        cond = edge_log_weight + below - norm
    if dead.any():
        cond[dead] = (
            -np.log(space.out_count[space.edge_tail[dead]]) if fallback is None else fallback[dead]
        )
    cond[np.isnan(cond)] = -np.inf  # -inf weight below a live state
    return cond, back
