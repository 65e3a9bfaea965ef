"""Hostile inputs: files, options, library calls, output destinations, signals.

Every case that a user can hit from a command line asserts the exit status, that
no traceback appears, that the message is one line naming the problem, and that
nothing is left behind (no temporary file, no replaced special file).  Library
cases assert the exception type and the words of the message.  The command lines
run in-process (``main(argv)``) unless a real process is needed (signals, pipes).
Graphs are tiny (grid2, grid3, a few nodes) so the module runs in seconds.
"""

from __future__ import annotations

import json
import math
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from _repo import ROOT
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import tilt.cli
import tilt.cli._files
import tilt.engines.enumerate
import tilt.space
from tilt.cli import compare
from tilt.context import ContextModel, make_context
from tilt.context.base import MAX_GAMMA
from tilt.measures import gap_slope, measure, ratio_distortion
from tilt.objectives import (
    OBJECTIVES,
    matched_beta,
    rl_optimum,
    sd_forward,
    sd_optimum,
    sd_sequence,
    sd_token,
    tilt_score,
)
from tilt.policy import Policy, base_policy, edge_softmax
from tilt.space import TooLargeError, enumerate_rollouts
from tilt.tasks.graphs import make_task, named_task
from tilt.testing import check_context_model, instances

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


# --------------------------------------------------------------------------
# helpers


def leftovers(folder: Path) -> list[str]:
    """Temporary files that an interrupted or refused write would leave."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def cli(
    capsys: pytest.CaptureFixture[str],
    argv: Sequence[str],
    main: Callable[[Sequence[str]], int] = compare.main,
) -> tuple[int, str, str]:
    """Run a CLI in-process; SystemExit (argparse) counts as its status."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def refused(
    capsys: pytest.CaptureFixture[str],
    argv: Sequence[str],
    *words: str,
    main: Callable[[Sequence[str]], int] = compare.main,
) -> str:
    """Assert a one-line refusal with status 2 naming ``words``; return the line."""
    code, out, err = cli(capsys, argv, main)
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    return lines[0]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def grid3() -> Policy:
    return base_policy(enumerate_rollouts(named_task("grid3")))


@pytest.fixture(scope="module")
def grid2() -> Policy:
    return base_policy(enumerate_rollouts(named_task("grid2")))


# --------------------------------------------------------------------------
# files


def test_gml_is_read_as_gml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = nx.path_graph(4)
    graph.add_edge(0, 2)
    nx.write_gml(graph, tmp_path / "g.gml")
    code, out, err = cli(
        capsys, ["--graph", str(tmp_path / "g.gml"), "--source", "0", "--target", "3", "--json"]
    )
    assert code == 0, err
    data = json.loads(out)["instance"]
    # the path 0-1-2-3 plus the chord 0-2: rollouts 0-1-2-3 and 0-2-3 (correct) and the dead
    # end 0-2-1 (read as an edge list, the nodes 'id', 'source' ... would appear instead)
    assert (data["rollouts"], data["correct"]) == (3, 2)


@pytest.mark.parametrize("suffix", [".csv", ".yaml", ".gexf", ".pkl"])
def test_unknown_format_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    path = write(tmp_path / f"g{suffix}", "a b\nb c\n")
    refused(
        capsys,
        ["--graph", str(path), "--source", "a", "--target", "c"],
        "unknown graph file format",
        suffix,
    )


@pytest.mark.parametrize(
    ("text", "directed"),
    [
        ("a b {'logit': 1}\na b {'logit': 2}\nb c\n", False),
        ("a b {'logit': 1}\nb a {'logit': 2}\nb c\n", False),
        ("a b {'logit': 1}\na b {'logit': 2}\nb c\n", True),
    ],
)
def test_parallel_edges_with_different_logits_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, directed: bool
) -> None:
    path = write(tmp_path / "dup.txt", text)
    argv = ["--graph", str(path), "--source", "a", "--target", "c"]
    refused(capsys, argv + (["--directed"] if directed else []), "more than once", "logit")


def test_parallel_edges_with_equal_logits_merge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    once = write(tmp_path / "once.txt", "a b {'logit': 1}\nb c\na c\n")
    twice = write(tmp_path / "twice.txt", "a b {'logit': 1}\nb a {'logit': 1.0}\nb c\na c\n")
    outs = []
    for path in (once, twice):
        code, out, err = cli(
            capsys, ["--graph", str(path), "--source", "a", "--target", "c", "--json"]
        )
        assert code == 0, err
        outs.append(json.loads(out)["methods"])
    assert outs[0] == outs[1]


