"""``python -m tilt.audit``: predict from a run's log-probabilities what SD does to its diversity.

Reads an audit log (JSON Lines, ``docs/audit.md``): per rollout, the student's
``log pi(y)`` and the teacher's ``log pi(y | c)`` with correct siblings ``c``
in context.  From the pointwise conditional mutual information
``i(y; c) = log pi(y | c) - log pi(y)`` it estimates, per prompt and pooled
over prompts with percentile-bootstrap intervals over prompts:

* the tilt score of each rollout, ``S^(y) = mean over its demonstrations of i(y; c)``
  (``docs/theory.md``: ``S(y) = E_{c ~ D} i(y; c)``), centred within the prompt;
* the **amplification** ``a``: the slope of ``S`` on ``log pi`` over correct
  rollouts, pooled within prompts.  Its estimand is the ``pi``-weighted gap
  slope of the sequence-SD optimum minus 1,
  ``a = cov_w(S, log pi) / var_w(log pi)``, ``w = pi(. | C)``
  (:func:`tilt.measures.weighted_gap_slope`).  Correct rollouts sampled from
  ``pi`` are ``pi(. | C)``-distributed, so an *unweighted* fit over them
  estimates this weighted slope.  A demonstration is itself one of the
  sampled correct rollouts, so the plain within-prompt fit is biased by
  ``-cov(log pi(c), E_y i(y; c)) / ((k - 1) var)``; the numerator here centres
  each ``(y, c)`` term on the mean of the *other* ``k - 2`` correct rollouts,
  which makes it unbiased for ``(k - 1) cov`` (prompts need ``k >= 3``);
* the same at token level from per-token log-probabilities: the slope of the
  per-token score ``log pi(u_t | h_t, c) - log pi(u_t | h_t)`` on
  ``log pi(u_t | h_t)`` over the tokens of correct rollouts (estimand: that
  slope weighted by how often correct rollouts pass each prefix, from the
  token-SD target, :func:`token_slope`);
* the change of the correct-set entropy under the sequence-SD optimum
  ``q* ∝ pi exp(S)``, from self-normalised importance weights ``exp(S^)``
  within each prompt (``Delta H``; the effective number of correct rollouts
  is multiplied by ``exp(Delta H)``), with the effective sample size of the
  weights.

Prompts with fewer than two correct rollouts give SDPO no signal: counted and
skipped.  The file is read once, one prompt at a time: memory grows with the
number of prompts (a few numbers each), not with the length of the file.

Example::

    python -m tilt.sample --graph grid4 --prompts 200 --out run.jsonl
    python -m tilt.audit run.jsonl
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tilt._numerics import FloatArray
from tilt.audit._objective import (
    AuditObjective,
    Corrections,
    resolve_lengths,
    resolve_objective,
    rollout_corrections,
)
from tilt.audit._read import AuditInputError, Prompt, Rollout, read_prompts
from tilt.measures import least_squares_slope
from tilt.policy import Policy, as_generator

__all__ = [
    "AuditInputError",
    "PromptEstimate",
    "Interval",
    "AuditResult",
    "estimate_prompt",
    "audit_prompts",
    "audit_lines",
    "token_slope",
    "MIN_PROMPTS",
    "MIN_ESS_FRACTION",
    "RolloutScore",
    "iter_estimates",
    "stream_estimates",
    "Diagnostic",
]

MIN_PROMPTS = 30
"""Fewer prompts with a slope than this: the audit warns that the interval is unreliable."""

MIN_ESS_FRACTION = 0.5
"""A median effective sample size below this fraction of the correct rollouts: the audit warns
that the importance weights are heavy-tailed."""

MIN_DEMOS = 4
"""The entropy check of earlier releases (four demonstrations per rollout); the check now asks
for every correct sibling, the only setting measured to cover (docs/audit.md)."""

MIN_ENTROPY_CORRECT = 24
"""Fewer correct rollouts per prompt (median) than this: the verdict does not quote the entropy
change (self-normalised weights over small groups are biased: with every sibling scored it
covered 0.92 at 32 rollouts per prompt, about 25 correct, and 0.57-0.68 at 8; docs/audit.md)."""

MAX_TAIL = 0.01
"""A mean tail mass of the teachers' top-k lists above this: the verdict shows no estimate for an
objective that reads the lists (top-1 lists on grid4, tail about 0.35, biased token by +0.035
and length-weighted by +0.056; full lists leave none; docs/audit.md)."""

MAX_PROMPT_SHARE = 0.25
"""One prompt carrying more than this share of the slope's numerator (in absolute value): the
audit warns that the tilt scores are heavy-tailed."""


@dataclass(frozen=True)
class PromptEstimate:
    """What one prompt contributes.

    Attributes
    ----------
    prompt : str
    n_rollouts, n_correct : int
    slope_num, slope_den : float
        Unbiased for ``(k - 1) cov(S, log pi)`` and ``(k - 1) var(log pi)`` over
        correct rollouts; ``nan`` when ``k < 3``.
    token_num, token_den : float
        Per-token analogues (each unbiased for ``k`` times the per-rollout
        token sums); ``nan`` without per-token values or when ``k < 3``.
    delta_entropy : float
        Self-normalised estimate of ``H(q*(. | C)) - H(pi(. | C))``; ``nan`` when ``k < 2``.
    ess : float
        Effective sample size ``(sum w)^2 / sum w^2`` of the weights ``exp(S^)``.
    tilt_spread : float
        Standard deviation of the centred tilt scores of the correct rollouts.
    mean_demos : float
        Mean number of demonstrations scored with each correct rollout.
    objective_num, objective_den : float
        The slope terms of the audited objective's log-ratio ``L = S + sum_t Delta``
        (``docs/audit.md``); equal to ``slope_num``, ``slope_den`` for ``sequence``;
        ``nan`` when a correct rollout has too few demonstrations for its correction.
    objective_delta_entropy, objective_ess : float
        The entropy change and effective sample size with weights ``exp(L^)``.
    reference : bool
        The teachers see one fixed reference demonstration (OPSD, SDFT).
    tail_mass : float
        The mean mass the teachers' top-k lists leave in the tail (``nan`` when the
        objective reads no lists).
    objective_shift_low, objective_shift_high : float
        For an objective whose approximation is bounded (``length-weighted``), the
        least and the largest change of ``objective_num`` that the approximation's
        error allows (0 for the others).
    """

    prompt: str
    n_rollouts: int
    n_correct: int
    slope_num: float = math.nan
    slope_den: float = math.nan
    token_num: float = math.nan
    token_den: float = math.nan
    delta_entropy: float = math.nan
    ess: float = math.nan
    tilt_spread: float = math.nan
    mean_demos: float = math.nan
    objective_num: float = math.nan
    objective_den: float = math.nan
    objective_delta_entropy: float = math.nan
    objective_ess: float = math.nan
    reference: bool = False
    tail_mass: float = math.nan
    objective_shift_low: float = 0.0
    objective_shift_high: float = 0.0

    @property
    def usable(self) -> bool:
        """At least two correct rollouts: SDPO trains on this prompt."""
        return self.n_correct >= 2

    @property
    def sloped(self) -> bool:
        """Whether the prompt gives a slope (three correct rollouts; two with a reference)."""
        return bool(np.isfinite(self.slope_num))

    @property
    def slope(self) -> float:
        """This prompt's own amplification estimate (noisy; the pooled one is the report)."""
        if not (self.slope_den > 0):
            return math.nan
        return self.slope_num / self.slope_den

    @property
    def objective_slope(self) -> float:
        """This prompt's own amplification estimate for the audited objective (noisy)."""
        if not (self.objective_den > 0):
            return math.nan
        return self.objective_num / self.objective_den


