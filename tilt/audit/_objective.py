"""The objective an audit estimates, and each rollout's correction from the sequence tilt.

For every objective tilt knows, the fixed point's log-ratio on a rollout
``y = (u_1, ..., u_T)`` is the sequence tilt score plus a sum over its positions
(``docs/theory.md``, "What real trainers optimise"; ``docs/audit.md``):

    L(y) = log q(y) - log pi(y) = S(y) + sum_t Delta(h_t, u_t) + const

with ``S(y) = E_c log T_c(y) - log pi(y)`` and ``Delta`` a functional of the
teachers' next-token distributions ``T_c(. | h_t)`` over demonstrations ``c``:

* ``sequence``, ``hybrid=beta`` (among correct rollouts), ``discount=1``: ``Delta = 0``;
* ``token``: ``Delta = -N(h)``, ``N(h) = log sum_u exp E_c log T_c(u | h)`` (the
  per-prefix normaliser; the root's is a constant and is left out);
* ``token-forward`` (and ``jsd=0``): ``Delta = log E_c T_c(u | h) - E_c log T_c(u | h)``
  (the log of a mean);
* ``jsd=a``: ``Delta = log q_a(u | h) - E_c log T_c(u | h)``, ``q_a`` the per-prefix
  GJSD minimiser (:func:`tilt.objectives.jsd_conditionals`);
* ``discount=g``: ``Delta_t = -(1 - g^t) N(h_t)`` when the values ``V(hu)`` of
  siblings are equal (an approximation: the exact ``V`` needs the teacher on
  continuations the rollout did not take);
* ``length-weighted``: ``token``'s ``Delta`` when the expected inverse lengths of
  siblings are equal (the same kind of approximation, whose error is bounded:
  :func:`length_weighted_range`);
* ``forward`` (sequence level): ``log E_c T_c(y) - E_c log T_c(y)``.

``S`` is estimated without bias from one demonstration per rollout;
``Delta`` is a nonlinear functional of the *distribution* of teachers at one
prefix, so it needs two or more demonstrations scored at the same positions.
With ``m`` of them the plug-in has a bias of order ``1/m`` (a log of a mean,
a log-sum-exp of a mean), which the delete-one jackknife over demonstrations
reduces to order ``1/m^2``.  With a single fixed reference demonstration
(OPSD, SDFT) every ``Delta`` is exactly 0: each fixed point is ``T_{c*}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tilt._checks import check_ints
from tilt._numerics import FloatArray, IntArray, logsumexp_rows
from tilt.audit._read import AuditInputError, Rollout
from tilt.objectives import jsd_conditionals, parse_objective, preset

__all__ = [
    "AuditObjective",
    "Corrections",
    "resolve_objective",
    "rollout_corrections",
    "TAIL_FLOOR",
    "length_weighted_range",
    "resolve_lengths",
]

TAIL_FLOOR = 1e-12
"""A tail mass below this (listed probabilities adding up to within rounding of 1) is 0."""


@dataclass(frozen=True)
class AuditObjective:
    """The objective whose fixed point the audit estimates.

    Attributes
    ----------
    spec : str
        A spec of :data:`tilt.objectives.OBJECTIVES`.
    name : str
    param : float or None
    source : str
        Where it came from: ``the log``, ``--objective``, ``preset NAME`` or
        ``default``.
    demos : str or None
        ``own`` or ``reference`` when a preset fixes the demonstrations.
    lengths : tuple of int or None
        ``length-weighted`` only: the shortest and the longest rollout (in tokens)
        the sampler can produce, which bound the approximation's error
        (:func:`length_weighted_range`); ``None``: each prompt's own shortest and
        longest logged rollout.
    """

    spec: str
    name: str
    param: float | None
    source: str
    demos: str | None = None
    lengths: tuple[int, int] | None = None

    @property
    def kind(self) -> str:
        """``sequence`` (no per-position term), ``forward`` (sequence-level log of a mean),
        ``token``, ``token-forward`` or ``jsd`` (the per-position term it needs)."""
        name, p = self.name, self.param
        if name in ("sequence", "hybrid") or (name == "discount" and p == 1.0):
            return "sequence"
        if name == "forward":
            return "forward"
        if name in ("token", "length-weighted", "discount") or (name == "jsd" and p == 1.0):
            return "token"
        if name == "token-forward" or (name == "jsd" and p == 0.0):
            return "token-forward"
        return "jsd"

    @property
    def needs_demos(self) -> bool:
        """Whether its correction needs two or more demonstrations per rollout."""
        return self.kind != "sequence"

    @property
    def needs_top(self) -> bool:
        """Whether it needs each teacher's top-k next-token list at every position."""
        return self.kind in ("token", "jsd")

    @property
    def approximation(self) -> str | None:
        """The assumption the estimate makes, when it is not the exact fixed point's."""
        if self.name == "discount" and self.param not in (0.0, 1.0):
            return (
                "siblings' soft values V(hu) taken equal (the exact V needs the teacher on "
                "continuations the rollout did not take)"
            )
        if self.name == "length-weighted":
            return "siblings' expected inverse lengths taken equal (then it is token's fixed point)"
        return None

    @property
    def bounded(self) -> bool:
        """Whether the approximation's error is bounded (``length-weighted``: by the lengths)."""
        return self.name == "length-weighted"

    def describe(self) -> str:
        """``jsd=0.5 (preset sdpo)``."""
        return f"{self.spec} ({self.source})"


