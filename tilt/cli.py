"""Shared pieces of the command-line tools: options, the instance they describe, errors.

The CLIs (``tilt.compare``, ``tilt.train``) are thin ``main(argv)`` functions:
they parse, call the library and print.  Bad input is one line on stderr and
exit status 2; an interrupt is one line and status 130.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NoReturn

import numpy as np

from tilt.context import (
    CONTEXTS,
    DEMOS,
    ContextModel,
    demonstrations,
    make_context,
    point_mass,
    reference_rollout,
)
from tilt.graphs import catalogue, named_task, resolve_task
from tilt.measures import Measures
from tilt.objectives import PRESETS, Objective, objective_forms, parse_objective
from tilt.policy import BASES, Policy, base_policy
from tilt.space import DEFAULT_MAX_ROLLOUTS, RolloutSpace, enumerate_rollouts

__all__ = [
    "DEFAULT_STRENGTH",
    "Instance",
    "OneLineParser",
    "add_instance_arguments",
    "add_task_arguments",
    "add_sd_arguments",
    "build_instance",
    "check_instance_numbers",
    "base_label",
    "run_main",
    "write_atomic",
    "fmt",
    "table",
    "positive_int",
    "non_negative_int",
    "finite_float",
    "check_output_folder",
    "check_output_file",
    "silence_stdout",
    "Terminated",
    "reuse_freed_memory",
    "SHAPE_HEADER",
    "shape_cells",
    "add_k_argument",
    "add_objective_arguments",
    "objective_spec",
    "DEMO_CHOICES",
]

DEMO_CHOICES = (*DEMOS, "reference")
"""``--demos`` values: the built-in distributions and one fixed ``reference`` rollout."""

DEFAULT_STRENGTH = {"copy": 0.5, "edge": 2.0, "kernel": 0.5}
"""Strength used when ``--strength`` is not given: ``lam`` for copy, ``gamma`` otherwise."""


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return value


class _ListGraphs(argparse.Action):
    """``--list-graphs``: print the catalogue, one named graph a line, and exit 0."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        try:
            for name in catalogue():
                print(f"{name:9s} {named_task(name).description}", flush=True)
        except BrokenPipeError:  # | head -1
            silence_stdout()
        parser.exit(0)


def add_instance_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that choose graph, base, context model and demonstrations."""
    add_task_arguments(parser)
    add_sd_arguments(parser)


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that choose graph, source, target, horizon, base and seed."""
    g = parser.add_argument_group("instance")
    g.add_argument(
        "--list-graphs", action=_ListGraphs, help="list the named graphs with their default bases"
    )
    g.add_argument(
        "--graph",
        default="grid5",
        metavar="NAME|FILE",
        help=f"named graph ({', '.join(catalogue())}) or a .graphml/.json/.gml/edge-list file "
        "(default grid5)",
    )
    g.add_argument("--source", help="source node label (default: the graph's)")
    g.add_argument("--target", help="target node label (default: the graph's)")
    g.add_argument(
        "--horizon", type=non_negative_int, help="most moves per rollout (default: none)"
    )
    g.add_argument("--directed", action="store_true", help="read an edge list as directed moves")
    g.add_argument(
        "--max-rollouts",
        type=positive_int,
        default=DEFAULT_MAX_ROLLOUTS,
        help=f"size guard for enumeration (default {DEFAULT_MAX_ROLLOUTS:,})",
    )
    g.add_argument(
        "--base",
        default="default",
        choices=BASES,
        help="base policy: the graph's logits, uniform, or seeded random logits",
    )
    g.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of every random choice (default 0)"
    )