@dataclass(frozen=True)
class RolloutScore:
    """The tilt-score estimate of one rollout (``nan`` when it has no teacher score)."""

    prompt: str
    rollout: str
    correct: bool
    logp: float
    tilt_score: float
    centred: float


def _scores(prompt: Prompt) -> tuple[FloatArray, list[RolloutScore]]:
    """Per correct rollout ``S^`` (in order), and every rollout's score record."""
    values = np.array(
        [
            np.mean([s.logp for s in r.teacher]) - r.logp if r.teacher else math.nan
            for r in prompt.rollouts
        ]
    )
    correct = np.array([r.correct for r in prompt.rollouts], dtype=bool)
    centre = float(np.nanmean(values[correct])) if np.isfinite(values[correct]).any() else math.nan
    records = [
        RolloutScore(prompt.prompt, r.rollout, r.correct, r.logp, float(v), float(v - centre))
        for r, v in zip(prompt.rollouts, values, strict=True)
    ]
    return values[correct], records


def _entropy_change(x: FloatArray, log_ratio: FloatArray) -> tuple[float, float]:
    """Self-normalised ``H(q(. | C)) - H(pi(. | C))`` with weights ``exp(L)``, and their ESS."""
    k = x.size
    weights = np.exp(log_ratio - log_ratio.max())
    total = weights.sum()
    q_mean_x = float(weights @ x) / total
    q_mean_s = float(weights @ log_ratio) / total
    log_mean_exp = float(log_ratio.max() + math.log(total / k))
    delta_entropy = float(x.mean()) - q_mean_x - q_mean_s + log_mean_exp
    return delta_entropy, float(total**2 / (weights @ weights))


