"""One student for a whole suite: shared weights, and what SD does to prompts it never trained on.

``logit(h, u, x) = theta . phi(h, u, x)`` over every prompt ``x`` of a suite
(:mod:`tilt.share._features`), trained exactly on the training prompts
(:mod:`tilt.share._exact`, :mod:`tilt.share._train`) and measured on training and
held-out prompts at matched training pass@1 (:mod:`tilt.share._measure`; RL
matched along its run or by ``beta`` at its optimum, :mod:`tilt.share._rl_match`).
``python -m tilt.share`` runs it; ``docs/sharing.md`` reports what it shows.
"""

from tilt.share._exact import (
    EMA_RATE,
    OBJECTIVES,
    SHARED_DEMOS,
    TEACHERS,
    SharedStudent,
    ShareObjective,
    objective_help,
)
from tilt.share._features import FEATURES, FeatureMap, SharedFeatures, make_features
from tilt.share._measure import (
    RL_MATCHES,
    Checkpoint,
    Experiment,
    SetMeasures,
    SuiteStudent,
    run_experiment,
    set_measures,
    suite_student,
)
from tilt.share._rl_match import BetaMatch, match_rl_beta, rl_optimum_theta
from tilt.share._run import ShareRun, mean_accuracy
from tilt.share._sampled import SampledObjective, mean_total_variation, train_sampled
from tilt.share._suites import SHARE_SUITES, SPLITS, share_suite, split_suite
from tilt.share._train import matched_theta, train_shared

__all__ = [
    "SHARED_DEMOS",
    "objective_help",
    "SampledObjective",
    "mean_total_variation",
    "train_sampled",
    "EMA_RATE",
    "OBJECTIVES",
    "TEACHERS",
    "FEATURES",
    "SHARE_SUITES",
    "SPLITS",
    "FeatureMap",
    "SharedFeatures",
    "SharedStudent",
    "ShareObjective",
    "ShareRun",
    "SetMeasures",
    "Checkpoint",
    "Experiment",
    "make_features",
    "share_suite",
    "split_suite",
    "train_shared",
    "matched_theta",
    "mean_accuracy",
    "set_measures",
    "run_experiment",
    "RL_MATCHES",
    "SuiteStudent",
    "suite_student",
    "BetaMatch",
    "match_rl_beta",
    "rl_optimum_theta",
]
