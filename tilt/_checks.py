"""Argument checks shared by the public entry points: one ``TypeError`` or ``ValueError``
that names the argument, raised at the boundary instead of an ``AttributeError`` or
``IndexError`` deep inside.

Private: the library's functions call these; users see only the messages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "check_k",
    "check_beta",
    "check_int",
    "check_ints",
    "check_real",
    "check_number",
    "check_instance",
    "check_same_length",
]


def check_int(name: str, value: object, minimum: int | None = None) -> int:
    """``value`` as an ``int``; ``TypeError`` unless an integer (``bool`` is not one),
    ``ValueError`` below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_ints(name: str, values: object, minimum: int | None = None) -> tuple[int, ...]:
    """A non-empty sequence of integers, each checked by :func:`check_int` (named ``name[i]``)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise TypeError(
            f"{name} must be a sequence of integers, got {type(values).__name__} {values!r}"
        )
    if len(values) == 0:
        raise ValueError(f"{name} must hold at least one integer, got an empty sequence")
    return tuple(check_int(f"{name}[{i}]", v, minimum) for i, v in enumerate(values))


def check_real(name: str, value: object) -> float:
    """``value`` as a ``float``; ``TypeError`` unless a real number (``bool`` is not one).

    No range check: the caller keeps its own, with its own words.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    return float(value)


def check_number(
    name: str,
    value: object,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    allow_inf: bool = False,
    low_open: bool = False,
) -> float:
    """``value`` as a ``float`` in ``[low, high]`` (``(low, high]`` with ``low_open``).

    ``TypeError`` unless a real number (``bool`` is not one); ``ValueError`` for ``nan``,
    for ``±inf`` unless ``allow_inf``, and outside the range (the message gives it).
    """
    number = check_real(name, value)
    if math.isnan(number) or (math.isinf(number) and not allow_inf):
        raise ValueError(f"{name} must be a finite number, got {number!r}")
    below = number <= low if low_open else number < low
    if below or number > high:
        opening = "(" if low_open else "["
        raise ValueError(f"{name} must lie in {opening}{low:g}, {high:g}], got {number!r}")
    return number


def check_instance(name: str, value: object, kind: type | tuple[type, ...]) -> Any:
    """``value`` unchanged; ``TypeError`` naming ``name`` unless an instance of ``kind``."""
    if not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        wanted = " or ".join(k.__name__ for k in kinds)
        raise TypeError(f"{name} must be a {wanted}, got {type(value).__name__}")
    return value


def check_same_length(names: Sequence[str], arrays: Sequence[np.ndarray]) -> None:
    """``ValueError`` unless every array is 1-D with the same, non-zero length."""
    for name, array in zip(names, arrays, strict=True):
        if array.ndim != 1 or array.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {array.shape}")
    sizes = {array.size for array in arrays}
    if len(sizes) > 1:
        shown = ", ".join(f"{n} {a.size}" for n, a in zip(names, arrays, strict=True))
        raise ValueError(f"{' and '.join(names)} must have the same length, got {shown}")


def check_k(k: int) -> int:
    """``k`` as an ``int``: a positive integer (a sample count of pass@k and distinct@k)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def check_beta(beta: float, what: str = "beta") -> float:
    """``beta`` as a ``float``: a number ``>= 0`` (0 is the limit ``beta -> 0``)."""
    beta = check_real(what, beta)
    if math.isnan(beta) or beta < 0:
        raise ValueError(f"{what} must be >= 0 (0 is the limit {what} -> 0), got {beta!r}")
    return beta
