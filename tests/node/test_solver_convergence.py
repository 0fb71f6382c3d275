"""Convergence order of every method, measured by step halving on fixed grids.

``options=dict(adaptive=False, step_size=h)`` runs any method (adaptive pairs included) on a
fixed grid. The test problem is nonlinear, non-autonomous and has an exact solution:

    y0' = -y1 (y0^2 + y1^2),  y1' = y0 (y0^2 + y1^2),  y2' = -2 t y2^2,

with y(0) = (1, 0, 1): y = (cos t, sin t, 1 / (1 + t^2)).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import node
from tests.problems import ALL_METHODS, FORCED, max_error, reference

T_END = 2.0


def field(t, y):
    r2 = y[0] ** 2 + y[1] ** 2
    return torch.stack([-y[1] * r2, y[0] * r2, -2 * t * y[2] ** 2])


def exact(t: float) -> torch.Tensor:
    return torch.tensor([math.cos(t), math.sin(t), 1 / (1 + t * t)], dtype=torch.float64)


Y0 = exact(0.0)

# Numbers of steps over [0, T_END]: in the asymptotic range of each method and well above
# round-off (the error at the finest grid stays above ~1e-12).
STEPS = {
    1: (128, 256, 512, 1024),
    2: (32, 64, 128, 256),
    3: (32, 64, 128, 256),
    4: (16, 32, 64, 128),
    5: (16, 32, 64, 128),
    8: (4, 8, 16),
}


def observed_order(hs, errors) -> float:
    """Least-squares slope of log(error) against log(h)."""
    return float(np.polyfit(np.log(hs), np.log(errors), 1)[0])


@pytest.mark.parametrize("method", ALL_METHODS)
def test_convergence_order_by_step_halving(method):
    order = node.get_tableau(method).order
    t = torch.tensor([0.0, T_END], dtype=torch.float64)
    hs, errors = [], []
    for n in STEPS[order]:
        h = T_END / n
        sol = node.solve(field, Y0, t, method=method, options=dict(adaptive=False, step_size=h))
        assert sol.stats["n_steps"] == n
        hs.append(h)
        errors.append(float((sol.ys[-1] - exact(T_END)).abs().max()))
    assert all(e > 1e-13 for e in errors), errors  # not polluted by round-off
    p = observed_order(hs, errors)
    assert abs(p - order) < 0.3, f"{method}: observed order {p:.3f}, tableau order {order}"
    # Every single halving too (looser: pre-asymptotic wiggles).
    for e_coarse, e_fine in zip(errors, errors[1:], strict=False):
        assert abs(math.log2(e_coarse / e_fine) - order) < 0.6, errors


def test_known_orders():
    expected = dict(euler=1, midpoint=2, heun2=2, heun3=3, rk4=4, adaptive_heun=2, fehlberg2=2,
                    bosh3=3, dopri5=5, tsit5=5, dopri8=8)
    assert {m: node.get_tableau(m).order for m in expected} == expected


@pytest.mark.parametrize("method", ALL_METHODS)
def test_step_size_grid_includes_output_times(method):
    """Output times on the grid are grid values: the same as a solve that ends there."""
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    opts = dict(adaptive=False, step_size=0.125)
    ys = node.odeint(field, Y0, t, method=method, options=opts)
    y_half = node.odeint(field, Y0, t[:2], method=method, options=opts)
    torch.testing.assert_close(ys[1], y_half[1], rtol=0, atol=1e-15)


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun3", "rk4"])
def test_fixed_grid_without_step_size_steps_between_output_times(method):
    """Without step_size the grid is t itself: one step per interval."""
    t = torch.linspace(0.0, T_END, 9, dtype=torch.float64)
    sol = node.solve(field, Y0, t, method=method)
    assert sol.stats["n_steps"] == 8
    alone = node.odeint(field, Y0, t[:2], method=method)
    torch.testing.assert_close(sol.ys[1], alone[1], rtol=0, atol=0)


def _interp_errors(interp: str, method: str = "rk4"):
    """Max error at off-grid output times for grids of decreasing step."""
    t_out = torch.tensor([0.0, 0.37, 0.81, 1.23, 1.67, 1.95], dtype=torch.float64)
    hs, errors = [], []
    for n in (8, 16, 32, 64):
        h = T_END / n
        ys = node.odeint(FORCED.func, FORCED.y0_tensor(), t_out, method=method,
                         options=dict(adaptive=False, step_size=h, interp=interp))
        hs.append(h)
        errors.append(max_error(ys, reference(FORCED, t_out)))
    return hs, errors


def test_cubic_interpolation_is_fourth_order_linear_second():
    hs, lin = _interp_errors("linear")
    _, cub = _interp_errors("cubic")
    p_lin, p_cub = observed_order(hs, lin), observed_order(hs, cub)
    assert abs(p_lin - 2) < 0.35, (p_lin, lin)
    assert p_cub > 3.5, (p_cub, cub)
    assert cub[-1] < lin[-1] / 100


def test_cubic_interpolation_costs_nothing_extra_for_fsal_grid_steps():
    """Hermite needs f at the end of a step: the next step's first stage (only the last step
    may need one more evaluation)."""
    t_out = torch.tensor([0.0, 0.33, 1.9], dtype=torch.float64)
    lin = node.solve(FORCED.func, FORCED.y0_tensor(), t_out, method="rk4",
                     options=dict(adaptive=False, step_size=0.25, interp="linear"))
    cub = node.solve(FORCED.func, FORCED.y0_tensor(), t_out, method="rk4",
                     options=dict(adaptive=False, step_size=0.25, interp="cubic"))
    assert lin.stats["n_steps"] == cub.stats["n_steps"] == 8
    assert cub.stats["nfe"] <= lin.stats["nfe"] + 1
    # Grid values are the same; only the interpolated ones differ.
    assert not torch.equal(lin.ys[1], cub.ys[1])


def test_linear_interpolation_matches_lerp_of_grid_values():
    grid_t = torch.tensor([0.0, 0.25, 0.5], dtype=torch.float64)
    on_grid = node.odeint(FORCED.func, FORCED.y0_tensor(), grid_t, method="rk4",
                          options=dict(adaptive=False, step_size=0.25))
    between = node.odeint(FORCED.func, FORCED.y0_tensor(),
                          torch.tensor([0.0, 0.3, 0.5], dtype=torch.float64), method="rk4",
                          options=dict(adaptive=False, step_size=0.25))
    expected = torch.lerp(on_grid[1], on_grid[2], 0.2)
    torch.testing.assert_close(between[2], on_grid[2], rtol=0, atol=0)
    torch.testing.assert_close(between[1], expected, rtol=0, atol=1e-14)