def resolve_objective(
    objective: str | None = None,
    preset_name: str | None = None,
    logged: str | None = None,
    lengths: tuple[int, int] | None = None,
) -> AuditObjective:
    """The objective to audit: ``objective``, else ``preset_name``'s, else ``logged``, else
    ``sequence``; ``lengths`` as in :class:`AuditObjective`.

    Raises
    ------
    ValueError
        When both ``objective`` and ``preset_name`` are given, either is unknown, or
        ``lengths`` is not two positive integers, the shortest first.
    """
    if objective is not None and preset_name is not None:
        raise ValueError("give --objective or --preset, not both")
    if lengths is not None:
        lengths = _check_lengths(lengths)
    demos = None
    if objective is not None:
        source, text = "--objective", objective
    elif preset_name is not None:
        chosen = preset(preset_name)
        source, text, demos = f"preset {chosen.name}", chosen.objective, chosen.demos
    elif logged is not None:
        source, text = "the log", logged
    else:
        source, text = "default", "sequence"
    parsed = parse_objective(text)
    return AuditObjective(parsed.spec.strip(), parsed.name, parsed.param, source, demos, lengths)


def _check_lengths(lengths: object) -> tuple[int, int]:
    values = check_ints("lengths", lengths, minimum=1)
    if len(values) != 2 or values[0] > values[1]:
        raise ValueError(
            f"lengths must be the shortest and the longest rollout, in that order, got {lengths!r}"
        )
    return values[0], values[1]


_BISECTIONS = 200
"""Halvings of ``[0, -g(u_t)]``: the root to a relative ``2^-200``, below any float's spacing."""


def length_weighted_range(
    mean_log_t: FloatArray, depth: IntArray, lengths: tuple[int, int]
) -> tuple[FloatArray, FloatArray]:
    """How far ``length-weighted``'s exact per-position term can lie from its approximation.

    At a prefix ``h`` at depth ``t`` with siblings ``u`` the exact term of the
    sampled move ``u_t`` is ``x(u_t) = kappa_h / rho(h u_t)``, where
    ``sum_u exp(g(u) + kappa_h / rho(hu)) = 1`` and ``rho(hu) = E_q[1 / |y| | hu]``;
    the audit takes the siblings' ``rho`` equal, which gives ``-N(h)``
    (``N = log sum_u exp g(u)``, token's term).  Every rollout through ``hu`` has
    between ``max(t + 1, shortest)`` and ``longest`` tokens, so the ratio of two
    siblings' ``rho`` lies within ``1/R`` and ``R = longest / max(t + 1, shortest)``;
    ``kappa_h >= 0`` (``N <= 0``), so ``x(u_t)`` is largest when every other
    sibling's term is ``x(u_t) / R`` and least when it is ``R x(u_t)``.  Both
    extremes are the roots of an increasing function on ``[0, -g(u_t)]``, found by
    bisection.

    Parameters
    ----------
    mean_log_t : ndarray, shape (P, n)
        ``g`` per position over its buckets (bucket 0 the sampled token; ``-inf`` pads).
    depth : ndarray of int, shape (P,)
        Each position's depth ``t`` (0 at the prompt).
    lengths : (int, int)
        The shortest and the longest rollout, in tokens.

    Returns
    -------
    low, high : ndarray, shape (P,)
        The least and the largest ``x(u_t) + N(h)`` (both 0 with equal lengths;
        ``-inf``/``inf`` where the sampled move has no teacher mass).
    """
    shortest, longest = _check_lengths(lengths)
    g = np.asarray(mean_log_t, dtype=np.float64)
    ratio = longest / np.maximum(np.asarray(depth) + 1, shortest)
    if (ratio < 1).any():
        raise ValueError(f"a position lies deeper than the longest rollout ({longest} tokens)")
    normaliser = logsumexp_rows(g.copy())
    sampled, rest = g[:, 0], g[:, 1:]
    dead = ~np.isfinite(sampled)
    ceiling = np.where(dead, 0.0, np.maximum(-sampled, 0.0))

    def root(scale: FloatArray) -> FloatArray:
        low, high = np.zeros_like(ceiling), ceiling.copy()
        for _ in range(_BISECTIONS):
            x = 0.5 * (low + high)
            terms = np.concatenate([(sampled + x)[:, None], rest + (scale * x)[:, None]], axis=1)
            above = logsumexp_rows(terms) > 0
            high = np.where(above, x, high)
            low = np.where(above, low, x)
        return high

    low = root(ratio) + normaliser
    high = root(1.0 / ratio) + normaliser
    # clipped: the reader's tolerances (listed sums up to 1 + 1e-6) can leave N a hair above 0
    low = np.where(dead, -np.inf, np.minimum(low, 0.0))
    high = np.where(dead, np.inf, np.maximum(high, 0.0))
    return low, high


