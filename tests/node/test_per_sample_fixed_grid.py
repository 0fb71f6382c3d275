"""Fixed-grid methods in per-sample solves (issue 17): ``solve(..., per_sample=True)`` or a
``[B, T]`` ``t`` with ``euler``, ``rk4``, ... steps every sample on its own grid: its own output
times, or ``options['step_size']`` (a number, or one per sample as a ``[B]`` tensor).

Each sample must give what it gives solved alone on the same grid (the same arithmetic: equal to
rounding), and converge to the exact solution of ``y' = -(1 + t) y``,
``y(t) = y(t0) exp(-(t - t0) - (t^2 - t0^2) / 2)``, at the method's order.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import node

F64 = torch.float64
METHODS = ["euler", "midpoint", "heun3", "rk4", "dopri5"]


def decay(t, y):
    return -(1 + t) * y


def exact(y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``[T, B, N]`` exact solutions for ``[B, N]`` states and ``[B, T]`` times."""
    t0 = t[:, :1]
    factor = torch.exp(-(t - t0) - (t**2 - t0**2) / 2)  # [B, T]
    return (factor.T[:, :, None] * y0[None]).contiguous()


Y0 = torch.tensor([[1.0, 2.0], [0.5, -1.0], [3.0, 0.1]], dtype=F64)
# Different starts, ends and directions per sample (the last row runs backwards).
T = torch.stack([torch.linspace(0, 1, 5, dtype=F64), torch.linspace(0.5, 2, 5, dtype=F64),
                 torch.linspace(1, -1, 5, dtype=F64)])
STEPS = torch.tensor([0.1, 0.03, 0.05], dtype=F64)


def fixed(method: str, **options) -> dict:
    if method == "dopri5":
        options["adaptive"] = False  # an embedded pair on a fixed grid
    return options


def alone(method, options, b, func=decay, y0=Y0, t=T):
    opts = dict(options)
    if isinstance(opts.get("step_size"), torch.Tensor):
        opts["step_size"] = float(opts["step_size"][b])
    return node.solve(func, y0[b], t[b], method=method, options=opts)


GRIDS = {
    "output times": {},
    "shared step": {"step_size": 0.07},
    "step per sample": {"step_size": STEPS},
    "cubic": {"step_size": 0.07, "interp": "cubic"},
}


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("method", METHODS)
def test_each_sample_as_if_solved_alone(method, grid):
    options = fixed(method, **GRIDS[grid])
    sol = node.solve(decay, Y0, T, method=method, options=options)
    assert sol.success and sol.ys.shape == (5, 3, 2)
    for b in range(3):
        ref = alone(method, options, b)
        torch.testing.assert_close(sol.ys[:, b], ref.ys, rtol=1e-14, atol=1e-15)
        assert int(sol.stats["n_steps"][b]) == ref.stats["n_steps"]
        if grid != "cubic":  # the cubic interpolant's extra end slope is counted differently
            assert int(sol.stats["nfe"][b]) == ref.stats["nfe"]