def estimate_prompt(
    prompt: Prompt, objective: AuditObjective | None = None
) -> tuple[PromptEstimate, list[RolloutScore]]:
    """The estimates of one prompt (:class:`PromptEstimate`) and its per-rollout tilt scores.

    ``objective`` (default ``sequence``) adds the slope and entropy terms of its
    fixed point's log-ratio (:func:`rollout_corrections`).

    Raises
    ------
    AuditInputError
        When the objective needs per-token values or top-k lists the prompt lacks.
    """
    objective = objective if objective is not None else resolve_objective()
    correct = [r for r in prompt.rollouts if r.correct]
    k = len(correct)
    tilt, records = _scores(prompt)
    reference = prompt.reference is not None
    base = PromptEstimate(prompt.prompt, len(prompt.rollouts), k, reference=reference)
    if k < 2:
        return base, records
    _check_inputs(correct, objective)
    x = np.array([r.logp for r in correct])
    delta_entropy, ess = _entropy_change(x, tilt)
    fields: dict[str, Any] = {
        "delta_entropy": delta_entropy,
        "ess": ess,
        "tilt_spread": float(np.std(tilt - tilt.mean())),
        "mean_demos": float(np.mean([len(r.teacher) for r in correct])),
    }
    corrections = rollout_corrections(correct, objective, _lengths(prompt, objective))
    fields["tail_mass"] = corrections.tail
    log_ratio = tilt + corrections.value
    if np.isfinite(log_ratio).all():
        fields["objective_delta_entropy"], fields["objective_ess"] = _entropy_change(x, log_ratio)
    if reference:
        # c* is no rollout of the group: the plain within-prompt fit is unbiased,
        # E[sum (x - xbar) L] = (k - 1) cov and E[sum (x - xbar)^2] = (k - 1) var
        dx = x - x.mean()
        fields.update(slope_num=float(dx @ tilt), slope_den=float(dx @ dx))
        fields.update(objective_num=float(dx @ log_ratio), objective_den=float(dx @ dx))
    elif k >= 3:
        fields.update(_slope_terms(correct, x))
        fields["objective_num"] = fields["slope_num"] + _correction_term(correct, x, corrections)
        fields["objective_den"] = fields["slope_den"]
        if corrections.low is not None and corrections.high is not None:
            fields.update(_shift_terms(correct, x, corrections.low, corrections.high))
        if correct[0].token_logp is not None:
            fields.update(_token_terms(correct))
    estimate = PromptEstimate(prompt.prompt, len(prompt.rollouts), k, reference=reference)
    return replace(estimate, **fields), records


def _lengths(prompt: Prompt, objective: AuditObjective) -> tuple[int, int] | None:
    """The lengths that bound the approximation: the objective's, checked against every
    rollout of the prompt (correct or not: the fixed point's expected lengths run over
    every rollout), else the prompt's own shortest and longest."""
    if not objective.bounded:
        return objective.lengths
    return resolve_lengths(prompt.rollouts, objective.lengths)


def _shift_terms(
    correct: list[Rollout],
    x: FloatArray,
    low: tuple[FloatArray, ...],
    high: tuple[FloatArray, ...],
) -> dict[str, float]:
    """The least and the largest change of the objective's slope numerator that the
    approximation's error allows.

    Rollout ``j``'s correction weighs ``(k - 1)/k (x_j - mean of the others)`` in the
    numerator (as in :func:`_correction_term`).  The exact term of a prefix and move
    ``hu`` is one number for every rollout through it, so the errors are grouped by
    ``hu`` (the tokens up to and including ``u``): each group's error, anywhere
    within the widest range its rollouts' plug-ins give, moves the numerator by the
    sum of their weights, whose signs partly cancel.
    """
    k = x.size
    weight = (x - (x.sum() - x) / (k - 1)) * (k - 1) / k
    nodes: dict[tuple[object, ...], list[float]] = {}
    for j, r in enumerate(correct):
        if low[j].size == 0:
            continue
        assert r.tokens is not None  # the bounded objective reads top lists, which need tokens
        for t in range(low[j].size):
            node = nodes.setdefault(tuple(r.tokens[: t + 1]), [0.0, 0.0, 0.0])
            node[0] += float(weight[j])
            node[1] = min(node[1], float(low[j][t]))
            node[2] = max(node[2], float(high[j][t]))
    shift_low = shift_high = 0.0
    for total, least, largest in nodes.values():
        if total == 0.0:  # 0 * inf: no weight moves nothing
            continue
        ends = (total * least, total * largest)
        shift_low += min(ends)
        shift_high += max(ends)
    return {"objective_shift_low": shift_low, "objective_shift_high": shift_high}


def _check_inputs(correct: list[Rollout], objective: AuditObjective) -> None:
    """Refuse a prompt whose logged values cannot give the objective's correction."""
    if not objective.needs_demos:
        return
    for r in correct:
        if not r.teacher or r.teacher[0].reference:
            continue
        if r.token_logp is None and objective.kind != "forward":
            raise AuditInputError(
                f"line {r.line}: objective {objective.spec} needs each teacher's per-token "
                "log-probabilities ('token_logp' on the rollout and its teacher scores); this "
                "log has none"
            )
        if objective.needs_top and any(s.top is None for s in r.teacher):
            raise AuditInputError(
                f"line {r.line}: objective {objective.spec} needs each teacher's top-k "
                "next-token log-probabilities at every position ('top' on each teacher score, "
                "with the rollout's 'tokens'); this log has none (token-forward, forward and "
                "sequence do not need them)"
            )


