"""Run a benchmark script again as its own worker process, and read what it reports.

Each benchmark measures in a fresh interpreter (its peak memory is that process's
own), with the repository first on ``PYTHONPATH``: the worker prints one JSON
value on its last line of standard output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_worker(script: str, args: list[str]) -> tuple[object, str]:
    """Run ``python script *args``; ``(the JSON of its last output line, "")``, or
    ``(None, "exit N: <its last line of errors>")`` when it fails."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    cmd = [sys.executable, str(Path(script).resolve()), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        message = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"exit {done.returncode}: {message}"
    return json.loads(done.stdout.strip().splitlines()[-1]), ""
