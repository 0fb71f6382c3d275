"""Per-sample solves with the PID step-size controller (``options=dict(controller="pid")``).

Each sample keeps its own controller history, so it must get what the joint loop with the same
controller gives it solved alone (values to the tolerance, step counts within one or two).
"""

from __future__ import annotations

import pytest
import torch

import node
from tests.node.test_per_sample import F64, alone, vdp_batch


@pytest.mark.parametrize("method, tol, gains", [
    ("dopri5", 1e-8, {}),
    ("tsit5", 1e-7, dict(pcoeff=0.2, icoeff=0.4, dcoeff=0.1)),  # all three history terms
    ("bosh3", 1e-6, dict(pcoeff=0.0, icoeff=1.0, dcoeff=0.0)),
    ("dopri8", 1e-9, dict(safety=0.8, ifactor=5.0, dfactor=0.3)),
])
def test_pid_sample_as_if_solved_alone(method, tol, gains):
    func, y0 = vdp_batch(5)
    t = torch.linspace(0, 3, 7, dtype=F64)
    kw = dict(method=method, rtol=tol, atol=tol, options=dict(controller="pid", **gains))
    sol = node.solve(func, y0, t, per_sample=True, **kw)
    assert sol.success
    for b in range(5):
        ref = alone(func, y0, t, b, **kw)
        torch.testing.assert_close(sol.ys[:, b], ref.ys[:, 0], rtol=100 * tol, atol=100 * tol)
        assert abs(int(sol.stats["n_steps"][b]) - ref.stats["n_steps"]) <= 2
        assert abs(int(sol.stats["n_accepted"][b]) - ref.stats["n_accepted"]) <= 2
    assert sol.stats["n_iterations"] == int(sol.stats["n_steps"].max())


def test_pid_differs_from_integral_per_sample():
    """The option is used, not ignored: the PID controller takes other steps than the integral
    one, on each sample as on the joint loop."""
    func, y0 = vdp_batch(4)
    t = torch.linspace(0, 3, 4, dtype=F64)
    kw = dict(method="dopri5", rtol=1e-6, atol=1e-6)
    pid = node.solve(func, y0, t, per_sample=True, options=dict(controller="pid"), **kw)
    integral = node.solve(func, y0, t, per_sample=True, **kw)
    assert not torch.equal(pid.stats["n_steps"], integral.stats["n_steps"])
    joint_steps = [alone(func, y0, t, b, options=dict(controller="pid"), **kw).stats["n_steps"]
                   for b in range(4)]
    assert all(abs(int(s) - r) <= 2 for s, r in zip(pid.stats["n_steps"], joint_steps,
                                                   strict=True))


def test_pid_history_is_per_sample():
    """A sample's steps do not depend on its neighbours (each has its own history)."""
    func, y0 = vdp_batch(6, mu_max=8.0)
    t = torch.linspace(0, 2, 5, dtype=F64)
    kw = dict(method="dopri5", rtol=1e-7, atol=1e-7, options=dict(controller="pid", dcoeff=0.1))
    sol = node.solve(func, y0, t, per_sample=True, **kw)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    permuted = node.solve(type(func)(func.mu[perm]), y0[perm], t, per_sample=True, **kw)
    assert torch.equal(permuted.stats["n_steps"], sol.stats["n_steps"][perm])
    torch.testing.assert_close(permuted.ys, sol.ys[:, perm], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("gradient", ["checkpoint", "adjoint"])
def test_pid_in_gradient_modes(gradient):
    """The checkpoint and adjoint modes accept the PID controller; their gradients agree with
    autograd through the same per-sample solve (checkpoint: the same steps, to round-off)."""
    func, y0 = vdp_batch(3)
    t = torch.linspace(0, 1, 3, dtype=F64)
    kw = dict(method="dopri5", rtol=1e-9, atol=1e-9, options=dict(controller="pid"))

    def grad(mode):
        y = y0.clone().requires_grad_(True)
        sol = node.solve(func, y, t, per_sample=True, gradient=mode, **kw)
        (g,) = torch.autograd.grad(sol.ys.square().sum(), y)
        return g

    expected = grad("direct")
    tol = 1e-9 if gradient == "checkpoint" else 1e-5
    torch.testing.assert_close(grad(gradient), expected, rtol=tol, atol=tol)


def test_bad_controller_is_named():
    with pytest.raises(ValueError, match=r"options\['controller'\].*'pi'"):
        node.solve(lambda t, y: -y, torch.ones(2, 2, dtype=F64),
                   torch.linspace(0, 1, 3, dtype=F64), per_sample=True,
                   options=dict(controller="pi"))
