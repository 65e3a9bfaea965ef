"""Audits of real runs: what SD does to the ratios, estimated from a log.

:func:`audit_lines` reads sampled rollouts with their log-probabilities under
the student and the teacher (``docs/audit.md``) and estimates the within-prompt
slope of the fixed point's log-ratio against the base's log-probability, with
bootstrap intervals, for sequence SD or any objective of
:data:`tilt.objectives.OBJECTIVES` (``objective=``, ``preset=``): the
per-token ones from the teachers' per-position top-k log-probabilities
(:func:`rollout_corrections`).  On a plain log:
``audit_lines(open("run.jsonl"), preset="sdpo").verdict()``.
"""

from tilt.audit._audit import (
    MIN_DEMOS,
    MIN_ENTROPY_CORRECT,
    MIN_ESS_FRACTION,
    MIN_PROMPTS,
    AuditResult,
    Diagnostic,
    Interval,
    PromptEstimate,
    RolloutScore,
    audit_lines,
    audit_prompts,
    estimate_prompt,
    iter_estimates,
    stream_estimates,
    token_slope,
)
from tilt.audit._objective import (
    AuditObjective,
    Corrections,
    length_weighted_range,
    resolve_objective,
    rollout_corrections,
)
from tilt.audit._read import (
    LOGP_TOLERANCE,
    AuditInputError,
    Prompt,
    Rollout,
    Score,
    TopK,
    read_prompts,
)

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
    "MIN_DEMOS",
    "MIN_ENTROPY_CORRECT",
    "Diagnostic",
    "AuditObjective",
    "Corrections",
    "resolve_objective",
    "rollout_corrections",
    "length_weighted_range",
    "TopK",
    "Score",
    "Rollout",
    "Prompt",
    "read_prompts",
    "LOGP_TOLERANCE",
]
