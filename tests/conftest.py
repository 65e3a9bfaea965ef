"""Hypothesis profiles for the test suite.

* ``ci`` (the default): a fixed number of examples per property, derandomised
  (the same examples on every run and every machine), no deadline (shared
  machines are noisy), no example database (nothing written into the tree).
* ``dev``: ten times the examples, random and with the local database, for
  hunting counterexamples: ``HYPOTHESIS_PROFILE=dev python -m pytest``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path

from hypothesis import HealthCheck, settings

# the shared helpers of the tests (oracle.py, _repo.py, _commands.py) import by name from any
# folder of tests/, which mirrors the packages of tilt/
sys.path.insert(0, str(Path(__file__).resolve().parent))

# When a property fails, Hypothesis' pytest plugin imports its patch writer, which
# imports libcst, which subclasses the deprecated mypy_extensions.TypedDict: under
# `filterwarnings = error` that DeprecationWarning becomes an INTERNALERROR that hides
# the failure.  Importing it once here, with that warning silenced, avoids it.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    with contextlib.suppress(ImportError):
        import hypothesis.extra._patching  # noqa: F401

settings.register_profile(
    "ci",
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    max_examples=400,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
