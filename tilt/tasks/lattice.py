"""Token lattices: an autoregressive model over a vocabulary, as an acyclic graph.

``lattice:V=8,L=64,seed=0`` is the task of generating ``L`` tokens from a
vocabulary of ``V``, with a seeded bigram base policy, and a correctness rule
checked by an automaton with ``M`` states:

**a rollout is correct when the sum of its tokens is divisible by** ``M``
(default ``M = 2``: the sum is even).

The graph is the product of the position-token lattice with the automaton, so
it stays a DAG: the source ``s``; a node ``"i:v/a"`` for position ``i = 1..L``,
token ``v`` and automaton state ``a = (v_1 + ... + v_i) mod M`` (reachable
pairs only); after position ``L`` one forced move (probability 1) to the
target ``t`` when ``a = 0`` or to the dead end ``x`` otherwise.  Every rollout
makes ``L + 1`` moves; the correct ones are the token strings accepted by the
automaton, ``|Y| = V^L``.

Base logits (the edge attribute ``logit``): ``s -> 1:v`` has ``theta_0[v]`` and
``i:v/a -> i+1:v'/a'`` has ``theta[v, v']``, drawn once,
``theta_0 ~ Normal(0, scale^2)^V`` then ``theta ~ Normal(0, scale^2)^(V x V)``
from ``numpy.random.default_rng(seed)`` (``scale`` default 1).


Fields: ``V`` (2..4096) and ``L`` (1..100000) are required; ``seed`` (default
0), ``M`` (1..64, default 2) and ``scale`` (0..100, default 1) are optional.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tilt.tasks._task import Task

__all__ = [
    "LatticeSpec",
    "LATTICE_PREFIX",
    "LATTICE_MOVE_LIMIT",
    "NETWORKX_MOVE_LIMIT",
    "lattice_move_count",
    "is_lattice_name",
    "parse_lattice",
    "lattice_logits",
    "lattice_moves",
    "lattice_task",
]

LATTICE_PREFIX = "lattice:"
LATTICE_MOVE_LIMIT = 100_000_000
"""Most moves a lattice may have (``about V^2 L``)."""

_FIELDS: dict[str, tuple[type, float, float]] = {
    "V": (int, 2, 4096),
    "L": (int, 1, 100_000),
    "seed": (int, 0, 2**63 - 1),
    "M": (int, 1, 64),
    "scale": (float, 0.0, 100.0),
}
_REQUIRED = ("V", "L")
_EXAMPLE = "lattice:V=8,L=64,seed=0"


@dataclass(frozen=True)
class LatticeSpec:
    """The parameters of a token lattice (see the module docstring)."""

    vocab: int
    length: int
    seed: int = 0
    modulus: int = 2
    scale: float = 1.0

    @property
    def name(self) -> str:
        """The canonical name, ``lattice:V=..,L=..,seed=..`` (plus non-default fields)."""
        extra = (f",M={self.modulus}" if self.modulus != 2 else "") + (
            f",scale={self.scale:g}" if self.scale != 1.0 else ""
        )
        return f"lattice:V={self.vocab},L={self.length},seed={self.seed}{extra}"


def is_lattice_name(name: str) -> bool:
    """Whether ``name`` asks for a token lattice (``lattice:...``)."""
    return isinstance(name, str) and (name == "lattice" or name.startswith(LATTICE_PREFIX))


def parse_lattice(name: str) -> LatticeSpec:
    """Parse ``lattice:V=8,L=64,seed=0[,M=2][,scale=1]``.

    Raises
    ------
    ValueError
        On a missing, unknown, repeated, malformed or out-of-range field, or a
        lattice with more than :data:`LATTICE_MOVE_LIMIT` moves
        (:func:`lattice_move_count`); the message names the field and gives an example.
        The DP engine also refuses a lattice whose run would not fit in the available
        memory (:func:`tilt.engines.dp.space.lattice_table`).
    """
    body = name[len(LATTICE_PREFIX) :] if name.startswith(LATTICE_PREFIX) else ""
    values: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        key, eq, raw = part.partition("=")
        key = key.strip()
        if not eq or key not in _FIELDS:
            raise ValueError(
                f"bad lattice field {part!r} in {name!r}: use key=value with keys "
                f"{', '.join(_FIELDS)}, e.g. {_EXAMPLE}"
            )
        if key in values:
            raise ValueError(f"lattice field {key} given twice in {name!r}")
        kind, low, high = _FIELDS[key]
        try:
            value = float(raw) if kind is float else int(raw)
        except ValueError:
            what = "a number" if kind is float else "an integer"
            raise ValueError(f"lattice field {key}={raw!r} in {name!r} is not {what}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(
                f"lattice field {key}={raw} in {name!r} is out of range: {key} must lie in "
                f"[{low:g}, {high:g}]"
            )
        values[key] = value
    missing = [k for k in _REQUIRED if k not in values]
    if missing:
        raise ValueError(
            f"lattice spec {name!r} lacks {' and '.join(missing)}: give at least V and L, "
            f"e.g. {_EXAMPLE}"
        )
    spec = LatticeSpec(
        vocab=int(values["V"]),
        length=int(values["L"]),
        seed=int(values.get("seed", 0)),
        modulus=int(values.get("M", 2)),
        scale=float(values.get("scale", 1.0)),
    )
    moves = lattice_move_count(spec)
    if moves > LATTICE_MOVE_LIMIT:
        raise ValueError(
            f"{spec.name} has about {moves:,} moves (limit {LATTICE_MOVE_LIMIT:,}): "
            "use a smaller V, L or M"
        )
    return spec


def lattice_move_count(spec: LatticeSpec) -> int:
    """``V^2 L min(M, V)``: ``V`` tokens times ``min(M, V)`` automaton states per position,
    each with ``V`` moves (an upper bound: states the automaton cannot reach are left out).
    What the DP engine allocates: one state edge per move."""
    return spec.vocab * spec.vocab * spec.length * min(spec.modulus, spec.vocab)


def lattice_logits(spec: LatticeSpec) -> tuple[np.ndarray, np.ndarray]:
    """``(theta_0, theta)``: start logits (V,) and bigram logits (V, V), seeded."""
    rng = np.random.default_rng(spec.seed)
    start = rng.normal(0.0, spec.scale, size=spec.vocab)
    bigram = rng.normal(0.0, spec.scale, size=(spec.vocab, spec.vocab))
    return start, bigram


@dataclass(frozen=True)
class LatticeMoves:
    """A lattice as flat arrays: node labels and moves sorted by tail (CSR order)."""

    labels: tuple[str, ...]
    tail: np.ndarray
    head: np.ndarray
    logit: np.ndarray
    source: int
    target: int


def lattice_moves(spec: LatticeSpec) -> LatticeMoves:
    """The nodes and moves of the lattice, built with numpy (no networkx).

    Time and memory linear in the number of moves (about ``V^2 L min(M, V)``).  Once the
    automaton states reachable after ``i`` tokens stop changing, every later position holds
    the same (token, state) nodes, so their labels and moves are the last ones renumbered:
    built in one broadcast, not position by position.
    """
    V, L, M = spec.vocab, spec.length, spec.modulus
    start, bigram = lattice_logits(spec)
    token = np.arange(V)
    # pattern[i - 1]: the (V, M) mask of the nodes (i, v, a) at position i (1..L); node
    # (i, v, a) exists when (a - v) mod M was reachable after i - 1 tokens
    reach = np.zeros(M, dtype=bool)
    reach[0] = True
    patterns: list[np.ndarray] = []
    while len(patterns) < L:
        ok = reach[(np.arange(M)[None, :] - token[:, None]) % M]
        patterns.append(ok)
        following = ok.any(axis=0)
        if np.array_equal(following, reach) and len(patterns) > 1:
            break  # a fixed point: every later position has this pattern
        reach = following
    stable = len(patterns)  # positions stable..L repeat the last pattern
    labels: list[str] = ["s"]
    index: list[np.ndarray] = []  # per explicit position: (V, M) node index or -1
    for i, ok in enumerate(patterns, start=1):
        here = np.full((V, M), -1, dtype=np.int64)
        vv, aa = np.nonzero(ok)
        here[vv, aa] = len(labels) + np.arange(vv.size)
        labels.extend(f"{i}:{v}/{a}" for v, a in zip(vv.tolist(), aa.tolist(), strict=True))
        index.append(here)
    width = int(patterns[-1].sum())  # nodes per repeated position
    vv, aa = np.nonzero(patterns[-1])
    suffixes = [f":{v}/{a}" for v, a in zip(vv.tolist(), aa.tolist(), strict=True)]
    for i in range(stable + 1, L + 1):
        labels.extend([str(i) + tail for tail in suffixes])
    final_ok = np.any(patterns[-1], axis=0)  # the states reachable after L tokens
    target = len(labels)
    labels.append("t")
    dead = target + 1 if final_ok[1:].any() else -1
    if dead >= 0:
        labels.append("x")
    tails, heads, logits = [], [], []
    # source -> position 1
    tails.append(np.zeros(V, dtype=np.int64))
    heads.append(index[0][token, token % M])
    logits.append(start)
    # position i -> i + 1 while the patterns still change (and into the first repeat)
    for i in range(1, min(stable, L - 1) + 1):
        here = index[i - 1]
        nxt = index[i] if i < stable else _renumbered(index[-1], width)
        tail, head, logit = _step_moves(here, nxt, bigram, M)
        tails.append(tail)
        heads.append(head)
        logits.append(logit)
    # the repeated positions stable + 1 .. L - 1: the last step's moves, renumbered
    repeats = max(L - 1 - stable, 0)
    last = index[-1] if stable == L else _renumbered(index[-1], width * (L - stable))
    vv, aa = np.nonzero(last >= 0)
    tails.append(last[vv, aa])
    heads.append(np.where(aa == 0, target, dead))
    logits.append(np.zeros(vv.size))
    # built position by position, so already sorted by tail (CSR order); the repeated
    # positions are written straight into the outputs (no edge-sized temporaries)
    step = tails[-2].size if repeats else 0
    n_before = sum(t.size for t in tails[:-1])
    total = n_before + repeats * step + tails[-1].size
    out = (np.empty(total, dtype=np.int64), np.empty(total, dtype=np.int64), np.empty(total))
    for parts, array in zip((tails, heads, logits), out, strict=True):
        np.concatenate(parts[:-1], out=array[:n_before])
        array[n_before + repeats * step :] = parts[-1]
    if repeats:
        offset = width * np.arange(1, repeats + 1, dtype=np.int64)[:, None]
        block = slice(n_before, n_before + repeats * step)
        for parts, array in zip((tails, heads), out[:2], strict=True):
            np.add(parts[-2][None, :], offset, out=array[block].reshape(repeats, step))
        out[2][block].reshape(repeats, step)[:] = logits[-2]
    return LatticeMoves(
        labels=tuple(labels), tail=out[0], head=out[1], logit=out[2], source=0, target=target
    )


def _renumbered(index: np.ndarray, shift: int) -> np.ndarray:
    """A position's node index moved ``shift`` nodes on (``-1`` stays)."""
    return np.where(index >= 0, index + shift, -1)


