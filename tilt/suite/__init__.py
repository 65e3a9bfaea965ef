"""Suites of prompts: mean pass@k over many prompts, RL matched at one shared beta.

A :class:`Suite` is a list of prompts (tasks with a base); :func:`run_suite` solves
every prompt exactly and summarises the flattening of pass@k (``docs/guide.md``,
"Suites").
"""

from tilt.suite._suite import (
    DEFAULT_KS,
    MATCH_TOL,
    SCHEMA,
    SUITES,
    Prompt,
    PromptResult,
    Suite,
    SuiteConfig,
    SuiteResult,
    VariantSummary,
    builtin_suite,
    load_suite,
    run_suite,
    select_prompts,
    shared_beta,
    solve_prompt,
    summarise,
)

__all__ = [
    "MATCH_TOL",
    "DEFAULT_KS",
    "select_prompts",
    "SUITES",
    "SCHEMA",
    "Prompt",
    "Suite",
    "SuiteConfig",
    "PromptResult",
    "VariantSummary",
    "SuiteResult",
    "load_suite",
    "builtin_suite",
    "solve_prompt",
    "shared_beta",
    "summarise",
    "run_suite",
]