def test_graphml_multigraph_with_different_logits_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    graph = nx.MultiDiGraph(source="s", target="t")
    graph.add_edge("s", "t", logit=0.0)
    graph.add_edge("s", "t", logit=3.0)
    nx.write_graphml(graph, tmp_path / "multi.graphml")
    refused(capsys, ["--graph", str(tmp_path / "multi.graphml")], "more than once", "s -> t")


def test_self_loops_are_never_moves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = write(tmp_path / "plain.txt", "a b\nb c\na c\n")
    loops = write(tmp_path / "loops.txt", "a a {'logit': 9}\na b\nb b\nb c\na c\nc c\n")
    outs = []
    for path in (plain, loops):
        code, out, err = cli(
            capsys, ["--graph", str(path), "--source", "a", "--target", "c", "--json"]
        )
        assert code == 0, err
        outs.append(json.loads(out)["methods"])
    assert outs[0] == outs[1]


@pytest.mark.parametrize(
    ("nodes", "words"),
    [
        (["s>x", "t"], ("'>'", "path separator")),
        (["s\nx", "t"], ("line break",)),
        (["s\rx", "t"], ("line break",)),
    ],
)
def test_node_labels_that_break_paths_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], nodes: list[str], words: tuple[str, ...]
) -> None:
    graph = nx.Graph(source=nodes[0], target="t")
    graph.add_edge(nodes[0], "m")
    graph.add_edge("m", "t")
    path = tmp_path / "g.json"
    path.write_text(json.dumps(nx.node_link_data(graph, edges="links")))
    refused(capsys, ["--graph", str(path)], *words)


def test_two_nodes_with_one_label_refused(grid2: Policy) -> None:
    graph = nx.Graph()
    graph.add_edge(1, "1")
    graph.add_edge("1", 2)
    with pytest.raises(ValueError, match="same label"):
        make_task(graph, 1, 2)


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("empty.txt", "", ("no nodes",)),
        ("bad.graphml", "\x00\x01not xml", ("cannot read graph file",)),
        ("bad.gml", "graph [ node [ id 0 ", ("cannot read graph file",)),
        ("list.json", "[1, 2]", ("node-link",)),
        ("garbage.json", "{not json", ("cannot read graph file",)),
        ("words.txt", "a b c d e\n", ("cannot read graph file",)),
        ("text.txt", "a b {'logit': 'high'}\nb c\n", ("not a number",)),
        ("inf.txt", "a b {'logit': float('inf')}\nb c\n", ("cannot read graph file",)),
        ("hash.txt", "a#x b\nb c\na c\n", ("line 1", "one node", "comment")),
        ("single.txt", "a b\nc\nb c\n", ("line 2", "one node")),
        ("number.txt", "a b 1.5\nb c\n", ("cannot read graph file", "dictionary")),
    ],
)
def test_broken_graph_files(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: str,
    words: tuple[str, ...],
) -> None:
    path = write(tmp_path / name, content)
    refused(capsys, ["--graph", str(path), "--source", "a", "--target", "c"], *words)


def test_graph_that_is_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(capsys, ["--graph", str(tmp_path)], "not a file")


def test_missing_graph_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(capsys, ["--graph", str(tmp_path / "nope.txt")], "unknown graph")


