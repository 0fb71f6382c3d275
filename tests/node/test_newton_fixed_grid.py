"""The stage iteration on a fixed grid never accepts its first iterate on a carried-over rate
(there is no error test behind it to catch a stale one)."""

from __future__ import annotations

import pytest
import torch

import node


@pytest.mark.parametrize("method", ["implicit_euler", "trapezoid"])
def test_nonlinear_stage_is_solved_after_linear_ones(method):
    """torchdiffeq's ConstantODE: y' = a + (y - (a t + b))^5 from y on the line a t + b, which
    every method keeps exactly (f = a there). The stage predictor (the previous stage) lies
    0.16 off the line, where the quintic matters, after stages that converged at once (f is
    flat near the line): accepting the first iterate on that rate left 7e-5 per step."""
    a, b = 0.2, 3.0
    t = torch.linspace(1.0, 8.0, 10, dtype=torch.float64)

    def f(t, y):
        return a + (y - (a * t + b)) ** 5

    ys = node.odeint(f, torch.tensor([a + b], dtype=torch.float64), t, method=method)
    assert (ys[:, 0] - (a * t + b)).abs().max() < 1e-12