def _step_moves(
    here: np.ndarray, nxt: np.ndarray, bigram: np.ndarray, M: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tail, head, logit)`` of the moves from the nodes ``here`` to ``nxt``, sorted by tail."""
    V = bigram.shape[0]
    vv, aa = np.nonzero(here >= 0)
    v2 = np.tile(np.arange(V), vv.size)
    a2 = (np.repeat(aa, V) + v2) % M
    return np.repeat(here[vv, aa], V), nxt[v2, a2], bigram[np.repeat(vv, V), v2]


def _description(spec: LatticeSpec) -> str:
    return (
        f"token lattice: {spec.length} tokens from a vocabulary of {spec.vocab} "
        f"({spec.vocab}^{spec.length} rollouts); correct when the sum of the tokens is "
        f"divisible by {spec.modulus}; default base: seeded bigram logits "
        f"N(0, {spec.scale:g}^2), seed {spec.seed}"
    )


NETWORKX_MOVE_LIMIT = 2_000_000
"""Most moves of a lattice built as a networkx graph (:func:`lattice_task`): about 390 bytes
each (157 MB for the 402,592 moves of ``lattice:V=32,L=100,M=4``, maximum resident set
size by ``/usr/bin/time -v``), before enumeration copies it; the DP engine
(:func:`tilt.engines.dp.space.lattice_table`) builds larger ones from numpy arrays."""


def lattice_task(spec: LatticeSpec) -> Task:
    """The lattice as a :class:`~tilt.tasks.graphs.Task` (a networkx DiGraph; for small lattices).

    Raises
    ------
    ValueError
        Above :data:`NETWORKX_MOVE_LIMIT` moves, before building anything.
    """
    import networkx as nx

    count = lattice_move_count(spec)
    if count > NETWORKX_MOVE_LIMIT:
        raise ValueError(
            f"{spec.name} has about {count:,} moves: too many for a networkx graph (limit "
            f"{NETWORKX_MOVE_LIMIT:,}, about 390 bytes each); the DP engine reads lattices "
            "without one (engine='dp', --engine dp)"
        )
    moves = lattice_moves(spec)
    graph = nx.DiGraph()
    graph.add_nodes_from(moves.labels)
    labels = moves.labels
    graph.add_edges_from(
        (labels[v], labels[u], {"logit": float(w)})
        for v, u, w in zip(
            moves.tail.tolist(), moves.head.tolist(), moves.logit.tolist(), strict=True
        )
    )
    return Task(
        name=spec.name,
        graph=graph,
        source="s",
        target="t",
        horizon=None,
        description=_description(spec),
    )
