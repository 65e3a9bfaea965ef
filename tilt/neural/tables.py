"""Exact tables of a network: ``log p(y)``, ``log p(y | c)`` and every per-prefix conditional.

Teacher forcing along the prefix tree of :class:`tilt.space.RolloutSpace`: each
prompt (``BOS`` alone, or ``BOS c SEP``) is run once with the source node and
its key-value cache kept; then the tree is walked level by level, one forward
step per unique internal prefix, each row of the cache copied from its
parent's row.  A prefix is computed once per prompt, not once per rollout
through it.  The policy at a prefix is the network's next-token logits masked
to the available moves (the children of the prefix), normalised in float64.

Notes
-----
Cost: ``(demonstrations + 1) x (internal prefixes)`` single-token forward rows,
in batches of at most ``max_rows`` rows.  The tables hold
``(demonstrations + 1) x n_prefixes`` float64 values; above :data:`TABLE_LIMIT`
they are refused before any forward pass.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from tilt._numerics import FloatArray, IntArray
from tilt.neural.network import as_numpy
from tilt.neural.tokens import TaskTokens
from tilt.policy import Policy
from tilt.space import RolloutSpace, TooLargeError

__all__ = [
    "TABLE_LIMIT",
    "NetworkTables",
    "network_tables",
    "child_logits",
    "masked_log_conditionals",
    "check_table_size",
]

TABLE_LIMIT = 50_000_000
"""Most ``prompts x prefixes`` entries a table may hold (400 MB of float64)."""

DEFAULT_MAX_ROWS = 4096
"""Most forward rows (prompt x prefix) per batch of the tree walk."""


def check_table_size(space: RolloutSpace, n_prompts: int, limit: int = TABLE_LIMIT) -> None:
    """Raise :class:`~tilt.space.TooLargeError` (a ``ValueError``) when a table would not fit.

    The message names the limit and the sizes, before any forward pass.
    """
    entries = n_prompts * space.n_prefixes
    if entries > limit:
        raise TooLargeError(
            f"the network's tables need {n_prompts:,} prompts x {space.n_prefixes:,} prefixes = "
            f"{entries:,} entries (table limit {limit:,}): use a horizon or a smaller graph"
        )


def _cache_keyword(model: Any) -> str:
    """``cache`` (transformers >= 5.2) or ``past_key_values``."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _cache_of(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return output.past_key_values if cache is None else cache


def _select_rows(cache: Any, index: Any) -> Any:
    """Rows ``index`` of a key-value cache (a ``Cache`` object or legacy tuples)."""
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(index)
        return cache
    return tuple(tuple(t[index] for t in layer) for layer in cache)


