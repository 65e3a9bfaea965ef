"""A task as tokens: node ids, the special tokens and the two prompt templates.

Token ids: ``BOS = 0``, ``SEP = 1``, ``EOS = 2`` and node ``v`` (the index of
``space.labels``) is ``NODE_OFFSET + v``.  A rollout ``y = (s, v1, ..., vL)``
is written as the tokens of its nodes, source included.  The two templates of
``docs/neural.md``:

* no context: ``BOS y`` -- the base ``pi0(y)``;
* a demonstration in context: ``BOS c SEP y`` -- the teacher ``T_c(y)``.

``EOS`` closes a rollout in the pretraining sequences; the policy never
predicts it (a rollout ends where the prefix tree says so), so it carries no
probability in tilt's rollout space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tilt._numerics import IntArray
from tilt.space import RolloutSpace

__all__ = ["BOS", "SEP", "EOS", "NODE_OFFSET", "TaskTokens"]

BOS, SEP, EOS = 0, 1, 2
"""The special tokens."""

NODE_OFFSET = 3
"""Token id of node index 0."""


@dataclass(frozen=True)
class TaskTokens:
    """The tokenisation of one rollout space.

    Attributes
    ----------
    space : RolloutSpace
    """

    space: RolloutSpace

    @property
    def vocab_size(self) -> int:
        """Smallest vocabulary that holds the special tokens and every node."""
        return NODE_OFFSET + len(self.space.labels)

    @property
    def prefix_token(self) -> IntArray:
        """Token of the last node of every prefix, shape (n_prefixes,)."""
        return (self.space.node.astype(np.int64) + NODE_OFFSET).astype(np.int64)

    @property
    def max_length(self) -> int:
        """Longest sequence of the templates: ``BOS c SEP y EOS``."""
        nodes = self.space.max_depth + 1
        return 2 * nodes + 3

    def rollout_ids(self, rollout: int) -> list[int]:
        """Tokens of one rollout's nodes, source first."""
        path = self.space.paths(np.array([rollout], dtype=np.int64))[0]
        return [int(v) + NODE_OFFSET for v in path if v >= 0]

    def context_ids(self, demonstration: int | None) -> list[int]:
        """The prompt before ``y``: ``[BOS]``, or ``[BOS, c..., SEP]`` for a demonstration."""
        if demonstration is None:
            return [BOS]
        return [BOS, *self.rollout_ids(demonstration), SEP]

    def check_vocabulary(self, vocab_size: int) -> None:
        """Raise ``ValueError`` unless a model's vocabulary holds every token of the task."""
        if vocab_size < self.vocab_size:
            raise ValueError(
                f"the model's vocabulary has {vocab_size} tokens, too small for the task's "
                f"{len(self.space.labels)} nodes plus BOS, SEP, EOS: it needs >= {self.vocab_size}"
            )

    def check_positions(self, n_positions: int) -> None:
        """Raise ``ValueError`` unless a model's context holds ``BOS c SEP y EOS``."""
        if n_positions < self.max_length:
            raise ValueError(
                f"the model's context holds {n_positions} positions, fewer than the "
                f"{self.max_length} of BOS c SEP y EOS on this space"
            )
