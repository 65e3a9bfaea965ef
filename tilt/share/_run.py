"""The record of one shared-weight training run, and the mean accuracy it reports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tilt._numerics import FloatArray, IntArray
from tilt.share._exact import SharedStudent

__all__ = ["ShareRun", "mean_accuracy"]


@dataclass(frozen=True)
class ShareRun:
    """One training run: ``theta`` and the mean training accuracy after every step.

    Attributes
    ----------
    objective, teacher, optimizer : str
        ``optimizer`` is ``'lbfgs'`` or ``'gd'``.
    thetas : ndarray, shape (n_records, n_params)
        Row 0 is the initial ``theta``.
    train_accuracy : ndarray, shape (n_records,)
        Mean over the training prompts of ``q(C)``.
    value : float
        The objective at the last ``theta`` (with the teacher of the last step).
    lr : float or None
    """

    objective: str
    teacher: str
    optimizer: str
    thetas: FloatArray
    train_accuracy: FloatArray
    value: float
    lr: float | None

    @property
    def theta(self) -> FloatArray:
        """The last ``theta``."""
        return self.thetas[-1]


def mean_accuracy(student: SharedStudent, theta: FloatArray, prompts: IntArray) -> float:
    """Mean over ``prompts`` of ``q(C)`` at ``theta``."""
    return float(np.mean([p.accuracy for p in student.policies(theta, prompts)]))
