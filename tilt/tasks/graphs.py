"""Task instances: a graph, a source, a target and a horizon.

if TYPE_CHECKING:
    import networkx as nx

A :class:`Task` is the ``(G, s, t, H)`` of ``docs/theory.md`` ("Rollout
spaces").  The catalogue holds named instances with a documented default base
policy (the edge attribute ``logit``); :func:`load_graph` reads a user's graph
from GraphML, node-link JSON or an edge list.

Every named graph is stored as a ``networkx.DiGraph``: an undirected graph is
kept as both directions of each edge, so that a move ``v -> u`` can carry its
own ``logit`` (the default bases prefer moves toward the target).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TYPE_CHECKING

from tilt._read_limits import (
    MAX_NUMBER_CHARS,
    bounded_lines,
    check_file_size,
    check_nesting,
    load_json,
)
from tilt.tasks._task import Task

if TYPE_CHECKING:
    import networkx as nx

__all__ = [
    "catalogue",
    "named_task",
    "load_graph",
    "resolve_task",
    "make_task",
    "GRAPH_FORMATS",
    "EDGE_LIST_SUFFIXES",
    "PATH_SEPARATOR",
]


# --------------------------------------------------------------------------
# catalogue


def _toward_target_logits(graph: nx.DiGraph, target: Hashable, bias: float) -> None:
    """Set ``logit = bias`` on moves that shorten the distance to ``target``, else 0."""
    import networkx as nx

    dist = nx.single_source_shortest_path_length(graph.reverse(copy=False), target)
    for v, u, data in graph.edges(data=True):
        closer = v in dist and u in dist and dist[u] < dist[v]
        data["logit"] = bias if closer else 0.0


def _grid(n: int) -> Task:
    import networkx as nx

    graph = nx.grid_2d_graph(n, n).to_directed()
    source, target = (0, 0), (n - 1, n - 1)
    _toward_target_logits(graph, target, 1.0)
    return Task(
        name=f"grid{n}",
        graph=graph,
        source=source,
        target=target,
        horizon=None,
        description=(
            f"{n}x{n} grid graph, corner {source} to corner {target}, no horizon; "
            "default base: logit 1 on moves that shorten the distance to the target, 0 otherwise"
        ),
    )


def _diamonds(k: int = 5) -> Task:
    """A chain of ``k`` diamonds: every correct rollout has length ``2k``.

    At junction ``j`` the rollout goes up (logit log 2), down (logit 0), or into
    a dead-end trap (logit -1).  Correct rollouts differ only in how many
    diamonds they cross on the upper side, so their base probabilities are
    ``(2/3 * p)^u * (1/3 * p)^(k-u)`` with no length effect.
    """
    import networkx as nx

    graph = nx.DiGraph()
    for j in range(k):
        junction, nxt = f"j{j}", f"j{j + 1}"
        graph.add_edge(junction, f"u{j}", logit=math.log(2.0))
        graph.add_edge(junction, f"d{j}", logit=0.0)
        graph.add_edge(junction, f"trap{j}", logit=-1.0)
        graph.add_edge(f"u{j}", nxt, logit=0.0)
        graph.add_edge(f"d{j}", nxt, logit=0.0)
    return Task(
        name="diamonds",
        graph=graph,
        source="j0",
        target=f"j{k}",
        horizon=None,
        description=(
            f"directed chain of {k} diamonds (all correct rollouts have length {2 * k}) with a "
            "dead-end trap at each junction; default base: up log 2, down 0, trap -1"
        ),
    )


def _routes() -> Task:
    """One dominant and one minority route from ``s`` to ``t``, with dead ends.

    Each route is a chain of two diamonds; the dominant route ``a`` has logit 2
    at the fork, the minority route ``b`` logit 0.  Each route node also offers
    a dead end.  Blocking a move on route ``a`` leaves only route ``b``.
    """
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_edge("s", "a0", logit=2.0)
    graph.add_edge("s", "b0", logit=0.0)
    for route in ("a", "b"):
        for j in range(2):
            here, nxt = f"{route}{j}", (f"{route}{j + 1}" if j < 1 else "t")
            graph.add_edge(here, f"{route}{j}up", logit=0.5)
            graph.add_edge(here, f"{route}{j}down", logit=0.0)
            graph.add_edge(here, f"{route}{j}dead", logit=-1.0)
            graph.add_edge(f"{route}{j}up", nxt, logit=0.0)
            graph.add_edge(f"{route}{j}down", nxt, logit=0.0)
    return Task(
        name="routes",
        graph=graph,
        source="s",
        target="t",
        horizon=None,
        description=(
            "directed: a dominant route a and a minority route b, each two diamonds with a "
            "dead end at every junction; default base: fork logit 2 to a and 0 to b, "
            "up 0.5, down 0, dead end -1"
        ),
    )


def _routes_bottleneck() -> Task:
    """:func:`_routes` with each route ending through one bottleneck move.

    After its two diamonds each route reaches a node ``a2`` (``b2``) whose only
    move is ``a2 -> t`` (``b2 -> t``).  Blocking the dominant route's bottleneck
    leaves the minority route alone in both OOD readings: nothing is left to
    re-route at ``a2``, and every rollout through the bottleneck fails.
    """
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_edge("s", "a0", logit=2.0)
    graph.add_edge("s", "b0", logit=0.0)
    for route in ("a", "b"):
        for j in range(2):
            here, nxt = f"{route}{j}", f"{route}{j + 1}"
            graph.add_edge(here, f"{route}{j}up", logit=0.5)
            graph.add_edge(here, f"{route}{j}down", logit=0.0)
            graph.add_edge(here, f"{route}{j}dead", logit=-1.0)
            graph.add_edge(f"{route}{j}up", nxt, logit=0.0)
            graph.add_edge(f"{route}{j}down", nxt, logit=0.0)
        graph.add_edge(f"{route}2", "t", logit=0.0)
    return Task(
        name="routes-bottleneck",
        graph=graph,
        source="s",
        target="t",
        horizon=None,
        description=(
            "directed: routes with each route ending through one bottleneck move (a2>t, b2>t), "
            "where the two OOD readings agree; default base as routes"
        ),
    )


def _holed(n: int) -> Task:
    """The ``n x n`` grid with its centre node removed (``n`` odd): routes pass left or right."""
    import networkx as nx

    graph = nx.grid_2d_graph(n, n)
    centre = (n // 2, n // 2)
    graph.remove_node(centre)
    graph = graph.to_directed()
    for node in graph.nodes:
        graph.nodes[node]["pos"] = node
    graph.graph["holes"] = [centre]
    source, target = (0, 0), (n - 1, n - 1)
    _toward_target_logits(graph, target, 1.0)
    return Task(
        name=f"holed{n}",
        graph=graph,
        source=source,
        target=target,
        horizon=None,
        description=(
            f"{n}x{n} grid with its centre {centre} removed (strategy map 'side'), corner to "
            "corner; default base: logit 1 on moves that shorten the distance to the target"
        ),
    )


_CATALOGUE: dict[str, Callable[[], Task]] = {
    **{f"grid{n}": (lambda n=n: _grid(n)) for n in range(2, 7)},  # type: ignore[misc]
    "diamonds": _diamonds,
    "routes": _routes,
    "routes-bottleneck": _routes_bottleneck,
    "holed5": lambda: _holed(5),
}


def catalogue() -> list[str]:
    """Return the names of the built-in task instances, in catalogue order.

    >>> catalogue()  # doctest: +NORMALIZE_WHITESPACE
    ['grid2', 'grid3', 'grid4', 'grid5', 'grid6', 'diamonds', 'routes',
     'routes-bottleneck', 'holed5']
    """
    return list(_CATALOGUE)


def named_task(name: str) -> Task:
    """Return the built-in task ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not in the catalogue; the message lists the known names.
    """
    if _is_lattice(name):
        return _lattice(name)
    if name not in _CATALOGUE:
        raise ValueError(
            f"unknown graph {name!r}: known graphs are {', '.join(catalogue())} "
            "and token lattices lattice:V=..,L=..,seed=.. "
            "(or give the path of a .graphml, .json or edge-list file)"
        )
    return _CATALOGUE[name]()


# --------------------------------------------------------------------------
# token lattices (tilt.tasks.lattice): a parametric family of named graphs


def _is_lattice(name: str) -> bool:
    return isinstance(name, str) and (name == "lattice" or name.startswith("lattice:"))


def _lattice(name: str) -> Task:
    from tilt.tasks.lattice import (  # lattice imports Task from _task: no cycle
        lattice_task,
        parse_lattice,
    )

    return lattice_task(parse_lattice(name))


# --------------------------------------------------------------------------
# files


EDGE_LIST_SUFFIXES = ("", ".txt", ".edgelist", ".edges", ".el", ".tsv")
"""File suffixes read as whitespace edge lists; other unknown suffixes are refused."""

GRAPH_FORMATS = (
    "GraphML (.graphml, .xml), node-link JSON (.json), GML (.gml), "
    f"edge list ({', '.join(s or 'no suffix' for s in EDGE_LIST_SUFFIXES)})"
)
"""What :func:`load_graph` reads, for messages and help."""

PATH_SEPARATOR = ">"
"""Joins node labels into a rollout path (``'s>a>t'``); no label may contain it."""


def _read_file(path: Path, directed: bool) -> nx.Graph:
    import networkx as nx

    suffix = path.suffix.lower()
    if suffix in {".graphml", ".xml"}:
        return nx.read_graphml(path)
    if suffix == ".gml":
        check_nesting(path.read_text(), "")  # networkx's GML parser recurses per level
        return nx.read_gml(path)
    if suffix == ".json":
        data = load_json(path.read_text(), "")
        if not isinstance(data, dict) or "nodes" not in data:
            raise ValueError("not a node-link JSON object (no 'nodes' key)")
        links = "links" if "links" in data else "edges"
        return nx.node_link_graph(data, edges=links)
    if suffix not in EDGE_LIST_SUFFIXES:
        raise ValueError(f"unknown graph file format {path.suffix!r}: tilt reads {GRAPH_FORMATS}")
    _check_edge_lines(path)
    # a multigraph keeps repeated lines, so that make_task can compare their logits
    create = nx.MultiDiGraph() if directed else nx.MultiGraph()
    return nx.read_edgelist(path, create_using=create, nodetype=str, data=True)


_LONG_NUMBER = re.compile(rf"[0-9][0-9._eE+-]{{{MAX_NUMBER_CHARS},}}")


def _check_edge_lines(path: Path) -> None:
    """Refuse edge-list lines that networkx would skip silently: one node only, often because
    ``#`` (which starts a comment) is part of a node name."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in bounded_lines(handle, ""):
            long_number = _LONG_NUMBER.search(line)
            if long_number:
                raise ValueError(
                    f"line {number}: a number of {len(long_number.group())} characters "
                    f"(at most {MAX_NUMBER_CHARS}: a logit must be a float64)"
                )
            content = line.split("#", 1)[0].split()
            if len(content) == 1:
                why = " ('#' starts a comment: names may not contain it)" if "#" in line else ""
                raise ValueError(
                    f"line {number} ({line.strip()!r}) names one node, not an edge 'u v'{why}"
                )


