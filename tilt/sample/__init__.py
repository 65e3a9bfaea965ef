"""Audit logs sampled from an instance: rollouts, rewards and log-probabilities.

What a real run would log, drawn from tilt's exact tables, so that
:mod:`tilt.audit` can be validated where the answer is known.
"""

from tilt.sample._sample import (
    SampleOptions,
    sample_jsonl,
    sample_records,
)

__all__ = [
    "SampleOptions",
    "sample_records",
    "sample_jsonl",
]
