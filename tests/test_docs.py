"""Every command shown in the docs still works.

Parses the fenced code blocks of ``docs/guide.md``, ``docs/gallery.md``,
``docs/theory.md`` and ``README.md`` (``docs/performance.md`` shows only
``benchmarks/run.py``, exercised by ``tests/test_benchmarks_smoke.py``):

* in ``bash`` blocks, each line (or ``&&`` part of a line) that starts with
  ``python -m`` is run from a scratch folder holding a copy of
  ``docs/examples/`` and must exit with status 0; ``pip`` parts are skipped
  (no network in tests), and so is ``python -m pytest`` (this suite itself);
  a command whose trailing comment says ``slow`` runs only with ``-m slow``;
* each ``python`` block is run the same way and, when a ``text`` block follows
  it directly, must print exactly that text.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from _repo import ROOT

DOCS = (
    "docs/guide.md",
    "docs/gallery.md",
    "docs/theory.md",
    "docs/objectives.md",
    "docs/audit.md",
    "docs/sharing.md",
    "README.md",
)
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    lang: str
    text: str


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    argv: tuple[str, ...]
    slow: bool

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {shlex.join(self.argv)}"


def blocks(doc: str) -> list[Block]:
    """Fenced blocks of ``doc`` (indented fences inside list items included)."""
    out, lines = [], (ROOT / doc).read_text().splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, lang, start = len(match.group(1)), match.group(2), i + 1
        j = start
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        body = "\n".join(
            line[indent:] if line[:indent].strip() == "" else line for line in lines[start:j]
        )
        out.append(Block(doc, start, lang, body))
        i = j + 1
    return out


def commands(doc: str) -> list[Command]:
    out = []
    for block in blocks(doc):
        if block.lang not in ("bash", "sh", "shell", "console"):
            continue
        for offset, raw in enumerate(block.text.splitlines()):
            words = shlex.split(raw.lstrip("$ "), comments=True)
            slow = "#" in raw and "slow" in raw.split("#", 1)[1]
            part: list[str] = []
            for word in [*words, "&&"]:
                if word != "&&":
                    part.append(word)
                    continue
                if part[:2] == ["python", "-m"] and part[2:3] != ["pytest"]:
                    out.append(Command(doc, block.line + offset + 1, tuple(part), slow))
                part = []
    return out


def _all_commands() -> list[Command]:
    return [c for doc in DOCS if (ROOT / doc).exists() for c in commands(doc)]


def _python_blocks() -> list[tuple[Block, Block | None]]:
    out = []
    for doc in DOCS:
        if not (ROOT / doc).exists():
            continue
        found = blocks(doc)
        for i, block in enumerate(found):
            if block.lang == "python":
                following = (
                    found[i + 1] if i + 1 < len(found) and found[i + 1].lang == "text" else None
                )
                out.append((block, following))
    return out


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "docs" / "examples", tmp_path / "docs" / "examples")
    return tmp_path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["MPLBACKEND"] = "Agg"
    return env


def _run(argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _same_work(argv: tuple[str, ...]) -> tuple[str, ...]:
    """``argv`` with the value of ``--out`` left out: two commands that differ only in where
    they write do the same work."""
    return tuple("OUT" if i and argv[i - 1] == "--out" else a for i, a in enumerate(argv))


COVERED_ELSEWHERE = {
    ("python", "-m", "figures", "--quick", "--out", "OUT"): (
        "tests/test_figures.py",
        "test_quick_run_writes_every_figure_and_its_numbers",
    ),
}
"""Documented commands that a dedicated test already runs with the same arguments (in
process, with more checks): the doc-command test does not run them a second time."""


def _params(slow: bool) -> list[object]:
    """One test per distinct command (the same command shown in two docs, or with only its
    ``--out`` changed, runs once)."""
    seen: set[tuple[str, ...]] = set()
    out = []
    for c in _all_commands():
        key = _same_work(c.argv)
        if key in COVERED_ELSEWHERE:
            continue
        if c.slow == slow and key not in seen:
            seen.add(key)
            out.append(pytest.param(c, id=str(c)))
    return out


def test_commands_covered_elsewhere_are_documented_and_tested() -> None:
    shown = {_same_work(c.argv) for c in _all_commands()}
    for key, (path, name) in COVERED_ELSEWHERE.items():
        assert key in shown, key  # still in the docs
        assert f"def {name}(" in (ROOT / path).read_text(), (path, name)  # still tested


def test_every_doc_shows_commands() -> None:
    for doc in DOCS:
        assert (ROOT / doc).exists(), doc
        assert commands(doc), f"{doc} shows no python -m command in a bash block"
    assert any("figures" in c.argv for c in _all_commands())


def test_parser_reads_chains_comments_and_indented_fences(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "text\n\n  ```bash\n  pip install -e . && python -m tilt.compare --graph grid2\n  ```\n\n"
        "```bash\npython -m figures --out o  # slow: minutes\npython -m pytest\n```\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = commands("x.md")
    assert [c.argv for c in found] == [
        ("python", "-m", "tilt.compare", "--graph", "grid2"),
        ("python", "-m", "figures", "--out", "o"),
    ]
    assert [c.slow for c in found] == [False, True]
    assert found[0].line == 4


@pytest.mark.parametrize("command", _params(slow=False))
def test_doc_command_runs(command: Command, scratch: Path) -> None:
    proc = _run([sys.executable, *command.argv[1:]], scratch, timeout=600)
    assert proc.returncode == 0, f"{command}\n{proc.stderr[-2000:]}"


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.parametrize("command", _params(slow=True))
def test_slow_doc_command_runs(command: Command, scratch: Path) -> None:
    proc = _run([sys.executable, *command.argv[1:]], scratch, timeout=3600)
    assert proc.returncode == 0, f"{command}\n{proc.stderr[-2000:]}"


@pytest.mark.parametrize(
    ("block", "output"), [pytest.param(b, o, id=f"{b.doc}:{b.line}") for b, o in _python_blocks()]
)
def test_doc_python_block_prints_what_the_doc_shows(
    block: Block, output: Block | None, scratch: Path
) -> None:
    proc = _run([sys.executable, "-c", block.text], scratch, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if output is not None:
        assert proc.stdout.strip() == output.text.strip()
