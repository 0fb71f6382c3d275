"""Gradients through ``node.odeint`` (direct autograd), checked with ``torch.autograd.gradcheck``.

Fixed-step solves are differentiable functions of ``y0`` and the parameters, so finite
differences match autograd to round-off. Adaptive solves are checked at tight tolerances: the
step sizes depend on the inputs through the (undifferentiated) error test, which perturbs finite
differences by about the tolerance divided by ``eps``.
"""

from __future__ import annotations

import math

import pytest
import torch
from problems import FORCED, LINEAR, LINEAR_A, VAN_DER_POL
from torch import nn
from torch.autograd import gradcheck
from torch.func import functional_call

import node

F64 = torch.float64
TIGHT = dict(rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "method,kwargs",
    [
        ("dopri5", TIGHT),
        ("tsit5", TIGHT),
        ("dopri8", TIGHT),
        ("bosh3", dict(rtol=1e-8, atol=1e-8)),
        ("rk4", dict(options=dict(step_size=0.05))),
        ("euler", dict(options=dict(step_size=0.05))),
        ("dopri5", dict(options=dict(adaptive=False, step_size=0.1))),
    ],
    ids=["dopri5", "tsit5", "dopri8", "bosh3", "rk4", "euler", "dopri5-fixed"],
)
def test_gradcheck_y0(method, kwargs):
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64)
    y0 = VAN_DER_POL.y0_tensor().requires_grad_()
    fixed = "options" in kwargs
    assert gradcheck(
        lambda y: node.odeint(VAN_DER_POL.func, y, t, method=method, **kwargs),
        (y0,),
        eps=1e-6,
        atol=1e-8 if fixed else 1e-6,
        rtol=1e-6 if fixed else 1e-5,
    )


def test_gradcheck_y0_backwards_in_time():
    t = torch.tensor([1.0, 0.6, 0.0], dtype=F64)
    y0 = FORCED.y0_tensor().requires_grad_()
    assert gradcheck(lambda y: node.odeint(FORCED.func, y, t, **TIGHT), (y0,), eps=1e-6,
                     atol=1e-6, rtol=1e-5)


