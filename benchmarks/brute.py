"""A plain brute-force reference: recursive DFS and explicit Python loops, no numpy.

It recomputes, from the graph alone, the base policy, the beta -> 0 RL optimum,
sequence SD and forward SD for a context model, one rollout (and one pair of
rollout and demonstration) at a time, straight from ``docs/theory.md``.  It is
the yardstick of ``benchmarks/run.py``: slow on purpose, and independent of
``tilt.space`` / ``tilt.context``.
"""

from __future__ import annotations

import math


def rollouts(task) -> list[tuple[object, ...]]:  # type: ignore[no-untyped-def]
    """Every maximal simple path from the source, by recursive depth-first search."""
    graph, target, horizon = task.graph, task.target, task.horizon
    out: list[tuple[object, ...]] = []

    def visit(path: list[object], seen: set[object]) -> None:
        v = path[-1]
        moves = [u for u in graph.successors(v) if u not in seen and u != v] if v != target else []
        if not moves or (horizon is not None and len(path) - 1 >= horizon):
            out.append(tuple(path))
            return
        for u in moves:
            seen.add(u)
            path.append(u)
            visit(path, seen)
            path.pop()
            seen.discard(u)

    visit([task.source], {task.source})
    return out


def _available(task, path: tuple[object, ...], t: int) -> list[object]:  # type: ignore[no-untyped-def]
    seen = set(path[: t + 1])
    v = path[t]
    return [u for u in task.graph.successors(v) if u not in seen and u != v]


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(x - top) for x in values))


def solve(task, context: str, strength: float) -> dict[str, dict[str, float]]:  # type: ignore[no-untyped-def]
    """``{method: {path label: log q(y)}}`` for base, rl, sd_sequence, sd_forward."""
    graph = task.graph
    paths = rollouts(task)
    label = {y: ">".join(str(v) for v in y) for y in paths}
    logit = {(v, u): float(d.get("logit", 0.0)) for v, u, d in graph.edges(data=True)}

    def step_log_probs(y: tuple[object, ...], t: int) -> dict[object, float]:
        avail = _available(task, y, t)
        norm = _logsumexp([logit[(y[t], u)] for u in avail])
        return {u: logit[(y[t], u)] - norm for u in avail}

    log_pi = {}
    for y in paths:
        log_pi[y] = sum(step_log_probs(y, t)[y[t + 1]] for t in range(len(y) - 1))
    correct = [y for y in paths if y[-1] == task.target]
    log_c = _logsumexp([log_pi[c] for c in correct])
    log_d = {c: log_pi[c] - log_c for c in correct}
    rl = {y: (log_pi[y] - log_c if y[-1] == task.target else -math.inf) for y in paths}

    def teacher(y: tuple[object, ...], c: tuple[object, ...]) -> float:
        """log T_c(y) (unnormalised for kernel: the caller normalises)."""
        if context == "edge":
            nxt = {c[i]: c[i + 1] for i in range(len(c) - 1)}
            total = 0.0
            for t in range(len(y) - 1):
                logs = step_log_probs(y, t)
                boosted = {
                    u: lp + (strength if nxt.get(y[t]) == u else 0.0) for u, lp in logs.items()
                }
                total += boosted[y[t + 1]] - _logsumexp(list(boosted.values()))
            return total
        if context == "kernel":
            ey = {(y[i], y[i + 1]) for i in range(len(y) - 1)}
            ec = {(c[i], c[i + 1]) for i in range(len(c) - 1)}
            return log_pi[y] + strength * len(ey & ec)
        if context == "copy":
            value = math.log1p(-strength) + log_pi[y]
            return _logsumexp([value, math.log(strength)]) if (y == c and strength > 0) else value
        raise ValueError(f"unknown context {context!r}")

    log_t: dict[tuple[object, ...], dict[tuple[object, ...], float]] = {}
    for c in correct:
        row = {y: teacher(y, c) for y in paths}
        if context == "kernel":
            z = _logsumexp(list(row.values()))
            row = {y: v - z for y, v in row.items()}
        log_t[c] = row
    seq_w = {}
    fwd_w = {}
    for y in paths:
        expected = sum(math.exp(log_d[c]) * log_t[c][y] for c in correct)
        seq_w[y] = expected  # = log pi(y) + S(y)
        fwd_w[y] = _logsumexp([log_d[c] + log_t[c][y] for c in correct])

    def normalise(weights: dict[tuple[object, ...], float]) -> dict[str, float]:
        z = _logsumexp(list(weights.values()))
        return {label[y]: w - z for y, w in weights.items()}

    return {
        "base": {label[y]: v for y, v in log_pi.items()},
        "rl": {label[y]: v for y, v in rl.items()},
        "sd_sequence": normalise(seq_w),
        "sd_forward": normalise(fwd_w),
    }
