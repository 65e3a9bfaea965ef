"""The task instance ``(G, s, t, H)``: what a prompt is."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import networkx as nx


__all__ = ["Task"]


@dataclass(frozen=True)
class Task:
    """A task instance ``(G, s, t, H)``.

    Attributes
    ----------
    name : str
        Catalogue name or file name, used in reports.
    graph : networkx.DiGraph
        Directed graph; each edge may carry a finite float ``logit``.
    source, target : hashable
        Nodes of ``graph``, ``source != target``.
    horizon : int or None
        Most moves a rollout may make; ``None`` means unlimited.
    description : str
        One line on what the instance isolates and its default base.
    """

    name: str
    graph: nx.DiGraph
    source: Hashable
    target: Hashable
    horizon: int | None = None
    description: str = ""
