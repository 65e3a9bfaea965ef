"""Presets: the objective and demonstrations each public self-distillation trainer runs by default.

Read in the public code of each trainer: the repository and file to check are
in :attr:`Preset.source` (``docs/objectives.md``, "Sources", lists them all).
On tilt's graphs (at most a handful of moves per node) a top-k of 100 is the
full vocabulary, so top-k losses are their full-vocabulary forms here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Preset", "PRESETS", "preset"]


@dataclass(frozen=True)
class Preset:
    """A trainer's default configuration, as a tilt objective and demonstrations.

    Attributes
    ----------
    name : str
    objective : str
        A spec of :data:`tilt.objectives.OBJECTIVES`.
    demos : str
        ``own`` (the policy's own correct rollouts, a successful sibling) or
        ``reference`` (one fixed ground-truth solution).
    source : str
        Repository and file the configuration follows.
    note : str
        What the preset simplifies.
    """

    name: str
    objective: str
    demos: str
    source: str
    note: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "sdpo",
            "jsd=0.5",
            "own",
            "lasgroup/SDPO verl/trainer/ppo/core_algos.py, verl/trainer/config/actor/actor.yaml",
            "full-logit GJSD a = 0.5 (top-100 + tail is the full vocabulary here); "
            "EMA teacher of a tabular student = frozen",
        ),
        Preset(
            "trl-sdpo",
            "length-weighted",
            "own",
            "TRL trl/experimental/sdpo/sdpo_config.py, loss_utils.py",
            "sampled-token RKL (a = 1), sequence-mean of token-means; distillation weight 1",
        ),
        Preset(
            "trl-sdft",
            "jsd=0.5",
            "reference",
            "TRL trl/experimental/sdft/sdft_config.py",
            "GJSD a = 0.5 against the dataset's privileged context",
        ),
        Preset(
            "sdft",
            "token-forward",
            "reference",
            "idanshen/Self-Distillation distil_trainer.py, distil_config.py",
            "per-token forward KL (a = 0, as in the paper's results) on the golden response",
        ),
        Preset(
            "opsd",
            "token-forward",
            "reference",
            "siyan-zhao/OPSD opsd_trainer.py (paper v3, issue #14)",
            "per-token forward KL against the ground-truth solution",
        ),
        Preset(
            "opsd-scripts",
            "jsd=0.5",
            "reference",
            "siyan-zhao/OPSD scripts/run_opsd*.sh",
            "the released scripts' GJSD a = 0.5",
        ),
        Preset(
            "tinker",
            "token",
            "own",
            "tinker-cookbook tinker_cookbook/distillation/train_on_policy.py",
            "per-token advantage -(log q - log T), kl_discount_factor 0 (no return-to-go)",
        ),
    )
}
"""Every preset by name."""


def preset(name: str) -> Preset:
    """The preset ``name``; ``ValueError`` naming the known ones otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
