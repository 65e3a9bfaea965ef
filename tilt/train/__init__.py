"""The tabular-softmax trainer: gradients that must land on the closed forms.

One logit per edge of the prefix tree; exact mode (expectations over the
enumerated space) or sampled mode (Monte-Carlo rollouts and the estimators real
implementations use), frozen or live teachers (``docs/theory.md``, "The
tabular-softmax trainer").  :mod:`tilt.train._losses`, ``_estimators`` and
``_objectives`` are its private parts.
"""

from tilt.train._estimators import (
    conditionals_of_rows,
    full_vocabulary_gradient,
    leave_one_out,
    leaves_of,
    sample_categorical,
    sample_paths,
    sampled_token_coefficients,
    score_function_gradient,
    step_gradient,
    step_log_teacher,
)
from tilt.train._losses import Held
from tilt.train._objectives import (
    PER_PREFIX,
    Bound,
    ExactObjective,
    SampledGradient,
    closed_form,
    demo_source,
)
from tilt.train._trainer import (
    ALIASES,
    DEFAULT_LR,
    MODES,
    OBJECTIVES,
    TEACHERS,
    TOP_K_MODES,
    TabularSoftmax,
    TrainHistory,
    TrainObjective,
    TrainResult,
    check_train_options,
    kl_divergence,
    parse_train_objective,
    total_variation,
    train,
    train_objective_forms,
)

__all__ = [
    "conditionals_of_rows",
    "sample_categorical",
    "full_vocabulary_gradient",
    "leave_one_out",
    "leaves_of",
    "sample_paths",
    "sampled_token_coefficients",
    "score_function_gradient",
    "step_gradient",
    "step_log_teacher",
    "Held",
    "Bound",
    "PER_PREFIX",
    "ExactObjective",
    "SampledGradient",
    "closed_form",
    "demo_source",
    "OBJECTIVES",
    "ALIASES",
    "MODES",
    "TEACHERS",
    "TOP_K_MODES",
    "DEFAULT_LR",
    "TabularSoftmax",
    "TrainObjective",
    "TrainHistory",
    "TrainResult",
    "parse_train_objective",
    "train_objective_forms",
    "train",
    "check_train_options",
    "total_variation",
    "kl_divergence",
]
