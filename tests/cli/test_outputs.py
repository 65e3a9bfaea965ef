"""Every output option of every command goes through one destination check.

For each command and each of its output options, the same hostile destinations:
one of the command's own inputs, a folder, a dangling link, ``-``, an empty name.
Each is refused in one line with exit status 2, before any work, and the input
is left as it was.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _commands import assert_one_line_error, run_command
from _repo import ROOT

from tilt.cli import audit, compare, sample

EXAMPLES = ROOT / "docs" / "examples"

# (command, argv before the output option, the input file it reads, output options)
COMMANDS = [
    (compare.main, ["--graph", "{graph}"], "graph", ["--rollouts"]),
    (sample.main, ["--graph", "{graph}", "--prompts", "2"], "graph", ["--out"]),
    (audit.main, ["{log}"], "log", ["--rollouts", "--plot"]),
]
CASES = [
    (main, argv, source, option) for main, argv, source, options in COMMANDS for option in options
]


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    graph = tmp_path / "ladder.json"
    shutil.copy(EXAMPLES / "ladder.json", graph)
    log = tmp_path / "run.jsonl"
    shutil.copy(EXAMPLES / "audit_grid4.jsonl", log)
    return {"graph": graph, "log": log}


def _argv(argv: list[str], inputs: dict[str, Path]) -> list[str]:
    return [a.format(**{k: str(v) for k, v in inputs.items()}) for a in argv]


def _destinations(tmp_path: Path, source: Path) -> dict[str, tuple[str, str]]:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "missing" / "x.csv")
    link_to_input = tmp_path / "link-to-input"
    link_to_input.symlink_to(source)
    return {
        "the input itself": (str(source), "it is also an input"),
        "a link to the input": (str(link_to_input), "it is also an input"),
        "a folder": (str(folder), "it is a folder"),
        "a dangling link": (str(dangling), "does not exist"),
        "standard output": ("-", "cannot write '-'"),
        "an empty name": ("", "empty"),
    }


@pytest.mark.parametrize(("main", "argv", "source", "option"), CASES)
def test_every_output_option_refuses_every_bad_destination(
    main, argv, source, option, inputs, tmp_path, capsys
):
    before = inputs[source].read_bytes()
    for what, (path, message) in _destinations(tmp_path, inputs[source]).items():
        code, out, err = run_command([*_argv(argv, inputs), option, path], capsys, main)
        assert_one_line_error(code, out, err, message)
        assert inputs[source].read_bytes() == before, what
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["ladder.json", "run.jsonl", "a-folder", "dangling.csv", "link-to-input"]
    )


def test_a_good_destination_is_written(inputs, tmp_path, capsys):
    out_file = tmp_path / "rollouts.csv"
    code, _, err = run_command(
        ["--graph", str(inputs["graph"]), "--rollouts", str(out_file)], capsys, compare.main
    )
    assert code == 0, err
    assert out_file.read_text().startswith("path,correct,")


def test_a_closed_standard_input_is_one_line(tmp_path):
    # `python -m tilt.audit - <&-`: file descriptor 0 closed before Python starts
    result = subprocess.run(
        [sys.executable, "-m", "tilt.audit", "-"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        preexec_fn=lambda: os.close(0),
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "standard input is closed" in result.stderr