def test_non_integer_horizon_attribute(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = nx.DiGraph(source="s", target="t", horizon=2.5)
    graph.add_edge("s", "t")
    nx.write_graphml(graph, tmp_path / "h.graphml")
    refused(capsys, ["--graph", str(tmp_path / "h.graphml")], "horizon", "not an integer")


# --------------------------------------------------------------------------
# options


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--context", "edge", "--strength", "1e301"], ("gamma", "too large")),
        (["--context", "edge", "--strength", "1e16"], ("gamma", "too large", "10000")),
        (["--k", "1" + "0" * 400], ("--k", "positive integer", "at most")),
        (["--rounds", "1000000"], ("--rounds", "at most 1,000")),
        (["--context", "kernel", "--strength", "1.7e308"], ("gamma", "too large")),
        (["--context", "edge", "--strength", "-1"], ("gamma", ">= 0")),
        (["--context", "edge", "--strength", "nan"], ("--strength", "expected a number")),
        (["--context", "edge", "--strength", "inf"], ("gamma", "finite")),
        (["--context", "copy", "--strength", "1"], ("lam", "< 1")),
        (["--beta", "-1"], ("--beta", ">= 0")),
        (["--alpha", "-0.5", "--demos", "tempered"], ("--alpha", ">= 0")),
        (["--anchor", "-2"], ("--anchor", ">= 0")),
        (["--max-rollouts", "0"], ("--max-rollouts", "positive integer")),
        (["--horizon", "-1"], ("--horizon", "non-negative")),
        (["--k", "0"], ("--k", "positive integer")),
        (["--source", "(9, 9)"], ("source", "not a node")),
        (["--source", "(2, 2)"], ("same node",)),
        (["--max-rollouts", "5"], ("too large", "--horizon")),
        (["--context", "telepathy"], ("--context", "invalid choice")),
        (["--sd", "jsd=2"], ("--sd", "out of range")),
        (["--sd", "jsd=nan"], ("--sd", "out of range")),
        (["--sd", "bogus"], ("--sd", "unknown SD objective")),
        (["--preset", "nope"], ("--preset", "invalid choice")),
        (["--reference", "x>y"], ("reference", "not a correct rollout")),
    ],
)
def test_bad_options(
    capsys: pytest.CaptureFixture[str], argv: list[str], words: tuple[str, ...]
) -> None:
    refused(capsys, ["--graph", "grid3", *argv], *words)


@pytest.mark.parametrize(
    "argv",
    [
        ["--graph", "grid3", "--source", "(1, 1)"],  # accuracy rounded to 1 + 2 ulps
        ["--graph", "grid3", "--context", "edge", "--strength", "50"],
        ["--graph", "grid3", "--context", "kernel", "--strength", f"{MAX_GAMMA:g}"],
        ["--graph", "grid3", "--context", "edge", "--strength", f"{MAX_GAMMA:g}"],
        ["--graph", "grid3", "--context", "copy", "--strength", "0.9999999999999999"],
        ["--graph", "grid3", "--beta", "1e-300"],
        ["--graph", "grid3", "--beta", "1e300", "--anchor", "1e300"],
    ],
)
def test_rounding_and_extremes_never_abort(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = cli(capsys, [*argv, "--json"])
    assert code == 0, err
    for row in json.loads(out)["methods"]:
        if row["measures"] is not None:
            assert 0.0 <= row["measures"]["accuracy"] <= 1.0


def test_complete_graph_k4_with_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nx.write_edgelist(nx.complete_graph(4), tmp_path / "k4.txt", data=False)
    code, _, err = cli(
        capsys, ["--graph", str(tmp_path / "k4.txt"), "--source", "0", "--target", "3"]
    )
    assert code == 0, err


def test_matched_beta_tolerates_ulps_above_one() -> None:
    assert matched_beta(1.0000000000000002, 1.0000000000000004) == math.inf
    assert matched_beta(0.86, 1.0000000000000004) == 0.0
    with pytest.raises(ValueError, match="accuracies must lie"):
        matched_beta(1.01, 0.5)


# --------------------------------------------------------------------------
# output destinations


def rollouts(capsys: pytest.CaptureFixture[str], dest: str, *words: str) -> str:
    return refused(capsys, ["--graph", "grid2", "--rollouts", dest], *words)


def test_output_folder_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rollouts(capsys, str(tmp_path), "is a folder")
    assert leftovers(tmp_path) == []


def test_output_fifo_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    rollouts(capsys, str(fifo), "FIFO")
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert leftovers(tmp_path) == []


def test_output_link_to_a_device_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # through a link in tmp_path, so that even a regression could only replace the link
    link = tmp_path / "null"
    link.symlink_to(os.devnull)
    rollouts(capsys, str(link), "character device")
    assert link.is_symlink()
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_output_dangling_link_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    link = tmp_path / "out.csv"
    link.symlink_to(tmp_path / "missing.csv")
    rollouts(capsys, str(link), "does not exist")
    assert link.is_symlink()


def test_output_missing_folder_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rollouts(capsys, str(tmp_path / "no" / "out.csv"), "does not exist")


def test_output_empty_name_refused(capsys: pytest.CaptureFixture[str]) -> None:
    rollouts(capsys, "", "empty")


def test_output_read_only_file_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = write(tmp_path / "out.csv", "keep me\n")
    target.chmod(0o444)
    if os.access(target, os.W_OK):
        pytest.skip("running as a user who may write read-only files (root)")
    rollouts(capsys, str(target), "read-only")
    assert target.read_text() == "keep me\n"


def test_output_unwritable_folder_refused(capsys: pytest.CaptureFixture[str]) -> None:
    folder = Path("/proc")  # no regular file can be created there, even by root
    try:
        fd, probe = tempfile.mkstemp(dir=folder)
    except OSError:
        rollouts(capsys, str(folder / "out.csv"), "not writable")
        return
    os.close(fd)
    os.unlink(probe)
    pytest.skip("no unwritable folder to try")


def test_output_checked_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: object) -> None:
        raise AssertionError("the instance was built before the destination was checked")

    monkeypatch.setattr(compare, "build_instance", never)
    rollouts(capsys, str(tmp_path), "is a folder")


