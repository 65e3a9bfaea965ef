"""The exact tables against a plain per-sequence forward pass, and their guards."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tilt.neural import TaskTokens, network_tables  # noqa: E402
from tilt.neural.tables import TABLE_LIMIT  # noqa: E402
from tilt.space import TooLargeError  # noqa: E402


def _per_sequence(model, space, demonstration):
    """``log p(y | prompt)`` of every rollout, one forward pass per rollout (the oracle)."""
    tokens = TaskTokens(space)
    prompt = tokens.context_ids(demonstration)
    out = np.zeros(space.n_rollouts)
    paths = space.paths()
    for y in range(space.n_rollouts):
        ids = prompt + tokens.rollout_ids(y)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double().numpy()
        total, prefix = 0.0, 0
        for t, node in enumerate(v for v in paths[y, 1:] if v >= 0):
            start, count = space.child_start[prefix], space.child_count[prefix]
            children = np.arange(start, start + count)
            row = logits[len(prompt) + t, space.node[children] + 3]
            chosen = int(np.flatnonzero(space.node[children] == node)[0])
            total += row[chosen] - np.logaddexp.reduce(row)
            prefix = int(children[chosen])
        out[y] = total
    return out


@pytest.mark.parametrize(("which", "tol"), [("32", 1e-5), ("64", 1e-10)])
def test_tables_equal_a_plain_forward_per_sequence(which, tol, request, space):
    # the tree walk (shared prefixes, key-value cache copied from the parent) must give what
    # one ordinary forward pass per rollout gives; float32 rounding of the logits is ~1e-6
    model = request.getfixturevalue("tiny" if which == "32" else "tiny64")
    tables = request.getfixturevalue(f"tables{which}")
    np.testing.assert_allclose(tables.base.log_prob, _per_sequence(model, space, None), atol=tol)
    for row in (0, tables.demos.size - 1):
        c = int(tables.demos[row])
        np.testing.assert_allclose(
            tables.teacher_rows[row], _per_sequence(model, space, c), atol=tol
        )


def test_tables_are_exact_distributions(tables64, space):
    assert abs(tables64.base.prob.sum() - 1.0) <= 1e-12
    assert np.abs(np.exp(tables64.teacher_rows).sum(axis=1) - 1.0).max() <= 1e-12
    assert np.array_equal(tables64.demos, space.correct_rollouts)
    assert tables64.dtype == "float64"


def test_small_batches_give_the_same_tables(tiny64, tables64, space):
    # max_rows=1 splits every level into one prompt at a time: same numbers to rounding
    again = network_tables(tiny64, space, max_rows=1)
    np.testing.assert_allclose(again.teacher_log_cond, tables64.teacher_log_cond, atol=1e-12)


class _Untouchable:
    """A model whose forward pass must not run."""

    class config:  # noqa: N801
        vocab_size = 100

    def __call__(self, *args, **kwargs):
        raise AssertionError("the guard must refuse before any forward pass")


def test_a_table_too_large_is_refused_before_running(space):
    with pytest.raises(TooLargeError, match="table limit 100"):
        network_tables(_Untouchable(), space, limit=100)
    assert TABLE_LIMIT >= 50_000_000


def test_a_vocabulary_too_small_is_refused(space):
    small = _Untouchable()
    small.config = type("config", (), {"vocab_size": 5})
    with pytest.raises(ValueError, match="vocabulary has 5 tokens"):
        network_tables(small, space)


def test_demonstrations_without_a_table_are_named(tables64, space):
    incorrect = int(np.flatnonzero(~space.correct)[0])
    with pytest.raises(ValueError, match="incorrect rollout"):
        tables64.rows_of(np.array([incorrect]))
