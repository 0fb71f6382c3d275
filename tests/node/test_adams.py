"""The Adams multistep methods: explicit_adams, implicit_adams (alias fixed_adams).

Coefficients (exact), convergence orders by step halving on uniform and irregular grids, the
decay problem that torchdiffeq's explicit_adams diverges on, SciPy agreement, gradients in all
three modes, events, the corrector's failure modes and option validation.
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction as F

import numpy as np
import pytest
import torch

import node
from node.multistep import MAX_ORDER, bashforth, moulton, weights
from tests.problems import LOTKA_VOLTERRA, VAN_DER_POL, Decay, FreeFall, max_error, reference

T_END = 2.0
TIGHT = dict(rtol=1e-14, atol=1e-15)  # the corrector iterates to round-off


def field(t, y):
    """Nonlinear, non-autonomous, exact solution (cos t, sin t, 1 / (1 + t^2))."""
    r2 = y[0] ** 2 + y[1] ** 2
    return torch.stack([-y[1] * r2, y[0] * r2, -2 * t * y[2] ** 2])


def exact(t: float) -> torch.Tensor:
    return torch.tensor([math.cos(t), math.sin(t), 1 / (1 + t * t)], dtype=torch.float64)


def observed_order(hs, errors) -> float:
    return float(np.polyfit(np.log(hs), np.log(errors), 1)[0])


# --- coefficients -------------------------------------------------------------------------

def test_classical_coefficients_exact():
    assert bashforth(1) == (1,)
    assert bashforth(2) == (F(3, 2), F(-1, 2))
    assert bashforth(4) == (F(55, 24), F(-59, 24), F(37, 24), F(-9, 24))
    assert moulton(1) == (1,)
    assert moulton(2) == (F(1, 2), F(1, 2))
    assert moulton(4) == (F(9, 24), F(19, 24), F(-5, 24), F(1, 24))
    assert moulton(5) == (F(251, 720), F(646, 720), F(-264, 720), F(106, 720), F(-19, 720))
    assert bashforth(12)[0] == F(4527766399, 958003200)


@pytest.mark.parametrize("order", range(1, MAX_ORDER + 1))
def test_coefficients_integrate_polynomials_exactly(order):
    """sum_j w_j s_j^i = 1 / (i + 1) for every degree i < order, in exact arithmetic."""
    for w, nodes in ((bashforth(order), [F(-j) for j in range(order)]),
                     (moulton(order), [F(1)] + [F(-j) for j in range(order - 1)])):
        assert all(isinstance(x, F) for x in w)
        for i in range(order):
            assert sum(wj * s**i for wj, s in zip(w, nodes, strict=True)) == F(1, i + 1)


def test_variable_step_weights():
    nodes = [0.0, -0.7, -1.9, -2.5]
    w = weights(nodes, False)
    for i in range(4):
        assert sum(wj * s**i for wj, s in zip(w, nodes, strict=True)) == pytest.approx(1 / (i + 1),
                                                                                      abs=1e-13)
    assert weights([0.0, -1.0, -2.0, -3.0], False) == tuple(float(x) for x in bashforth(4))
    assert weights([1.0, 0.0, -1.0 - 1e-14], True) == tuple(float(x) for x in moulton(3))


# --- accuracy -----------------------------------------------------------------------------

CASES = [("explicit_adams", 1, (64, 128, 256, 512)), ("explicit_adams", 2, (32, 64, 128, 256)),
         ("explicit_adams", 3, (64, 128, 256, 512)), ("explicit_adams", 4, (32, 64, 128, 256)),
         ("explicit_adams", 5, (128, 256, 512)), ("explicit_adams", 6, (64, 128, 256)),
         ("implicit_adams", 1, (64, 128, 256, 512)), ("implicit_adams", 2, (32, 64, 128, 256)),
         ("implicit_adams", 3, (32, 64, 128, 256)), ("implicit_adams", 4, (32, 64, 128, 256)),
         ("implicit_adams", 5, (32, 64, 128, 256))]


@pytest.mark.parametrize(("method", "order", "steps"), CASES)
def test_convergence_order_uniform_grid(method, order, steps):
    t = torch.tensor([0.0, T_END], dtype=torch.float64)
    hs, errors = [], []
    for n in steps:
        sol = node.solve(field, exact(0.0), t, method=method, **TIGHT,
                         options=dict(step_size=T_END / n, max_order=order, max_iters=40))
        assert sol.stats["n_steps"] == n
        hs.append(T_END / n)
        errors.append(float((sol.ys[-1] - exact(T_END)).abs().max()))
    assert min(errors) > 1e-13, errors
    p = observed_order(hs, errors)
    assert abs(p - order) < 0.3, f"{method} max_order={order}: observed {p:.3f} ({errors})"


@pytest.mark.parametrize(("method", "order"), [("explicit_adams", 3), ("explicit_adams", 4),
                                               ("explicit_adams", 6), ("implicit_adams", 4)])
def test_convergence_order_non_uniform_grid(method, order):
    """Grid = t (no step_size), non-uniform: t_i = g(i / n) for a smooth increasing g, the
    setting of variable-step convergence. The variable-step weights keep the order (constant
    coefficients, as torchdiffeq applies them on any grid, would make it 1)."""
    hs, errors = [], []
    for n in (64, 128, 256):
        s = np.linspace(0.0, 1.0, n + 1)
        t = torch.tensor(T_END * (s + 0.3 * np.sin(2 * np.pi * s) / (2 * np.pi)))
        ys = node.odeint(field, exact(0.0), t, method=method, **TIGHT,
                         options=dict(max_order=order, max_iters=40))
        hs.append(1.0 / n)
        errors.append(float((ys[-1] - exact(T_END)).abs().max()))
    assert min(errors) > 1e-13, errors
    p = observed_order(hs, errors)
    assert abs(p - order) < 0.3, (p, errors)


@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
def test_decay_step_001_is_accurate(method):
    """torchdiffeq master's explicit_adams gives an error of 4e9 here (its order-11 default)."""
    y0 = torch.tensor([1.0], dtype=torch.float64)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    ys = node.odeint(lambda t, y: -y, y0, t, method=method, options=dict(step_size=0.01))
    assert abs(ys[-1].item() - math.exp(-2.0)) < 1e-8


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
@pytest.mark.parametrize("problem", [VAN_DER_POL, LOTKA_VOLTERRA], ids=lambda p: p.name)
def test_against_scipy(problem, method, reverse):
    t = problem.times(7, reverse=reverse)
    y0 = torch.tensor(reference(problem, t[:1].tolist())[0], dtype=torch.float64)
    ys = node.odeint(problem.func, y0, t, method=method, **TIGHT,
                     options=dict(step_size=2e-3, max_order=6, max_iters=40))
    assert max_error(ys, reference(problem, t.tolist())) < 1e-8


