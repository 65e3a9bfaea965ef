"""Every figure of the case, regenerated from nothing with ``python -m figures``.

Each figure module has ``make(out, quick=False, jobs=None) -> FigureResult``:
it computes its numbers exactly with ``tilt`` (sweeps through ``analysis``),
writes them next to the figure (CSV and JSON), and writes the figure as PNG
and PDF, atomically and byte-for-byte reproducibly.  The modules are imported
lazily so that ``import figures`` works without matplotlib.
"""

from __future__ import annotations

__all__ = ["FIGURES"]

FIGURES = {
    "ratios": "figures.ratios",
    "tilt_score": "figures.tilt_score",
    "pass_at_k": "figures.pass_at_k",
    "iterated": "figures.iterated",
    "flow": "figures.flow",
    "trainer": "figures.trainer",
    "strength": "figures.strength",
    "objectives": "figures.objectives",
    "audit": "figures.audit",
    "lattice_length": "figures.lattice_length",
    "suite": "figures.suite",
    "strategies": "figures.strategies",
    "sharing": "figures.sharing",
}
"""Figure name (for ``--only``) to its module, in figure order 1..13."""
