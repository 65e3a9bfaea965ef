"""Developer tasks: ``nox -s tests``, ``nox -s lint``, ``nox -s docs``, ``nox -s figures``,
``nox -s benchmarks`` (``nox -l`` lists them).  Each session installs tilt in a fresh
virtual environment; ``python -m pytest`` in your own environment stays the CI command."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.default_venv_backend = "venv"


@nox.session
def tests(session: nox.Session) -> None:
    """The default test run (what CI runs); extra arguments go to pytest (``-- -m slow``)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) and mypy on tilt."""
    session.install("-e", ".[test]", "ruff>=0.5", "mypy>=1.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", "tilt")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Run every command of the docs and compare printed outputs (tests/test_docs.py)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "tests/test_docs.py", "-m", "slow or not slow")


@nox.session
def figures(session: nox.Session) -> None:
    """Regenerate every figure into figures/out (a few minutes on 2 cores)."""
    session.install("-e", ".[plot]")
    session.run("python", "-m", "figures", *session.posargs)


@nox.session
def benchmarks(session: nox.Session) -> None:
    """Time and memory of each stage (benchmarks/run.py; arguments passed on)."""
    session.install("-e", ".[plot]")
    session.run("python", "benchmarks/run.py", *session.posargs)
