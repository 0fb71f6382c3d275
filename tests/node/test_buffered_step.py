"""Solves without autograd reuse their buffers (node.runge_kutta.BufferedRKStep); they must give
bit-for-bit the same results and statistics as the allocating step used under autograd."""

from __future__ import annotations

import pytest
import torch

import node


def van_der_pol(t, y):
    x, v = y[..., 0], y[..., 1]
    return torch.stack([v, 2.0 * (1 - x**2) * v - x], dim=-1)


@pytest.mark.parametrize("method", node.available_methods())
def test_no_grad_solve_matches_autograd_solve_exactly(method):
    y0 = torch.tensor([[2.0, 0.0], [0.5, -1.0]], dtype=torch.float64)
    t = torch.linspace(0.0, 5.0, 13, dtype=torch.float64)
    tableau = node.get_tableau(method)
    options = None if tableau.adaptive else {"step_size": 0.05}
    kwargs = dict(method=method, rtol=1e-6, atol=1e-6, options=options)
    with torch.no_grad():
        buffered = node.solve(van_der_pol, y0, t, **kwargs)
    allocating = node.solve(van_der_pol, y0.clone().requires_grad_(True), t, **kwargs)
    if isinstance(tableau, node.ImplicitTableau):
        # under autograd an accepted implicit step evaluates each implicit stage once more, to
        # attach the stage gradients (node.implicit_gradient); nothing else may differ
        rebuilds = allocating.stats["n_accepted"] * len(tableau.implicit_stages)
        assert allocating.stats["nfe"] - buffered.stats["nfe"] == rebuilds
        allocating.stats["nfe"] = buffered.stats["nfe"]
    assert buffered.stats == allocating.stats
    if tableau.adaptive:
        assert buffered.stats["n_rejected"] > 0  # retried steps are exercised
    assert torch.equal(buffered.ys, allocating.ys.detach())


@pytest.mark.parametrize("interp", ["linear", "cubic"])
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_fixed_grid_interpolation_is_unaffected_by_buffer_reuse(method, interp):
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = torch.linspace(0.0, 3.0, 41, dtype=torch.float64)  # many outputs between grid points
    kwargs = dict(method=method, options={"step_size": 0.25, "interp": interp})
    with torch.no_grad():
        buffered = node.odeint(van_der_pol, y0, t, **kwargs)
    allocating = node.odeint(van_der_pol, y0.clone().requires_grad_(True), t, **kwargs)
    assert torch.equal(buffered, allocating.detach())


def test_outputs_at_step_ends_are_not_overwritten_later():
    # Outputs on the grid are the step's end buffer itself unless copied.
    y0 = torch.tensor([1.0], dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    with torch.no_grad():
        ys = node.odeint(lambda t, y: -y, y0, t, method="euler")
    expected = torch.tensor([0.9**k for k in range(11)], dtype=torch.float64)
    torch.testing.assert_close(ys[:, 0], expected, rtol=1e-12, atol=1e-12)


def test_first_solve_in_inference_mode_does_not_poison_later_autograd_solves():
    # Coefficient tensors are cached per (method, dtype, device); made under inference mode
    # they could not be saved for backward by a later solve.
    from node.runge_kutta import coefficients

    coefficients.cache_clear()
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with torch.inference_mode():
        node.odeint(van_der_pol, y0, t, method="tsit5")
    y0 = y0.clone().requires_grad_(True)
    node.odeint(van_der_pol, y0, t, method="tsit5")[-1].sum().backward()
    assert y0.grad is not None
