"""Every command of tilt: parse, call the library, print.  Nothing in the library imports it.

``python -m tilt COMMAND ...`` and the ``tilt`` console script run
:func:`main`; each command is also ``python -m tilt.COMMAND`` (its package's
``__main__``).  A command is a module here with ``main(argv) -> int``, listed in
:data:`COMMANDS`.  Bad input is one line on stderr and exit status 2; an
interrupt is one line and status 130 (:func:`run_main`).  The helpers below are
for the project's own scripts too (``analysis/``, ``figures/``, ``benchmarks/``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from tilt._table import SHAPE_HEADER, fmt, shape_cells, table
from tilt.cli._args import (
    OneLineParser,
    finite_float,
    non_negative_int,
    positive_int,
)
from tilt.cli._files import check_output_file, write_atomic
from tilt.cli._run import Terminated, end_process, reuse_freed_memory, run_main, silence_stdout

__all__ = [
    "COMMANDS",
    "main",
    "OneLineParser",
    "positive_int",
    "non_negative_int",
    "finite_float",
    "run_main",
    "end_process",
    "silence_stdout",
    "reuse_freed_memory",
    "Terminated",
    "check_output_file",
    "write_atomic",
    "fmt",
    "table",
    "SHAPE_HEADER",
    "shape_cells",
]

COMMANDS = {
    "compare": "RL against self-distillation on one instance, exactly",
    "suite": "mean pass@k over a suite of prompts, RL matched at one shared beta",
    "train": "train a tabular softmax policy by gradients and compare with the closed forms",
    "share": "train with weights shared across prompts (exact or sampled)",
    "sample": "write an audit log of sampled rollouts from an instance",
    "audit": "estimate from a real run's log what SD does to the ratios",
    "symbolic": "check the closed forms symbolically (sympy)",
    "neural": "a transformer as the model: tables, predictions, pretraining, training (torch)",
}
"""The commands, each a module ``tilt.cli.NAME`` with ``main(argv)``."""


def main(argv: Sequence[str] | None = None) -> int:
    """``tilt COMMAND [options]``: run one command; ``tilt --help`` lists them."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        width = max(map(len, COMMANDS))
        lines = [f"  {name:{width}s}  {what}" for name, what in COMMANDS.items()]
        text = "usage: tilt COMMAND [options]   (tilt COMMAND --help for its options)\n\n"
        try:
            print(text + "commands:\n" + "\n".join(lines), file=sys.stdout if args else sys.stderr)
        except BrokenPipeError:
            silence_stdout()
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(
            f"tilt: error: unknown command {name!r}: choose one of {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    command = importlib.import_module(f"tilt.cli.{name}")
    status: int = command.main(rest)
    return status
