"""Measures of a policy against the base, computed exactly from the distribution.

:mod:`tilt.measures._measures` holds accuracy, pass@k, distinct@k, the correct
entropy, gap slopes, the widening fraction and ratio distortion, gathered in
one :class:`Measures` record by :func:`measure`; :mod:`tilt.measures.ood` the
out-of-distribution pass@k in both readings (blocked = fail, re-route);
:mod:`tilt.measures.strategies` the shares and diversity of strategies among
the correct rollouts.  Every engine fills the same :class:`Measures`.
"""

from tilt.measures._measures import (
    GAP_TOLERANCE,
    Measures,
    correct_entropy,
    correct_flow_by_move,
    distinct_at_k,
    distinct_at_ks,
    gap_slope,
    least_squares_slope,
    measure,
    pass_at_k,
    ratio_distortion,
    weighted_gap_slope,
    widening_fraction,
)
from tilt.measures.ood import (
    READING_LABELS,
    READINGS,
    OODPass,
    blocked_edges,
    ood_pass_at_k,
    ood_pass_at_ks,
    ood_success,
)
from tilt.measures.strategies import (
    STRATEGIES,
    Strategies,
    StrategyMeasures,
    strategy_labels,
    strategy_measures,
)

__all__ = [
    "Measures",
    "measure",
    "pass_at_k",
    "distinct_at_k",
    "distinct_at_ks",
    "correct_entropy",
    "gap_slope",
    "least_squares_slope",
    "weighted_gap_slope",
    "widening_fraction",
    "GAP_TOLERANCE",
    "ratio_distortion",
    "correct_flow_by_move",
    "READINGS",
    "READING_LABELS",
    "OODPass",
    "blocked_edges",
    "ood_success",
    "ood_pass_at_k",
    "ood_pass_at_ks",
    "STRATEGIES",
    "Strategies",
    "StrategyMeasures",
    "strategy_labels",
    "strategy_measures",
]
