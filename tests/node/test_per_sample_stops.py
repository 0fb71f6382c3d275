"""``step_t`` and ``jump_t`` in per-sample solves: shared ``[K]`` times or each sample's own
``[B, K]``. A sample must get what the joint loop gives it solved alone with its stop times
(values to the tolerance, the same step counts and function evaluations)."""

from __future__ import annotations

import pytest
import torch

import node
from tests.node.test_per_sample import F64, alone, vdp_batch


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "dopri8"])
@pytest.mark.parametrize("options", [
    dict(step_t=[0.5, 1.234, 2.0]),
    dict(jump_t=torch.tensor([0.7, 1.9], dtype=F64)),
    dict(step_t=[0.3], jump_t=[1.1, 2.5], controller="pid"),
])
def test_shared_stops_as_if_solved_alone(method, options):
    func, y0 = vdp_batch(4)
    t = torch.linspace(0, 3, 7, dtype=F64)
    kw = dict(method=method, rtol=1e-7, atol=1e-7, options=options)
    sol = node.solve(func, y0, t, per_sample=True, **kw)
    for b in range(4):
        ref = alone(func, y0, t, b, **kw)
        torch.testing.assert_close(sol.ys[:, b], ref.ys[:, 0], rtol=1e-5, atol=1e-5)
        assert abs(int(sol.stats["n_steps"][b]) - ref.stats["n_steps"]) <= 2
        assert abs(int(sol.stats["nfe"][b]) - ref.stats["nfe"]) <= 2 * 7


class Switch(torch.nn.Module):
    """``y' = 1`` before each sample's switch time ``s_b``, ``-1`` after (in user time)."""

    def __init__(self, s: torch.Tensor) -> None:
        super().__init__()
        self.s = s

    def forward(self, t, y):
        return torch.where(t < self.s.view(-1, 1), 1.0, -1.0).expand_as(y)


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
@pytest.mark.parametrize("backwards", [False, True])
def test_per_sample_jumps_are_exact(method, backwards):
    """On each sample's own jump the step lands exactly, its last stages see the time just
    before it and the derivative is taken again just after: a piecewise linear solution is
    then integrated to round-off; each sample also matches itself solved alone."""
    s = torch.tensor([0.3, 1.7, 2.2], dtype=F64)
    y0 = torch.zeros(3, 1, dtype=F64)
    t = torch.linspace(0, 3, 4, dtype=F64)
    if backwards:
        t = t.flip(0) - 3.0  # from 0 down to -3; the switch times mirrored
        s = -s
    func = Switch(s)
    kw = dict(method=method, rtol=1e-6, atol=1e-6)
    sol = node.solve(func, y0, t, per_sample=True, options=dict(jump_t=s[:, None]), **kw)
    dist = (t[None, :] - t[0]).abs()  # [B, T] distance travelled
    sd = (s - t[0]).abs()[:, None]
    exact = torch.where(dist < sd, dist, 2 * sd - dist)
    torch.testing.assert_close(sol.ys[..., 0], exact.T, rtol=0, atol=1e-12)
    for b in range(3):
        ref = node.solve(Switch(s[b : b + 1]), y0[b : b + 1], t,
                         options=dict(jump_t=[float(s[b])]), **kw)
        torch.testing.assert_close(sol.ys[:, b], ref.ys[:, 0], rtol=0, atol=1e-12)
        assert int(sol.stats["n_steps"][b]) == ref.stats["n_steps"]
        assert int(sol.stats["nfe"][b]) == ref.stats["nfe"]


def test_per_sample_step_t_rows():
    """[B, K] step_t: each sample lands on its own times, as solved alone with them."""
    y0 = torch.ones(2, 1, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    stops = torch.tensor([[0.25, 0.5, 0.75], [0.1, 0.2, 0.9]], dtype=F64)
    sol = node.solve(lambda tt, y: -y, y0, t, per_sample=True, rtol=1e-3, atol=1e-3,
                     options=dict(step_t=stops))
    for b in range(2):
        ref = node.solve(lambda tt, y: -y, y0[b : b + 1], t, rtol=1e-3, atol=1e-3,
                         options=dict(step_t=stops[b].tolist()))
        assert int(sol.stats["n_steps"][b]) == ref.stats["n_steps"]
        torch.testing.assert_close(sol.ys[:, b], ref.ys[:, 0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("options, error, match", [
    (dict(step_t=torch.zeros(3, 2, dtype=F64)), ValueError,
     r"options\['step_t'\].*\(2, K\).*got shape \(3, 2\)"),
    (dict(jump_t=torch.zeros(2, 2, 2, dtype=F64)), ValueError,
     r"options\['jump_t'\].*got shape \(2, 2, 2\)"),
    (dict(jump_t=torch.ones(2, 1, dtype=torch.bool)), TypeError, r"options\['jump_t'\].*bool"),
])
def test_bad_stop_times_are_named(options, error, match):
    with pytest.raises(error, match=match):
        node.solve(lambda t, y: -y, torch.ones(2, 2, dtype=F64),
                   torch.linspace(0, 1, 3, dtype=F64), per_sample=True, options=options)


@pytest.mark.parametrize("gradient", ["checkpoint", "adjoint"])
def test_stops_in_other_gradient_modes_are_refused(gradient):
    y0 = torch.ones(2, 2, dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match=r"step_t/jump_t.*gradient='direct'.*" + gradient):
        node.solve(lambda t, y: -y, y0, torch.linspace(0, 1, 3, dtype=F64), per_sample=True,
                   gradient=gradient, options=dict(step_t=[0.5]))


def test_direct_gradient_through_landed_steps():
    """Autograd through a solve with stops: the sum of the single-sample gradients."""
    func, y0 = vdp_batch(3)
    t = torch.linspace(0, 1, 3, dtype=F64)
    kw = dict(method="dopri5", rtol=1e-9, atol=1e-9, options=dict(jump_t=[0.33], step_t=[0.7]))
    y = y0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(node.solve(func, y, t, per_sample=True, **kw).ys.sum(), y)
    for b in range(3):
        yb = y0[b : b + 1].clone().requires_grad_(True)
        ref = node.solve(type(func)(func.mu[b : b + 1]), yb, t, **kw)
        (gb,) = torch.autograd.grad(ref.ys.sum(), yb)
        torch.testing.assert_close(g[b : b + 1], gb, rtol=1e-6, atol=1e-8)
