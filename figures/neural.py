"""The network experiment drawn: predicted against realised, TV against steps, the live teacher.

Reads the ``results.json`` that ``python -m analysis.neural_experiment`` writes
and draws two figures into ``--out``:

* ``neural_fit``: the TV of every training run from its predicted optimum
  against steps (log scale), and the realised accuracy, effective number of
  correct rollouts, gap slope, 1 - pass@8 and distinct@8 of each run against tilt's prediction
  from the network's frozen tables (the diagonal is a perfect prediction);
* ``neural_live``: the live-teacher run -- its effective number of correct
  rollouts against steps, beside the iterated SD rounds of ``edge(2)`` from
  the network's base, and the TV between the network's in-context teacher and
  ``edge(2)`` applied to the current student (and the starting teacher).

Not registered in ``python -m figures`` (it needs the experiment's torch run)::

    python -m analysis.neural_experiment --out neural
    python -m figures.neural --results neural/results.json --out neural
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from figures.style import new_figure, save_figure, suptitle

__all__ = ["draw", "main"]

_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#555555", "#000000")
_MEASURES = (
    ("accuracy", "accuracy"),
    ("effective_correct", "effective # correct"),
    ("gap_slope", "gap slope"),
    ("pass@8", "1 - pass@8"),
    ("distinct@8", "distinct@8"),
)


def _value(measures: dict, key: str) -> float:
    if key.startswith("pass@"):  # drawn as the miss probability 1 - pass@k, on log axes
        return 1.0 - float(measures["pass_at_k"][key[5:]])
    if key.startswith("distinct@"):
        return float(measures["distinct_at_k"][key[9:]])
    return float(measures[key])


def draw(results: dict, out: Path) -> list[Path]:
    """Write ``neural_fit`` and ``neural_live`` (PNG and PDF) into ``out``; return the files."""
    runs = [r for r in results["runs"] if r["label"] not in ("sequence live", "sequence ema")]
    labels = sorted({r["label"] for r in runs}, key=[r["label"] for r in runs].index)
    color = {label: _COLORS[i % len(_COLORS)] for i, label in enumerate(labels)}
    fig, axes = new_figure(ncols=6, nrows=1, width=2.8, height=3.0)
    ax = axes[0, 0]
    for r in runs:
        steps = [c["step"] for c in r["history"]]
        tvs = [max(c["tv"], 1e-5) for c in r["history"]]
        ax.plot(steps, tvs, color=color[r["label"]], lw=1, ls="-" if r["seed"] == 0 else "--")
    for label in labels:
        ax.plot([], [], color=color[label], label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("TV to the predicted optimum")
    ax.legend(loc="upper right")
    for ax, (key, name) in zip(axes[0, 1:], _MEASURES, strict=True):
        xs, ys = [], []
        for r in runs:
            x, y = _value(r["predicted"], key), _value(r["realised"], key)
            ax.scatter(x, y, color=color[r["label"]], s=14)
            xs.append(x)
            ys.append(y)
        low, high = min(xs + ys), max(xs + ys)
        pad = 0.0 if key.startswith("pass@") else 0.05 * (high - low or 1.0)
        ax.plot([low - pad, high + pad], [low - pad, high + pad], color="grey", lw=0.8)
        if key.startswith("pass@"):
            ax.set_xscale("log")
            ax.set_yscale("log")
        else:
            ax.ticklabel_format(useOffset=False)
        ax.set_xlabel(f"predicted {name}")
        ax.set_ylabel(f"realised {name}")
    graph = results["space"]["graph"]
    suptitle(fig, f"tilt's closed forms on the network's tables against training it ({graph})")
    files = save_figure(fig, out, "neural_fit")

    live = next(r for r in results["runs"] if r["label"] == "sequence live")
    fig, axes = new_figure(ncols=2, nrows=1, width=4.0, height=3.2)
    ax = axes[0, 0]
    steps = [c["step"] for c in live["history"]]
    ax.plot(steps, [c["effective_correct"] for c in live["history"]], "o-", label="live run")
    ax.plot(
        steps,
        [c["one_round_effective"] for c in live["history"]],
        "s--",
        label="one frozen round from the checkpoint",
    )
    for r in results["iterated_edge"]:
        ax.axhline(r["effective_correct"], color="grey", lw=0.6, ls=":")
        ax.annotate(f"edge round {r['round']}", (steps[-1], r["effective_correct"]), fontsize=6)
    ax.set_xlabel("step")
    ax.set_ylabel("effective # correct rollouts")
    ax.legend(loc="upper right")
    ax = axes[0, 1]
    ax.plot(
        steps,
        [c["teacher_tv_to_context"] for c in live["history"]],
        "o-",
        label="to edge(2) applied to the current student",
    )
    ax.plot(
        steps,
        [c["teacher_tv_to_start"] for c in live["history"]],
        "s--",
        label="to the starting network's teacher",
    )
    if all("teacher_tv_to_student" in c for c in live["history"]):
        ax.plot(
            steps,
            [c["teacher_tv_to_student"] for c in live["history"]],
            "^:",
            label="to the current student (the demonstration's effect)",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("TV of the network's teacher (D-weighted)")
    ax.legend(loc="upper left")
    suptitle(fig, "a live teacher: the network's in-context behaviour as its weights move")
    files += save_figure(fig, out, "neural_live")
    return files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, help="results.json of the experiment")
    parser.add_argument("--out", required=True, help="folder for the figures")
    args = parser.parse_args(argv)
    results = json.loads(Path(args.results).read_text())
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for path in draw(results, Path(args.out)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