def _correction_term(correct: list[Rollout], x: FloatArray, corrections: Corrections) -> float:
    """The correction's slope numerator, unbiased for ``(k - 1) cov(B, log pi)`` to first order.

    ``sum_j (x_j - m_(-j)) B_j`` centres on the mean of the other correct
    rollouts, which contains ``j``'s demonstrations: ``B_j`` depends on them,
    so the sum is off by ``-sum_(c in D_j) cov(x_c, B_j) / (k - 1)``.  That
    covariance equals ``cov(x_c, B_j - B_j^(-c))`` (the leave-``c``-out value does
    not depend on ``c``), estimated by ``(x_c - m_(-j,-c)) * influence``; the
    remaining error is of second order in ``1/m``.  Times ``(k - 1)/k`` as the
    sequence numerator.
    """
    value = corrections.value
    if not np.isfinite(value).all():
        return math.nan
    k = len(correct)
    where = _positions(correct)
    total_x = float(x.sum())
    total = 0.0
    for j, r in enumerate(correct):
        rest = (total_x - x[j]) / (k - 1)
        total += (x[j] - rest) * value[j]
        for s, moved in zip(r.teacher, corrections.influence[j], strict=True):
            c = where[s.demo]
            centre = (total_x - x[j] - x[c]) / (k - 2)
            total += (x[c] - centre) * moved / (k - 1)
    return total * (k - 1) / k


def _positions(correct: list[Rollout]) -> dict[str, int]:
    return {r.rollout: i for i, r in enumerate(correct)}


def _slope_terms(correct: list[Rollout], x: FloatArray) -> dict[str, float]:
    """``(k-1)/k sum_j mean_c (x_j - mean of x without j, c) i(j, c)`` and ``sum (x - xbar)^2``."""
    k = len(correct)
    where = _positions(correct)
    total = float(x.sum())
    numerator = 0.0
    for j, r in enumerate(correct):
        terms = [
            (x[j] - (total - x[j] - x[where[s.demo]]) / (k - 2)) * (s.logp - r.logp)
            for s in r.teacher
        ]
        numerator += float(np.mean(terms))
    dx = x - x.mean()
    return {"slope_num": numerator * (k - 1) / k, "slope_den": float(dx @ dx)}


def _token_terms(correct: list[Rollout]) -> dict[str, float]:
    """Token-level numerator (leave-two-out centring) and denominator (split-half centring).

    Numerator: ``sum_j mean_c sum_t (x_jt - m_(-j,-c)) (log T_c(u_jt | h_jt) - x_jt)`` with
    ``m`` the token mean of the other correct rollouts; denominator:
    ``sum_j sum_t (x_jt - m_A)(x_jt - m_B)`` with ``A, B`` two halves of the others, so
    neither mean shares a draw with the term it centres.
    """
    where = _positions(correct)
    tokens = [_present(r.token_logp) for r in correct]
    sums = np.array([float(t.sum()) for t in tokens])
    lengths = np.array([t.size for t in tokens], dtype=np.float64)
    squares = np.array([float(t @ t) for t in tokens])
    total_x, total_len = float(sums.sum()), float(lengths.sum())
    numerator = denominator = 0.0
    for j, r in enumerate(correct):
        terms = []
        for s in r.teacher:
            c = where[s.demo]
            mean = (total_x - sums[j] - sums[c]) / (total_len - lengths[j] - lengths[c])
            terms.append(float((tokens[j] - mean) @ (_present(s.token_logp) - tokens[j])))
        numerator += float(np.mean(terms))
        others = np.array([i for i in range(len(correct)) if i != j])
        half_a, half_b = others[0::2], others[1::2]
        mean_a = sums[half_a].sum() / lengths[half_a].sum()
        mean_b = sums[half_b].sum() / lengths[half_b].sum()
        denominator += float(
            squares[j] - (mean_a + mean_b) * sums[j] + lengths[j] * mean_a * mean_b
        )
    return {"token_num": numerator, "token_den": denominator}


def _present(values: FloatArray | None) -> FloatArray:
    if values is None:  # the reader gives per-token values on every line or none
        raise ValueError("per-token log-probabilities missing")
    return values