def add_sd_arguments(
    parser: argparse.ArgumentParser, rl: bool = True
) -> argparse._ArgumentGroup:
    """Add the options of the context model, demonstrations, anchor and (``rl``) RL's beta.

    Returns the option group, for a command line that adds its own SD options to it.
    """
    s = parser.add_argument_group("self-distillation")
    s.add_argument(
        "--context", default="edge", choices=CONTEXTS, help="context model (default edge)"
    )
    s.add_argument(
        "--strength",
        type=finite_float,
        help="lam for copy, gamma for edge/kernel (default: "
        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_STRENGTH.items())
        + ")",
    )
    s.add_argument(
        "--demos",
        default="own",
        choices=DEMO_CHOICES,
        help="demonstration distribution (default own); reference: one fixed correct rollout",
    )
    s.add_argument(
        "--reference",
        metavar="PATH",
        help="the reference demonstration, node labels joined by '>' as in the --rollouts CSV "
        "(default: the base's most probable correct rollout)",
    )
    s.add_argument(
        "--alpha",
        type=finite_float,
        default=0.5,
        help="tempering exponent for --demos tempered (default 0.5)",
    )
    s.add_argument(
        "--anchor",
        type=finite_float,
        default=0.0,
        help="anchor b of b*KL(q||pi) for sequence and token SD (default 0)",
    )
    if rl:
        s.add_argument(
            "--beta",
            type=finite_float,
            default=0.0,
            help="KL coefficient of RL; 0 is the limit beta -> 0 (default 0)",
        )
    return s


@dataclass(frozen=True)
class Instance:
    """What the instance options describe."""

    space: RolloutSpace
    base: Policy
    model: ContextModel
    demos: str
    alpha: float
    anchor: float
    beta: float
    seed: int
    base_name: str = "default"
    reference: str | None = None

    @cached_property
    def reference_index(self) -> int:
        """The rollout index of the reference demonstration (``--reference`` or the default)."""
        return reference_rollout(self.base, self.reference)

    def demonstrations(self, policy: Policy, kind: str | None = None) -> Policy:
        """The demonstration distribution of ``policy`` (``kind`` defaults to ``--demos``)."""
        kind = self.demos if kind is None else kind
        if kind == "reference":
            return point_mass(policy, self.reference_index)
        return demonstrations(policy, kind, self.alpha)

    def header(self) -> str:
        """One line naming the instance."""
        space = self.space
        demos = self.demos + (f"(alpha={self.alpha:g})" if self.demos == "tempered" else "")
        if self.demos == "reference" or self.reference is not None:
            path = self.space.path_labels(np.array([self.reference_index]))[0]
            demos += f"; reference {path}"
        return (
            f"{space.task.name}: {space.n_rollouts:,} rollouts, {space.n_correct:,} correct, "
            f"{space.labels[space.source]} -> {space.labels[space.target]}, "
            f"horizon {'none' if space.task.horizon is None else space.task.horizon}; "
            f"base {self.base_name}; context {self.model.describe()}; demonstrations {demos}"
            + (f"; anchor {self.anchor:g}" if self.anchor else "")
        )


def check_instance_numbers(args: argparse.Namespace) -> None:
    """``ValueError`` on a negative ``--beta``, ``--anchor`` or ``--alpha`` (both engines)."""
    if args.beta < 0:
        raise ValueError(f"--beta must be >= 0 (0 is the limit beta -> 0), got {args.beta!r}")
    if args.anchor < 0:
        raise ValueError(f"--anchor must be >= 0, got {args.anchor!r}")
    if args.alpha < 0:
        raise ValueError(f"--alpha must be >= 0, got {args.alpha!r}")


def base_label(args: argparse.Namespace) -> str:
    """The base's name for headers: ``default``, ``uniform`` or ``random(seed=N)``."""
    return args.base + (f"(seed={args.seed})" if args.base == "random" else "")


def build_instance(args: argparse.Namespace) -> Instance:
    """Enumerate the space and build base, context model and options from parsed arguments."""
    check_instance_numbers(args)
    strength = DEFAULT_STRENGTH[args.context] if args.strength is None else args.strength
    model = make_context(args.context, strength)
    task = resolve_task(args.graph, args.source, args.target, args.horizon, args.directed)
    space = enumerate_rollouts(task, args.max_rollouts)
    base = base_policy(space, args.base, seed=args.seed)
    base_name = base_label(args)
    instance = Instance(
        space,
        base,
        model,
        args.demos,
        args.alpha,
        args.anchor,
        args.beta,
        args.seed,
        base_name,
        args.reference,
    )
    if args.reference is not None or args.demos == "reference":
        _ = instance.reference_index  # a path that is not a correct rollout fails here, in one line
    return instance


