"""Task instances: the catalogue, file loading (GraphML, node-link JSON, edge list), validation."""

from __future__ import annotations

import json
import math

import networkx as nx
import numpy as np
import oracle
import pytest

from tilt.policy import base_policy
from tilt.space import enumerate_rollouts
from tilt.tasks import Task
from tilt.tasks.graphs import catalogue, load_graph, make_task, named_task, resolve_task


def _two_routes(directed=True):
    """s -> a -> t (logits 1.5, 0) and s -> b -> t (logits 0, 0) plus a dead end s -> d (-1)."""
    graph = nx.DiGraph() if directed else nx.Graph()
    graph.add_edge("s", "a", logit=1.5)
    graph.add_edge("a", "t", logit=0.0)
    graph.add_edge("s", "b", logit=0.0)
    graph.add_edge("b", "t", logit=0.0)
    graph.add_edge("s", "d", logit=-1.0)
    return graph


def _check_logits_used(task):
    """The base policy of the loaded task is the explicit softmax of the file's logits."""
    space = enumerate_rollouts(task)
    truth = oracle.oracle_space(task.graph, task.source, task.target, task.horizon)
    expected = oracle.aligned(space, oracle.edge_softmax(truth, oracle.graph_logits(task.graph)))
    np.testing.assert_allclose(base_policy(space).prob, expected, rtol=0, atol=1e-12)
    return space


# ----------------------------------------------------------------- catalogue


def test_catalogue_names():
    assert catalogue() == [
        "grid2",
        "grid3",
        "grid4",
        "grid5",
        "grid6",
        "diamonds",
        "routes",
        "routes-bottleneck",
        "holed5",
    ]


@pytest.mark.parametrize(
    "name",
    [
        "grid2",
        "grid3",
        "grid4",
        "grid5",
        "grid6",
        "diamonds",
        "routes",
        "routes-bottleneck",
        "holed5",
    ],
)
def test_named_tasks_are_valid(name):
    task = named_task(name)
    assert isinstance(task, Task)
    assert task.name == name
    assert isinstance(task.graph, nx.DiGraph)
    assert task.source in task.graph
    assert task.target in task.graph
    assert task.source != task.target
    assert task.horizon is None
    assert all(math.isfinite(d["logit"]) for _, _, d in task.graph.edges(data=True))
    assert task.description


def test_grid_default_logits_prefer_the_target():
    # grid3: from (0,0) both moves shorten the distance to (2,2) (logit 1); from (1,1) back to (0,1)
    # lengthens it (logit 0)
    graph = named_task("grid3").graph
    assert graph.edges[(0, 0), (0, 1)]["logit"] == 1.0
    assert graph.edges[(1, 1), (0, 1)]["logit"] == 0.0
    assert graph.edges[(0, 1), (1, 1)]["logit"] == 1.0


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown graph 'grid9'") as info:
        named_task("grid9")
    for name in catalogue():
        assert name in str(info.value)
    with pytest.raises(ValueError, match="unknown graph 'nope'.*grid2"):
        resolve_task("nope")


def test_resolve_named_with_overrides():
    task = resolve_task("grid3", source="(0, 2)", target="(2, 0)", horizon=5)
    assert (task.source, task.target, task.horizon) == ((0, 2), (2, 0), 5)
    assert resolve_task("grid3").source == (0, 0)


# --------------------------------------------------------------------- files


def test_graphml_with_graph_attributes(tmp_path):
    graph = _two_routes()
    graph.graph.update(source="s", target="t", horizon=3)
    path = tmp_path / "routes.graphml"
    nx.write_graphml(graph, path)
    task = load_graph(path)
    assert (task.source, task.target, task.horizon, task.name) == ("s", "t", 3, "routes.graphml")
    space = _check_logits_used(task)
    assert sorted(space.path_labels()) == ["s>a>t", "s>b>t", "s>d"]
    # arguments override the graph attributes
    task = load_graph(path, source="a", target="t", horizon=None)
    assert (task.source, task.target, task.horizon) == ("a", "t", 3)


def test_node_link_json_labels_are_str_of_nodes(tmp_path):
    graph = nx.path_graph(4)  # 0 - 1 - 2 - 3, undirected, integer nodes
    graph.add_edge(1, 3, logit=0.7)
    data = nx.node_link_data(graph, edges="links")
    path = tmp_path / "path.json"
    path.write_text(json.dumps(data))
    task = load_graph(path, source="0", target=3)  # '0' matches node 0 by its str
    assert (task.source, task.target) == (0, 3)
    space = _check_logits_used(task)
    assert space.labels == ("0", "1", "2", "3")
    assert sorted(space.path_labels()) == ["0>1>2>3", "0>1>3"]
    # undirected: the logit 0.7 is on both directions
    assert task.graph.edges[1, 3]["logit"] == task.graph.edges[3, 1]["logit"] == 0.7
    # 'edges' key (newer networkx default) is read too
    data = nx.node_link_data(graph, edges="edges")
    data["graph"] = {"source": 0, "target": 3}
    path.write_text(json.dumps(data))
    task = load_graph(path)
    assert (task.source, task.target) == (0, 3)


