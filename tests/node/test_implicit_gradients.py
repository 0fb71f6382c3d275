"""Gradients through implicit methods: the implicit function theorem per step (direct mode)
and its replay (checkpoint mode), against finite differences and a stiff analytic answer."""

from __future__ import annotations

import pytest
import torch

import node
from tests.problems import frozen_steps

METHODS = ["implicit_euler", "kvaerno3", "kvaerno5"]


class Relax(torch.nn.Module):
    """y' = lam (y - cos(w t)): stiff for large -lam."""

    def __init__(self, lam: float, w: float = 1.0) -> None:
        super().__init__()
        self.lam = torch.nn.Parameter(torch.tensor(lam, dtype=torch.float64))
        self.w = torch.nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, t, y):
        return self.lam * (y - torch.cos(self.w * t))


def _grid(method: str) -> dict:
    """A fixed step: a grid for fixed-step methods, pinned adaptive steps for the pairs."""
    if node.get_tableau(method).adaptive:
        return frozen_steps(0.05)
    return dict(rtol=1e-10, atol=1e-12, options=dict(step_size=0.05))


@pytest.mark.parametrize("gradient", ["direct", "checkpoint"])
@pytest.mark.parametrize("method", METHODS)
def test_gradcheck_closure(method, gradient):
    """A func that is no module: checkpoint mode takes its general (recomputing) path."""
    t = torch.linspace(0.0, 1.0, 4, dtype=torch.float64)

    def run(y0, lam, w):
        return node.solve(lambda t, y: lam * (y - torch.cos(w * t)), y0, t, method=method,
                          gradient=gradient, **_grid(method)).ys

    inputs = (torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True),
              torch.tensor(-30.0, dtype=torch.float64, requires_grad=True),
              torch.tensor(2.0, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(run, inputs)


@pytest.mark.parametrize("method", METHODS)
def test_gradcheck_module_checkpoint(method):
    """A module func: checkpoint mode's taped replay with the implicit step."""
    func = Relax(-30.0, 2.0)
    t = torch.linspace(0.0, 1.0, 4, dtype=torch.float64)

    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
    ys = node.solve(func, y0, t, method=method, gradient="checkpoint", **_grid(method)).ys
    ys.sum().backward()
    g_y0, g_lam = y0.grad.clone(), func.lam.grad.clone()
    y0.grad = None
    func.zero_grad()
    ys = node.solve(func, y0, t, method=method, gradient="direct", **_grid(method)).ys
    ys.sum().backward()
    assert torch.allclose(g_y0, y0.grad, rtol=1e-10, atol=1e-14)
    assert torch.allclose(g_lam, func.lam.grad, rtol=1e-10, atol=1e-14)
    # and direct against finite differences of y0
    eps = 1e-6
    with torch.no_grad():
        e = torch.tensor([eps, 0.0], dtype=torch.float64)
        plus = node.odeint(func, y0 + e, t, method=method, **_grid(method)).sum()
        minus = node.odeint(func, y0 - e, t, method=method, **_grid(method)).sum()
    assert abs((plus - minus).item() / (2 * eps) - y0.grad[0].item()) < 1e-6


def _analytic(y0, lam, T):
    """y(T) of y' = lam (y - cos t): A cos T + B sin T + exp(lam T)(y0 - A)."""
    A = lam**2 / (1 + lam**2)
    B = -lam / (1 + lam**2)
    return A * torch.cos(T) + B * torch.sin(T) + torch.exp(lam * T) * (y0 - A)


@pytest.mark.parametrize("gradient", ["direct", "checkpoint", "adjoint"])
def test_stiff_gradient_against_analytic(gradient):
    """lam = -1e3 on [0, 1] with kvaerno5 (adaptive): d y(1) / d lam against the closed form."""
    lam0, T = -1e3, torch.tensor(1.0, dtype=torch.float64)
    func = Relax(lam0)
    with torch.no_grad():
        func.w.fill_(1.0)
    func.w.requires_grad_(False)
    y0 = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    sol = node.solve(func, y0, torch.stack([T.new_zeros(()), T]), method="kvaerno5",
                     gradient=gradient, rtol=1e-10, atol=1e-12)
    sol.ys[-1].sum().backward()
    lam = torch.tensor(lam0, dtype=torch.float64, requires_grad=True)
    (g_lam,) = torch.autograd.grad(_analytic(torch.tensor(2.0, dtype=torch.float64), lam, T), lam)
    assert abs(func.lam.grad.item() - g_lam.item()) <= 1e-6 * abs(g_lam.item())
    assert abs(y0.grad.item()) < 1e-12  # exp(-1000): the initial value is forgotten


def test_double_backward_raises():
    func = Relax(-10.0)
    y0 = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    ys = node.odeint(func, y0, torch.tensor([0.0, 1.0], dtype=torch.float64),
                     method="implicit_euler", options=dict(step_size=0.1))
    with pytest.raises(RuntimeError, match="gradients of gradients"):
        (g,) = torch.autograd.grad(ys[-1].sum(), y0, create_graph=True)
