"""Argument checks shared by the library's entry points: one message per kind of mistake.

Private: every check raises ``TypeError`` (wrong type) or ``ValueError`` (wrong
value) naming the argument, so that a command turns it into one line.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["check_k", "check_beta"]


def check_k(k: int) -> int:
    """``k`` as an ``int``: a positive integer (a sample count of pass@k and distinct@k)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def check_beta(beta: float, what: str = "beta") -> float:
    """``beta`` as a ``float``: a number ``>= 0`` (0 is the limit ``beta -> 0``)."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.floating, np.integer)):
        raise TypeError(f"{what} must be a number, got {type(beta).__name__}")
    beta = float(beta)
    if math.isnan(beta) or beta < 0:
        raise ValueError(f"{what} must be >= 0 (0 is the limit {what} -> 0), got {beta!r}")
    return beta
