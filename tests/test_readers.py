"""Readers of user files: bounded nesting, number size, line length and file size.

Each hostile file gives one ``ValueError`` that names the file (where the reader knows
it), the line and the field; before, they gave ``RecursionError`` (JSON nested 100,000
deep), ``OverflowError`` (a 401-digit integer as a logit, log-probability or reward) or
read a multi-gigabyte line whole.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tilt import _read_limits
from tilt.audit import audit_lines
from tilt.audit._read import AuditInputError, read_prompts
from tilt.suite import load_suite
from tilt.tasks.graphs import load_graph

HUGE = "1" + "0" * 400  # a 401-digit integer: float() of it overflows
DEEP = "[" * 100_000 + "]" * 100_000


def _node_link(logit: str = "0.5") -> str:
    return (
        '{"directed": true, "multigraph": false, "graph": {"source": "s", "target": "t"},\n'
        ' "nodes": [{"id": "s"}, {"id": "t"}],\n'
        f' "links": [{{"source": "s", "target": "t", "logit": {logit}}}]}}\n'
    )


# ------------------------------------------------------------------ graph files


def test_a_plain_node_link_file_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    path.write_text(_node_link())
    task = load_graph(path)
    assert task.graph.edges["s", "t"]["logit"] == 0.5


def test_json_graph_nested_100k_deep(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"nodes": ' + DEEP + "}")
    with pytest.raises(ValueError, match=r"deep\.json.*line 1: nested deeper than 64 levels"):
        load_graph(path)


@pytest.mark.parametrize(("literal", "reason"), [(HUGE, "401 characters"), ("1e999", "overflows")])
def test_json_graph_logit_beyond_float64_names_line_and_field(
    tmp_path: Path, literal: str, reason: str
) -> None:
    path = tmp_path / "big.json"
    path.write_text(_node_link(literal))
    with pytest.raises(ValueError, match=rf"big\.json.*line 3, field 'logit': .*{reason}"):
        load_graph(path)


def test_gml_nested_deep(tmp_path: Path) -> None:
    path = tmp_path / "deep.gml"
    path.write_text("graph [ x " + "[ a " * 5000 + "]" * 5000 + " ]")
    with pytest.raises(ValueError, match=r"deep\.gml.*nested deeper than 64"):
        load_graph(path, "a", "b")


def test_graphml_integer_logit_beyond_float64(tmp_path: Path) -> None:
    path = tmp_path / "big.graphml"
    path.write_text(
        '<?xml version="1.0"?><graphml xmlns="http://graphml.graphdrawing.org/xmlns">'
        '<key id="l" for="edge" attr.name="logit" attr.type="long"/>'
        '<graph edgedefault="directed"><node id="s"/><node id="t"/>'
        f'<edge source="s" target="t"><data key="l">{HUGE}</data></edge></graph></graphml>'
    )
    with pytest.raises(ValueError, match="edge s -> t has a logit of 401 digits"):
        load_graph(path, "s", "t")


def test_edge_list_number_too_long_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "edges.txt"
    path.write_text(f"s a {{'logit': 1.0}}\na t {{'logit': {HUGE}}}\n")
    with pytest.raises(ValueError, match=r"edges\.txt.*line 2: a number of 401 characters"):
        load_graph(path, "s", "t")


def test_edge_list_line_too_long(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_read_limits, "MAX_LINE_CHARS", 100)
    path = tmp_path / "edges.txt"
    path.write_text("s a\n" + "a " + "b" * 500 + "\n")
    with pytest.raises(ValueError, match=r"line 2 is longer than 100 characters"):
        load_graph(path, "s", "a")


def test_graph_file_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_read_limits, "MAX_FILE_BYTES", 50)
    path = tmp_path / "g.json"
    path.write_text(_node_link())
    with pytest.raises(ValueError, match=r"graph file .*g\.json.* bytes, above the 50 bytes"):
        load_graph(path)


# ------------------------------------------------------------------ suite files


def test_suite_nested_deep(tmp_path: Path) -> None:
    path = tmp_path / "suite.json"
    path.write_text(DEEP)
    with pytest.raises(ValueError, match=r"suite file .*suite\.json.*nested deeper than 64"):
        load_suite(path)


def test_suite_number_beyond_float64_names_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "suite.json"
    path.write_text(f'[{{"graph": "grid3"}},\n {{"graph": "grid3", "seed": {HUGE}}}]\n')
    with pytest.raises(ValueError, match=r"suite\.json.*line 2, field 'seed': a number of 401"):
        load_suite(path)


# ------------------------------------------------------------------ audit logs


def _line(logp: str = "-1.0", reward: str = "1.0", rollout: int = 0) -> str:
    return f'{{"prompt": "p", "rollout": {rollout}, "reward": {reward}, "logp": {logp}}}\n'


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (_line(logp="-" + HUGE), "line 1: field 'logp': a number of 402 characters"),
        (_line(reward=HUGE), "line 1: field 'reward': a number of 401 characters"),
        (_line() + _line(logp="-1e999", rollout=1), "line 2: field 'logp': -1e999 overflows"),
        ('{"prompt": ' + DEEP + "}\n", "line 1: nested deeper than 64 levels"),
    ],
    ids=["logp-401-digits", "reward-401-digits", "logp-overflow", "nested-100k"],
)
def test_audit_numbers_and_nesting(text: str, fragment: str) -> None:
    with pytest.raises(AuditInputError, match=fragment):
        list(read_prompts(io.StringIO(text)))


class _CountingText(io.StringIO):
    """A text file that counts the characters handed out."""

    read_chars = 0

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        line = super().readline(size)
        self.read_chars += len(line)
        return line


def test_audit_line_too_long_is_refused_without_reading_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a 3.3 GB line was read whole before: now at most MAX_LINE_CHARS + 1 characters of it
    monkeypatch.setattr(_read_limits, "MAX_LINE_CHARS", 1000)
    handle = _CountingText(_line() + '{"prompt": "' + "x" * 100_000 + '"}\n')
    with pytest.raises(AuditInputError, match="line 2 is longer than 1,000 characters"):
        list(read_prompts(handle))
    assert handle.read_chars <= len(_line()) + 1001


def test_audit_of_equal_log_probabilities_says_the_slope_is_undefined() -> None:
    # tilt.sample --base uniform on grid2 gave such a log: ZeroDivisionError before
    lines = []
    for prompt in range(3):
        for r in range(3):
            teacher = [{"demo": str(d), "logp": -1.2} for d in range(3) if d != r]
            record = {"prompt": str(prompt), "rollout": str(r), "correct": True, "logp": -1.0}
            lines.append(json.dumps({**record, "teacher": teacher}))
    result = audit_lines(lines, bootstrap=50)
    assert result.n_sloped == 3
    assert all(map(lambda v: v != v, vars(result.amplification).values()))  # all nan
    assert any(
        "amplification (the slope of S on log pi) is undefined" in w for w in result.warnings
    )
    assert "slope of S on log pi is undefined" in result.verdict()
