"""Jacobian reuse across steps of the implicit methods (``options['jacobian_reuse']``)."""

from __future__ import annotations

import pytest
import torch

import node
from tests.node.test_implicit_engine import ROBER_1E5, rober

ATOL = torch.tensor([1e-8, 1e-12, 1e-8], dtype=torch.float64)


def test_rober_keeps_jacobians_and_meets_tolerance():
    """ROBER on [0, 1e5]: with jacobian_reuse=0.1 far fewer Jacobians than steps, the end state
    still within 1e-3 relative of the reference; the default evaluates one per step."""
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1e5], dtype=torch.float64)
    with torch.no_grad():
        kept = node.solve(rober, y0, t, method="kvaerno5", rtol=1e-6, atol=ATOL,
                          options=dict(jacobian_reuse=0.1))
        fresh = node.solve(rober, y0, t, method="kvaerno5", rtol=1e-6, atol=ATOL)
    assert kept.stats["n_jacobians"] < kept.stats["n_accepted"] / 2
    assert fresh.stats["n_jacobians"] == fresh.stats["n_accepted"]
    rel = ((kept.ys[-1] - ROBER_1E5) / ROBER_1E5).abs().max().item()
    assert rel < 1e-3


def test_fixed_grid_linear_problem_reuses_jacobian_and_lu():
    """A linear problem on a constant grid: Newton converges at once, so one Jacobian and one LU
    serve every step; the result is that of fresh Jacobians."""
    A = torch.tensor([[-2.0, 1.0], [1.0, -300.0]], dtype=torch.float64)
    y0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    runs = {}
    for reuse in (0.0, 0.5):
        runs[reuse] = node.solve(lambda t, y: A @ y, y0, t, method="sdirk2", rtol=1e-8,
                                 atol=1e-10, options=dict(step_size=0.05, jacobian_reuse=reuse))
    kept, fresh = runs[0.5], runs[0.0]
    assert kept.stats["n_jacobians"] == 1 and kept.stats["n_lu"] == 1
    assert fresh.stats["n_jacobians"] == fresh.stats["n_steps"]
    assert torch.allclose(kept.ys, fresh.ys, rtol=1e-8, atol=1e-10)


def test_stale_jacobian_failure_retries_with_a_fresh_one():
    """y' = -lam(t) y with lam jumping from 1 to 1e4 at the grid point t = 1 (perturb: the step
    ending there sees lam = 1): the Jacobian kept from before the jump makes Newton diverge on
    the next step; it is retried with a fresh Jacobian instead of failing."""
    y0 = torch.tensor([1.0], dtype=torch.float64)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)

    def f(t, y):
        return -(1.0 + 9999.0 * (t >= 1.0).to(y.dtype)) * y

    sol = node.solve(f, y0, t, method="implicit_euler", rtol=1e-8, atol=1e-10,
                     options=dict(step_size=0.125, jacobian_reuse=0.5, max_iters=4,
                                  perturb=True))
    assert sol.success
    assert sol.stats["n_jacobians"] == 2
    expected = 1.0 / (1 + 0.125) ** 8 / (1 + 0.125 * 1e4) ** 8
    assert abs(sol.ys[-1].item() - expected) <= 1e-6 * expected


@pytest.mark.parametrize("value", [1.0, -0.1, "yes"])
def test_jacobian_reuse_validated(value):
    with pytest.raises(ValueError, match=r"jacobian_reuse.*\[0, 1\)"):
        node.odeint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]), method="kvaerno3",
                    options=dict(jacobian_reuse=value))