def _tail(listed: FloatArray) -> float:
    rest = 1.0 - float(np.exp(listed).sum())
    return math.log(rest) if rest > TAIL_FLOOR else -math.inf


def _buckets(rollout: Rollout, top: bool) -> tuple[FloatArray, float]:
    """Teachers' next-token log-probabilities per position over common buckets, (m, T, n),
    and the mean tail mass (over teachers and positions; 0 without ``top``).

    Bucket 0 is the sampled token (its value from ``token_logp``); with ``top``
    the next buckets are the tokens every teacher lists at that position, and
    the last is each teacher's tail (the mass outside those); ``-inf`` pads.
    """
    scores = rollout.teacher
    values = [s.token_logp for s in scores]
    if any(v is None for v in values):
        raise ValueError(f"line {rollout.line}: per-token values missing")
    sampled = np.array(values)  # (m, T)
    if not top:
        return sampled[:, :, None], 0.0
    tokens = rollout.tokens
    assert tokens is not None  # the reader requires tokens with top lists
    m, length = sampled.shape
    columns: list[list[list[float]]] = []
    tail_mass = 0.0
    for t in range(length):
        lists = [s.top[t] for s in scores if s.top is not None]
        common = set(lists[0]).intersection(*lists[1:]) - {tokens[t]}
        order = sorted(common)
        rows = []
        for i, listed in enumerate(lists):
            row = [float(sampled[i, t])] + [listed[u] for u in order]
            tail = _tail(np.array(row))
            tail_mass += math.exp(tail)
            rows.append([*row, tail])
        columns.append(rows)
    width = max(len(rows[0]) for rows in columns)
    out = np.full((m, length, width), -np.inf)
    for t, rows in enumerate(columns):
        out[:, t, : len(rows[0])] = np.array(rows)
    return out, tail_mass / (m * length)


def _weighted_mean(weights: FloatArray, values: FloatArray) -> FloatArray:
    """``sum_i w[s, i] values[i]``, (S, ...): ``0 * -inf`` is 0, ``w > 0`` on ``-inf`` gives it."""
    w = weights.reshape(weights.shape + (1,) * (values.ndim - 1))
    with np.errstate(invalid="ignore"):
        terms = np.where(w > 0, w * values[None], 0.0)
        blocked = ((w > 0) & np.isneginf(values[None])).any(axis=1)
    return np.where(blocked, -np.inf, terms.sum(axis=1))


def _log_mean_exp(weights: FloatArray, values: FloatArray) -> FloatArray:
    """``log sum_i w[s, i] exp(values[i, ...])``, (S, ...)."""
    top = np.max(np.where(np.isfinite(values), values, -np.inf), axis=0)
    top = np.where(np.isfinite(top), top, 0.0)
    w = weights.reshape(weights.shape + (1,) * (values.ndim - 1))
    with np.errstate(divide="ignore"):
        return np.log((w * np.exp(values - top)[None]).sum(axis=1)) + top