@pytest.mark.parametrize("interp", ["linear", "cubic"])
def test_output_times_between_grid_points(interp):
    """Off-grid outputs are interpolated in their grid step: linear O(h^2), cubic O(h^4)."""
    t = torch.tensor([0.0, 0.37, 1.23, T_END], dtype=torch.float64)
    errors = []
    for n in (32, 64):
        ys = node.odeint(field, exact(0.0), t, method="explicit_adams",
                         options=dict(step_size=T_END / n, interp=interp))
        errors.append(max(float((ys[k] - exact(float(t[k]))).abs().max()) for k in range(4)))
    rate = math.log2(errors[0] / errors[1])
    assert rate > (3.5 if interp == "cubic" else 1.7), (rate, errors)


def test_float32_and_tuple_state():
    t = torch.linspace(0.0, 1.0, 5)
    y0 = (torch.tensor([1.0]), torch.tensor([[2.0, 3.0]]))
    ys = node.odeint(lambda t, y: (-y[0], -2 * y[1]), y0, t, method="implicit_adams",
                     rtol=1e-5, atol=1e-6, options=dict(step_size=0.05))
    assert ys[0].dtype == torch.float32 and ys[1].shape == (5, 1, 2)
    torch.testing.assert_close(ys[1][-1], y0[1] * math.exp(-2.0), rtol=1e-5, atol=1e-6)


