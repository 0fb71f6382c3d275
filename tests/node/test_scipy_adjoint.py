"""Gradients through ``method="scipy_solver"`` by the adjoint (torchdiffeq's ``odeint_adjoint``
with ``scipy_solver``): SciPy solves forward and, by default, backward; mixed with node's methods
either way; direct and checkpoint gradients stay refused."""

from __future__ import annotations

import math

import pytest
import torch

import node

F64 = torch.float64
TIGHT = dict(rtol=1e-10, atol=1e-10)


class Cubic(torch.nn.Module):
    """torchdiffeq's gradient-test field ``y**3 A`` plus a time-dependent forcing (so that the
    time gradients are not just those of an autonomous system)."""

    def __init__(self, dtype=F64):
        super().__init__()
        self.A = torch.nn.Parameter(torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=dtype))
        self.b = torch.nn.Parameter(torch.tensor([0.3, -0.2], dtype=dtype))
        self.unused = torch.nn.Linear(2, 3).to(dtype)

    def forward(self, t, y):
        return torch.mm(y**3, self.A) + self.b * torch.sin(t)


def _grads(interface, *, dtype=F64, reverse=False, t_grad=True, **kwargs):
    """``(y0, t, A, b)`` gradients of a fixed weighted sum of the outputs."""
    torch.manual_seed(0)
    func = Cubic(dtype)
    y0 = torch.tensor([[1.0, 0.0]], dtype=dtype, requires_grad=True)
    t = torch.linspace(0.0, 3.0, 5, dtype=dtype)
    if reverse:
        t = t.flip(0)
    t.requires_grad_(t_grad)
    ys = interface(func, y0, t, **kwargs)
    weights = torch.linspace(0.1, 1.0, ys.numel(), dtype=dtype).view_as(ys)
    ys.backward(weights)
    assert func.unused.weight.grad is None or not func.unused.weight.grad.any()
    return y0.grad, t.grad, func.A.grad, func.b.grad


def _reference(**kwargs):
    """node's dopri5 with direct gradients (exact gradients of a tight solve), in float64."""
    return _grads(node.odeint, method="dopri5", **TIGHT, **kwargs)


