"""tilt: exact optima of RL and on-policy self-distillation on enumerable rollout spaces.

The data flows one way (``docs/architecture.md``)::

    tasks -> space / policy -> context -> objectives -> engines -> measures
          -> compare, suite, train, share, audit, sample, neural -> cli

The names below are the curated API; every package documents its own.

Examples
--------
>>> import tilt
>>> space = tilt.enumerate_rollouts(tilt.named_task("grid3"))
>>> base = tilt.base_policy(space)
>>> q = tilt.sd_optimum(base, tilt.make_context("edge", 2.0), "sequence")
>>> round(tilt.gap_slope(q, base), 3) >= 1.0
True
"""

from tilt.compare import Comparison, format_table, sd_variants
from tilt.context import ContextModel, demonstrations, make_context
from tilt.engines import InstanceSpec, build_instance
from tilt.measures import Measures, gap_slope, measure, pass_at_k, widening_fraction
from tilt.objectives import (
    parse_objective,
    preset,
    rl_matched,
    rl_optimum,
    sd_optimum,
    tilt_score,
)
from tilt.policy import Policy, base_policy
from tilt.space import RolloutSpace, TooLargeError, enumerate_rollouts
from tilt.tasks import Task, load_graph, make_task, named_task

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Task",
    "named_task",
    "make_task",
    "load_graph",
    "RolloutSpace",
    "enumerate_rollouts",
    "TooLargeError",
    "Policy",
    "base_policy",
    "ContextModel",
    "make_context",
    "demonstrations",
    "rl_optimum",
    "rl_matched",
    "sd_optimum",
    "tilt_score",
    "parse_objective",
    "preset",
    "Measures",
    "measure",
    "pass_at_k",
    "gap_slope",
    "widening_fraction",
    "InstanceSpec",
    "build_instance",
    "Comparison",
    "sd_variants",
    "format_table",
]