def test_output_link_to_a_file_is_written_through(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = write(tmp_path / "real.csv", "old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    code, _, err = cli(capsys, ["--graph", "grid2", "--rollouts", str(link)])
    assert code == 0, err
    assert link.is_symlink()
    assert target.read_text().startswith("path,correct,")
    assert leftovers(tmp_path) == []


def test_output_file_gets_ordinary_permissions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.csv"
    code, _, err = cli(capsys, ["--graph", "grid2", "--rollouts", str(out)])
    assert code == 0, err
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask
    assert leftovers(tmp_path) == []


def test_sweeps_output_folder_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from analysis.sweeps import main as sweeps_main

    refused(
        capsys,
        ["iterated", "--graph", "grid2", "--out", str(tmp_path)],
        "is a folder",
        main=sweeps_main,
    )


def test_write_atomic_failure_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(src: str, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tilt.cli._files.os, "replace", broken)
    with pytest.raises(OSError, match="No space"):
        tilt.cli.write_atomic(tmp_path / "out.csv", "x" * 1000)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------
# memory


def test_memory_error_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def exhausted(*args: object) -> None:
        raise MemoryError

    monkeypatch.setattr(tilt.engines.enumerate, "enumerate_rollouts", exhausted)
    refused(capsys, ["--graph", "grid3"], "out of memory", "--horizon")


def test_enumeration_memory_error_becomes_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(*args: object) -> None:
        raise MemoryError

    monkeypatch.setattr(tilt.space, "_enumerate", exhausted)
    with pytest.raises(TooLargeError, match="does not fit in memory"):
        enumerate_rollouts(named_task("grid3"))


def test_level_that_would_not_fit_is_refused_before_allocation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tilt.space, "_available_memory", lambda: 10_000)
    with pytest.raises(TooLargeError, match=r"does not fit in memory.*GiB"):
        enumerate_rollouts(named_task("grid4"))


def test_dense_graph_guard_fires_while_counting() -> None:
    # K12 has 12! / e ~ 1.8e8 simple paths from a node: the guard stops at the first level
    # that passes the limit, counted a block of prefixes at a time
    task = make_task(nx.complete_graph(12), 0, 11, name="K12")
    with pytest.raises(TooLargeError, match=r"more than [\d,]+ rollouts by depth \d"):
        enumerate_rollouts(task, max_rollouts=20_000)


# --------------------------------------------------------------------------
# library inputs


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda p: p.log_prob + 1.0, ValueError, "not normalised"),
        (
            lambda p: np.where(np.arange(p.space.n_rollouts) == 0, np.nan, p.log_prob),
            ValueError,
            "nan",
        ),
        (
            lambda p: np.where(np.arange(p.space.n_rollouts) == 0, np.inf, p.log_prob),
            ValueError,
            "+inf",
        ),
        (lambda p: p.prob, ValueError, "probabilities"),
        (lambda p: p.log_prob[:-1], ValueError, "shape"),
        (lambda p: p.log_prob.astype(str), TypeError, "floats"),
    ],
)
def test_policy_refuses_what_is_not_a_distribution(
    grid3: Policy, make: Callable[[Policy], object], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words.replace("+", r"\+")):
        Policy(grid3.space, make(grid3))  # type: ignore[arg-type]


class NanModel(ContextModel):
    name = "nan"

    def teacher_log_prob(self, policy: Policy, demos: np.ndarray) -> np.ndarray:
        return np.full((len(demos), policy.space.n_rollouts), np.nan)