def _assert_close(grads, ref, tol):
    for name, g, r in zip(("y0", "t", "A", "b"), grads, ref, strict=True):
        if r is None:
            assert g is None, name
            continue
        torch.testing.assert_close(g.to(F64), r, rtol=tol, atol=tol,
                                   msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("solver", ["LSODA", "DOP853", "RK45", "Radau"])
def test_adjoint_gradients_match_direct_dopri5(solver):
    grads = _grads(node.odeint_adjoint, method="scipy_solver", options=dict(solver=solver),
                   **TIGHT)
    _assert_close(grads, _reference(), 1e-6)


@pytest.mark.parametrize("t_grad", [True, False])
def test_decreasing_times(t_grad):
    grads = _grads(node.odeint_adjoint, method="scipy_solver", reverse=True, t_grad=t_grad,
                   **TIGHT)
    _assert_close(grads, _reference(reverse=True, t_grad=t_grad), 1e-6)


@pytest.mark.parametrize("kwargs", [
    dict(method="scipy_solver", adjoint_method="dopri5"),
    dict(method="dopri5", adjoint_method="scipy_solver"),
    dict(method="scipy_solver", options=dict(solver="DOP853"), adjoint_method="dopri5",
         adjoint_options=dict()),
    dict(method="rk4", options=dict(step_size=1e-3), adjoint_method="scipy_solver",
         adjoint_options=dict(solver="DOP853")),
], ids=["scipy-dopri5", "dopri5-scipy", "scipy-dopri5-options", "rk4-scipy"])
def test_mixed_forward_and_backward_methods(kwargs):
    grads = _grads(node.odeint_adjoint, **TIGHT, **kwargs)
    _assert_close(grads, _reference(), 1e-5)


def test_float32_state():
    grads = _grads(node.odeint_adjoint, dtype=torch.float32, method="scipy_solver", rtol=1e-6,
                   atol=1e-7)
    assert all(g.dtype == torch.float32 for g in grads)
    _assert_close(grads, _reference(), 1e-3)


def test_tuple_state_and_adjoint_params_of_a_closure():
    k = torch.tensor(1.5, dtype=F64, requires_grad=True)

    def oscillator(t, state):
        x, v = state
        return v, -k * x - 0.1 * v

    def run(interface, **kwargs):
        k.grad = None
        x0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
        v0 = torch.zeros(2, dtype=F64, requires_grad=True)
        t = torch.linspace(0.0, 2.0, 4, dtype=F64)
        xs, vs = interface(oscillator, (x0, v0), t, **TIGHT, **kwargs)
        (xs.sum() + (vs**2).sum()).backward()
        return x0.grad, v0.grad, k.grad

    grads = run(node.odeint_adjoint, method="scipy_solver", adjoint_params=(k,))
    for g, r in zip(grads, run(node.odeint, method="dopri5"), strict=True):
        torch.testing.assert_close(g, r, rtol=1e-6, atol=1e-6)


def test_solve_reports_the_backward_statistics():
    func = Cubic()
    y0 = torch.tensor([[1.0, 0.0]], dtype=F64, requires_grad=True)
    solution = node.solve(func, y0, torch.linspace(0.0, 1.0, 3, dtype=F64),
                          method="scipy_solver", gradient="adjoint")
    solution.ys.sum().backward()
    assert solution.stats["nfe"] > 0 and solution.stats["nfe_backward"] > 0
    assert solution.stats["n_steps_backward"] > 0 and y0.grad is not None


def test_solver_config_reaches_the_scipy_adjoint():
    config = node.SolverConfig(method="scipy_solver", gradient="adjoint",
                               options=dict(solver="DOP853"), **TIGHT)
    grads = _grads(config.odeint)
    _assert_close(grads, _reference(), 1e-6)


def test_seminorm_is_ignored_with_a_warning():
    with pytest.warns(UserWarning, match=r"adjoint_options\['norm'\] is ignored.*scipy_solver"):
        grads = _grads(node.odeint_adjoint, method="scipy_solver",
                       adjoint_options=dict(norm="seminorm"), **TIGHT)
    _assert_close(grads, _reference(), 1e-6)


def test_adjoint_options_are_checked_for_scipy():
    with pytest.raises(ValueError, match=r"options\['solver'\].*'Euler'"):
        _grads(node.odeint_adjoint, method="dopri5", adjoint_method="scipy_solver",
               adjoint_options=dict(solver="Euler"))
    with pytest.raises(ValueError, match=r"adjoint_options must be given.*'dopri5'.*"
                                         r"'scipy_solver'"):
        _grads(node.odeint_adjoint, method="scipy_solver", options=dict(solver="RK45"),
               adjoint_method="dopri5")


def test_direct_and_checkpoint_gradients_stay_refused():
    y0 = torch.ones(2, dtype=F64, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 3, dtype=F64)
    ys = node.odeint(lambda t, y: -y, y0, t, method="scipy_solver")
    with pytest.raises(RuntimeError, match=r"cannot differentiate.*odeint_adjoint"):
        ys.sum().backward()
    with pytest.raises(ValueError, match=r"gradient='checkpoint'.*odeint_adjoint"):
        node.solve(lambda t, y: -y, y0, t, method="scipy_solver", gradient="checkpoint")
    with pytest.raises(ValueError, match=r"adjoint_\* arguments need gradient='adjoint'"):
        node.solve(lambda t, y: -y, y0, t, method="scipy_solver", adjoint_method="dopri5")


def test_backward_failure_raises_solver_error():
    def nan_vjp(t, y):
        # the value is -y, but the vector-Jacobian product of sqrt at 0 is inf * 0 = nan
        return -y + 0.0 * torch.sqrt(y - y)

    y0 = torch.ones(2, dtype=F64, requires_grad=True)
    ys = node.odeint_adjoint(nan_vjp, y0, torch.linspace(0.0, 1.0, 3, dtype=F64),
                             method="scipy_solver", options=dict(solver="RK45"),
                             adjoint_params=())
    with pytest.raises(node.SolverError, match=r"adjoint \(backward\) solve failed.*RK45") as err:
        ys.sum().backward()
    assert err.value.status is node.Status.NON_FINITE


def test_forward_failure_returns_the_partial_solution():
    def blows_up(t, y):
        return y * (math.nan if float(t) > 1.0 else 1.0)

    y0 = torch.ones(2, dtype=F64, requires_grad=True)
    solution = node.solve(blows_up, y0, torch.linspace(0.0, 2.0, 6, dtype=F64),
                          method="scipy_solver", options=dict(solver="RK45"), gradient="adjoint",
                          adjoint_params=(), on_failure="return")
    assert not solution.success and "near t=1" in solution.message
    assert solution.ys.shape[0] == 3  # 0, 0.4, 0.8
    solution.ys.sum().backward()
    torch.testing.assert_close(y0.grad, torch.exp(torch.tensor([0.0, 0.4, 0.8], dtype=F64))
                               .sum().expand(2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("solver", ["RK45", "LSODA"])
def test_non_finite_derivative_from_the_start_is_a_solver_error(solver):
    # RK45's step size turned NaN and SciPy retried forever; LSODA reported success on NaNs
    with pytest.raises(node.SolverError, match=rf"{solver}.*non-finite") as err:
        node.odeint(lambda t, y: y * math.nan, torch.ones(2, dtype=F64),
                    torch.linspace(0.0, 1.0, 3, dtype=F64), method="scipy_solver",
                    options=dict(solver=solver))
    assert err.value.status is node.Status.NON_FINITE


def test_scipy_forward_with_an_implicit_adjoint_method_is_refused():
    """The interpolating adjoint of implicit methods reads y(t) from node's recorded steps."""
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="adjoint_method='kvaerno5'.*scipy_solver"):
        node.odeint_adjoint(lambda t, y: -y, y0, t, method="scipy_solver",
                            adjoint_method="kvaerno5", adjoint_params=(), adjoint_options={})