def test_edge_list_directed_flag(tmp_path):
    path = tmp_path / "cycle.txt"
    path.write_text("a b {'logit': 2.0}\nb c\nc d\nd a\n")
    undirected = enumerate_rollouts(load_graph(path, "a", "c"))
    directed = enumerate_rollouts(load_graph(path, "a", "c", directed=True))
    assert sorted(undirected.path_labels()) == ["a>b>c", "a>d>c"]
    assert directed.path_labels() == ["a>b>c"]
    _check_logits_used(load_graph(path, "a", "c"))
    task = load_graph(path, "a", "c")
    assert task.graph.edges["a", "b"]["logit"] == task.graph.edges["b", "a"]["logit"] == 2.0
    assert task.graph.edges["b", "c"]["logit"] == 0.0
    # directed: the reverse move is not there
    assert not load_graph(path, "a", "c", directed=True).graph.has_edge("b", "a")


def test_resolve_task_reads_a_file(tmp_path):
    path = tmp_path / "e.txt"
    path.write_text("x y\ny z\n")
    task = resolve_task(str(path), "x", "z", 1, directed=True)
    assert task.horizon == 1
    with pytest.raises(ValueError, match="no path"):
        enumerate_rollouts(task)


def test_multigraph_is_collapsed():
    graph = nx.MultiDiGraph()
    graph.add_edge("s", "t", logit=0.5)
    graph.add_edge("s", "t", logit=0.5)
    graph.add_edge("s", "u")
    space = enumerate_rollouts(make_task(graph, "s", "t"))
    assert sorted(space.path_labels()) == ["s>t", "s>u"]


# ---------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_graph(tmp_path / "nothing.graphml", "s", "t")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("bad.graphml", "<graphml><graph><node id='a'/>"),
        ("bad.json", "{not json"),
        ("list.json", "[1, 2, 3]"),
        ("bad.txt", "a b {'logit': \n"),
    ],
)
def test_unparseable_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match="cannot read graph file") as info:
        load_graph(path, "a", "b")
    assert "\n" not in str(info.value)


def test_file_without_source(tmp_path):
    path = tmp_path / "g.graphml"
    nx.write_graphml(_two_routes(), path)
    with pytest.raises(ValueError, match="names no source/target"):
        load_graph(path)
    with pytest.raises(ValueError, match="source 'zz' is not a node"):
        load_graph(path, "zz", "t")
    with pytest.raises(ValueError, match="target 'zz' is not a node"):
        load_graph(path, "s", "zz")


def test_source_equals_target():
    with pytest.raises(ValueError, match="source and target are the same node"):
        make_task(_two_routes(), "s", "s")
    with pytest.raises(ValueError, match="same node"):
        resolve_task("grid3", source="(1, 1)", target="(1, 1)")


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_bad_horizon(bad):
    with pytest.raises(ValueError, match="horizon must be a non-negative integer"):
        make_task(_two_routes(), "s", "t", bad)


def test_bad_horizon_attribute(tmp_path):
    graph = _two_routes()
    graph.graph.update(source="s", target="t", horizon="soon")
    path = tmp_path / "g.graphml"
    nx.write_graphml(graph, path)
    with pytest.raises(ValueError, match="horizon='soon' is not an integer"):
        load_graph(path)


@pytest.mark.parametrize("value", [2.7, math.inf, -1, "x"])
def test_bad_horizon_attribute_in_json(tmp_path, value):
    # 2.7 must not be truncated to 2; Infinity must not escape as OverflowError
    data = nx.node_link_data(_two_routes(), edges="links")
    data["graph"] = {"source": "s", "target": "t", "horizon": value}
    path = tmp_path / "g.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="horizon"):
        load_graph(path)


def test_integral_horizons_are_accepted(tmp_path):
    assert make_task(_two_routes(), "s", "t", np.int64(2)).horizon == 2
    assert type(make_task(_two_routes(), "s", "t", np.int64(2)).horizon) is int
    data = nx.node_link_data(_two_routes(), edges="links")
    data["graph"] = {"source": "s", "target": "t", "horizon": 2.0}
    path = tmp_path / "g.json"
    path.write_text(json.dumps(data))
    assert load_graph(path).horizon == 2


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_logit(tmp_path, value):
    graph = _two_routes()
    graph.edges["s", "a"]["logit"] = value
    with pytest.raises(ValueError, match="non-finite logit"):
        make_task(graph, "s", "t")
    path = tmp_path / "g.graphml"
    nx.write_graphml(graph, path)
    with pytest.raises(ValueError, match="non-finite logit"):
        load_graph(path, "s", "t")
    path = tmp_path / "g.json"
    path.write_text(json.dumps(nx.node_link_data(graph, edges="links")))  # writes Infinity / NaN
    with pytest.raises(ValueError, match="non-finite logit"):
        load_graph(path, "s", "t")


def test_non_numeric_logit():
    graph = _two_routes()
    graph.edges["s", "a"]["logit"] = "high"
    with pytest.raises(ValueError, match="not a number"):
        make_task(graph, "s", "t")


def test_not_a_graph():
    with pytest.raises(TypeError, match="networkx graph"):
        make_task({"s": ["t"]}, "s", "t")