# --------------------------------------------------------------------------
# pooling and the bootstrap


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile-bootstrap interval over prompts."""

    estimate: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float | None]:
        def clean(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {"estimate": clean(self.estimate), "low": clean(self.low), "high": clean(self.high)}

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Diagnostic:
    """One check an estimate relies on: whether it holds, what was seen, what would fix it."""

    name: str
    holds: bool
    reading: str
    fix: str


@dataclass(frozen=True)
class AuditResult:
    """Everything ``python -m tilt.audit`` reports.

    ``amplification`` and ``delta_entropy`` are sequence SD's (today's audit);
    ``objective_amplification`` and ``objective_delta_entropy`` are the audited
    objective's (equal for ``sequence``; ``None`` where the log cannot give
    them), each shown in the verdict only where its ``slope_checks`` or
    ``entropy_checks`` all hold.  ``objective_bound`` (``length-weighted``) is
    ``objective_amplification``'s interval widened by every value the
    approximation's error can take within the rollout lengths
    (:func:`tilt.audit.length_weighted_range`): the interval the verdict quotes.
    """

    n_prompts: int
    n_rollouts: int
    n_usable: int
    n_sloped: int
    amplification: Interval
    token_amplification: Interval | None
    delta_entropy: Interval
    median_ess_fraction: float
    confidence: float
    bootstrap: int
    seed: int
    warnings: tuple[str, ...]
    prompts: tuple[PromptEstimate, ...] = field(repr=False)
    objective: AuditObjective = field(default_factory=resolve_objective)
    objective_amplification: Interval | None = None
    objective_bound: Interval | None = None
    objective_delta_entropy: Interval | None = None
    objective_ess_fraction: float = math.nan
    slope_checks: tuple[Diagnostic, ...] = ()
    entropy_checks: tuple[Diagnostic, ...] = ()

    @property
    def effective_ratio(self) -> Interval:
        """``exp(Delta H)``: the factor on the effective number of correct rollouts."""
        d = self.delta_entropy
        return Interval(math.exp(d.estimate), math.exp(d.low), math.exp(d.high))

    @property
    def objective_effective_ratio(self) -> Interval | None:
        """``exp(Delta H)`` of the audited objective's fixed point."""
        d = self.objective_delta_entropy
        if d is None:
            return None
        return Interval(math.exp(d.estimate), math.exp(d.low), math.exp(d.high))

    def verdict(self) -> str:
        """One line naming the objective: ratios kept, amplified or damped, with the effective
        number where its checks hold; otherwise the check that failed and what would fix it."""
        name = self.objective.describe()
        a = self.objective_bound or self.objective_amplification
        if a is not None and math.isnan(a.estimate):
            return (
                f"{name}: no verdict on the gaps: every correct rollout has the same "
                "log-probability, so the slope of S on log pi is undefined"
            )
        failed = [d for d in self.slope_checks if not d.holds]
        if a is None or failed:
            reasons = "; ".join(f"{d.reading}: {d.fix}" for d in failed) or "no estimate"
            return f"{name}: no estimate shown: {reasons}"
        level = f"{100 * self.confidence:g}%"
        slope = f"gap slope {1 + a.estimate:.3f} [{1 + a.low:.3f}, {1 + a.high:.3f}]"
        if a.low <= 0 <= a.high:
            head = f"SD keeps the ratios among correct rollouts within the {level} interval"
        elif a.low > 0:
            head = (
                f"SD will widen the gaps among correct rollouts: log-ratios amplified by "
                f"{1 + a.estimate:.3f}"
            )
        else:
            head = (
                f"SD will narrow the gaps among correct rollouts: log-ratios damped to "
                f"{1 + a.estimate:.3f}"
            )
        e = self.objective_effective_ratio
        bad = [d for d in self.entropy_checks if not d.holds]
        if e is None or bad:
            why = "; ".join(f"{d.reading}: {d.fix}" for d in bad) or "not estimable"
            eff = f"effective number of correct rollouts not shown ({why})"
        else:
            eff = (
                f"effective number of correct rollouts x{e.estimate:.3f} "
                f"[{e.low:.3f}, {e.high:.3f}]"
            )
        note = self.objective.approximation
        tail = f"; approximation: {note}" if note else ""
        plain = self.objective_amplification
        if self.objective_bound is not None and plain is not None:
            lengths = self.objective.lengths
            span = (
                f"rollouts of {lengths[0]} to {lengths[1]} tokens"
                if lengths is not None
                else "each prompt's shortest to longest logged rollout; --lengths sets them"
            )
            tail += (
                f" (under it {1 + plain.estimate:.3f} [{1 + plain.low:.3f}, "
                f"{1 + plain.high:.3f}]); the interval includes its largest error for {span}"
            )
        return f"{name}: {head} ({slope}; {eff}{tail})"


