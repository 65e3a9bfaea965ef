"""What an instance is, independent of the engine that computes it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tilt.objectives import Objective
from tilt.space import DEFAULT_MAX_ROLLOUTS

__all__ = ["InstanceSpec", "Method"]


@dataclass(frozen=True)
class InstanceSpec:
    """A task, a base policy, a context model and the SD and RL options, by name.

    The fields are those of the commands' instance options (``docs/guide.md``):
    ``graph`` is a catalogue name, a ``lattice:`` spec or a graph file;
    ``strength=None`` is the context model's default; ``beta = 0`` is RL's limit
    ``beta -> 0``; ``reference`` a path of node labels joined by ``>`` (``None``:
    the base's most probable correct rollout).
    """

    graph: str = "grid5"
    source: str | None = None
    target: str | None = None
    horizon: int | None = None
    directed: bool = False
    max_rollouts: int = DEFAULT_MAX_ROLLOUTS
    base: str = "default"
    seed: int | None = 0
    context: str = "edge"
    strength: float | None = None
    demos: str = "own"
    reference: str | None = None
    alpha: float = 0.5
    anchor: float = 0.0
    beta: float = 0.0

    def check(self) -> None:
        """``ValueError`` on a negative ``beta``, ``anchor`` or ``alpha`` (every engine)."""
        for name, value in (("beta", self.beta), ("anchor", self.anchor), ("alpha", self.alpha)):
            if math.isnan(value) or value < 0:
                hint = " (0 is the limit beta -> 0)" if name == "beta" else ""
                raise ValueError(f"--{name} must be >= 0{hint}, got {value!r}")

    @property
    def base_label(self) -> str:
        """The base's name for headers: ``default``, ``uniform`` or ``random(seed=N)``."""
        return self.base + (f"(seed={self.seed})" if self.base == "random" else "")

    @property
    def wants_reference(self) -> bool:
        """Whether the header names the reference demonstration."""
        return self.demos == "reference" or self.reference is not None


@dataclass(frozen=True)
class Method:
    """One SD method an engine is asked for: its objective and demonstrations.

    ``demos=None`` is the instance's own ``demos``; ``required`` says whether the
    user asked for it (a row the engine cannot compute is then an error, not a
    skipped row).
    """

    objective: Objective
    demos: str | None = None
    required: bool = True
