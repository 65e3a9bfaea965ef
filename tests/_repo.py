"""Paths of the repository, for tests at any depth of ``tests/``."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The repository's top folder."""
