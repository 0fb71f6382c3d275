"""Gradients through ``node.odeint`` (direct autograd), checked with ``torch.autograd.gradcheck``.

The direct gradient is that of the discrete solution for the steps taken: steps are never
differentiated. Finite differences, though, move an adaptive solve's steps (and the interpolated
outputs with them), by an amount that depends on rounding and so on the CPU's kernels. Hence:

* ``gradcheck`` runs only on step sequences that do not depend on the inputs: fixed grids, or
  adaptive methods with their steps pinned (:func:`problems.frozen_steps`), which exercises the
  adaptive loop, ``step_t`` and each method's own dense output. There the gradient is exact, and
  finite differences agree to round-off (about 1e-10 at ``eps = 1e-6``).
* adaptive solves at their tolerances are compared with an accurate reference sensitivity.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck
from torch.func import functional_call

import node
from tests.problems import ADAPTIVE, FORCED, LINEAR, LINEAR_A, VAN_DER_POL, frozen_steps

F64 = torch.float64
TIGHT = dict(rtol=1e-10, atol=1e-10)
# Finite differences of a solve whose steps do not depend on the inputs: round-off only.
EXACT = dict(eps=1e-6, atol=1e-8, rtol=1e-6)
# Pinned steps of 0.15 put t = 0.4 and 1.0 inside steps (interpolated by dense output).
PINNED = frozen_steps(0.15)
# Smaller pinned steps for t-gradients (see test_gradcheck_t), off the output times.
T_PINNED = frozen_steps(0.0432)


@pytest.mark.parametrize("outputs", ["interpolated", "step-ends"])
@pytest.mark.parametrize("method", ADAPTIVE)
def test_gradcheck_y0_adaptive_method_on_pinned_steps(method, outputs):
    """Each adaptive method's steps and dense output (or ``step_t`` landing on the output
    times) differentiate exactly."""
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64)
    y0 = VAN_DER_POL.y0_tensor().requires_grad_()
    kw = frozen_steps(0.15, step_t=t[1:].tolist() if outputs == "step-ends" else ())
    assert gradcheck(lambda y: node.odeint(VAN_DER_POL.func, y, t, method=method, **kw), (y0,),
                     **EXACT)


@pytest.mark.parametrize(
    "method,options",
    [("rk4", dict(step_size=0.05)), ("euler", dict(step_size=0.05)),
     ("midpoint", dict(step_size=0.1)), ("heun3", dict(step_size=0.1)),
     ("dopri5", dict(adaptive=False, step_size=0.1))],
    ids=["rk4", "euler", "midpoint", "heun3", "dopri5-fixed"],
)
def test_gradcheck_y0_fixed_grid(method, options):
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64)
    y0 = VAN_DER_POL.y0_tensor().requires_grad_()
    assert gradcheck(lambda y: node.odeint(VAN_DER_POL.func, y, t, method=method,
                                           options=options), (y0,), **EXACT)


@pytest.mark.parametrize("method,tol", [("dopri5", 1e-10), ("tsit5", 1e-10), ("dopri8", 1e-10),
                                        ("bosh3", 1e-8)])
def test_adaptive_gradient_approximates_exact_sensitivity(method, tol):
    """At its tolerances, an adaptive solve's Jacobian d y(t_i) / d y0 is within a small
    multiple of the tolerance (measured: 1 to 40x) of the exact one. The reference is dopri8 on
    pinned steps of 0.02 landing on the output times (converged to about 1e-14)."""
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64)

    reference = _vdp_jacobian(t, method="dopri8", **frozen_steps(0.02, step_t=t[1:].tolist()))
    torch.testing.assert_close(_vdp_jacobian(t, method=method, rtol=tol, atol=tol), reference,
                               rtol=0, atol=1000 * tol)


def _vdp_jacobian(t, **kw):
    return torch.autograd.functional.jacobian(
        lambda y: node.odeint(VAN_DER_POL.func, y, t, **kw), VAN_DER_POL.y0_tensor())


def test_gradcheck_y0_backwards_in_time():
    t = torch.tensor([1.0, 0.6, 0.0], dtype=F64)
    y0 = FORCED.y0_tensor().requires_grad_()
    assert gradcheck(lambda y: node.odeint(FORCED.func, y, t, **PINNED), (y0,), **EXACT)


def test_gradcheck_tuple_state():
    def f(t, state):
        x, v = state
        return v, -x - 0.1 * v + torch.cos(t)

    t = torch.tensor([0.0, 1.0], dtype=F64)
    x0 = torch.tensor([0.3, -0.2], dtype=F64, requires_grad=True)
    v0 = torch.tensor([0.1, 0.4], dtype=F64, requires_grad=True)
    assert gradcheck(lambda a, b: node.odeint(f, (a, b), t, **PINNED), (x0, v0), **EXACT)


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
    """Gradients w.r.t. every entry of t: the start time and the output times.

    They are the exact solution's (``f`` at the output; ``t0`` moves the start), which the
    pinned steps' dense output follows to O(h^4): about 1e-10 at h = 0.05, far below round-off
    noise. The output times lie inside steps, so no perturbation moves them across a step end.
    """
    times = [0.2, 0.7, 1.5]
    t = torch.tensor(times[::-1] if reverse else times, dtype=F64, requires_grad=True)
    y0 = FORCED.y0_tensor()
    assert gradcheck(lambda tt: node.odeint(FORCED.func, y0, tt, **T_PINNED), (t,), **EXACT)


def test_gradcheck_t_and_y0_together():
    t = torch.tensor([0.0, 0.5, 1.2], dtype=F64, requires_grad=True)
    y0 = FORCED.y0_tensor().requires_grad_()
    assert gradcheck(lambda tt, y: node.odeint(FORCED.func, y, tt, **T_PINNED), (t, y0),
                     **EXACT)


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
    [("dopri5", PINNED), ("rk4", dict(options=dict(step_size=0.1)))],
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

    assert gradcheck(solve_with, params, **EXACT)


def test_module_parameter_gradients_via_backward():
    """loss.backward() fills .grad of the module's parameters, matching finite differences
    (on pinned steps, see the module docstring)."""
    field = MLPField()
    y0 = torch.tensor([[0.5, -0.3]], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    loss = node.odeint(field, y0, t, **PINNED)[-1].pow(2).sum()
    loss.backward()
    w = field.net[0].weight
    assert w.grad is not None and torch.isfinite(w.grad).all()
    eps = 1e-6
    with torch.no_grad():
        w[0, 0] += eps
        up = node.odeint(field, y0, t, **PINNED)[-1].pow(2).sum()
        w[0, 0] -= 2 * eps
        down = node.odeint(field, y0, t, **PINNED)[-1].pow(2).sum()
        w[0, 0] += eps
    assert math.isclose(w.grad[0, 0].item(), ((up - down) / (2 * eps)).item(), rel_tol=1e-6,
                        abs_tol=1e-8)


def test_no_graph_without_requires_grad():
    ys = node.odeint(VAN_DER_POL.func, VAN_DER_POL.y0_tensor(), torch.tensor([0.0, 1.0]))
    assert not ys.requires_grad
    with torch.no_grad():
        ys = node.odeint(VAN_DER_POL.func, VAN_DER_POL.y0_tensor().requires_grad_(),
                         torch.tensor([0.0, 1.0], requires_grad=True))
    assert not ys.requires_grad