class ProbabilityModel(ContextModel):
    name = "probabilities"

    def teacher_log_prob(self, policy: Policy, demos: np.ndarray) -> np.ndarray:
        return np.tile(policy.prob, (len(demos), 1))


class TransposedModel(ContextModel):
    name = "transposed"

    def teacher_log_prob(self, policy: Policy, demos: np.ndarray) -> np.ndarray:
        return np.tile(policy.log_prob, (len(demos), 1)).T


class InfModel(ContextModel):
    name = "inf"

    def teacher_log_prob(self, policy: Policy, demos: np.ndarray) -> np.ndarray:
        out = np.tile(policy.log_prob, (len(demos), 1))
        out[:, 0] = np.inf
        return out


class UnnormalisedModel(ContextModel):
    name = "unnormalised"

    def teacher_log_prob(self, policy: Policy, demos: np.ndarray) -> np.ndarray:
        return np.tile(policy.log_prob + 0.5, (len(demos), 1))


class BadScoreShape(ContextModel):
    name = "bad-score"

    def teacher_log_prob(self, policy: Policy, demos: np.ndarray) -> np.ndarray:
        return np.tile(policy.log_prob, (len(demos), 1))

    def tilt_score(self, policy: Policy, demos: Policy) -> np.ndarray:
        return np.zeros(policy.space.n_prefixes)


class WrongScore(BadScoreShape):
    name = "wrong-score"

    def tilt_score(self, policy: Policy, demos: Policy) -> np.ndarray:
        return np.ones(policy.space.n_rollouts) * np.arange(policy.space.n_rollouts)


BAD_MODELS = [
    (NanModel(), "nan"),
    (ProbabilityModel(), "probabilities, not log-probabilities"),
    (TransposedModel(), "transposed"),
    (InfModel(), "+inf"),
    (UnnormalisedModel(), "sum to"),
]


@pytest.mark.parametrize(("model", "words"), BAD_MODELS, ids=lambda x: getattr(x, "name", ""))
@pytest.mark.parametrize("optimum", [sd_sequence, sd_token, sd_forward])
def test_custom_model_outputs_checked_where_tilt_calls_them(
    grid3: Policy, model: ContextModel, words: str, optimum: Callable[..., Policy]
) -> None:
    with pytest.raises(ValueError, match=words.replace("+", r"\+")) as info:
        optimum(grid3, model)
    assert model.name in str(info.value)


def test_custom_model_overridden_score_shape_checked(grid3: Policy) -> None:
    with pytest.raises(ValueError, match=r"bad-score.*tilt_score.*shape"):
        tilt_score(grid3, BadScoreShape())