@pytest.mark.parametrize("method, order", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_converges_to_the_exact_solution_at_the_methods_order(method, order):
    # Steps that divide every sample's output spacing (1/4, 3/8, 1/2): no interpolation error.
    want = exact(Y0, T)
    errors = []
    for h in (1 / 32, 1 / 64):
        sol = node.solve(decay, Y0, T, method=method, options=dict(step_size=h))
        errors.append(((sol.ys - want) / want.abs()).abs().amax(dim=(0, 2)))  # per sample
    ratio = errors[0] / errors[1]
    assert bool((ratio > 2**order * 0.8).all()) and bool((ratio < 2**order * 1.25).all()), ratio
    assert float(errors[1].max()) < {1: 5e-2, 2: 1e-3, 4: 1e-7}[order], errors[1]


def test_step_sizes_per_sample_set_each_samples_accuracy():
    # The same problem in every row; the step sizes halve from row to row: euler's error too.
    y0 = torch.ones(3, 1, dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    sol = node.solve(decay, y0, t, method="euler", per_sample=True,
                     options=dict(step_size=torch.tensor([0.04, 0.02, 0.01], dtype=F64)))
    err = (sol.ys[-1, :, 0] - math.exp(-1.5)).abs()
    torch.testing.assert_close(err[:-1] / err[1:], torch.full((2,), 2.0, dtype=F64), rtol=0.1,
                               atol=0)
    assert sol.stats["n_steps"].tolist() == [25, 50, 100]
    assert sol.stats["n_calls"] == 100  # the batch steps together: as the longest grid


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor([[-0.5, 1.0], [-1.0, -0.2]], dtype=F64))

    def forward(self, t, y):
        return (y[..., :, None] * self.a).sum(-2) * torch.cos(t)


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_gradients_match_each_sample_alone(method):
    func = Linear()
    y0 = Y0.clone().requires_grad_(True)
    options = dict(step_size=STEPS)
    sol = node.solve(func, y0, T, method=method, options=options)
    for b in range(3):
        g_y0, g_a = torch.autograd.grad(sol.ys[:, b].square().sum(), (y0, func.a),
                                        retain_graph=True)
        y0_b = Y0[b].clone().requires_grad_(True)
        func_b = Linear()
        ref = node.solve(func_b, y0_b, T[b], method=method,
                         options=dict(step_size=float(STEPS[b])))
        w_y0, w_a = torch.autograd.grad(ref.ys.square().sum(), (y0_b, func_b.a))
        torch.testing.assert_close(g_y0[b], w_y0, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(g_a, w_a, rtol=1e-12, atol=1e-13)
        assert float(torch.cat([g_y0[:b], g_y0[b + 1:]]).abs().max()) == 0.0


def test_shared_times_with_per_sample_flag():
    t = torch.linspace(0, 1, 4, dtype=F64)
    sol = node.solve(decay, Y0, t, method="rk4", per_sample=True,
                     options=dict(step_size=STEPS))
    for b in range(3):
        ref = node.solve(decay, Y0[b], t, method="rk4", options=dict(step_size=float(STEPS[b])))
        torch.testing.assert_close(sol.ys[:, b], ref.ys, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(node.odeint(decay, Y0, t, method="rk4", per_sample=True,
                                           options=dict(step_size=STEPS)), sol.ys)


# ------------------------------------------------------------------------ failures


def blow_up(t, y):
    return y**2


def test_a_non_finite_sample_fails_alone():
    # y' = y^2 from y0 blows up at t = 1/y0: sample 1 (y0 = 4) overflows on the grid
    # (y <- y + y^2 / 10 squares y about every step).
    y0 = torch.tensor([[0.1], [4.0], [0.2]], dtype=F64)
    t = torch.linspace(0, 2, 5, dtype=F64)
    sol = node.solve(blow_up, y0, t, method="euler", per_sample=True,
                     options=dict(step_size=0.1), on_failure="return")
    assert sol.failed == [1]
    assert sol.sample_status[1] is node.Status.NON_FINITE
    assert "sample 1" in sol.message and "non-finite" in sol.message
    for b in (0, 2):
        ref = node.solve(blow_up, y0[b], t, method="euler", options=dict(step_size=0.1))
        torch.testing.assert_close(sol.ys[:, b], ref.ys, rtol=1e-14, atol=0)
    assert bool(torch.isnan(sol.ys[-1, 1]).all())
    assert bool(torch.isfinite(sol.ys[0, 1]).all())
    with pytest.raises(node.SolverError, match="sample 1") as info:
        node.solve(blow_up, y0, t, method="euler", per_sample=True, options=dict(step_size=0.1))
    assert info.value.samples == [1]


def test_a_grid_over_the_step_budget_fails_before_stepping():
    sol = node.solve(decay, Y0, T, method="euler", on_failure="return",
                     options=dict(step_size=torch.tensor([0.1, 0.001, 0.1], dtype=F64),
                                  max_num_steps=100))
    assert sol.failed == [1]
    assert sol.sample_status[1] is node.Status.MAX_STEPS
    assert bool(torch.isnan(sol.ys[1:, 1]).all())
    assert int(sol.stats["n_steps"][1]) == 0
    for b in (0, 2):
        ref = alone("euler", dict(step_size=STEPS.new_tensor([0.1, 0.001, 0.1])), b)
        torch.testing.assert_close(sol.ys[:, b], ref.ys, rtol=1e-14, atol=1e-15)


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("options, error, match", [
    (dict(step_size=torch.tensor([0.1, 0.2], dtype=F64)), ValueError,
     r"step_size.*\[3\].*got shape \(2,\)"),
    (dict(step_size=torch.tensor([0.1, -0.2, 0.1], dtype=F64)), ValueError,
     r"step_size.*> 0 and finite"),
    (dict(step_size=torch.tensor([1, 2, 3])), TypeError, r"step_size.*floating"),
    (dict(step_size=-0.1), ValueError, r"step_size.*> 0"),
    (dict(grid_constructor=lambda f, y, t: t), ValueError, r"grid_constructor.*per_sample"),
    (dict(perturb=True), ValueError, r"perturb.*per_sample"),
])
def test_bad_options_name_the_argument(options, error, match):
    with pytest.raises(error, match=match):
        node.solve(decay, Y0, T, method="rk4", options=options)
