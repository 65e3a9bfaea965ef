"""``python -m tilt.symbolic``: check every closed form symbolically and print the verdicts."""

from __future__ import annotations

from tilt.cli._run import run_main
from tilt.symbolic import derivations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Print every derivation; exit status 1 if some residual is not ``0``.

    A closed pipe (``| head -1``) ends it quietly, an interrupt in one line.
    """

    def body() -> int:
        holds = True
        for name, derive in derivations().items():  # printed as derived: | head stops early
            derivation = derive()
            holds = holds and derivation.holds
            print(f"[{name}] {'holds' if derivation.holds else 'DOES NOT HOLD'}")
            print(derivation.report())
            print(flush=True)
        return 0 if holds else 1

    return run_main("python -m tilt.symbolic", body)
