"""Tasks: what a prompt is — a graph, a source, a target and a horizon.

A :class:`Task` is the ``(G, s, t, H)`` of ``docs/theory.md`` ("Rollout spaces").
:mod:`tilt.tasks.graphs` holds the catalogue of named graphs and the readers of
a user's graph files; :mod:`tilt.tasks.lattice` the token lattices
(``lattice:V=..,L=..``), an autoregressive model over a vocabulary as an
acyclic graph.  Both build a :class:`Task`; nothing here knows about policies.
"""

from tilt.tasks._task import Task
from tilt.tasks.graphs import (
    EDGE_LIST_SUFFIXES,
    GRAPH_FORMATS,
    PATH_SEPARATOR,
    catalogue,
    load_graph,
    make_task,
    named_task,
    resolve_task,
)
from tilt.tasks.lattice import LATTICE_PREFIX, is_lattice_name, lattice_task, parse_lattice

__all__ = [
    "Task",
    "catalogue",
    "named_task",
    "load_graph",
    "resolve_task",
    "make_task",
    "GRAPH_FORMATS",
    "EDGE_LIST_SUFFIXES",
    "PATH_SEPARATOR",
    "LATTICE_PREFIX",
    "is_lattice_name",
    "parse_lattice",
    "lattice_task",
]
