"""The layout holds: no import cycle (lazy imports included), no library import of the
commands, the import-linter contracts of pyproject.toml, and the curated API."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from _repo import ROOT

import tilt


def _modules() -> dict[str, Path]:
    out = {}
    for path in (ROOT / "tilt").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Every import statement at any depth (inside functions too), resolved to a module."""
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            for target in targets:
                while target and target not in modules:
                    target = target.rsplit(".", 1)[0] if "." in target else ""
                if target and target != name and not name.startswith(target + "."):
                    edges[name].add(target)
    return edges


def test_no_import_cycle_lazy_imports_included():
    modules = _modules()
    edges = _imports(modules)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module)


def test_nothing_in_the_library_imports_the_commands():
    edges = _imports(_modules())
    bad = sorted(
        (source, target)
        for source, targets in edges.items()
        for target in targets
        if target.startswith("tilt.cli")
        and not source.startswith("tilt.cli")
        and not source.endswith("__main__")
        and source != "tilt"
    )
    assert bad == []


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter is not installed")
def test_import_linter_contracts_are_kept():
    result = subprocess.run(
        ["lint-imports", "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 kept, 0 broken" in result.stdout


def test_curated_api_names_exist_and_are_documented():
    assert 20 <= len(tilt.__all__) <= 40
    for name in tilt.__all__:
        value = getattr(tilt, name)
        if name != "__version__":
            assert value.__doc__, name


def test_every_family_states_its_responsibility():
    for path in (ROOT / "tilt").rglob("__init__.py"):
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), path


def test_every_command_runs_as_tilt_command_and_as_its_module():
    from tilt.cli import COMMANDS

    for name in COMMANDS:
        assert (ROOT / "tilt" / name / "__main__.py").exists(), name
    result = subprocess.run(
        [sys.executable, "-m", "tilt", "--help"], capture_output=True, text=True, check=True
    )
    for name in COMMANDS:
        assert name in result.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "tilt", "nonsense"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert "unknown command 'nonsense'" in bad.stderr