@pytest.mark.parametrize(
    ("model", "words"),
    [*BAD_MODELS[:2], (UnnormalisedModel(), "sum to"), (WrongScore(), "differs from its generic")],
    ids=lambda x: getattr(x, "name", ""),
)
def test_check_context_model_names_the_problem(model: ContextModel, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        check_context_model(model)


@pytest.mark.parametrize(("name", "strength"), [("copy", 0.7), ("edge", 3.0), ("kernel", 0.4)])
def test_check_context_model_passes_the_built_ins(name: str, strength: float) -> None:
    check_context_model(make_context(name, strength))


def test_not_a_context_model(grid3: Policy) -> None:
    with pytest.raises(TypeError, match="ContextModel"):
        sd_optimum(grid3, "edge")  # type: ignore[arg-type]


def test_measures_on_two_spaces_refused(grid2: Policy, grid3: Policy) -> None:
    for fn in (measure, gap_slope, ratio_distortion):
        with pytest.raises(ValueError, match="different rollout spaces"):
            fn(grid3, grid2)


def test_same_task_enumerated_twice_is_one_space(grid3: Policy) -> None:
    again = base_policy(enumerate_rollouts(named_task("grid3")))
    assert measure(grid3, again).ratio_distortion == 0.0


def test_demonstrations_from_another_space_refused(grid2: Policy, grid3: Policy) -> None:
    with pytest.raises(ValueError, match="different rollout spaces"):
        sd_sequence(grid3, make_context("edge", 1.0), demos=grid2)


def test_demonstrations_of_a_wrong_type_refused(grid3: Policy) -> None:
    with pytest.raises(TypeError, match="demos must be"):
        sd_sequence(grid3, make_context("edge", 1.0), demos=3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# every public optimum is a distribution, or refuses (Hypothesis)

EXTREME = [0.0, 1e-300, 1e-12, 1.0, 50.0, 1e3, 1e6, 1e10, 1e16, 1e300]
strengths = st.one_of(st.sampled_from(EXTREME), st.floats(0.0, 1e300))
lams = st.one_of(
    st.sampled_from([0.0, 1e-300, 0.5, 1 - 1e-12, 0.9999999999999999]), st.floats(0.0, 1.0)
)
betas = st.one_of(st.sampled_from([*EXTREME, math.inf]), st.floats(0.0, 1e300))
anchors = st.sampled_from([0.0, 1e-300, 1.0, 1e10, 1e300])
huge_logits = st.one_of(
    st.floats(-3.0, 3.0), st.floats(-1e300, 1e300), st.sampled_from([-1e300, 1e300, -1e16, 1e16])
)


SPECS = [
    "sequence",
    "token",
    "forward",
    "token-forward",
    "jsd=0",
    "jsd=1e-300",
    "jsd=0.5",
    "jsd=1",
    "discount=1e-300",
    "discount=0.5",
    "discount=1",
    "length-weighted",
    "hybrid=1e-300",
    "hybrid=1",
    "hybrid=1e300",
]
"""Every objective family of tilt.objectives, with its parameter at the ends of its range."""


def test_specs_cover_every_objective() -> None:
    assert {spec.partition("=")[0] for spec in SPECS} == set(OBJECTIVES)


def assert_distribution(make: Callable[[], Policy]) -> None:
    try:
        q = make()
    except ValueError:
        return  # refused: allowed, the call says why
    assert not np.isnan(q.log_prob).any()
    assert abs(float(q.prob.sum()) - 1.0) <= 1e-12


@settings(phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target])
@given(
    instance=instances(max_nodes=6, max_rollouts=60, logit_strategy=huge_logits),
    name=st.sampled_from(["copy", "edge", "kernel"]),
    gamma=strengths,
    lam=lams,
    beta=betas,
    anchor=anchors,
    demos=st.sampled_from(["own", "uniform", "tempered"]),
    alpha=st.sampled_from([0.0, 1e-300, 0.5, 1e300]),
)
def test_every_optimum_is_normalised_or_refuses(
    instance: object,
    name: str,
    gamma: float,
    lam: float,
    beta: float,
    anchor: float,
    demos: str,
    alpha: float,
) -> None:
    base = instance.base  # type: ignore[attr-defined]
    assert abs(float(base.prob.sum()) - 1.0) <= 1e-12
    assert_distribution(lambda: rl_optimum(base, beta))
    try:
        model = make_context(name, lam if name == "copy" else gamma)
    except ValueError:
        assert gamma > MAX_GAMMA or lam >= 1.0  # only what the limits say is refused
        return
    for spec in SPECS:
        b = anchor if OBJECTIVES[spec.partition("=")[0]].takes_anchor else 0.0
        assert_distribution(lambda spec=spec, b=b: sd_optimum(base, model, spec, demos, alpha, b))
    assert_distribution(lambda: sd_forward(base, model, demos, alpha))


def test_overflow_examples_of_the_issue(grid3: Policy) -> None:
    # gamma = 1e10 summed to 1.0000005 and 1e16 to 0.74 once; every legal gamma (up to
    # MAX_GAMMA, what float64 resolves) is normalised, and the rest refused with the range
    for gamma in (1e3, MAX_GAMMA):
        for method in ("sequence", "token", "forward"):
            q = sd_optimum(grid3, make_context("edge", gamma), method)
            assert abs(float(q.prob.sum()) - 1.0) <= 1e-12
    for gamma in (1e6, 1e10, 1e16, 1e300, 1e301):
        with pytest.raises(ValueError, match=f"too large.*gamma <= {MAX_GAMMA:g}"):
            make_context("edge", gamma)


def test_huge_logits_give_a_distribution(grid3: Policy) -> None:
    space = grid3.space
    logits = np.where(np.arange(space.n_moves) % 2 == 0, 1e300, -1e300)
    q = edge_softmax(space, logits)
    assert abs(float(q.prob.sum()) - 1.0) <= 1e-12
    assert abs(float(sd_sequence(q, make_context("edge", 2.0)).prob.sum()) - 1.0) <= 1e-12


# --------------------------------------------------------------------------
# signals and pipes (real processes)

SLOW_WRITE = """
import os, sys, time
import tilt.cli as cli

def stall(*args):
    print("writing", flush=True)  # the temporary file exists and holds the data
    time.sleep(60)

os.chmod = stall
sys.exit(cli.run_main("writer", lambda: cli.write_atomic(sys.argv[1], "x" * 100000) or 0))
"""


@pytest.mark.parametrize(
    ("sig", "status", "words"),
    [
        (signal.SIGTERM, 143, "terminated"),
        (signal.SIGINT, 130, "interrupted"),
        (signal.SIGHUP, 129, "terminated"),
    ],
)
def test_signal_during_a_write_leaves_nothing(
    tmp_path: Path, sig: signal.Signals, status: int, words: str
) -> None:
    target = write(tmp_path / "out.csv", "old\n")
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITE, str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "writing"
    assert len(leftovers(tmp_path)) == 1  # caught mid-write
    process.send_signal(sig)
    _, err = process.communicate(timeout=30)
    assert process.returncode == status, err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [
        f"writer: {words}" + ("" if sig == signal.SIGINT else f" by signal {int(sig)}")
    ]
    assert leftovers(tmp_path) == []
    assert target.read_text() == "old\n"


def wait_for_handler(pid: int, sig: signal.Signals, timeout: float = 60.0) -> None:
    """Wait until process ``pid`` catches ``sig`` (Linux: ``SigCgt`` of /proc/pid/status)."""
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        pytest.skip("needs /proc to see when the process handles the signal")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in status.read_text().splitlines():
            if line.startswith("SigCgt:") and int(line.split()[1], 16) >> (int(sig) - 1) & 1:
                return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} never handled signal {int(sig)}")


