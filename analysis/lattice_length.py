"""How SD's distortion grows with the length of a rollout: edge(gamma) SD on token lattices.

For each seed, length ``L`` and strength ``gamma``: the lattice
``lattice:V=..,L=..,seed=..`` (random bigram base, correct when the sum of the
tokens is even), sequence SD with ``edge(gamma)`` and own demonstrations, RL
at SD's accuracy, and the measures of ``docs/theory.md``, all by the DP
engine (:mod:`tilt.engines.dp`), exactly, for ``L`` up to 1000 (about ``V^1000``
rollouts).  ``log_effective_ratio`` is ``log(eff SD / eff RL)`` at matched
accuracy, the difference of the correct-set entropies (the ratio itself
underflows float64 beyond about 700 nats).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tilt.context import EdgeContext
from tilt.engines.dp import acyclic_space, base_policy, dp_optimum, lattice_table
from tilt.engines.dp import measures as dp_measures
from tilt.engines.dp.optima import rl_optimum
from tilt.objectives import matched_beta

__all__ = ["LENGTHS", "GAMMAS", "lattice_length_sweep", "affine_fit"]

LENGTHS = (2, 3, 5, 10, 20, 50, 100, 200, 500, 1000)
GAMMAS = (0.5, 1.0, 2.0, 4.0)


def lattice_length_sweep(
    vocab: int = 8,
    lengths: Sequence[int] = LENGTHS,
    gammas: Sequence[float] = GAMMAS,
    seeds: Sequence[int] = (0, 1, 2),
    modulus: int = 2,
) -> list[dict[str, object]]:
    """One row per ``(seed, L, gamma)`` with accuracy, gap slopes, distortion and the
    log ratio of effective numbers of correct rollouts (SD over RL at matched accuracy)."""
    rows: list[dict[str, object]] = []
    for seed in seeds:
        for length in lengths:
            name = f"lattice:V={vocab},L={length},seed={seed}" + (
                f",M={modulus}" if modulus != 2 else ""
            )
            space = acyclic_space(lattice_table(name))
            base = base_policy(space)
            for gamma in gammas:
                sd = dp_optimum(base, EdgeContext(gamma), "sequence")
                beta = matched_beta(base.accuracy, sd.accuracy)
                rl = base if beta is None or math.isinf(beta) else rl_optimum(base, beta)
                h_sd = dp_measures.correct_entropy(sd)
                h_rl = dp_measures.correct_entropy(rl)
                distortion = dp_measures.ratio_distortion(sd, base)
                rows.append(
                    {
                        "vocab": vocab,
                        "seed": seed,
                        "length": length,
                        "gamma": gamma,
                        "base_accuracy": base.accuracy,
                        "sd_accuracy": sd.accuracy,
                        "rl_beta": beta,
                        "rl_accuracy": rl.accuracy,
                        "gap_slope": dp_measures.gap_slope(sd, base),
                        "weighted_gap_slope": dp_measures.weighted_gap_slope(sd, base),
                        "ratio_distortion": distortion,
                        "distortion_per_token": distortion / length,
                        "entropy_sd": h_sd,
                        "entropy_rl": h_rl,
                        "log_effective_ratio": h_sd - h_rl,
                        "log_effective_ratio_per_token": (h_sd - h_rl) / length,
                    }
                )
    return rows


def affine_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares ``y = a x + b``: returns ``(a, b, largest absolute residual)``."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    a = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    b = my - a * mx
    return a, b, max(abs(y - (a * x + b)) for x, y in zip(xs, ys, strict=True))
