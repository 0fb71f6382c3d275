"""kvaerno5's stage node past the step's end (c = 1.23) and ``jump_t``: a step landing on a
discontinuity evaluates that stage from before it, so func is never called past the jump before
the solver has stepped onto it."""

from __future__ import annotations

import math

import torch

import node


def _jumping(calls):
    def f(t, y):
        calls.append(float(t))
        return (torch.where(t < 1.0, 1.0, -1.0) + torch.cos(3 * t)) * torch.ones_like(y) - 0.5 * y

    return f


def _exact(t: float) -> float:
    """y' = s + cos 3t - y/2, y(0) = 0, s = 1 before t = 1 and -1 after."""
    def piece(s, t0, y0, t):
        # particular solution 2 s + (2/37) (cos 3t + 6 sin 3t), plus C e^{-(t - t0)/2}
        def part(u):
            return 2 * s + (2 / 37) * (math.cos(3 * u) + 6 * math.sin(3 * u))

        return part(t) + (y0 - part(t0)) * math.exp(-(t - t0) / 2)

    y1 = piece(1.0, 0.0, 0.0, 1.0)
    return piece(-1.0, 1.0, y1, t)


def test_no_evaluation_past_the_jump_before_landing_on_it():
    calls: list[float] = []
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    node.solve(_jumping(calls), torch.zeros(1, dtype=torch.float64), t, method="kvaerno5",
               rtol=1e-6, atol=1e-6, options=dict(jump_t=[1.0]))
    assert max(calls) < 1.0


def test_kvaerno5_across_a_jump_meets_tolerance_with_few_rejections():
    calls: list[float] = []
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    sol = node.solve(_jumping(calls), torch.zeros(1, dtype=torch.float64), t, method="kvaerno5",
                     rtol=1e-6, atol=1e-6, options=dict(jump_t=[1.0]))
    assert abs(sol.ys[-1].item() - _exact(2.0)) < 1e-4
    # at its node the stage saw the jump: 15 of 47 steps rejected (2 of 18 clipped)
    assert sol.stats["n_rejected"] <= 5