def _position_terms(
    objective: AuditObjective, weights: FloatArray, log_t: FloatArray
) -> FloatArray:
    """``Delta`` per subset of demonstrations and position, (S, T), from ``log_t`` (m, T, n)."""
    kind = objective.kind
    if kind == "token-forward":
        sampled = log_t[:, :, 0]
        return _log_mean_exp(weights, sampled) - _weighted_mean(weights, sampled)
    if kind == "token":
        mean = _weighted_mean(weights, log_t)  # (S, T, n)
        top = np.max(mean, axis=2, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(divide="ignore"):
            normaliser = np.log(np.exp(mean - top).sum(axis=2)) + top[:, :, 0]
        depth = np.arange(log_t.shape[1])
        g = objective.param if objective.name == "discount" else 0.0
        assert g is not None
        weight = 1.0 - g**depth  # the root's normaliser (depth 0) is a constant: weight 0
        return -normaliser * weight
    raise ValueError(f"no per-position closed form for {objective.spec}")  # jsd: _jsd_terms


def _jsd_terms(a: float, blocks: list[tuple[FloatArray, FloatArray]]) -> list[FloatArray]:
    """``Delta`` of ``jsd=a`` for several rollouts at once: one per-prefix solve in all.

    Each block is ``(weights (S, m), log_t (m, T, n))``; every (subset, position)
    is one group of :func:`tilt.objectives.jsd_conditionals`, padded to the most
    demonstrations (weight 0) and buckets (``-inf``) of any block.
    """
    k = max(w.shape[1] for w, _ in blocks)
    width = max(t.shape[2] for _, t in blocks)
    sizes = [w.shape[0] * t.shape[1] for w, t in blocks]
    weight = np.zeros((k, sum(sizes)))
    log_cond = np.full((k, width, sum(sizes)), -np.inf)
    start = 0
    for (w, t), size in zip(blocks, sizes, strict=True):
        m, length, n = t.shape
        subsets = w.shape[0]
        weight[:m, start : start + size] = np.repeat(w.T, length, axis=1)  # subset-major
        log_cond[:m, :n, start : start + size] = np.broadcast_to(
            t.transpose(0, 2, 1)[:, :, None, :], (m, n, subsets, length)
        ).reshape(m, n, size)
        start += size
    log_q = jsd_conditionals(weight, log_cond, a)[0]
    out = []
    start = 0
    for (w, t), size in zip(blocks, sizes, strict=True):
        solved = log_q[start : start + size].reshape(w.shape[0], t.shape[1])
        out.append(solved - _weighted_mean(w, t[:, :, 0]))
        start += size
    return out


def _subsets(m: int) -> FloatArray:
    """Weights of every demonstration (row 0) and of each leave-one-out subset, (1 + m, m)."""
    weights = np.full((1 + m, m), 1.0 / m)
    if m > 1:
        weights[1:] = (1.0 - np.eye(m)) / (m - 1)
    return weights


@dataclass(frozen=True)
class Corrections:
    """Each rollout's correction ``sum_t Delta`` and its demonstrations' influences.

    Attributes
    ----------
    value : ndarray, shape (k,)
        The jackknifed correction (``nan`` with fewer than two demonstrations).
    influence : tuple of ndarray
        Per rollout, per demonstration ``i`` (in the order of its teacher
        scores), ``D_m - D_(-i)``: how much the plug-in moves when ``i`` is
        left out; the slope uses it to remove the covariance between a
        demonstration's ``log pi`` and the correction it helped compute.
    tail : float
        The mean tail mass the top-k lists leave (over rollouts, positions and
        teachers): what the corrections lump into one bucket; ``nan`` when the
        objective reads no lists.
    low, high : tuple of ndarray or None
        For an objective whose approximation is bounded (``length-weighted``), per
        rollout and position, the least and the largest amount by which the exact
        term can differ from the estimate's (:func:`length_weighted_range`, from
        every demonstration's plug-in; empty for a rollout without a correction);
        ``None`` for the others.
    """

    value: FloatArray
    influence: tuple[FloatArray, ...]
    tail: float = math.nan
    low: tuple[FloatArray, ...] | None = None
    high: tuple[FloatArray, ...] | None = None


def rollout_corrections(
    rollouts: list[Rollout], objective: AuditObjective, lengths: tuple[int, int] | None = None
) -> Corrections:
    """Each rollout's jackknifed ``sum_t Delta(h_t, u_t)`` (``nan`` with fewer than two demos).

    With ``m`` demonstrations, ``D_m`` (all of them) and ``D_(-i)`` (all but
    ``i``): ``m D_m - (m - 1) mean_i D_(-i)``, which removes the ``1/m`` term of
    the plug-in's bias.  A rollout scored with its fixed reference has 0.
    ``lengths`` (the shortest and the longest rollout; default
    ``objective.lengths``, else the shortest and longest of ``rollouts``) bounds
    ``length-weighted``'s approximation.

    Raises
    ------
    ValueError
        When the objective needs per-token values or top-k lists the rollouts lack.
    """
    out = np.zeros(len(rollouts))
    influence = [np.zeros(len(r.teacher)) for r in rollouts]
    if objective.kind == "sequence":
        return Corrections(out, tuple(influence))
    span = resolve_lengths(rollouts, lengths or objective.lengths) if objective.bounded else None
    bounded: list[tuple[int, FloatArray]] = []  # per rollout with a correction, its g (T, n)
    pending: list[tuple[int, FloatArray, FloatArray]] = []
    totals: dict[int, FloatArray] = {}
    tails: list[float] = []
    for j, r in enumerate(rollouts):
        m = len(r.teacher)
        if r.teacher and r.teacher[0].reference:
            continue  # a point mass: every fixed point is T_{c*}, Delta = 0
        if m < 2:
            out[j] = math.nan
            continue
        weights = _subsets(m)
        if objective.kind == "forward":
            log_t = np.array([s.logp for s in r.teacher])[:, None]
            totals[j] = (_log_mean_exp(weights, log_t) - _weighted_mean(weights, log_t)).sum(1)
        else:
            log_t, tail = _buckets(r, objective.needs_top)
            if objective.needs_top:
                tails.append(tail)
            if span is not None:
                bounded.append((j, _weighted_mean(weights[:1], log_t)[0]))
            if objective.kind == "jsd":
                pending.append((j, weights, log_t))
            else:
                totals[j] = _position_terms(objective, weights, log_t).sum(axis=1)
    if pending:
        assert objective.param is not None
        solved = _jsd_terms(objective.param, [(w, t) for _, w, t in pending])
        for (j, _, _), block in zip(pending, solved, strict=True):
            totals[j] = block.sum(axis=1)
    for j, total in totals.items():
        m = total.size - 1
        out[j] = float(m * total[0] - (m - 1) * total[1:].mean())
        influence[j] = total[0] - total[1:]
    tail_mean = float(np.mean(tails)) if tails else math.nan
    if span is None:
        return Corrections(out, tuple(influence), tail_mean)
    return Corrections(out, tuple(influence), tail_mean, *_ranges(len(rollouts), bounded, span))


def _ranges(
    count: int, bounded: list[tuple[int, FloatArray]], lengths: tuple[int, int]
) -> tuple[tuple[FloatArray, ...], tuple[FloatArray, ...]]:
    """Per rollout and position, :func:`length_weighted_range` of the rollouts in ``bounded``
    (index, ``g`` of shape (T, n)), solved for every position at once; empty for the others."""
    low = [np.zeros(0) for _ in range(count)]
    high = [np.zeros(0) for _ in range(count)]
    if not bounded:
        return tuple(low), tuple(high)
    width = max(g.shape[1] for _, g in bounded)
    g = np.full((sum(b.shape[0] for _, b in bounded), width), -np.inf)
    depth = np.concatenate([np.arange(b.shape[0]) for _, b in bounded])
    ends = np.cumsum([0] + [b.shape[0] for _, b in bounded])
    for (_, b), start in zip(bounded, ends[:-1], strict=True):
        g[start : start + b.shape[0], : b.shape[1]] = b
    each_low, each_high = length_weighted_range(g, depth, lengths)
    for (j, _), start, stop in zip(bounded, ends[:-1], ends[1:], strict=True):
        low[j], high[j] = each_low[start:stop], each_high[start:stop]
    return tuple(low), tuple(high)


def resolve_lengths(
    rollouts: Sequence[Rollout], lengths: tuple[int, int] | None
) -> tuple[int, int] | None:
    """``lengths``, checked against every rollout's number of tokens, or (``None``) the shortest
    and the longest of ``rollouts`` (``None`` without per-token values).

    Raises
    ------
    AuditInputError
        When a rollout lies outside ``lengths``, naming its line.
    """
    sizes = [(r.token_logp.size, r.line) for r in rollouts if r.token_logp is not None]
    if lengths is None:
        return (min(sizes)[0], max(sizes)[0]) if sizes else None
    shortest, longest = lengths
    for size, line in sizes:
        if not shortest <= size <= longest:
            raise AuditInputError(
                f"line {line}: a rollout of {size} tokens, outside the lengths "
                f"{shortest}:{longest} (--lengths)"
            )
    return lengths