def test_sigterm_during_compare_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    process = subprocess.Popen(
        [sys.executable, "-m", "tilt.compare", "--graph", "grid5", "--rollouts", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=ROOT,
    )
    wait_for_handler(process.pid, signal.SIGTERM)  # past the imports, into run_main
    time.sleep(0.5)
    process.terminate()
    _, err = process.communicate(timeout=60)
    assert process.returncode in (0, 143), err
    assert "Traceback" not in err
    if process.returncode == 143:
        assert err.strip().splitlines() == ["python -m tilt.compare: terminated by signal 15"]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "command",
    [
        "python -m tilt.compare --list-graphs | head -1",
        "python -m tilt.compare --graph grid3 | head -1",
        "python -m tilt.compare --graph grid3 --json | head -1",
        "python -m tilt.symbolic | head -1",
        "python -m figures --list | head -1",
        "python benchmarks/run.py --graphs grid2 grid3 --no-plot --no-brute --out {tmp} | head -1",
    ],
)
def test_closed_pipe_is_quiet(command: str, tmp_path: Path) -> None:
    command = command.replace("python", sys.executable, 1).replace("{tmp}", str(tmp_path))
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1


def test_sigint_during_figures_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "figures",
            "--only",
            "iterated",
            "--jobs",
            "2",
            "--out",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=ROOT,
        start_new_session=True,  # a group, as a terminal's Ctrl-C reaches parent and workers
    )
    wait_for_handler(process.pid, signal.SIGTERM)  # run_main is running: workers are starting
    time.sleep(1.0)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert "KeyboardInterrupt" not in err, err
    if process.returncode != 0:
        assert process.returncode == 130, err
        assert err.strip().splitlines()[-1] == "python -m figures: interrupted", err
    assert leftovers(tmp_path) == [], err


def test_a_command_process_ends_with_its_status_and_the_collector_frozen() -> None:
    """``end_process`` (each ``__main__``'s last line) exits with the status given, after
    freezing the cyclic collector; nothing else changes (the objects stay alive)."""
    import gc

    from tilt.cli._run import end_process

    marker = [object()]
    before = gc.get_freeze_count()
    try:
        with pytest.raises(SystemExit) as exit_info:
            end_process(3)
        assert exit_info.value.code == 3
        assert gc.get_freeze_count() > before
        assert gc.isenabled()
        assert marker[0] is not None
    finally:
        gc.unfreeze()


def test_every_command_package_ends_its_process_through_end_process() -> None:
    """Each ``python -m tilt.NAME`` (and ``python -m tilt``) leaves by ``end_process``."""
    mains = sorted((ROOT / "tilt").glob("**/__main__.py"))
    assert len(mains) == len(tilt.cli.COMMANDS) + 1
    for path in mains:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        assert lines[-1] == "end_process(main())", path