def _merge_parallel(graph: nx.Graph) -> nx.Graph:
    """A simple graph from a multigraph: repeated edges must carry the same logit.

    Parallel edges ``v -> u`` (for an undirected graph, ``v - u`` and ``u - v``)
    with equal logits are one edge; with different logits the graph is refused
    (no rule picks one of them that a user would expect).
    """
    import networkx as nx

    simple: nx.Graph = nx.DiGraph() if graph.is_directed() else nx.Graph()
    simple.graph.update(graph.graph)
    simple.add_nodes_from(graph.nodes(data=True))
    for v, u, data in graph.edges(data=True):
        if simple.has_edge(v, u):
            old, new = simple.edges[v, u].get("logit", 0.0), data.get("logit", 0.0)
            if _as_number(old) != _as_number(new):
                arrow = "->" if graph.is_directed() else "-"
                raise ValueError(
                    f"edge {v!s} {arrow} {u!s} is given more than once with different logits "
                    f"({old!r} and {new!r}): keep one edge per pair of nodes"
                )
            continue
        simple.add_edge(v, u, **data)
    return simple


def _as_number(raw: object) -> object:
    try:
        return float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return raw


def _check_labels(graph: nx.Graph, where: str) -> None:
    """Node labels name nodes in paths and CSV files: each must be one line without ``>``,
    and two nodes may not share a label."""
    seen: dict[str, object] = {}
    for node in graph:
        label = str(node)
        if PATH_SEPARATOR in label or "\n" in label or "\r" in label:
            what = "'>', the path separator" if PATH_SEPARATOR in label else "a line break"
            raise ValueError(
                f"node {label!r} of {where} contains {what} of rollout paths: rename the node"
            )
        if label in seen:
            raise ValueError(
                f"nodes {seen[label]!r} and {node!r} of {where} have the same label {label!r}: "
                "rename one"
            )
        seen[label] = node


