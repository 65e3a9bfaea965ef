"""Experiments and sweeps on the tilt library; each writes a table that ``figures/`` reads.

``python -m analysis.sweeps {iterated,strength,trainer} --out FILE.csv`` runs one
sweep on all cores (``--jobs``) and prints one progress line per finished task.
"""

__all__ = ["sweeps"]
