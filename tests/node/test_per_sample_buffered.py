"""Per-sample solves without autograd (inference, ``torch.no_grad()``): the loop then writes into
fixed buffers (:mod:`node.per_sample`'s ``_Work``) instead of recording a graph. Results must be
those of the solve with autograd, and of each sample solved alone."""

from __future__ import annotations

import pytest
import torch

import node
from tests.node.test_per_sample import F64, alone, vdp_batch


@pytest.mark.parametrize("method, tol", [("dopri5", 1e-8), ("tsit5", 1e-8), ("bosh3", 1e-7),
                                         ("dopri8", 1e-9), ("adaptive_heun", 1e-5)])
def test_without_autograd_each_sample_as_if_solved_alone(method, tol):
    func, y0 = vdp_batch(5)
    t = torch.linspace(0, 3, 7, dtype=F64)
    kw = dict(method=method, rtol=tol, atol=tol)
    with torch.no_grad():
        sol = node.solve(func, y0, t, per_sample=True, **kw)
    graph = node.solve(func, y0, t, per_sample=True, **kw)
    assert sol.success
    # Same steps, same values (up to BLAS rounding of K[:i]^T a_i[:i] against the padded K^T a_i).
    assert torch.equal(sol.stats["n_steps"], graph.stats["n_steps"])
    torch.testing.assert_close(sol.ys, graph.ys, rtol=1e-12, atol=1e-12)
    for b in range(5):
        ref = alone(func, y0, t, b, **kw)
        torch.testing.assert_close(sol.ys[:, b], ref.ys[:, 0], rtol=100 * tol, atol=100 * tol)
        assert abs(int(sol.stats["n_steps"][b]) - ref.stats["n_steps"]) <= 2


def test_without_autograd_backwards_shaped_state_float32_and_long_solve():
    """[B, 2, 3] state in float32, t decreasing in some rows, more iterations than a chunk."""
    g = torch.Generator().manual_seed(3)
    A = torch.randn(4, 6, 6, generator=g, dtype=F64) * 0.3

    def field(tt, y):
        assert tt.shape == (4, 1, 1)
        flat = y.reshape(4, 6, 1).double()
        return (torch.bmm(A, flat).reshape(4, 2, 3) + torch.cos(25 * tt)).to(y.dtype)

    y0 = torch.randn(4, 2, 3, generator=g)
    t = torch.stack([torch.linspace(0, 8, 5), torch.linspace(8, 0, 5), torch.linspace(1, 9, 5),
                     torch.linspace(0, -8, 5)]).double()
    kw = dict(rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        sol = node.solve(field, y0, t, **kw)
    graph = node.solve(field, y0, t, **kw)
    assert sol.success and sol.stats["n_iterations"] > 64
    torch.testing.assert_close(sol.ys, graph.ys, rtol=1e-5, atol=1e-6)
    for b in range(4):
        one = node.solve(lambda tt, y, b=b: field_one(A[b], tt, y), y0[b:b + 1], t[b], **kw)
        torch.testing.assert_close(sol.ys[:, b], one.ys[:, 0], rtol=1e-3, atol=1e-4)


def field_one(A, tt, y):
    flat = y.reshape(6, 1).double()
    return ((A @ flat).reshape(1, 2, 3) + torch.cos(25 * torch.as_tensor(tt))).to(y.dtype)


def test_retry_after_an_overflowing_step_is_not_poisoned():
    """A first step so large that its stages overflow (NaN) is rejected and retried; the retry
    must not see the failed attempt's stages (0 * NaN) left in the reused stage buffer."""

    def field(tt, y):
        return -(y**3)

    y0 = torch.tensor([[10.0], [0.5]], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with torch.no_grad():
        sol = node.solve(field, y0, t, per_sample=True, rtol=1e-8, atol=1e-8,
                         options={"first_step": 100.0})
    assert sol.success, sol.message
    exact = y0 / torch.sqrt(1 + 2 * y0**2 * t[-1])
    torch.testing.assert_close(sol.ys[-1], exact, rtol=1e-6, atol=1e-6)