def _find_node(graph: nx.Graph, label: object, role: str, where: str) -> Hashable:
    if label in graph:
        return label
    matches = [node for node in graph if str(node) == str(label)]
    if len(matches) != 1:
        raise ValueError(
            f"{role} {label!r} is not a node of {where} "
            f"({graph.number_of_nodes()} nodes; give --{role} with one of its node labels)"
        )
    return matches[0]


def make_task(
    graph: nx.Graph,
    source: object,
    target: object,
    horizon: int | None = None,
    name: str = "graph",
) -> Task:
    """Validate ``graph``, ``source``, ``target`` and ``horizon`` into a :class:`Task`.

    An undirected graph becomes a ``DiGraph`` with both directions of each edge
    (the same ``logit`` on both).  Every ``logit`` must be a finite number.
    A multigraph's parallel edges must carry one logit (they become one edge);
    self-loops are kept in the graph but are never a move of a simple path.
    Node labels (``str(node)``) must be distinct and contain neither ``>``
    (:data:`PATH_SEPARATOR`) nor a line break.

    Raises
    ------
    ValueError
        On a missing node, ``source == target``, a bad horizon, a bad logit,
        parallel edges with different logits, or a node label as above.
    """
    import networkx as nx

    if not isinstance(graph, nx.Graph):
        raise TypeError(f"graph must be a networkx graph, got {type(graph).__name__}")
    if graph.is_multigraph():
        graph = _merge_parallel(graph)
    _check_labels(graph, name)
    src = _find_node(graph, source, "source", name)
    tgt = _find_node(graph, target, "target", name)
    if src == tgt:
        raise ValueError(
            f"source and target are the same node {str(src)!r}: give two different nodes"
        )
    if horizon is not None:
        if isinstance(horizon, bool) or not isinstance(horizon, numbers.Integral) or horizon < 0:
            raise ValueError(f"horizon must be a non-negative integer or None, got {horizon!r}")
        horizon = int(horizon)  # a numpy integer becomes a plain int (JSON output)
    directed = graph.to_directed() if not graph.is_directed() else graph.copy()
    for v, u, data in directed.edges(data=True):
        raw = data.get("logit", 0.0)
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(
                f"edge {v!s} -> {u!s} has a logit {raw!r} that is not a number"
            ) from None
        except OverflowError:  # an integer beyond float64, e.g. 401 digits
            raise ValueError(
                f"edge {v!s} -> {u!s} has a logit of {len(str(raw))} digits that overflows "
                "float64: logits must be finite floats"
            ) from None
        if not math.isfinite(value):
            raise ValueError(
                f"edge {v!s} -> {u!s} has a non-finite logit {raw!r}: logits must be finite"
            )
        data["logit"] = value
    return Task(
        name=name,
        graph=directed,
        source=src,
        target=tgt,
        horizon=horizon,
        description=f"graph read from {name}",
    )