def _percentiles(samples: FloatArray, confidence: float) -> tuple[float, float]:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return math.nan, math.nan
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def _bootstrap(
    columns: dict[str, FloatArray], bootstrap: int, rng: np.random.Generator
) -> dict[str, FloatArray]:
    """Resample prompts ``bootstrap`` times; return the resampled column sums."""
    n = next(iter(columns.values())).size
    out = {name: np.empty(bootstrap) for name in columns}
    chunk = max(1, (1 << 22) // max(n, 1))
    for start in range(0, bootstrap, chunk):
        size = min(chunk, bootstrap - start)
        index = rng.integers(0, n, size=(size, n))
        for name, values in columns.items():
            out[name][start : start + size] = values[index].sum(axis=1)
    return out


def audit_prompts(
    estimates: Iterable[PromptEstimate],
    bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int | np.random.Generator | None = 0,
    objective: AuditObjective | None = None,
) -> AuditResult:
    """Pool per-prompt estimates into the report, with bootstrap intervals over prompts.

    The amplification is ``sum slope_num / sum slope_den`` over prompts with at
    least three correct rollouts (a ratio of sums: prompts weigh by their number
    of correct rollouts); ``Delta H`` is the mean over prompts with at least two.
    The audited ``objective`` (the one the estimates were made for; default
    ``sequence``) is pooled the same way over the prompts whose correction is
    estimable.  Every prompt with two or more correct rollouts is resampled
    together.

    Raises
    ------
    ValueError
        When no prompt has two correct rollouts, or none has three (no slope).
    """
    objective = objective if objective is not None else resolve_objective()
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 1:
        raise ValueError(f"bootstrap must be a positive integer, got {bootstrap!r}")
    rng = as_generator(seed)
    seed_value = seed if isinstance(seed, int) else -1
    every = list(estimates)
    usable = [e for e in every if e.usable]
    if not usable:
        raise ValueError(
            f"no prompt has two correct rollouts ({len(every)} prompts read): SD has no signal "
            "and there is nothing to audit"
        )
    sloped = [e for e in usable if e.sloped]
    if not sloped:
        raise ValueError(
            f"no prompt has three correct rollouts ({len(usable)} have two): the amplification "
            "needs three per prompt (sample more rollouts per prompt)"
        )

    def column(name: str) -> FloatArray:
        values = np.array([getattr(e, name) for e in usable])
        return np.where(np.isfinite(values), values, 0.0)

    def present(name: str) -> FloatArray:
        return np.array([float(np.isfinite(getattr(e, name))) for e in usable])

    has_tokens = all(np.isfinite(e.token_num) for e in sloped)
    columns = {
        name: column(name)
        for name in (
            "slope_num",
            "slope_den",
            "delta_entropy",
            "objective_num",
            "objective_den",
            "objective_delta_entropy",
        )
    }
    columns["count"] = np.ones(len(usable))
    columns["objective_count"] = present("objective_delta_entropy")
    columns["objective_den"] *= present("objective_num")
    if has_tokens:
        columns["token_num"], columns["token_den"] = column("token_num"), column("token_den")
    shifts = {}
    if objective.bounded:  # a prompt without the objective's estimate moves nothing
        for end in ("low", "high"):
            shift = np.array([getattr(e, f"objective_shift_{end}") for e in usable])
            shifts[end] = np.where(present("objective_num") > 0, shift, 0.0)
            columns[f"objective_{end}"] = columns["objective_num"] + np.where(
                np.isfinite(shifts[end]), shifts[end], 0.0
            )
    sums = {name: float(values.sum()) for name, values in columns.items()}
    boot = _bootstrap(columns, bootstrap, rng)

    def ratio(num: str, den: str) -> Interval:
        if not sums[den] > 0:  # every correct rollout with the same log-probability: no slope
            return Interval(math.nan, math.nan, math.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            samples = boot[num] / boot[den]
        return Interval(sums[num] / sums[den], *_percentiles(samples, confidence))

    amplification = ratio("slope_num", "slope_den")
    token = ratio("token_num", "token_den") if has_tokens else None
    delta = ratio("delta_entropy", "count")
    with_objective = [e for e in sloped if np.isfinite(e.objective_num)]
    objective_amplification = ratio("objective_num", "objective_den") if with_objective else None
    objective_bound = None
    if objective.bounded and objective_amplification is not None:
        low = ratio("objective_low", "objective_den").low
        high = ratio("objective_high", "objective_den").high
        if not np.isfinite(shifts["low"]).all():  # a sampled token without teacher mass
            low = -math.inf
        if not np.isfinite(shifts["high"]).all():
            high = math.inf
        objective_bound = Interval(objective_amplification.estimate, low, high)
    objective_delta = (
        ratio("objective_delta_entropy", "objective_count") if sums["objective_count"] > 0 else None
    )
    ess_fraction = float(np.median([e.ess / e.n_correct for e in usable]))
    objective_ess = [e.objective_ess / e.n_correct for e in usable if np.isfinite(e.objective_ess)]
    objective_ess_fraction = float(np.median(objective_ess)) if objective_ess else math.nan
    warnings = _warnings(every, usable, sloped, ess_fraction)
    return AuditResult(
        n_prompts=len(every),
        n_rollouts=sum(e.n_rollouts for e in every),
        n_usable=len(usable),
        n_sloped=len(sloped),
        amplification=amplification,
        token_amplification=token,
        delta_entropy=delta,
        median_ess_fraction=ess_fraction,
        confidence=confidence,
        bootstrap=bootstrap,
        seed=seed_value,
        warnings=tuple(warnings),
        prompts=tuple(every),
        objective=objective,
        objective_amplification=objective_amplification,
        objective_bound=objective_bound,
        objective_delta_entropy=objective_delta,
        objective_ess_fraction=objective_ess_fraction,
        slope_checks=_slope_checks(objective, sloped, with_objective),
        entropy_checks=_entropy_checks(usable, objective_ess_fraction, objective),
    )


def _warnings(
    every: list[PromptEstimate],
    usable: list[PromptEstimate],
    sloped: list[PromptEstimate],
    ess_fraction: float,
) -> list[str]:
    """What the checks (:class:`Diagnostic`) do not say: prompts that give no slope."""
    out = []
    if sloped and not sum(e.slope_den for e in sloped) > 0:
        out.append(
            "every correct rollout of each prompt has the same log-probability (a uniform "
            "model, or equal-length routes): there are no gaps among correct rollouts, so the "
            "amplification (the slope of S on log pi) is undefined"
        )
    skipped = len(every) - len(sloped)
    if skipped > len(every) / 2:
        out.append(
            f"{skipped} of {len(every)} prompts have fewer than three correct rollouts and give "
            "no slope: sample more rollouts per prompt"
        )
    return out


def _slope_checks(
    objective: AuditObjective, sloped: list[PromptEstimate], with_objective: list[PromptEstimate]
) -> tuple[Diagnostic, ...]:
    """What the objective's slope relies on (``docs/audit.md``, "Where the estimator fails")."""
    checks = []
    if objective.kind == "forward":
        checks.append(
            Diagnostic(
                "estimator",
                False,
                "forward's correction, log E_c T_c(y) - E_c log T_c(y) over whole rollouts, is a "
                "log of a mean of heavy-tailed sequence probabilities that a handful of "
                "demonstrations does not pin down (not validated)",
                "audit token-forward, the per-token forward KL trainers run",
            )
        )
    if objective.needs_demos:
        short = len(sloped) - len(with_objective)
        demos = float(np.median([e.mean_demos for e in sloped]))
        checks.append(
            Diagnostic(
                "demonstrations",
                short == 0,
                f"{short} of {len(sloped)} prompts have a correct rollout scored with fewer than "
                f"2 demonstrations (median {demos:g}); {objective.spec}'s per-position correction "
                "compares teachers with different demonstrations at the same positions",
                "score each rollout with 2 or more correct siblings (the validation used every "
                "sibling)",
            )
        )
    if objective.needs_top:
        tails = [e.tail_mass for e in with_objective if np.isfinite(e.tail_mass)]
        tail = float(np.mean(tails)) if tails else 0.0
        checks.append(
            Diagnostic(
                "top-k",
                tail <= MAX_TAIL,
                f"the teachers' top-k lists leave {tail:.3f} of their mass in the tail (mean; "
                f"the check allows {MAX_TAIL:g}): {objective.spec}'s correction lumps it into "
                "one bucket, which biases it (docs/audit.md measures top-1 lists)",
                "log longer top-k lists",
            )
        )
    # prompts that lack demonstrations fail the check above, not this one
    n = len(with_objective) if with_objective else len(sloped)
    checks.append(
        Diagnostic(
            "prompts",
            n >= MIN_PROMPTS,
            f"{n} prompts give the slope (bootstrap intervals over fewer than {MIN_PROMPTS} "
            "undercover)",
            f"audit {max(MIN_PROMPTS - n, 0)} more prompts with three or more correct rollouts",
        )
    )
    numerators = np.abs([e.objective_num for e in with_objective])
    share = float(numerators.max() / numerators.sum()) if numerators.sum() > 0 else 0.0
    checks.append(
        Diagnostic(
            "evidence",
            len(with_objective) < 4 or share <= MAX_PROMPT_SHARE,
            f"one prompt carries {100 * share:.0f}% of the slope's evidence (heavy-tailed scores; "
            f"the check needs at most {100 * MAX_PROMPT_SHARE:.0f}%)",
            "audit more prompts (200 restored the coverage where 50 undercovered)",
        )
    )
    return tuple(checks)


def _entropy_checks(
    usable: list[PromptEstimate], ess_fraction: float, objective: AuditObjective
) -> tuple[Diagnostic, ...]:
    """What the effective-number change relies on: light-tailed weights, enough demonstrations,
    and (for an objective with a per-position correction) weights free of the jackknife's noise."""
    own = [e for e in usable if not e.reference]
    checks = []
    if objective.needs_demos and own:
        checks.append(
            Diagnostic(
                "correction noise",
                False,
                f"{objective.spec}'s weights exp(L^) carry the noise of its per-position "
                "correction, which biases the entropy change (docs/audit.md measures it)",
                "read the amplification; more demonstrations per rollout shrink the noise",
            )
        )
    checks += [
        Diagnostic(
            "weights",
            bool(ess_fraction >= MIN_ESS_FRACTION),
            f"median effective sample size of the weights exp(L) is {ess_fraction:.2f} of the "
            f"correct rollouts (needs {MIN_ESS_FRACTION:g})",
            "sample more rollouts per prompt",
        )
    ]
    correct = float(np.median([e.n_correct for e in usable]))
    checks.append(
        Diagnostic(
            "group size",
            correct >= MIN_ENTROPY_CORRECT,
            f"prompts have {correct:g} correct rollouts (median; needs {MIN_ENTROPY_CORRECT}: "
            "self-normalised weights over small groups are biased)",
            "sample 32 or more rollouts per prompt",
        )
    )
    if own:
        demos = float(np.median([e.mean_demos for e in own]))
        share = float(np.median([e.mean_demos / (e.n_correct - 1) for e in own]))
        checks.append(
            Diagnostic(
                "demonstrations",
                share >= 1.0 - 1e-12,
                f"rollouts are scored with {demos:g} demonstration(s) each, {100 * share:.0f}% of "
                "their correct siblings (median; the entropy change covered only with every "
                "sibling scored: exp(S^) carries the demonstrations' noise)",
                "score each rollout with every correct sibling",
            )
        )
    return tuple(checks)


def audit_lines(
    lines: Iterable[str],
    bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int | np.random.Generator | None = 0,
    threshold: float = 0.5,
    objective: str | None = None,
    preset: str | None = None,
    lengths: tuple[int, int] | None = None,
) -> AuditResult:
    """Read, validate and audit the lines of a log (see :func:`audit_prompts`).

    ``objective`` (a spec) or ``preset`` (a name of :data:`tilt.objectives.PRESETS`)
    chooses what to audit; neither: what the log says it trained with
    (``objective`` on its lines), else ``sequence``; ``lengths`` as in
    :class:`tilt.audit.AuditObjective`.  This is the whole audit of a plain log:
    ``audit_lines(open("run.jsonl"), preset="sdpo")``.
    """
    chosen, stream = stream_estimates(lines, threshold, objective, preset, lengths)
    estimates = [estimate for estimate, _ in stream]
    return audit_prompts(estimates, bootstrap, confidence, seed, chosen)


def stream_estimates(
    lines: Iterable[str],
    threshold: float = 0.5,
    objective: str | None = None,
    preset: str | None = None,
    lengths: tuple[int, int] | None = None,
) -> tuple[AuditObjective, Iterator[tuple[PromptEstimate, list[RolloutScore]]]]:
    """The audited objective and, per prompt, its estimates and per-rollout tilt scores.

    Reads the first prompt at once (the log's ``objective`` is on every line or
    none, so its first line says it), the rest as the iterator is consumed.

    Raises
    ------
    AuditInputError
        On a bad line, or a preset whose demonstrations the log's teachers did not see.
    ValueError
        On both ``objective`` and ``preset``, or an unknown one.
    """
    prompts = read_prompts(lines, threshold)
    first = next(prompts)
    chosen = resolve_objective(objective, preset, first.objective, lengths)

    def run() -> Iterator[tuple[PromptEstimate, list[RolloutScore]]]:
        for prompt in itertools.chain([first], prompts):
            _check_demos(chosen, prompt)
            yield estimate_prompt(prompt, chosen)

    return chosen, run()


def _check_demos(objective: AuditObjective, prompt: Prompt) -> None:
    """A preset fixes its demonstrations: a log whose teachers saw the other kind is refused."""
    if objective.demos is None:
        return
    kind = "reference" if prompt.reference is not None else "own"
    if kind != objective.demos:
        seen = "one fixed reference" if kind == "reference" else "correct siblings"
        raise AuditInputError(
            f"line {prompt.line}: {objective.source} trains with {objective.demos} "
            f"demonstrations but this log's teachers see {seen} (--objective "
            f"{objective.spec} audits its objective on this log)"
        )


def iter_estimates(
    lines: Iterable[str], threshold: float = 0.5
) -> Iterator[tuple[PromptEstimate, list[RolloutScore]]]:
    """Per prompt, its estimates (for the objective the log names) and tilt scores, streaming."""
    return stream_estimates(lines, threshold)[1]


# --------------------------------------------------------------------------
# exact answers (for validation on tilt's own instances)


def token_slope(policy: Policy, token_log_target: FloatArray) -> float:
    """The token-level estimand: the slope of ``s(u | h)`` on ``log pi(u | h)`` over prefixes.

    ``s(u | h) = E_c log T_c(u | h) - log pi(u | h)`` (``token_log_target`` minus
    the policy's conditionals, see
    :meth:`tilt.context.ContextModel.token_log_target`), each prefix ``hu``
    weighted by the probability that a correct rollout of ``pi`` passes it.
    """
    space = policy.space
    flow = space.subtree_sum(np.where(space.correct, policy.prob, 0.0))[1:]
    x = policy.log_conditionals()[1:]
    s = token_log_target[1:] - x
    keep = (flow > 0) & np.isfinite(x) & np.isfinite(s)
    return least_squares_slope(x[keep], s[keep], flow[keep])
