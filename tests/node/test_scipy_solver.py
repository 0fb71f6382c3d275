"""``method="scipy_solver"``: SciPy's solve_ivp behind node's interface (node/scipy_solver.py)."""

from __future__ import annotations

import math
import sys

import pytest
import torch

import node
from node.scipy_solver import SOLVERS

A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=torch.float64)  # a damped rotation


def linear(t, y):
    return y @ A.T.to(y.dtype)


def exact(y0, t):
    return torch.stack([torch.linalg.matrix_exp(A * ti) @ y0.to(A.dtype) for ti in t.tolist()])


Y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
T = torch.linspace(0.0, 2.0, 6, dtype=torch.float64)


@pytest.mark.parametrize("solver", SOLVERS)
def test_each_solver_matches_the_exact_solution(solver):
    sol = node.solve(linear, Y0, T, method="scipy_solver", rtol=1e-12, atol=1e-14,
                     options=dict(solver=solver))
    assert sol.success and sol.ys.dtype == torch.float64
    torch.testing.assert_close(sol.ys, exact(Y0, T), rtol=1e-8, atol=1e-10)
    assert torch.equal(sol.ys[0], Y0)
    assert sol.stats["nfe"] > 0 and sol.stats["n_steps"] == sol.stats["n_accepted"] > 0


def test_default_solver_and_odeint():
    ys = node.odeint(linear, Y0, T, method="scipy_solver", rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ys, exact(Y0, T), rtol=1e-7, atol=1e-9)


def test_nfe_counts_every_call_of_func():
    calls = []

    def func(t, y):
        calls.append(float(t))
        return linear(t, y)

    sol = node.solve(func, Y0, T, method="scipy_solver", options=dict(solver="Radau"))
    assert sol.stats["nfe"] == len(calls)  # including the finite-difference Jacobian's calls


def test_float32_state_returns_float32_and_func_sees_float32():
    seen = set()

    def func(t, y):
        seen.add((t.dtype, y.dtype))
        return linear(t, y)

    ys = node.odeint(func, Y0.float(), T.float(), method="scipy_solver",
                     options=dict(solver="RK45"))
    assert ys.dtype == torch.float32 and seen == {(torch.float32, torch.float32)}
    torch.testing.assert_close(ys, exact(Y0, T).float(), rtol=1e-5, atol=1e-6)


def test_tuple_state():
    def func(t, y):
        a, b = y
        return linear(t, a), -0.5 * b

    b0 = torch.ones(2, 3, dtype=torch.float64)
    a, b = node.odeint(func, (Y0, b0), T, method="scipy_solver", rtol=1e-10, atol=1e-12,
                       options=dict(solver="DOP853"))
    assert a.shape == (6, 2) and b.shape == (6, 2, 3)
    torch.testing.assert_close(a, exact(Y0, T), rtol=1e-8, atol=1e-10)
    decay = torch.exp(-0.5 * T)[:, None, None].expand(6, 2, 3)
    torch.testing.assert_close(b, decay, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("solver", ["RK45", "LSODA"])
def test_backwards_in_time(solver):
    t = T.flip(0)
    y_end = exact(Y0, T)[-1]
    ys = node.odeint(linear, y_end, t, method="scipy_solver", rtol=1e-10, atol=1e-12,
                     options=dict(solver=solver))
    torch.testing.assert_close(ys, exact(Y0, T).flip(0), rtol=1e-7, atol=1e-9)


def test_one_output_time_returns_y0():
    ys = node.odeint(linear, Y0, T[:1], method="scipy_solver")
    assert ys.shape == (1, 2) and torch.equal(ys[0], Y0)


def test_step_options_reach_scipy():
    small = node.solve(linear, Y0, T, method="scipy_solver", options=dict(solver="RK45",
                                                                           max_step=0.01))
    free = node.solve(linear, Y0, T, method="scipy_solver", options=dict(solver="RK45"))
    assert small.stats["n_steps"] >= 200 > free.stats["n_steps"]


# --- errors -----------------------------------------------------------------------------------


def test_unknown_solver_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"options\['solver'\].*RK45, RK23, DOP853.*'rk45'"):
        node.odeint(linear, Y0, T, method="scipy_solver", options=dict(solver="rk45"))


