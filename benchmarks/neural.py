"""Time the exact tables of a task-token network (``tilt.neural.network_tables``).

Builds the 2-layer, width-64, 4-head GPT-2 of ``docs/neural.md`` (about 104k
parameters; random weights time the same as trained ones), and times the whole
table of a graph -- the base and one teacher per correct demonstration -- in
float32 and float64, against a plain batched forward pass over every
``(demonstration, rollout)`` sequence (the probe's method, without the tree).

Example::

    python benchmarks/neural.py --graph grid4 --threads 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _plain(model, tokens, demos, batch: int = 512) -> float:
    """Seconds of one forward pass over every ``BOS c SEP y`` sequence, batched, no tree."""
    import torch

    from tilt.neural.pretrain import rollout_prefixes
    from tilt.neural.tables import path_logits

    space = tokens.space
    paths = rollout_prefixes(space)
    prompts = [tokens.context_ids(None)] + [tokens.context_ids(int(c)) for c in demos]
    pairs = [(p, y) for p in range(len(prompts)) for y in range(space.n_rollouts)]
    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, len(pairs), batch):
            chunk = pairs[first : first + batch]
            path_logits(model, tokens, [prompts[p] for p, _ in chunk], paths[[y for _, y in chunk]])
    return time.perf_counter() - start


def main() -> None:
    import torch

    from tilt.neural import TaskTokens, build_gpt2, network_tables
    from tilt.space import enumerate_rollouts
    from tilt.tasks.graphs import named_task

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", default="grid4")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plain", action="store_true", help="also time the plain batching")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    space = enumerate_rollouts(named_task(args.graph))
    tokens = TaskTokens(space)
    model = build_gpt2(tokens, seed=0)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"{args.graph}: {space.n_rollouts} rollouts, {space.n_correct} correct, "
        f"{space.n_prefixes} prefixes; GPT-2 {params:,} parameters; {args.threads} threads"
    )
    for dtype in (torch.float32, torch.float64):
        model = model.to(dtype)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            network_tables(model, space)
            times.append(time.perf_counter() - start)
        name = str(dtype).split(".")[-1]
        print(f"tree tables {name}: median {np.median(times):.2f} s (of {times})")
    if args.plain:
        seconds = _plain(model.to(torch.float32), tokens, space.correct_rollouts)
        print(f"plain batching of every sequence, float32: {seconds:.2f} s")


if __name__ == "__main__":
    main()
