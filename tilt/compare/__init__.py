"""Compare: RL against self-distillation on one instance, exactly, on any engine.

:func:`compare` runs every method (base, RL, RL matched to SD's accuracy, and
each SD variant) through an engine instance (:mod:`tilt.engines`) and measures
it; :mod:`tilt.compare._report` prints the result as tables, JSON or one CSV
row per rollout.  ``python -m tilt.compare`` is its command
(:mod:`tilt.cli.compare`).
"""

from tilt.compare._compare import (
    DEFAULT_VARIANTS,
    METHODS,
    Comparison,
    MethodResult,
    SDVariant,
    compare,
    methods,
    sd_variants,
)
from tilt.compare._report import (
    as_json,
    check_rollout_count,
    format_strategies,
    format_table,
    on_rollouts,
    rollouts_csv,
)

__all__ = [
    "compare",
    "Comparison",
    "MethodResult",
    "SDVariant",
    "sd_variants",
    "methods",
    "DEFAULT_VARIANTS",
    "METHODS",
    "format_table",
    "format_strategies",
    "as_json",
    "rollouts_csv",
    "on_rollouts",
    "check_rollout_count",
]