def objective_spec(text: str) -> Objective:
    """``--sd`` values: a spec of :data:`tilt.objectives.OBJECTIVES`, parsed."""
    try:
        return parse_objective(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _ListPresets(argparse.Action):
    """``--list-presets``: print each preset with its objective, demonstrations and source."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        rows = [[p.name, p.objective, p.demos, p.source] for p in PRESETS.values()]
        print(table(["preset", "objective", "demonstrations", "follows"], rows))
        parser.exit(0)


def add_objective_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--sd SPEC`` and ``--preset NAME`` (both repeatable) and ``--list-presets``."""
    g = parser.add_argument_group("more self-distillation objectives")
    g.add_argument(
        "--sd",
        metavar="SPEC",
        action="append",
        type=objective_spec,
        default=[],
        help=f"add one row (and one CSV column sd[SPEC]) per objective: {objective_forms()}",
    )
    g.add_argument(
        "--preset",
        metavar="NAME",
        action="append",
        choices=list(PRESETS),
        default=[],
        help=f"add a row configured like a trainer's defaults ({', '.join(PRESETS)})",
    )
    g.add_argument(
        "--list-presets",
        action=_ListPresets,
        help="list the presets with their objective, demonstrations and source, and exit",
    )


def reuse_freed_memory() -> None:
    """Ask glibc to serve large arrays from its heap and keep freed memory for reuse.

    By default every array above 32 MiB gets fresh pages from the kernel and gives
    them back when freed, so a pipeline that makes many 150 MB arrays (grid6)
    spends seconds in page faults.  With ``M_MMAP_MAX = 0`` and a high trim
    threshold, freed arrays are reused: ``python -m tilt.compare --graph grid6``
    went from 16.1 s to 13.0 s here (docs/performance.md).  A no-op where glibc
    is absent.
    """
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        libc.mallopt(m_trim_threshold, 2**31 - 1)
        libc.mallopt(m_mmap_max, 0)
    except (OSError, AttributeError):
        return
    # heap pages are reused now: transparent huge pages would only add zeroing work
    with contextlib.suppress(AttributeError):
        np._core.multiarray._set_madvise_hugepage(False)  # type: ignore[attr-defined]


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM or SIGHUP, so that ``finally`` blocks and
    :func:`write_atomic`'s clean-up run as they do on SIGINT."""


_CAUGHT_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def silence_stdout() -> None:
    """Point standard output at ``/dev/null`` after a broken pipe.

    The reader went away (``| head -1``): what is left to print is dropped, and
    Python's flush at exit no longer reports a ``BrokenPipeError``.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # stdout is not a file descriptor (captured in tests): nothing to flush at exit


def run_main(prog: str, body: Callable[[], int]) -> int:
    """Run ``body``; turn errors, signals and broken pipes into one line and a status.

    ``ValueError``/``TypeError`` -> status 2 (bad input); ``MemoryError`` -> 2 with a
    hint; SIGINT -> 130, SIGTERM -> 143, SIGHUP -> 129 (after the clean-up of
    ``finally`` blocks: no temporary file is left); a closed output pipe -> 0, quietly.
    """
    reuse_freed_memory()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in _CAUGHT_SIGNALS:
            previous[sig] = signal.signal(sig, _raise_terminated)
    try:
        return body()
    except (ValueError, TypeError) as exc:
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(
            f"{prog}: error: out of memory: use a horizon (--horizon), a smaller graph or a "
            "lower --max-rollouts (docs/guide.md, 'Memory')",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Terminated as exc:
        signum = int(exc.args[0]) if exc.args else int(signal.SIGTERM)
        print(f"{prog}: terminated by signal {signum}", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:
        silence_stdout()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (a parser may quote a multi-line input)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def check_output_file(path: str | os.PathLike[str]) -> Path:
    """Check, before any work, that ``path`` can be written as a regular file.

    Returns the file to replace: ``path`` itself, or the file a symbolic link
    points to (the link is written through and kept).  A file that does not
    exist yet is fine when its folder exists and is writable (checked by
    creating and removing a temporary file there).

    Raises
    ------
    ValueError
        If ``path`` is a folder, a device, a FIFO, a socket or a dangling link;
        if it is read-only; or if its folder is missing or not writable.
    """
    given = Path(path)
    if str(path) == "":
        raise ValueError("the output file name is empty")
    target = Path(os.path.realpath(given)) if given.is_symlink() else given
    if given.is_symlink() and not target.exists():
        raise ValueError(
            f"cannot write {str(path)!r}: it is a link to {str(target)!r}, which does not exist"
        )
    if target.exists():
        mode = target.stat().st_mode
        if stat.S_ISDIR(mode):
            raise ValueError(f"cannot write {str(path)!r}: it is a folder; give a file name")
        if not stat.S_ISREG(mode):
            kind = (
                "a FIFO"
                if stat.S_ISFIFO(mode)
                else "a character device"
                if stat.S_ISCHR(mode)
                else "a block device"
                if stat.S_ISBLK(mode)
                else "a socket"
                if stat.S_ISSOCK(mode)
                else "not a regular file"
            )
            raise ValueError(
                f"cannot write {str(path)!r}: it is {kind}, and tilt writes only regular files "
                "(atomically, through a temporary file): give a file path"
            )
        if not os.access(target, os.W_OK):
            raise ValueError(f"cannot write {str(path)!r}: the file is read-only")
    folder = target.parent
    if not folder.is_dir():
        raise ValueError(f"cannot write {str(path)!r}: folder {str(folder)!r} does not exist")
    blocked = _block_signals()  # a signal between creating and removing the probe waits
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(
            f"cannot write {str(path)!r}: folder {str(folder)!r} is not writable ({exc.strerror})"
        ) from None
    finally:
        _unblock_signals(blocked)
    return target


def check_output_folder(path: str | os.PathLike[str]) -> None:
    """Raise ``ValueError`` early unless ``path`` can be written (:func:`check_output_file`)."""
    check_output_file(path)


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    A reader never sees a half-written file, and an interrupted write (an
    exception, SIGINT, or SIGTERM/SIGHUP under :func:`run_main`) removes the
    temporary file and leaves the old file (if any) in place.  A symbolic link is
    written through (its target is replaced, the link kept).  The file gets the
    usual permissions (``0666`` less the umask), not ``mkstemp``'s ``0600``.

    Raises
    ------
    ValueError
        If the destination is not a regular file or cannot be written
        (:func:`check_output_file`).
    """
    target = check_output_file(path)
    tmp: str | None = None
    blocked = _block_signals()
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        _unblock_signals(blocked)
        blocked = None
        if isinstance(data, bytes):
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        else:
            with os.fdopen(fd, "w", newline="") as handle:
                handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        _unblock_signals(blocked)


def _block_signals() -> set[int | signal.Signals] | None:
    """Hold SIGINT/SIGTERM/SIGHUP while a temporary file is created and named."""
    if not hasattr(signal, "pthread_sigmask"):
        return None
    held = {signal.SIGINT, *_CAUGHT_SIGNALS}
    return signal.pthread_sigmask(signal.SIG_BLOCK, held)


def _unblock_signals(previous: set[int | signal.Signals] | None) -> None:
    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


SHAPE_HEADER = (
    "accuracy",
    "H(C) nats",
    "eff. #C",
    "gap slope",
    "w. slope",
    "widening",
    "distortion",
)
"""Column names of :func:`shape_cells`: ``gap slope`` is the unweighted least-squares
slope, ``w. slope`` the ``pi0``-weighted one, ``widening`` the ``pi0``-mass fraction of
correct pairs whose gap widens (``tilt.measures``)."""


def shape_cells(measures: Measures) -> list[str]:
    """The measures of a policy's shape, formatted for a table (see :data:`SHAPE_HEADER`)."""
    return [
        fmt(measures.accuracy),
        fmt(measures.correct_entropy, 3),
        # beyond a million (token lattices reach 10^40 and more) in scientific notation
        fmt(measures.effective_correct, 1)
        if not measures.effective_correct >= 1e6
        else f"{measures.effective_correct:.3e}",
        fmt(measures.gap_slope, 3),
        fmt(measures.weighted_gap_slope, 3),
        fmt(measures.widening_fraction, 3),
        fmt(measures.ratio_distortion, 3),
    ]


def add_k_argument(group: argparse._ArgumentGroup) -> None:
    """Add ``--k``, the sample counts of pass@k, distinct@k and ood pass@k."""
    group.add_argument(
        "--k",
        type=positive_int,
        nargs="+",
        default=[1, 8, 64],
        help="sample counts for pass@k, distinct@k and ood pass@k (default 1 8 64)",
    )


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for a table: fixed digits, ``n/a`` for ``None``/``nan``, ``inf`` kept."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned first column, right-aligned others."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for r in [header, *rows]:
        cells = [str(r[0]).ljust(widths[0])] + [
            str(c).rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