# --- method registry, options -------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:implicit_adams")
def test_registry_and_alias():
    names = node.available_methods()
    assert {"explicit_adams", "implicit_adams", "fixed_adams"} <= set(names)
    assert node.get_tableau("fixed_adams") is node.get_tableau("implicit_adams")
    assert node.get_tableau("rk4").order == 4  # tableau lookups unchanged
    t = torch.linspace(0.0, 1.0, 4, dtype=torch.float64)
    opts = dict(step_size=0.1, max_order=3)
    a = node.odeint(field, exact(0.0), t, method="fixed_adams", options=opts)
    b = node.odeint(field, exact(0.0), t, method="implicit_adams", options=opts)
    assert torch.equal(a, b)


def test_solver_config_accepts_adams():
    cfg = node.SolverConfig(method="explicit_adams", step_size=0.05, options=dict(max_order=3))
    sol = cfg.solve(field, exact(0.0), torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert float((sol.ys[-1] - exact(1.0)).abs().max()) < 1e-4
    with pytest.raises(ValueError, match="max_order"):
        node.SolverConfig(method="implicit_adams", options=dict(max_order=13))


@pytest.mark.parametrize(("options", "error", "match"), [
    (dict(max_order="4"), TypeError, r"options\['max_order'\] must be an int, got str"),
    (dict(max_order=True), TypeError, r"options\['max_order'\]"),
    (dict(max_order=0), ValueError, r"options\['max_order'\] must be between 1 and 12, got 0"),
    (dict(max_order=13), ValueError, r"between 1 and 12, got 13"),
    (dict(max_iters=0.5), TypeError, r"options\['max_iters'\] must be an int"),
    (dict(max_iters=0), ValueError, r"options\['max_iters'\] must be >= 1"),
    (dict(step_size=-0.1), ValueError, r"options\['step_size'\]"),
    (dict(interp="quintic"), ValueError, r"options\['interp'\]"),
    (dict(max_ordr=4), ValueError, r"unknown option\(s\) \['max_ordr'\].*max_order"),
])
def test_bad_options(options, error, match):
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(error, match=match):
        node.odeint(field, exact(0.0), t, method="explicit_adams", options=options)


def test_options_of_other_methods_warn():
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.warns(UserWarning, match=r"\['first_step'\] not used by method 'explicit_adams'"):
        node.odeint(field, exact(0.0), t, method="explicit_adams", options=dict(first_step=0.1))
    with pytest.warns(UserWarning, match=r"\['max_order'\] not used by method 'rk4'"):
        node.odeint(field, exact(0.0), t, method="rk4", options=dict(max_order=4))


# --- failures -----------------------------------------------------------------------------

def test_corrector_that_does_not_contract_raises():
    """h * w*_0 * L = 0.01 * 0.375 * 1000 > 1: fixed-point iteration diverges."""
    y0 = torch.tensor([1.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(node.SolverError, match=r"does not contract.*t=0\.02") as info:
        node.odeint(lambda t, y: -1000 * y, y0, t, method="implicit_adams",
                    options=dict(step_size=0.01))
    assert info.value.status is node.Status.NOT_CONVERGED
    assert info.value.t == pytest.approx(0.02)  # the first corrector step (after 2 of rk4)


def test_slow_corrector_keeps_last_iterate_and_warns_once():
    y0 = torch.tensor([1.0], dtype=torch.float64)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    with pytest.warns(UserWarning, match=r"max_iters=1 evaluations in 18 of 20 steps") as rec:
        ys = node.odeint(lambda t, y: -y, y0, t, method="implicit_adams",
                         options=dict(step_size=0.1, max_iters=1))
    assert len([w for w in rec if "corrector" in str(w.message)]) == 1
    assert abs(ys[-1].item() - math.exp(-2.0)) < 1e-5  # PECE of order 4 still


def test_non_finite_state_raises_with_time():
    def f(t, y):
        return y * float("nan") if t > 0.5 else -y

    y0 = torch.tensor([1.0], dtype=torch.float64)
    with pytest.raises(node.SolverError, match=r"non-finite.*t=0\.6") as info:
        node.odeint(f, y0, torch.tensor([0.0, 1.0], dtype=torch.float64),
                    method="explicit_adams", options=dict(step_size=0.1))
    assert info.value.status is node.Status.NON_FINITE


def test_max_num_steps():
    y0 = torch.tensor([1.0], dtype=torch.float64)
    sol = node.solve(lambda t, y: -y, y0, torch.tensor([0.0, 1.0], dtype=torch.float64),
                     method="explicit_adams", options=dict(step_size=0.01, max_num_steps=50),
                     on_failure="return")
    assert sol.status is node.Status.MAX_STEPS and sol.stats["n_steps"] == 0


# --- gradients ----------------------------------------------------------------------------

class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([[-0.5, 1.0], [-1.0, -0.3]], dtype=torch.float64))

    def forward(self, t, y):
        return torch.tanh(self.w @ y) + 0.1 * t


@pytest.mark.parametrize("gradient", ["direct", "checkpoint", "adjoint"])
@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
def test_gradcheck(method, gradient):
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    opts = dict(step_size=0.05, interp="cubic")

    def run(y0, w):
        def f(t, y):
            return torch.tanh(w @ y) + 0.1 * t

        extra = dict(adjoint_params=(w,)) if gradient == "adjoint" else {}
        return node.solve(f, y0, t, method=method, **TIGHT, options=opts, gradient=gradient,
                          **extra).ys

    y0 = torch.tensor([1.0, -0.5], dtype=torch.float64, requires_grad=True)
    w = Linear().w.detach().clone().requires_grad_(True)
    # The adjoint's gradient is the continuous one, accurate to the method's error (~1e-7).
    tol = dict(atol=1e-5, rtol=1e-4) if gradient == "adjoint" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.autograd.gradcheck(run, (y0, w), **tol)


def test_gradient_modes_agree():
    func = Linear()
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    grads = {}
    for gradient in ("direct", "checkpoint", "adjoint"):
        y0 = torch.tensor([1.0, -0.5], dtype=torch.float64, requires_grad=True)
        func.zero_grad()
        ys = node.solve(func, y0, t, method="explicit_adams", options=dict(step_size=0.01),
                        gradient=gradient).ys
        (ys**2).sum().backward()
        grads[gradient] = (y0.grad.clone(), func.w.grad.clone())
    for a, b in zip(grads["direct"], grads["checkpoint"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for a, b in zip(grads["direct"], grads["adjoint"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_adjoint_through_odeint_adjoint_counts_steps():
    func = Decay()
    steps = []
    func.callback_step_adjoint = lambda t0, y0, dt: steps.append(float(t0))
    y0 = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    ys = node.odeint_adjoint(func, y0, torch.tensor([0.0, 1.0], dtype=torch.float64),
                             method="explicit_adams", options=dict(step_size=0.1),
                             adjoint_params=())
    ys[-1].sum().backward()
    assert len(steps) == 10
    torch.testing.assert_close(y0.grad, torch.full((2,), math.exp(-1.0), dtype=torch.float64),
                               rtol=1e-4, atol=0)  # AB4 at h = 0.1: ~3e-5


# --- events -------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
def test_event_free_fall_with_gradient(method):
    """x(t) = 10 - g t^2 / 2 hits 0 at sqrt(20 / g): exact for order >= 2 and cubic interp."""
    func = FreeFall()
    y0 = torch.tensor([10.0, 0.0], dtype=torch.float64, requires_grad=True)
    t0 = torch.tensor(0.0, dtype=torch.float64)
    event_t, ys = node.odeint_event(func, y0, t0, event_fn=lambda t, y: y[0], method=method,
                                    options=dict(step_size=0.05, interp="cubic"))
    g = func.g.item()
    assert event_t.item() == pytest.approx(math.sqrt(20.0 / g), rel=1e-10)
    assert ys[-1][0].item() == pytest.approx(0.0, abs=1e-9)
    event_t.backward()
    # t* = sqrt(2 x0 / g): dt*/dx0 = 1 / (g t*), dt*/dg = -t* / (2 g)
    ts = math.sqrt(20.0 / g)
    assert y0.grad[0].item() == pytest.approx(1 / (g * ts), rel=1e-8)
    assert func.g.grad.item() == pytest.approx(-ts / (2 * g), rel=1e-8)