def test_unknown_option_raises_and_foreign_option_warns():
    with pytest.raises(ValueError, match=r"unknown option.*max_stepp"):
        node.odeint(linear, Y0, T, method="scipy_solver", options=dict(max_stepp=1.0))
    with pytest.warns(UserWarning, match=r"step_size.*not used by method='scipy_solver'"):
        node.odeint(linear, Y0, T, method="scipy_solver", options=dict(step_size=0.1))
    with pytest.raises(ValueError, match=r"options\['max_step'\]"):
        node.odeint(linear, Y0, T, method="scipy_solver", options=dict(max_step=-1.0))


def test_backward_through_the_solve_is_a_clear_error():
    y0 = Y0.clone().requires_grad_(True)
    ys = node.odeint(linear, y0, T, method="scipy_solver")
    with pytest.raises(RuntimeError, match=r"scipy_solver.*cannot differentiate.*dopri5"):
        ys.sum().backward()


def test_module_parameters_and_times_are_guarded_too():
    func = torch.nn.Linear(2, 2).double()
    ys = node.odeint(lambda t, y: func(y), Y0, T, method="scipy_solver")
    assert not ys.requires_grad  # a closure's parameters cannot be seen: a plain result
    ys = node.odeint(lambda t, y: linear(t, y), Y0, T.clone().requires_grad_(True),
                     method="scipy_solver")
    with pytest.raises(RuntimeError, match="scipy_solver"):
        ys.sum().backward()

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2).double()

        def forward(self, t, y):
            return self.lin(y)

    ys = node.odeint(Field(), Y0, T, method="scipy_solver")
    with pytest.raises(RuntimeError, match="scipy_solver"):
        ys.sum().backward()
    with torch.no_grad():
        ys = node.odeint(Field(), Y0.clone().requires_grad_(), T, method="scipy_solver")
    assert not ys.requires_grad


def test_checkpoint_mode_is_refused():
    # gradients through scipy_solver come from the adjoint only (tests/node/test_scipy_adjoint.py)
    with pytest.raises(ValueError, match=r"scipy_solver.*gradient='checkpoint'.*odeint_adjoint"):
        node.solve(linear, Y0, T, method="scipy_solver", gradient="checkpoint")


def test_events_are_refused():
    with pytest.raises(ValueError, match=r"scipy_solver.*events"):
        node.odeint(linear, Y0, T[:2], method="scipy_solver", event_fn=lambda t, y: y[0])
    with pytest.raises(ValueError, match=r"scipy_solver.*events"):
        node.odeint_event(linear, Y0, 0.0, event_fn=lambda t, y: y[0], method="scipy_solver")


def _blows_up(t, y):
    return y * (math.nan if float(t) > 1.0 else 1.0)


def test_failure_raises_solver_error_naming_the_time():
    with pytest.raises(node.SolverError, match=r"RK45 failed.*near t=1") as info:
        node.odeint(_blows_up, Y0, T, method="scipy_solver", options=dict(solver="RK45"))
    assert info.value.status is node.Status.NON_FINITE
    assert info.value.t == pytest.approx(1.0, abs=1e-6)


def test_failure_can_return_the_partial_solution():
    sol = node.solve(_blows_up, Y0, T, method="scipy_solver", on_failure="return",
                     options=dict(solver="RK45"))
    assert not sol.success and "near t=1" in sol.message
    assert sol.ts.tolist() == T[:3].tolist()  # 0, 0.4, 0.8 reached
    torch.testing.assert_close(sol.ys, Y0 * torch.exp(T[:3])[:, None], rtol=1e-5, atol=1e-7)


def test_callbacks_on_func_warn():
    class Field(torch.nn.Module):
        def forward(self, t, y):
            return -y

        def callback_step(self, t0, y0, dt):
            pass

    with pytest.warns(UserWarning, match="callback_step will never be called"):
        node.odeint(Field(), Y0, T, method="scipy_solver")


def test_missing_scipy_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.integrate", None)
    with pytest.raises(ImportError, match=r"scipy_solver.*SciPy.*pip install scipy"):
        node.odeint(linear, Y0, T, method="scipy_solver")
