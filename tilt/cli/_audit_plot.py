"""``--plot`` of ``python -m tilt.audit``: the only place in ``tilt`` that imports matplotlib.

Imported lazily by the command line when ``--plot`` is given; the library
itself never imports matplotlib.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tilt.audit import AuditResult

__all__ = ["render"]


def render(points: np.ndarray, result: AuditResult, source: str) -> bytes:
    """PNG bytes: centred tilt score against centred ``log pi`` of correct rollouts.

    ``points`` has shape (n, 2): ``log pi(y)`` minus its prompt's mean over
    correct rollouts, and ``S^(y)`` centred likewise.  The line is the pooled
    amplification through the origin; the band spans its bootstrap interval;
    the dotted line at 0 is RL (ratios kept).  Deterministic bytes (no date in
    the metadata).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = result.amplification
    fig, ax = plt.subplots(figsize=(5.2, 4.0), dpi=150)
    try:
        if points.size:
            ax.scatter(
                points[:, 0],
                points[:, 1],
                s=6,
                alpha=0.35,
                color="#0072B2",
                lw=0,
                label=f"correct rollouts ({points.shape[0]:,} shown)",
            )
            span = np.abs(points[:, 0]).max() or 1.0
        else:
            span = 1.0
        x = np.linspace(-span, span, 50)
        ax.fill_between(
            x,
            a.low * x,
            a.high * x,
            color="#D55E00",
            alpha=0.2,
            label=f"{100 * result.confidence:g}% interval",
        )
        ax.plot(x, a.estimate * x, color="#D55E00", lw=1.6, label=f"pooled slope {a.estimate:+.3f}")
        ax.axhline(0.0, color="0.3", ls=":", lw=1, label="RL: slope 0 (ratios kept)")
        ax.set_xlabel("log pi(y), centred within prompt")
        ax.set_ylabel("tilt score S(y), centred within prompt")
        ax.set_title(f"tilt.audit {source}: {result.n_sloped:,} prompts", fontsize=9)
        ax.legend(loc="best", fontsize=7)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": None})
        return buffer.getvalue()
    finally:
        plt.close(fig)
