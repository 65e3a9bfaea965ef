"""What every figure module shares: the instance it draws, and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tilt.context import ContextModel, make_context
from tilt.objectives import rl_matched, rl_optimum, sd_optimum
from tilt.policy import Policy, base_policy
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import named_task

__all__ = ["FigureResult", "base_of", "optima", "correct_rollout_rows"]


@dataclass(frozen=True)
class FigureResult:
    """Files written by one figure, its key numbers, and a skip message if it was skipped."""

    name: str
    files: tuple[Path, ...] = ()
    numbers: dict[str, object] = field(default_factory=dict)
    skipped: str = ""


def base_of(graph: str, base: str = "default", seed: int = 0) -> Policy:
    """The base policy of a named graph."""
    return base_policy(enumerate_rollouts(named_task(graph)), base, seed=seed)


def optima(pi0: Policy, model: ContextModel | tuple[str, float]) -> dict[str, Policy]:
    """Base, RL (beta -> 0), RL at sequence SD's accuracy (if reachable), the three SD optima."""
    if isinstance(model, tuple):
        model = make_context(*model)
    out = {"base": pi0, "rl": rl_optimum(pi0)}
    sds = {
        key: sd_optimum(pi0, model, method)
        for key, method in (("sd", "sequence"), ("sd_token", "token"), ("sd_forward", "forward"))
    }
    matched = rl_matched(pi0, sds["sd"].accuracy)
    if matched.policy is not None:
        out["rl_matched"] = matched.policy
    out.update(sds)
    return out


def correct_rollout_rows(pi0: Policy, columns: dict[str, np.ndarray]) -> list[dict[str, object]]:
    """One CSV row per correct rollout: its index, ``log_base`` and each column (8 digits).

    Each array in ``columns`` has one value per correct rollout, in rollout order.
    """
    correct = np.flatnonzero(pi0.space.correct)
    log_base = pi0.log_prob[correct]
    return [
        {
            "rollout": int(i),
            "log_base": float(f"{log_base[j]:.8g}"),
            **{name: float(f"{values[j]:.8g}") for name, values in columns.items()},
        }
        for j, i in enumerate(correct)
    ]
