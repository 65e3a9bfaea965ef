"""Argument checks shared by the library's entry points: one message per kind of mistake.

Private: every check raises ``TypeError`` (wrong type) or ``ValueError`` (wrong
value) naming the argument, so that a command turns it into one line.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_k"]


def check_k(k: int) -> int:
    """``k`` as an ``int``: a positive integer (a sample count of pass@k and distinct@k)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)
