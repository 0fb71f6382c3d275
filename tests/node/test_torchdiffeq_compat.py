"""Calls that torchdiffeq accepts keep working, and keep their meaning, with node.

* a vector field that ignores its state (torchdiffeq's ``ExpODE``) is differentiable in every
  gradient mode;
* a derivative of another floating dtype is cast to the state's;
* complex states (real time), in every gradient mode, with the error measured on magnitudes;
* ``step_size`` given to an adaptive method is ignored with a warning (``adaptive=False`` runs
  it on a fixed grid), and options a method does not use warn instead of raising;
* failures torchdiffeq reports with ``assert`` are ``AssertionError``\\ s here too.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import node

F64, C128 = torch.float64, torch.complex128
MODES = ("direct", "checkpoint", "adjoint")


def _solve(func, y0, t, mode, **kw):
    if mode == "adjoint":
        kw.setdefault("adjoint_params", tuple(func.parameters())
                      if isinstance(func, torch.nn.Module) else ())
    return node.solve(func, y0, t, gradient=mode, **kw).ys


# --- 1. a vector field that ignores its state --------------------------------------------------


class ExpODE(torch.nn.Module):
    """``dy/dt = g(t) = -0.1 exp(-0.1 t)``: no parameters, no use of ``y``."""

    def forward(self, t, y):
        return -0.1 * torch.exp(-0.1 * t) * torch.ones_like(y)


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("t_grad", [False, True])
def test_state_free_func_gradients(mode, method, t_grad):
    g = lambda s: -0.1 * math.exp(-0.1 * s)  # noqa: E731
    y0 = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)
    t = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=F64, requires_grad=t_grad)
    ys = _solve(ExpODE(), y0, t, mode, method=method, rtol=1e-10, atol=1e-12,
                options=dict(step_size=0.01) if method == "rk4" else None)
    exact = y0.detach() + (torch.exp(-0.1 * t.detach()) - math.exp(-0.1))[:, None]
    torch.testing.assert_close(ys.detach(), exact, rtol=0, atol=1e-9)
    seeds = torch.arange(1.0, 9.0, dtype=F64).view(4, 2)
    ys.backward(seeds)
    # y(t_i) = y0 + G(t_i) - G(t_0): the identity in y0; g(t_i) and -g(t_0) in the times.
    torch.testing.assert_close(y0.grad, seeds.sum(0), rtol=0, atol=1e-12)
    if t_grad:
        want = [g(float(s)) * float(w.sum()) for s, w in zip(t.detach(), seeds, strict=True)]
        want[0] = -g(1.0) * float(seeds[1:].sum())
        torch.testing.assert_close(t.grad, torch.tensor(want, dtype=F64), rtol=1e-6, atol=1e-9)


def test_state_free_tuple_state_adjoint():
    y0 = (torch.ones(2, dtype=F64, requires_grad=True), torch.ones(3, dtype=F64,
                                                                   requires_grad=True))
    t = torch.linspace(0, 1, 3, dtype=F64)
    ya, yb = node.odeint_adjoint(lambda t, y: (torch.sin(t).expand(2), torch.cos(t).expand(3)),
                                 y0, t, adjoint_params=())
    (ya.sum() + 2 * yb.sum()).backward()
    torch.testing.assert_close(y0[0].grad, torch.full((2,), 3.0, dtype=F64))
    torch.testing.assert_close(y0[1].grad, torch.full((3,), 6.0, dtype=F64))


# --- 2. a derivative of another dtype ----------------------------------------------------------


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
@pytest.mark.parametrize("mode", MODES)
def test_float64_derivative_of_float32_state_is_cast(method, mode):
    w = torch.tensor(0.7, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, 2.0], requires_grad=True)
    t = torch.linspace(0, 1, 4)
    opts = dict(step_size=0.01) if method == "rk4" else None
    ys = _solve(lambda t, y: -w * y.double(), y0, t, mode, method=method, rtol=1e-6, atol=1e-7,
                options=opts, **(dict(adjoint_params=(w,)) if mode == "adjoint" else {}))
    assert ys.dtype == torch.float32
    exact = torch.exp(-0.7 * t)[:, None] * y0.detach()
    torch.testing.assert_close(ys.detach(), exact, rtol=1e-5, atol=1e-6)
    ys[-1].sum().backward()
    torch.testing.assert_close(y0.grad, torch.full((2,), math.exp(-0.7)), rtol=1e-4, atol=1e-6)
    assert y0.grad.dtype == torch.float32 and w.grad.dtype == F64
    assert w.grad.item() == pytest.approx(-3 * math.exp(-0.7), rel=1e-4)


def test_narrower_derivative_and_tuple_states_are_cast():
    y0 = (torch.ones(2, dtype=F64), torch.ones(3, dtype=F64))
    ya, yb = node.odeint(lambda t, y: (-y[0].float(), -y[1]), y0, torch.linspace(0, 1, 3,
                                                                                 dtype=F64))
    assert ya.dtype == yb.dtype == F64
    torch.testing.assert_close(ya[-1], torch.full((2,), math.exp(-1), dtype=F64), rtol=1e-5,
                               atol=0)


@pytest.mark.parametrize("bad", [torch.int64, C128])
def test_non_floating_derivative_of_real_state_still_raises(bad):
    with pytest.raises(TypeError, match=str(bad).removeprefix("torch.")):
        node.odeint(lambda t, y: (-y).to(bad), torch.ones(2), torch.linspace(0, 1, 3))


def test_wrong_shape_still_raises():
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        node.odeint(lambda t, y: torch.ones(3, dtype=F64), torch.ones(2, dtype=torch.float32),
                    torch.linspace(0, 1, 3))


# --- 3. complex states -------------------------------------------------------------------------


class Rotation(torch.nn.Module):
    """``dy/dt = i w y``: ``y(t) = y0 exp(i w (t - t0))``."""

    def __init__(self, w=1.3):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w, dtype=F64))

    def forward(self, t, y):
        if isinstance(y, tuple):
            return tuple(1j * self.w * part for part in y)
        return 1j * self.w * y


Y0C = (1.0 + 0.0j, 0.3 + 0.7j, -0.5 - 0.2j)


@pytest.mark.parametrize("method,opts", [("dopri5", None), ("tsit5", None),
                                         ("rk4", dict(step_size=0.005))])
def test_complex_state_matches_analytic_solution(method, opts):
    y0 = torch.tensor(Y0C, dtype=C128)
    t = torch.linspace(0, 5, 6, dtype=F64)
    ys = node.odeint(Rotation(), y0, t, method=method, rtol=1e-9, atol=1e-11, options=opts)
    assert ys.dtype == C128 and ys.shape == (6, 3)
    exact = y0 * torch.exp(1.3j * t)[:, None]
    torch.testing.assert_close(ys, exact, rtol=0, atol=1e-7)


def test_complex64_state_and_matrix_shape():
    y0 = torch.tensor([[1 + 1j, 2j], [0.5, -1]], dtype=torch.complex64)
    ys = node.odeint(lambda t, y: 1j * y, y0, torch.linspace(0, 1, 3), rtol=1e-6, atol=1e-7)
    assert ys.dtype == torch.complex64 and ys.shape == (3, 2, 2)
    torch.testing.assert_close(ys[-1], y0 * torch.exp(torch.tensor(1j, dtype=torch.complex64)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_complex_gradients_match_analytic(mode):
    f = Rotation()
    y0 = torch.tensor(Y0C, dtype=C128, requires_grad=True)
    t = torch.tensor([0.0, 1.0, 2.5], dtype=F64, requires_grad=True)
    a = torch.tensor([0.4 - 1j, 2.0 + 0.5j, -1.0 + 0.3j], dtype=C128)
    ys = _solve(f, y0, t, mode, rtol=1e-10, atol=1e-12)
    # L = Re(sum(a * y(T))) with y(T) = y0 exp(i w T).
    loss = (a * ys[-1]).real.sum() + ys[1].abs().square().sum()
    loss.backward()
    w, big_t = 1.3, 2.5
    phase = torch.exp(torch.tensor(1j * w * big_t, dtype=C128))
    # z.grad = dL/dx + i dL/dy: conj(b) for Re(b z); 2 z for |z|^2 (|y(1)| = |y0|).
    torch.testing.assert_close(y0.grad, (a * phase).conj() + 2 * y0.detach(), rtol=1e-7,
                               atol=1e-7)
    dl_dw = (a * 1j * big_t * y0.detach() * phase).real.sum()
    assert f.w.grad.item() == pytest.approx(dl_dw.item(), rel=1e-6)
    dl_dT = (a * 1j * w * y0.detach() * phase).real.sum()
    assert t.grad[-1].item() == pytest.approx(dl_dT.item(), rel=1e-6)
    assert t.grad[1].item() == pytest.approx(0.0, abs=1e-7)
    assert t.grad[0].item() == pytest.approx(-dl_dT.item(), rel=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_complex_gradcheck_on_fixed_grid(mode):
    y0 = torch.tensor([1.0 + 0.5j, -0.3 + 0.2j], dtype=C128, requires_grad=True)
    c = torch.tensor(0.4 - 0.9j, dtype=C128, requires_grad=True)
    t = torch.linspace(0, 1, 3, dtype=F64)

    def func(t, y):
        return c * y + 0.3j * y.conj() * torch.sin(t)

    def run(y0, c_):
        nonlocal c
        c = c_
        kw = dict(adjoint_params=(c_,)) if mode == "adjoint" else {}
        return node.solve(func, y0, t, method="rk4", options=dict(step_size=0.01), gradient=mode,
                          **kw).ys

    atol = 1e-5 if mode == "adjoint" else 1e-6  # the continuous adjoint: O(h^4) off
    assert torch.autograd.gradcheck(run, (y0, c), atol=atol)


def test_complex_tuple_state_all_modes_agree():
    f = Rotation(0.8)
    t = torch.linspace(0, 2, 4, dtype=F64)
    grads = {}
    for mode in MODES:
        f.zero_grad()
        y0 = (torch.tensor([1 + 1j], dtype=C128, requires_grad=True),
              torch.tensor([[0.5j, 2.0]], dtype=C128, requires_grad=True))
        ya, yb = _solve(f, y0, t, mode, rtol=1e-10, atol=1e-12)
        assert ya.shape == (4, 1) and yb.shape == (4, 1, 2) and yb.dtype == C128
        torch.testing.assert_close(yb[-1], y0[1].detach() * complex(math.cos(1.6),
                                                                    math.sin(1.6)), rtol=0,
                                   atol=1e-8)
        (ya.real.sum() + yb.imag.square().sum()).backward()
        grads[mode] = (y0[0].grad, y0[1].grad, f.w.grad.clone())
    for mode in ("checkpoint", "adjoint"):
        for g, ref in zip(grads[mode], grads["direct"], strict=True):
            torch.testing.assert_close(g, ref, rtol=1e-6, atol=1e-7)


def test_complex_error_test_uses_magnitudes():
    """The steps do not depend on the phase of the state (and match torchdiffeq's)."""
    t = torch.linspace(0, 20, 5, dtype=F64)
    y0 = torch.tensor([1 + 0j, 0.3 + 0.7j], dtype=C128)
    stats = [node.solve(lambda t, y: 1j * y, y0 * phase, t).stats
             for phase in (1.0, complex(math.cos(0.7), math.sin(0.7)))]
    assert stats[0] == stats[1]
    # Parts measured separately need about 1.4x the evaluations here (1046 against 752).
    real = node.solve(lambda t, y: torch.stack([-y[:, 1], y[:, 0]], 1),
                      torch.view_as_real(y0), t).stats
    assert stats[0]["nfe"] < 0.8 * real["nfe"]
    torchdiffeq = pytest.importorskip("torchdiffeq")
    calls = []
    torchdiffeq.odeint(lambda t, y: calls.append(1) or 1j * y, y0, t, rtol=1e-7, atol=1e-9)
    assert stats[0]["nfe"] == len(calls)


def test_complex_user_norm_callbacks_tolerances_and_events():
    seen = {}

    class Func(torch.nn.Module):
        def forward(self, t, y):
            return 1j * y

        def callback_accept_step(self, t, y, dt):
            seen["callback"] = y.dtype

    def norm(err):
        seen["norm"] = err.dtype
        return err.abs().max()

    y0 = torch.tensor([1 + 0j, 2j], dtype=C128)
    t = torch.linspace(0, 1, 3, dtype=F64)
    ys = node.odeint(Func(), y0, t, rtol=torch.tensor([1e-8, 1e-6], dtype=F64), atol=1e-9,
                     options=dict(norm=norm))
    assert seen == {"callback": C128, "norm": C128}
    torch.testing.assert_close(ys[-1], y0 * complex(math.cos(1), math.sin(1)), rtol=0, atol=1e-5)
    event_t, ys = node.odeint(lambda t, y: 1j * y, torch.tensor([1 + 0j], dtype=C128),
                              torch.tensor([0.0, 3.0], dtype=F64), event_fn=lambda t, y: y.real)
    assert event_t.item() == pytest.approx(math.pi / 2, abs=1e-7)
    assert ys.dtype == C128 and abs(ys[-1].item() - 1j) < 1e-6


def test_mixed_real_and_complex_tuple_raises():
    with pytest.raises(TypeError, match=r"y0\[1\].*float64.*complex128"):
        node.odeint(lambda t, y: y, (torch.ones(1, dtype=C128), torch.ones(1, dtype=F64)),
                    torch.linspace(0, 1, 2, dtype=F64))


# --- 4. step_size keeps torchdiffeq's meaning ---------------------------------------------------


def test_step_size_on_adaptive_method_warns_and_stays_adaptive():
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    t = torch.linspace(0, 2, 5, dtype=F64)
    field = lambda t, y: torch.stack([y[1], -torch.sin(y[0])])  # noqa: E731
    plain = node.solve(field, y0, t, method="dopri5")
    with pytest.warns(UserWarning, match="step_size"):
        given = node.solve(field, y0, t, method="dopri5", options=dict(step_size=0.1))
    assert given.stats == plain.stats
    torch.testing.assert_close(given.ys, plain.ys, rtol=0, atol=0)
    # The fixed-grid run of an adaptive method has its own option.
    grid = node.solve(field, y0, t, method="dopri5", options=dict(adaptive=False, step_size=0.1))
    assert grid.stats["n_steps"] == 20 and grid.stats["n_rejected"] == 0
    same = node.solve(field, y0, t, method="dopri5", options=node.FixedGridOptions(step_size=0.1))
    torch.testing.assert_close(grid.ys, same.ys, rtol=0, atol=0)


def test_adaptive_option_values_checked():
    y0, t = torch.ones(1, dtype=F64), torch.linspace(0, 1, 2, dtype=F64)
    with pytest.raises(TypeError, match="adaptive"):
        node.odeint(lambda t, y: -y, y0, t, options=dict(adaptive="no"))
    with pytest.raises(ValueError, match="adaptive.*rk4"):
        node.odeint(lambda t, y: -y, y0, t, method="rk4", options=dict(adaptive=True))


def test_adjoint_of_adaptive_method_on_grid_keeps_the_grid():
    f = Rotation(0.5)
    y0 = torch.tensor([1.0 + 0j], dtype=C128, requires_grad=True)
    t = torch.linspace(0, 1, 3, dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = node.solve(f, y0, t, method="dopri5", gradient="adjoint",
                         options=dict(adaptive=False, step_size=0.125))
        sol.ys[-1].real.sum().backward()
    assert sol.stats["n_steps"] == 8 and sol.stats["n_steps_backward"] == 8


# --- 5. options a method does not use -----------------------------------------------------------


@pytest.mark.parametrize("method,key,value", [
    ("dopri5", "perturb", True), ("dopri5", "interp", "cubic"),
    ("dopri5", "grid_constructor", lambda f, y0, t: t), ("dopri5", "max_iters", 3),
    ("rk4", "first_step", 0.1), ("rk4", "safety", 0.8), ("rk4", "norm", lambda x: x.abs().max()),
    ("euler", "max_iters", 3), ("rk4", "step_t", [0.5]),
])
def test_unused_torchdiffeq_option_warns(method, key, value):
    y0, t = torch.ones(2, dtype=F64), torch.linspace(0, 1, 3, dtype=F64)
    ref = node.odeint(lambda t, y: -y, y0, t, method=method)
    with pytest.warns(UserWarning, match=key):
        ys = node.odeint(lambda t, y: -y, y0, t, method=method, options={key: value})
    torch.testing.assert_close(ys, ref, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_typo_option_still_raises(method):
    with pytest.raises(ValueError, match="step_sise"):
        node.odeint(lambda t, y: -y, torch.ones(1), torch.linspace(0, 1, 2), method=method,
                    options=dict(step_sise=0.1))


# --- 6. AssertionError for torchdiffeq's asserts ------------------------------------------------


def test_solver_error_is_an_assertion_error():
    assert issubclass(node.SolverError, AssertionError)
    assert issubclass(node.SolverError, RuntimeError)
    with pytest.raises(AssertionError, match="max_num_steps"):
        node.odeint(lambda t, y: -y, torch.ones(1), torch.linspace(0, 10, 2),
                    options=dict(max_num_steps=2))


def test_non_monotonic_times_raise_value_and_assertion_error():
    t = torch.tensor([0.0, 1.0, 0.5])
    for kind in (AssertionError, ValueError, node.TimeOrderError):
        with pytest.raises(kind, match="strictly increasing or strictly decreasing"):
            node.odeint(lambda t, y: -y, torch.ones(1), t)


def test_complex_failure_returns_and_raises_complex_partial_solution():
    y0 = torch.tensor([1 + 0j], dtype=C128)
    t = torch.linspace(0, 50, 6, dtype=F64)
    sol = node.solve(lambda t, y: 1j * y, y0, t, options=dict(max_num_steps=150),
                     on_failure="return")
    assert not sol.success and sol.ys.dtype == C128 and 1 < sol.ys.shape[0] < 6
    with pytest.raises(node.SolverError) as exc:
        node.solve(lambda t, y: 1j * y, y0, t, options=dict(max_num_steps=150))
    assert exc.value.solution.ys.dtype == C128
