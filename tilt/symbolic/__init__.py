"""Symbolic checks of the closed forms (sympy): each derivation, and whether it holds."""

from tilt.symbolic._derivations import (
    Derivation,
    all_derivations,
    copy_monotonicity_derivation,
    copy_monotonicity_proof,
    copy_tilt_derivation,
    derivations,
    edge_token_derivation,
    kernel_tilt_derivation,
    matched_beta_derivation,
    rl_derivation,
    rl_ratio_proof,
    sd_sequence_derivation,
    sd_stationarity_proof,
)

__all__ = [
    "derivations",
    "Derivation",
    "rl_derivation",
    "rl_ratio_proof",
    "matched_beta_derivation",
    "sd_sequence_derivation",
    "sd_stationarity_proof",
    "copy_tilt_derivation",
    "copy_monotonicity_derivation",
    "copy_monotonicity_proof",
    "edge_token_derivation",
    "kernel_tilt_derivation",
    "all_derivations",
]
