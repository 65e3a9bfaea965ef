"""Forward and backward passes over an :class:`~tilt.dp.space.AcyclicSpace`.

Every pass loops over the topological layers and vectorises over the edges of
one layer (grouped by tail for a backward pass, by head for a forward pass):
cost ``O(n_edges)`` numpy work plus ``O(n_layers)`` Python steps.  All sums of
probabilities run in log space with a max shift per group, so no value
underflows to ``-inf`` unless it is ``-inf``.
"""

from __future__ import annotations

import numpy as np

from tilt.dp.space import AcyclicSpace, FloatArray, IntArray
from tilt.space import LINEAR_RANGE

__all__ = [
    "segment_logsumexp",
    "segment_sum",
    "backward_logsumexp",
    "forward_logsumexp",
    "backward_max",
    "group_normalise",
    "tilted_conditionals",
    "backward_moments",
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


def backward_logsumexp(
    space: AcyclicSpace,
    edge_log_weight: FloatArray,
    leaf_log_value: FloatArray,
    discount: float = 1.0,
) -> FloatArray:
    """``B(s) = log sum_{e out of s} exp(w_e + discount * B(head e))``; ``B = f`` at a leaf.

    With ``discount = 1`` this is ``log sum over paths from s of exp(sum of w + f(leaf))``.
    """
    out = np.where(space.leaf, leaf_log_value, -np.inf).astype(np.float64)
    head = space.edge_head
    for e0, e1, internal, starts, sizes in reversed(space.tail_layers):
        below = out[head[e0:e1]]
        if discount != 1.0:
            below = np.where(np.isneginf(below), -np.inf, discount * below)
        out[internal] = segment_logsumexp(edge_log_weight[e0:e1] + below, starts, sizes)
    return out


def forward_logsumexp(space: AcyclicSpace, edge_log_weight: FloatArray) -> FloatArray:
    """``A(s) = log sum over paths from the source to s of exp(sum of w)``; ``A(source) = 0``."""
    out = np.full(space.n_states, -np.inf)
    out[0] = 0.0
    tail = space.edge_tail
    for edges, heads, starts, sizes in space.head_layers:
        out[heads] = segment_logsumexp(out[tail[edges]] + edge_log_weight[edges], starts, sizes)
    return out


def backward_max(space: AcyclicSpace, edge_value: FloatArray, leaf_value: FloatArray) -> FloatArray:
    """Max-plus: ``M(s) = max_{e out of s} (v_e + M(head e))``, ``M = f`` at a leaf."""
    out = np.where(space.leaf, leaf_value, -np.inf).astype(np.float64)
    with np.errstate(invalid="ignore"):
        for e0, e1, internal, starts, _ in reversed(space.tail_layers):
            vals = edge_value[e0:e1] + out[space.edge_head[e0:e1]]
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


def backward_moments(
    space: AcyclicSpace, log_cond: FloatArray, x: FloatArray, y: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Means and (co)variances of two additive path functionals under a Markov chain.

    For the chain with conditionals ``exp(log_cond)`` and ``X = sum of x_e``,
    ``Y = sum of y_e`` along the path from state ``s`` to its leaf, returns
    ``(E[X], E[Y], Var X, Cov(X, Y))`` per state, by the law of total
    covariance over the first move (every term is a product of centred values,
    so nothing cancels)::

        E[X | s] = sum_e c_e (x_e + E[X | head])
        Cov(X, Y | s) = sum_e c_e [ (x_e + E[X | head] - E[X | s])
                                    (y_e + E[Y | head] - E[Y | s]) + Cov(X, Y | head) ]

    Edges with ``c_e = 0`` contribute nothing (their ``x, y`` may be infinite).
    """
    n = space.n_states
    mean_x, mean_y = np.zeros(n), np.zeros(n)
    var_x, cov_xy = np.zeros(n), np.zeros(n)
    prob = np.exp(log_cond)
    live = prob > 0
    if not live.all():  # a move of probability 0 may carry an infinite x or y: zero it once
        x, y = np.where(live, x, 0.0), np.where(live, y, 0.0)
    head_all = space.edge_head
    for e0, e1, internal, starts, counts in reversed(space.tail_layers):
        head = head_all[e0:e1]
        c = prob[e0:e1]
        dx = x[e0:e1] + mean_x[head]
        dy = y[e0:e1] + mean_y[head]
        mx = np.add.reduceat(c * dx, starts)
        my = np.add.reduceat(c * dy, starts)
        dx -= np.repeat(mx, counts)
        dy -= np.repeat(my, counts)
        mean_x[internal], mean_y[internal] = mx, my
        var_x[internal] = np.add.reduceat(c * (dx * dx + var_x[head]), starts)
        cov_xy[internal] = np.add.reduceat(c * (dx * dy + cov_xy[head]), starts)
    return mean_x, mean_y, var_x, cov_xy
