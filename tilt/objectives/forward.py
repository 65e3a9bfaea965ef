"""Off-policy (forward) self-distillation: fine-tuning on teacher samples.

Minimising ``E_c KL(T_c || q)`` over all distributions gives the teachers'
mixture ``q(y) = E_{c ~ D} T_c(y)``.  With ``copy`` and own demonstrations it
keeps the ratios among correct rollouts.
"""

from __future__ import annotations

from tilt.context import ContextModel
from tilt.objectives._common import Demos, resolve_demos
from tilt.policy import Policy

__all__ = ["sd_forward"]


def sd_forward(
    policy: Policy, model: ContextModel, demos: Demos = "own", alpha: float = 1.0
) -> Policy:
    """``q(y) = E_{c ~ D} T_c(y)``: the mixture of the teachers."""
    log_mix = model.forward_log_prob(policy, resolve_demos(policy, demos, alpha))
    return Policy.from_log_weights(policy.space, log_mix)