def test_gradcheck_tuple_state():
    def f(t, state):
        x, v = state
        return v, -x - 0.1 * v + torch.cos(t)

    t = torch.tensor([0.0, 1.0], dtype=F64)
    x0 = torch.tensor([0.3, -0.2], dtype=F64, requires_grad=True)
    v0 = torch.tensor([0.1, 0.4], dtype=F64, requires_grad=True)
    assert gradcheck(lambda a, b: node.odeint(f, (a, b), t, **TIGHT), (x0, v0), eps=1e-6,
                     atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", ["rk4", "midpoint", "heun3"])
def test_fixed_step_gradient_is_exact(method):
    """A fixed-grid solve is a smooth function of y0: central differences agree to 1e-8."""
    t = torch.tensor([0.0, 0.5, 1.5], dtype=F64)
    y0 = VAN_DER_POL.y0_tensor().requires_grad_()
    assert gradcheck(
        lambda y: node.odeint(VAN_DER_POL.func, y, t, method=method, options=dict(step_size=0.1)),
        (y0,),
        eps=1e-6,
        atol=1e-8,
        rtol=1e-8,
    )


def test_gradient_of_linear_problem_is_the_matrix_exponential():
    """d y(T) / d y0 = expm(A T) for y' = A y."""
    T = 2.0
    t = torch.tensor([0.0, T], dtype=F64)
    jac = torch.autograd.functional.jacobian(
        lambda y: node.odeint(LINEAR.func, y, t, **TIGHT)[-1], LINEAR.y0_tensor()
    )
    expm = torch.linalg.matrix_exp(torch.tensor(LINEAR_A) * T)
    torch.testing.assert_close(jac, expm, rtol=0, atol=1e-8)


# --- gradients with respect to t -------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "backward"])
def test_gradcheck_t(reverse):
    """Gradients w.r.t. every entry of t: the start time and the output times."""
    times = [0.2, 0.7, 1.5]
    t = torch.tensor(times[::-1] if reverse else times, dtype=F64, requires_grad=True)
    y0 = FORCED.y0_tensor()
    assert gradcheck(lambda tt: node.odeint(FORCED.func, y0, tt, **TIGHT), (t,), eps=1e-6,
                     atol=1e-6, rtol=1e-5)


def test_gradcheck_t_and_y0_together():
    t = torch.tensor([0.0, 0.5, 1.2], dtype=F64, requires_grad=True)
    y0 = FORCED.y0_tensor().requires_grad_()
    assert gradcheck(lambda tt, y: node.odeint(FORCED.func, y, tt, **TIGHT), (t, y0), eps=1e-6,
                     atol=1e-6, rtol=1e-5)


def test_t_gradients_of_linear_problem_are_analytic():
    """y(T) = expm(A (T - t0)) y0: dy/dT = A y(T) and dy/dt0 = -expm(A (T - t0)) A y0."""
    t0, T = 0.3, 1.7
    t = torch.tensor([t0, T], dtype=F64, requires_grad=True)
    y0 = LINEAR.y0_tensor()
    jac = torch.autograd.functional.jacobian(lambda tt: node.odeint(LINEAR.func, y0, tt, **TIGHT),
                                             t)
    a = torch.tensor(LINEAR_A)
    yT = torch.linalg.matrix_exp(a * (T - t0)) @ y0
    # jac[i, :, j] = d ys[i] / d t[j]
    torch.testing.assert_close(jac[0], torch.zeros(2, 2, dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(jac[1, :, 1], a @ yT, rtol=0, atol=1e-8)
    torch.testing.assert_close(jac[1, :, 0], -(torch.linalg.matrix_exp(a * (T - t0)) @ a @ y0),
                               rtol=0, atol=1e-8)


def test_t_requires_grad_does_not_change_values():
    t = torch.linspace(0, 2, 5, dtype=F64)
    plain = node.solve(FORCED.func, FORCED.y0_tensor(), t, rtol=1e-8, atol=1e-8)
    graded = node.solve(FORCED.func, FORCED.y0_tensor(), t.clone().requires_grad_(), rtol=1e-8,
                        atol=1e-8)
    assert torch.equal(plain.ys, graded.ys.detach())
    assert graded.ys.requires_grad
    assert torch.equal(graded.ys[0].detach(), FORCED.y0_tensor())


# --- parameters of an nn.Module vector field --------------------------------------------------


class MLPField(nn.Module):
    def __init__(self, dim: int = 2, hidden: int = 5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, dim))
        self.double()

    def forward(self, t, y):
        tt = t.expand(*y.shape[:-1], 1).to(y.dtype)
        return self.net(torch.cat([y, tt], dim=-1))


@pytest.mark.parametrize(
    "method,kwargs",
    [("dopri5", TIGHT), ("rk4", dict(options=dict(step_size=0.1)))],
    ids=["dopri5", "rk4"],
)
def test_gradcheck_module_parameters(method, kwargs):
    field = MLPField()
    names = [n for n, _ in field.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in field.parameters())
    y0 = torch.tensor([[0.5, -0.3], [0.1, 0.2]], dtype=F64)
    t = torch.tensor([0.0, 0.4, 0.8], dtype=F64)

    def solve_with(*ps):
        def f(tt, y):
            return functional_call(field, dict(zip(names, ps, strict=True)), (tt, y))

        return node.odeint(f, y0, t, method=method, **kwargs)

    fixed = "options" in kwargs
    assert gradcheck(solve_with, params, eps=1e-6, atol=1e-8 if fixed else 1e-6,
                     rtol=1e-6 if fixed else 1e-5)


def test_module_parameter_gradients_via_backward():
    """loss.backward() fills .grad of the module's parameters, matching finite differences."""
    field = MLPField()
    y0 = torch.tensor([[0.5, -0.3]], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    loss = node.odeint(field, y0, t, **TIGHT)[-1].pow(2).sum()
    loss.backward()
    w = field.net[0].weight
    assert w.grad is not None and torch.isfinite(w.grad).all()
    eps = 1e-6
    with torch.no_grad():
        w[0, 0] += eps
        up = node.odeint(field, y0, t, **TIGHT)[-1].pow(2).sum()
        w[0, 0] -= 2 * eps
        down = node.odeint(field, y0, t, **TIGHT)[-1].pow(2).sum()
        w[0, 0] += eps
    assert math.isclose(w.grad[0, 0].item(), ((up - down) / (2 * eps)).item(), rel_tol=1e-5,
                        abs_tol=1e-7)


def test_no_graph_without_requires_grad():
    ys = node.odeint(VAN_DER_POL.func, VAN_DER_POL.y0_tensor(), torch.tensor([0.0, 1.0]))
    assert not ys.requires_grad
    with torch.no_grad():
        ys = node.odeint(VAN_DER_POL.func, VAN_DER_POL.y0_tensor().requires_grad_(),
                         torch.tensor([0.0, 1.0], requires_grad=True))
    assert not ys.requires_grad