def child_logits(
    model: Any,
    tokens: TaskTokens,
    prompts: Sequence[Sequence[int]],
    max_rows: int = DEFAULT_MAX_ROWS,
) -> Any:
    """The network's logit of every prefix's last node at its parent, per prompt.

    Returns a torch tensor of shape ``(len(prompts), n_prefixes)``: entry ``p > 0``
    is the logit of token ``node[p]`` after ``prompt + path(parent[p])``; entry 0
    is 0.  Differentiable when called with gradients enabled (the trainer does);
    the tables call it under ``torch.no_grad``.  Prompts of one length run
    together, at most ``max_rows`` forward rows at a time.
    """
    import torch

    space = tokens.space
    token = torch.as_tensor(tokens.prefix_token)
    internal = space.child_count > 0
    depth = space.depth.astype(np.int64)
    levels = [
        np.flatnonzero(internal & (depth == d)) for d in range(space.max_depth)
    ]  # internal prefixes per depth
    width = max(1, max(level.size for level in levels))
    keyword = _cache_keyword(model)
    dtype = next(model.parameters()).dtype
    out = torch.zeros((len(prompts), space.n_prefixes), dtype=dtype)
    by_length: dict[int, list[int]] = {}
    for i, prompt in enumerate(prompts):
        by_length.setdefault(len(prompt), []).append(i)
    pieces: list[tuple[list[int], Any]] = []
    for members in by_length.values():
        step = max(1, max_rows // width)
        for first in range(0, len(members), step):
            chunk = members[first : first + step]
            ids = torch.tensor(
                [[*prompts[i], int(tokens.prefix_token[0])] for i in chunk], dtype=torch.long
            )
            pieces.append((chunk, _walk(model, space, token, levels, ids, keyword)))
    if not pieces:
        return out
    rows = [i for chunk, _ in pieces for i in chunk]
    stacked = torch.cat([values for _, values in pieces], dim=0)
    order = torch.as_tensor(np.argsort(np.asarray(rows)))
    return stacked[order]


def _walk(
    model: Any,
    space: RolloutSpace,
    token: Any,
    levels: list[IntArray],
    ids: Any,
    keyword: str,
) -> Any:
    """Per prompt row of ``ids`` (prompt + source token), the child logits of the whole tree."""
    import torch

    g = ids.shape[0]
    output = model(input_ids=ids, use_cache=True)
    cache = _cache_of(output)
    logits = output.logits[:, -1:, :]  # (g, 1, vocab): the root's
    pieces = [torch.zeros((g, 1), dtype=logits.dtype)]
    previous = np.zeros(1, dtype=np.int64)
    for d in range(1, space.max_depth + 1):
        lo, hi = int(space.level_start[d]), int(space.level_start[d + 1])
        children = np.arange(lo, hi)
        where = np.searchsorted(previous, space.parent[children])
        pieces.append(
            logits[:, where, :].gather(2, token[children][None, :, None].expand(g, -1, 1))[:, :, 0]
        )
        current = levels[d] if d < len(levels) else np.zeros(0, dtype=np.int64)
        if current.size == 0:
            continue
        parent_rows = np.searchsorted(previous, space.parent[current])
        index = (np.arange(g)[:, None] * previous.size + parent_rows[None, :]).ravel()
        cache = _select_rows(cache, torch.as_tensor(index))
        step_ids = token[current].repeat(g)[:, None]
        output = model(input_ids=step_ids, use_cache=True, **{keyword: cache})
        cache = _cache_of(output)
        logits = output.logits[:, -1, :].reshape(g, current.size, -1)
        previous = current
    return torch.cat(pieces, dim=1)


def masked_log_conditionals(space: RolloutSpace, logits: FloatArray) -> FloatArray:
    """``log p(node[p] | parent[p])``: each sibling group's logits log-softmaxed in float64.

    ``logits`` has shape (n_prefixes,) or (k, n_prefixes); so has the result.
    """
    values = np.asarray(logits, dtype=np.float64)
    if values.ndim == 1:
        return space.sibling_log_softmax(values)
    return np.stack([space.sibling_log_softmax(row) for row in values])


@dataclass(frozen=True, eq=False)
class NetworkTables:
    """A network's exact distributions on a rollout space, with and without demonstrations.

    Attributes
    ----------
    space : RolloutSpace
    base_log_cond : ndarray, shape (n_prefixes,)
        ``log p(u | h)`` of the network with no demonstration (``BOS y``).
    demos : ndarray of int64, shape (k,)
        The demonstration rollouts (by default every correct rollout), increasing.
    teacher_log_cond : ndarray, shape (k, n_prefixes)
        ``log p(u | c, h)`` with ``c = demos[i]`` in context (``BOS c SEP y``).
    dtype : str
        The precision of the forward passes (``float32`` or ``float64``).
    """

    space: RolloutSpace
    base_log_cond: FloatArray
    demos: IntArray
    teacher_log_cond: FloatArray
    dtype: str = "float32"

    @cached_property
    def base(self) -> Policy:
        """The network's base ``pi0`` as a tilt policy."""
        return Policy.from_log_conditionals(self.space, self.base_log_cond, softmax=True)

    @cached_property
    def teacher_rows(self) -> FloatArray:
        """``log T_c(y)`` for every demonstration row, shape (k, n_rollouts)."""
        out = self.space.path_sum(self.teacher_log_cond)[:, self.space.rollout_prefix]
        # renormalise each row exactly (the conditionals already are, to rounding)
        top = out.max(axis=1, keepdims=True)
        return out - (top + np.log(np.exp(out - top).sum(axis=1, keepdims=True)))

    def rows_of(self, demos: IntArray) -> IntArray:
        """Table rows of demonstration rollouts; ``ValueError`` for one without a table."""
        demos = np.asarray(demos, dtype=np.int64)
        position = np.searchsorted(self.demos, demos)
        inside = position < self.demos.size
        found = np.zeros(demos.shape, dtype=bool)
        found[inside] = self.demos[position[inside]] == demos[inside]
        if not found.all():
            missing = int(demos[~found][0])
            kind = "correct" if self.space.correct[missing] else "incorrect"
            raise ValueError(
                f"the network's tables hold no teacher for demonstration {missing} (a {kind} "
                "rollout): tilt draws demonstrations from correct rollouts, and the tables were "
                "built for the demonstrations listed in NetworkTables.demos"
            )
        return position


def network_tables(
    model: Any,
    space: RolloutSpace,
    demos: IntArray | None = None,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    limit: int = TABLE_LIMIT,
) -> NetworkTables:
    """Read off a network's base and in-context teachers exactly, by teacher forcing.

    Parameters
    ----------
    model : transformers causal LM
        Its dtype (float32 or float64) is the precision of the forward passes.
    space : RolloutSpace
    demos : array of int, optional
        Demonstration rollouts (default: every correct rollout).
    max_rows : int
        Forward rows per batch.
    limit : int
        Most table entries (:data:`TABLE_LIMIT`).

    Raises
    ------
    ValueError
        If the table would exceed ``limit`` (:class:`~tilt.space.TooLargeError`),
        or the model's vocabulary is too small for the task.

    Notes
    -----
    grid4 (392 rollouts, 184 correct) with the 2-layer, width-64 GPT-2 of
    ``docs/neural.md`` takes a few seconds (``benchmarks/neural.py``).
    """
    import torch

    tokens = TaskTokens(space)
    tokens.check_vocabulary(int(model.config.vocab_size))
    chosen = space.correct_rollouts if demos is None else np.unique(np.asarray(demos, np.int64))
    if chosen.size and (chosen.min() < 0 or chosen.max() >= space.n_rollouts):
        raise ValueError(f"demos must be rollout indices in [0, {space.n_rollouts})")
    check_table_size(space, chosen.size + 1, limit)
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise ValueError(f"max_rows must be a positive integer, got {max_rows!r}")
    prompts = [tokens.context_ids(None)] + [tokens.context_ids(int(c)) for c in chosen]
    with torch.no_grad():
        logits = as_numpy(child_logits(model, tokens, prompts, max_rows))
    log_cond = masked_log_conditionals(space, logits)
    dtype = "float64" if next(model.parameters()).dtype == torch.float64 else "float32"
    return NetworkTables(space, log_cond[0], chosen.astype(np.int64), log_cond[1:], dtype)


@dataclass(frozen=True)
class PathLogits:
    """The masked next-move logits of a network along given paths (teacher forcing).

    Attributes
    ----------
    row, step : ndarray of int64, shape (N,)
        Sequence and step of each internal prefix visited.
    prefix : ndarray of int64, shape (N,)
        The prefix ``h`` (``paths[row, step]``).
    child : ndarray of int64, shape (N, K)
        Its children (``K`` the largest branching; padded with 0 where ``valid`` is False).
    valid : ndarray of bool, shape (N, K)
    logits : torch tensor, shape (N, K)
        The network's logits of the children's tokens (``-inf`` where not valid).
    """

    row: IntArray
    step: IntArray
    prefix: IntArray
    child: IntArray
    valid: np.ndarray
    logits: Any


def path_logits(
    model: Any, tokens: TaskTokens, prompts: Sequence[Sequence[int]], paths: IntArray
) -> PathLogits:
    """One forward pass over ``prompt + y`` for every sequence: logits at each visited prefix.

    ``paths[i]`` are the prefixes of rollout ``i``, root first, ``-1`` padded
    (:func:`tilt.neural.pretrain.rollout_prefixes`, or the trainer's samples).
    Sequences are right-padded with ``EOS`` (a causal model's earlier positions
    do not see it).  Differentiable when gradients are enabled.
    """
    import torch

    from tilt.neural.tokens import EOS

    space = tokens.space
    token = tokens.prefix_token
    sequences = [
        [*prompt, *(int(token[p]) for p in path if p >= 0)]
        for prompt, path in zip(prompts, paths, strict=True)
    ]
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), EOS, dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.tensor(s)
    logits = model(input_ids=ids).logits
    internal = (paths >= 0) & (space.child_count[np.maximum(paths, 0)] > 0)
    row, step = np.nonzero(internal)
    prefix = paths[row, step]
    position = np.array([len(p) for p in prompts])[row] + step
    offsets = np.arange(int(space.child_count.max()))
    valid = offsets[None, :] < space.child_count[prefix][:, None]
    child = np.where(valid, space.child_start[prefix][:, None] + offsets[None, :], 0)
    at = logits[torch.as_tensor(row), torch.as_tensor(position)]
    chosen = at.gather(1, torch.as_tensor(token[child])).masked_fill(
        ~torch.as_tensor(valid), -float("inf")
    )
    return PathLogits(row, step, prefix, child, valid, chosen)
