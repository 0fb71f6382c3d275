"""Fixed-grid cubic interpolation and events with implicit methods whose first stage is implicit
(implicit_euler, gl4, ...): the Hermite interpolant's start derivative is f(t0, y0), not K[0]
(a stage derivative at another point)."""

from __future__ import annotations

import math

import pytest
import torch

import node
from tests.problems import FreeFall, G

T0 = torch.tensor(0.0, dtype=torch.float64)


@pytest.mark.parametrize("method", ["gl4", "radauIIA5", "implicit_midpoint"])
def test_event_on_quadratic_trajectory_is_exact(method):
    """Free fall is a quadratic in t: these collocation methods are exact on it, and so is the
    cubic Hermite through the true end derivatives; the ground is hit at sqrt(2 h0 / g)."""
    y0 = torch.tensor([10.0, 0.0], dtype=torch.float64)
    t_event, ys = node.odeint_event(FreeFall(), y0, T0, event_fn=lambda t, y: y[0],
                                    method=method, options=dict(step_size=0.5, interp="cubic"))
    assert abs(t_event.item() - math.sqrt(2 * 10.0 / G)) < 1e-10
    assert abs(ys[-1, 0].item()) < 1e-9


def test_event_with_implicit_euler_on_cubic_interpolant():
    """y' = -2t, y(0) = 1 with implicit Euler on a grid of 0.25: the event y = 0 is the root of
    the Hermite cubic through the grid values with slopes -2 t0 and -2 t1 (K[0] of implicit
    Euler is the slope at t1)."""
    h = 0.25

    def f(t, y):
        return -2.0 * t * torch.ones_like(y)

    y0 = torch.tensor([1.0], dtype=torch.float64)
    t_event, _ = node.odeint_event(f, y0, T0, event_fn=lambda t, y: y[0],
                                   method="implicit_euler",
                                   options=dict(step_size=h, interp="cubic"))
    # grid values: y_{n+1} = y_n - 2 t_{n+1} h
    ys, ts = [1.0], [0.0]
    while ys[-1] > 0:
        ts.append(ts[-1] + h)
        ys.append(ys[-1] - 2.0 * ts[-1] * h)
    t0, t1, y_0, y_1 = ts[-2], ts[-1], ys[-2], ys[-1]

    def cubic(theta):
        h00 = 2 * theta**3 - 3 * theta**2 + 1
        h10 = theta**3 - 2 * theta**2 + theta
        h01 = -2 * theta**3 + 3 * theta**2
        h11 = theta**3 - theta**2
        return h00 * y_0 + h10 * h * (-2 * t0) + h01 * y_1 + h11 * h * (-2 * t1)

    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cubic(mid) > 0 else (lo, mid)
    assert abs(t_event.item() - (t0 + hi * h)) < 1e-10


@pytest.mark.parametrize("method", ["gl4", "implicit_euler"])
def test_cubic_outputs_use_true_start_derivative(method):
    """Outputs between grid points: the Hermite cubic with f(t0, y0) (gl4: exact on free fall;
    implicit Euler: against the cubic through its grid values)."""
    y0 = torch.tensor([10.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    ys = node.odeint(FreeFall(), y0, t, method=method, options=dict(step_size=1.0,
                                                                   interp="cubic"))
    if method == "gl4":
        assert abs(ys[1, 0].item() - (10.0 - 0.5 * G * 0.09)) < 1e-12
    else:  # one step: v1 = -g, x1 = 10 - g; slopes (0, -g) at 0 and (-g, -g) at 1
        theta = 0.3
        h00, h10 = 2 * theta**3 - 3 * theta**2 + 1, theta**3 - 2 * theta**2 + theta
        h01, h11 = -2 * theta**3 + 3 * theta**2, theta**3 - theta**2
        x = h00 * 10.0 + h10 * 0.0 + h01 * (10.0 - G) + h11 * (-G)
        assert abs(ys[1, 0].item() - x) < 1e-12
