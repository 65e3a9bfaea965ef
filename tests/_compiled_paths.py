"""Running a computation with the compiled kernels on every input and with them off, and
comparing the two to ``1e-12`` (relative to ``max(1, |value|)``; equal infinities and nans
agree)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

TOL = 1e-12


def kernels_on_and_off(
    monkeypatch: pytest.MonkeyPatch, compute: Callable[[], Any]
) -> tuple[Any, Any]:
    """``compute()`` with the kernels on every input, then with them off."""
    monkeypatch.delenv("TILT_NO_JIT", raising=False)
    monkeypatch.setenv("TILT_JIT_MIN_SIZE", "0")
    compiled = compute()
    monkeypatch.setenv("TILT_NO_JIT", "1")
    plain = compute()
    monkeypatch.delenv("TILT_NO_JIT")
    monkeypatch.delenv("TILT_JIT_MIN_SIZE")
    return compiled, plain


def assert_close(a: object, b: object, tol: float = TOL) -> None:
    """Every number of ``a`` within ``tol * max(1, |b|)`` of ``b``."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert x.shape == y.shape
    ok = (np.isinf(x) & (x == y)) | (np.isnan(x) & np.isnan(y))
    with np.errstate(invalid="ignore"):  # inf - inf where ok: masked out
        gap = np.abs(np.where(ok, 0.0, x - y))
    assert np.all(ok | (gap <= tol * np.maximum(1.0, np.abs(y))))