def load_graph(
    path: str | Path,
    source: object | None = None,
    target: object | None = None,
    horizon: int | None = None,
    directed: bool = False,
) -> Task:
    """Load a task from a GraphML, node-link JSON (``.json``) or edge-list file.

    Parameters
    ----------
    path : str or Path
        ``.graphml``/``.xml`` (networkx GraphML), ``.json`` (node-link), ``.gml``,
        or a whitespace edge list with optional ``{'logit': x}`` data (suffix in
        :data:`EDGE_LIST_SUFFIXES`); any other suffix is refused.
    source, target : node label, optional
        Matched to a node or to its ``str``; default from the graph attributes
        ``source`` / ``target``.
    horizon : int, optional
        Most moves; default from the graph attribute ``horizon`` or unlimited.
    directed : bool
        For edge lists only: read the edges as directed moves.

    Raises
    ------
    ValueError
        If the file is missing or does not parse, or the task is invalid; the message
        names the file, and the line and field where the format has lines.

    Notes
    -----
    Bounded reading (:mod:`tilt._read_limits`): files above 256 MiB, lines above 16 Mi
    characters (edge lists), JSON or GML nested deeper than 64 levels and number literals
    above 64 characters (or beyond float64) are refused with one ``ValueError``.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ValueError(f"graph file {str(path)!r} is not a file: give the path of a graph file")
    if not path.is_file():
        raise ValueError(f"graph file {str(path)!r} does not exist")
    check_file_size(path, "graph file")
    try:
        graph = _read_file(path, directed)
    except ValueError as exc:
        raise ValueError(f"cannot read graph file {str(path)!r}: {exc}") from None
    except Exception as exc:  # parsers raise many types; report one clear line
        raise ValueError(
            f"cannot read graph file {str(path)!r}: {type(exc).__name__}: {exc}"
        ) from None
    if graph.number_of_nodes() == 0:
        raise ValueError(f"graph file {str(path)!r} has no nodes")
    attrs = graph.graph
    source = attrs.get("source") if source is None else source
    target = attrs.get("target") if target is None else target
    if source is None or target is None:
        raise ValueError(
            f"graph file {str(path)!r} names no source/target: give --source and --target"
        )
    if horizon is None and attrs.get("horizon") is not None:
        raw = attrs["horizon"]
        try:
            value = float(raw)
            horizon = int(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
            raise ValueError(f"graph attribute horizon={raw!r} is not an integer") from None
        if value != horizon:  # 2.7 is not silently truncated to 2
            raise ValueError(f"graph attribute horizon={raw!r} is not an integer")
    return make_task(graph, source, target, horizon, name=path.name)


def resolve_task(
    name_or_path: str,
    source: object | None = None,
    target: object | None = None,
    horizon: int | None = None,
    directed: bool = False,
) -> Task:
    """Return the named task, or the task in a file, with optional overrides.

    A name in :func:`catalogue` wins over a file of the same name.  For a named
    task, ``source``/``target``/``horizon`` override the catalogue defaults.
    """
    if name_or_path in _CATALOGUE or _is_lattice(name_or_path):
        task = named_task(name_or_path)
        if source is None and target is None and horizon is None:
            return task
        return make_task(
            task.graph,
            task.source if source is None else source,
            task.target if target is None else target,
            task.horizon if horizon is None else horizon,
            name=task.name,
        )
    if not Path(name_or_path).exists():
        named_task(name_or_path)  # raises the "unknown graph" message
    return load_graph(name_or_path, source, target, horizon, directed)
