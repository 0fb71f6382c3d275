"""Per-sample events and per-sample fixed grids against their alternatives (issue 17).

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python scripts/bench_per_sample_events.py

1. Events: Van der Pol, ``mu ~ U[0, 10]``, batch 256, from ``(2, 0)`` until ``x = 0``, dopri5 at
   ``rtol=1e-5, atol=1e-7``, no gradients: per-sample steps (``per_sample=True``, direct mode)
   against the same events located on one joint solve (``gradient="checkpoint"``, which keeps
   the shared steps).
2. Fixed grids: an MLP field (2-64-2), batch 256, rk4 with one step size per sample in
   ``[0.01, 0.1]`` over ``[0, 1]``: one per-sample solve against one solve per sample.

Prints the best of 3 wall times and the batched ``func`` calls.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import node  # noqa: E402

BATCH = 256


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def events() -> None:
    torch.manual_seed(0)
    mu = torch.rand(BATCH, dtype=torch.float64) * 10
    calls = [0]

    def vdp(t, y):
        calls[0] += 1
        x, v = y[..., 0], y[..., 1]
        return torch.stack([v, mu * (1 - x * x) * v - x], dim=-1)

    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64).expand(BATCH, 2).contiguous()
    for name, kwargs in (("per-sample steps", {}), ("joint steps", {"gradient": "checkpoint"})):
        def run(kwargs=kwargs):
            calls[0] = 0
            with torch.no_grad():
                return node.odeint_event(vdp, y0, 0.0, event_fn=lambda t, y: y[:, 0],
                                         per_sample=True, rtol=1e-5, atol=1e-7, **kwargs)

        wall = best_of(run)
        print(f"events, {name}: {wall * 1e3:.0f} ms, {calls[0]} batched func calls")


def fixed_grids() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 2))
    y0 = torch.randn(BATCH, 2)
    steps = torch.rand(BATCH, dtype=torch.float64) * 0.09 + 0.01
    t = torch.linspace(0, 1, 11)
    with torch.no_grad():
        batched = best_of(lambda: node.solve(lambda t, y: net(y), y0, t, method="rk4",
                                             per_sample=True, options=dict(step_size=steps)))
        alone = best_of(lambda: [node.odeint(lambda t, y: net(y), y0[b], t, method="rk4",
                                             options=dict(step_size=float(steps[b])))
                                 for b in range(BATCH)], repeats=1)
    print(f"fixed grids, rk4 with a step size per sample: per-sample solve {batched * 1e3:.0f} "
          f"ms, one solve per sample {alone * 1e3:.0f} ms")


if __name__ == "__main__":
    torch.set_num_threads(1)
    events()
    fixed_grids()
