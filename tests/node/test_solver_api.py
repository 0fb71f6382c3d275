"""The public API: statistics, options, callbacks, user methods, dtype/device conventions, and
drop-in compatibility with torchdiffeq (the ``torchdiffeq`` fixture of conftest.py)."""

from __future__ import annotations

import math
import uuid
from fractions import Fraction as F

import numpy as np
import pytest
import torch

import node
from tests.problems import (
    ADAPTIVE,
    ALL_METHODS,
    FIXED,
    FORCED,
    LINEAR,
    LOTKA_VOLTERRA,
    VAN_DER_POL,
    CountingFunc,
    RecordingFunc,
    max_error,
    reference,
)

F64 = torch.float64

# New evaluations per step once the first derivative is known (FSAL or reused last stage).
EVALS_PER_STEP = dict(adaptive_heun=1, fehlberg2=2, bosh3=3, dopri5=6, tsit5=6, dopri8=13)
# Moderate tolerances per method (low-order methods need many steps at tight ones).
MODERATE = dict(adaptive_heun=1e-4, fehlberg2=1e-5, bosh3=1e-5, dopri5=1e-6, tsit5=1e-6,
                dopri8=1e-6)


# --- statistics --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ADAPTIVE)
def test_nfe_does_not_depend_on_number_of_output_times(method):
    p = VAN_DER_POL
    f2, f100 = CountingFunc(p.func), CountingFunc(p.func)
    tol = MODERATE[method]
    s2 = node.solve(f2, p.y0_tensor(), p.times(2), method=method, rtol=tol, atol=tol)
    s100 = node.solve(f100, p.y0_tensor(), p.times(100), method=method, rtol=tol, atol=tol)
    assert s2.stats == s100.stats
    assert f2.n == f100.n == s2.stats["nfe"]
    torch.testing.assert_close(s2.ys[-1], s100.ys[-1], rtol=0, atol=1e-14)
    # Output times strictly inside the span are never evaluation times of their own.
    assert max(f100.times) >= p.t1


@pytest.mark.parametrize("method", ALL_METHODS)
def test_stats_invariants_and_nfe_equals_calls(method):
    f = CountingFunc(LOTKA_VOLTERRA.func)
    kwargs = dict(options=dict(step_size=0.05)) if method in FIXED else {}
    sol = node.solve(f, LOTKA_VOLTERRA.y0_tensor(), LOTKA_VOLTERRA.times(7), method=method,
                     rtol=1e-5, atol=1e-5, **kwargs)
    st = sol.stats
    assert {"nfe", "n_steps", "n_accepted", "n_rejected"} <= set(st)
    assert st["n_steps"] == st["n_accepted"] + st["n_rejected"]
    assert st["nfe"] == f.n
    assert sol.status is node.Status.SUCCESS and sol.success and sol.message == ""
    if method in FIXED:
        stages = node.get_tableau(method).stages
        assert st["n_steps"] == 120 and st["n_rejected"] == 0
        assert st["nfe"] == stages * 120


@pytest.mark.parametrize("method", ADAPTIVE)
def test_adaptive_nfe_formula(method):
    """k0 once, one evaluation for the automatic first step, then EVALS_PER_STEP per step
    (accepted or rejected: the first stage is never recomputed)."""
    p = VAN_DER_POL
    tol = MODERATE[method]
    auto = node.solve(p.func, p.y0_tensor(), p.times(5), method=method, rtol=tol, atol=tol)
    assert auto.stats["n_rejected"] > 0  # the formula is checked with rejections too
    assert auto.stats["nfe"] == EVALS_PER_STEP[method] * auto.stats["n_steps"] + 2
    given = node.solve(p.func, p.y0_tensor(), p.times(5), method=method, rtol=tol, atol=tol,
                       options=dict(first_step=0.01))
    assert given.stats["nfe"] == EVALS_PER_STEP[method] * given.stats["n_steps"] + 1


def test_nfe_counts_time_gradient_evaluations():
    f = CountingFunc(FORCED.func)
    t = FORCED.times(4).requires_grad_()
    sol = node.solve(f, FORCED.y0_tensor(), t)
    assert sol.stats["nfe"] == f.n


# --- options ---------------------------------------------------------------------------------


def _sign_field(t, y):
    """Discontinuous in t: +1 before t = 1, -1 from t = 1 on (exact: y = 1 - |t - 1|)."""
    return torch.ones_like(y) if t < 1.0 else -torch.ones_like(y)


@pytest.mark.parametrize("method", ["adaptive_heun", "bosh3", "dopri5", "tsit5", "dopri8"])
def test_jump_t_makes_discontinuity_cheap_and_exact(method):
    t = torch.linspace(0, 3, 7, dtype=F64)
    exact = torch.where(t < 1, t, 2 - t).unsqueeze(-1)  # y0 = 0
    y0 = torch.zeros(1, dtype=F64)
    plain = node.solve(_sign_field, y0, t, method=method, rtol=1e-8, atol=1e-8)
    f = CountingFunc(_sign_field)
    jump = node.solve(f, y0, t, method=method, rtol=1e-8, atol=1e-8,
                      options=dict(jump_t=[1.0]))
    assert max_error(jump.ys, exact.numpy()) < 1e-13
    assert max_error(plain.ys, exact.numpy()) > 100 * max_error(jump.ys, exact.numpy())
    assert jump.stats["nfe"] < plain.stats["nfe"] / 3
    assert jump.stats["n_rejected"] == 0
    # func is evaluated just before and just after the jump, never exactly at it.
    assert 1.0 not in f.times
    assert math.nextafter(1.0, 0.0) in f.times and math.nextafter(1.0, 2.0) in f.times


def test_jump_t_backwards_in_time():
    t = torch.tensor([3.0, 0.0], dtype=F64)
    y0 = torch.tensor([-1.0], dtype=F64)  # y(3) = -1 for y = 1 - |t - 1|
    sol = node.solve(_sign_field, y0, t, rtol=1e-8, atol=1e-8,
                     options=dict(jump_t=torch.tensor([1.0])))
    assert abs(sol.ys[-1].item() - 0.0) < 1e-13
    assert sol.stats["n_rejected"] == 0


@pytest.mark.parametrize("reverse", [False, True])
def test_step_t_steps_onto_given_times(reverse):
    p = FORCED
    f = RecordingFunc(p.func)
    stops = [1.2345, 4.321]
    t = p.times(3, reverse=reverse)
    sol = node.solve(f, p.y0_tensor(), t, rtol=1e-6, atol=1e-6, options=dict(step_t=stops))
    starts = [a[0] for a in f.accepted]
    for s in stops:
        assert s in starts
    if not reverse:
        assert max_error(sol.ys, reference(p, t)) < 1e-4


def test_step_t_outside_span_is_ignored():
    p = FORCED
    base = node.solve(p.func, p.y0_tensor(), p.times(3), rtol=1e-6, atol=1e-6)
    outside = node.solve(p.func, p.y0_tensor(), p.times(3), rtol=1e-6, atol=1e-6,
                         options=dict(step_t=[-1.0, 100.0]))
    assert base.stats == outside.stats


def test_first_step():
    p = VAN_DER_POL
    f = RecordingFunc(p.func)
    node.solve(f, p.y0_tensor(), p.times(3), options=dict(first_step=0.0123))
    assert f.steps[0] == (0.0, pytest.approx(0.0123, rel=1e-15))
    # No evaluation is spent on choosing the first step: the second call is a stage of it.
    c1 = node.get_tableau("dopri5").c[1]
    assert f.times[1] == pytest.approx(c1 * 0.0123, rel=1e-12)


def test_automatic_first_step_matches_torchdiffeq(torchdiffeq):
    td = torchdiffeq
    p = VAN_DER_POL
    fn, ft = RecordingFunc(p.func), RecordingFunc(p.func)
    node.odeint(fn, p.y0_tensor(), p.times(3), rtol=1e-6, atol=1e-8)
    td.odeint(ft, p.y0_tensor(), p.times(3), rtol=1e-6, atol=1e-8)
    assert fn.steps[0][1] == pytest.approx(ft.steps[0][1], rel=1e-10)


@pytest.mark.parametrize("reverse", [False, True])
def test_max_step_respected(reverse):
    p = VAN_DER_POL
    f = RecordingFunc(p.func)
    sol = node.solve(f, p.y0_tensor(), p.times(3, reverse=reverse), rtol=1e-3, atol=1e-3,
                     options=dict(max_step=0.05))
    dts = [dt for _, dt in f.steps]
    assert max(abs(dt) for dt in dts) <= 0.05 * (1 + 1e-12)
    assert all((dt < 0) == reverse for dt in dts)
    assert sol.stats["n_accepted"] >= 6.0 / 0.05


@pytest.mark.parametrize("problem", [VAN_DER_POL, LOTKA_VOLTERRA, FORCED], ids=lambda p: p.name)
def test_pid_controller_accurate(problem):
    t = problem.times(20)
    ref = reference(problem, t)
    integral = node.solve(problem.func, problem.y0_tensor(), t, rtol=1e-8, atol=1e-8)
    pid = node.solve(problem.func, problem.y0_tensor(), t, rtol=1e-8, atol=1e-8,
                     options=dict(controller="pid"))
    assert pid.success
    assert max_error(pid.ys, ref) < 2 * max_error(integral.ys, ref) + 1e-8
    # It is a different controller: fewer rejections, and not wildly more work.
    assert pid.stats["n_rejected"] <= integral.stats["n_rejected"]
    assert pid.stats["nfe"] < 1.5 * integral.stats["nfe"]
    assert pid.stats != integral.stats or problem is FORCED


def test_pid_gains_change_the_steps():
    p = VAN_DER_POL
    a = node.solve(p.func, p.y0_tensor(), p.times(5), options=dict(controller="pid"))
    b = node.solve(p.func, p.y0_tensor(), p.times(5),
                   options=dict(controller="pid", pcoeff=0.1, icoeff=0.4, dcoeff=0.05))
    assert a.stats != b.stats
    torch.testing.assert_close(a.ys, b.ys, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_float32_time_dtype(method):
    p = FORCED
    f = CountingFunc(p.func)
    opts = dict(dtype=torch.float32)
    if method == "rk4":
        opts["step_size"] = 0.01
    sol = node.solve(f, p.y0_tensor(), p.times(7), method=method, rtol=1e-8, atol=1e-8,
                     options=opts)
    assert f.time_dtypes == {torch.float32}
    assert sol.ys.dtype == F64
    assert max_error(sol.ys, reference(p, p.times(7))) < 1e-5


def test_float32_everything():
    """float32 state, float32 t and float32 time (as on Apple MPS)."""
    p = VAN_DER_POL
    f = CountingFunc(p.func)
    t = p.times(7, dtype=torch.float32)
    sol = node.solve(f, p.y0_tensor(torch.float32), t, rtol=1e-5, atol=1e-6,
                     options=dict(dtype=torch.float32))
    assert f.time_dtypes == {torch.float32}
    assert sol.ys.dtype == torch.float32 and sol.ts.dtype == torch.float32
    assert max_error(sol.ys, reference(p, t)) < 1e-3


def test_norm_option_is_used():
    p = VAN_DER_POL
    received = []

    def max_norm(x):
        received.append(x.shape)
        return x.abs().max()

    rms = node.solve(p.func, p.y0_tensor(), p.times(5), rtol=1e-6, atol=1e-6)
    mx = node.solve(p.func, p.y0_tensor(), p.times(5), rtol=1e-6, atol=1e-6,
                    options=dict(norm=max_norm))
    assert received and all(s == (2,) for s in received)
    # The max norm is >= the RMS norm: stricter, so at least as many steps.
    assert mx.stats["n_steps"] > rms.stats["n_steps"]
    assert len(received) >= mx.stats["n_steps"]


def test_norm_option_receives_tuples_for_tuple_state():
    received = []

    def norm(x):
        received.append(type(x))
        return torch.stack([v.abs().max() for v in x]).max()

    node.solve(lambda t, s: (s[1], -s[0]), (torch.ones(2, dtype=F64), torch.zeros(2, dtype=F64)),
               torch.tensor([0.0, 1.0], dtype=F64), options=dict(norm=norm))
    assert received and set(received) == {tuple}


def test_step_callbacks_are_called():
    p = VAN_DER_POL
    f = RecordingFunc(p.func)
    sol = node.solve(f, p.y0_tensor(), p.times(5), rtol=1e-6, atol=1e-6)
    st = sol.stats
    assert len(f.steps) == st["n_steps"]
    assert len(f.accepted) == st["n_accepted"]
    assert len(f.rejected) == st["n_rejected"] > 0
    # Accepted steps chain: each starts where the previous one ended, from t0 past t1.
    starts = [a[0] for a in f.accepted]
    for (t0, _, dt), t_next in zip(f.accepted, starts[1:], strict=False):
        assert t0 + dt == pytest.approx(t_next, abs=1e-12)
    assert starts[0] == 0.0 and starts[-1] + f.accepted[-1][2] >= p.t1
    assert torch.equal(f.accepted[0][1], p.y0_tensor())


def test_step_callbacks_on_fixed_grid_and_backwards():
    f = RecordingFunc(FORCED.func)
    node.solve(f, FORCED.y0_tensor(), torch.tensor([1.0, 0.0], dtype=F64), method="rk4",
               options=dict(step_size=0.25))
    assert [s[0] for s in f.steps] == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert all(dt == pytest.approx(-0.25) for _, dt in f.steps)


def _kink_field(t, y):
    return torch.ones_like(y) if t <= 1.0 else -torch.ones_like(y)


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_perturb_evaluates_on_the_correct_side_of_grid_points(method):
    t = torch.tensor([0.0, 2.0], dtype=F64)
    y0 = torch.zeros(1, dtype=F64)
    perturbed = node.odeint(_kink_field, y0, t, method=method,
                            options=dict(step_size=0.25, perturb=True))
    # With perturb, every step of [1, 2] sees the field after the kink: y(2) = 1 - 1 = 0.
    assert abs(perturbed[-1].item()) < 1e-14
    plain = node.odeint(_kink_field, y0, t, method=method, options=dict(step_size=0.25))
    if method == "euler":  # the step from t = 1 uses f(1) = +1 without perturb
        assert plain[-1].item() == pytest.approx(0.5)


def test_grid_constructor():
    calls = []
    grid = torch.tensor([0.0, 0.1, 0.3, 0.7, 1.0], dtype=F64)

    def constructor(func, y0, t):
        calls.append((func, y0, t))
        return grid

    f = CountingFunc(lambda t, y: -y)
    y0 = torch.ones(1, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    sol = node.solve(f, y0, t, method="euler", options=dict(grid_constructor=constructor))
    assert len(calls) == 1 and calls[0][1] is y0 and calls[0][2] is t
    assert f.times == pytest.approx([0.0, 0.1, 0.3, 0.7])
    assert sol.ys[-1].item() == pytest.approx(0.9 * 0.8 * 0.6 * 0.7, rel=1e-14)
    # An adaptive method asked to (adaptive=False) runs on that grid too.
    sol5 = node.solve(lambda t, y: -y, y0, t, method="dopri5",
                      options=dict(adaptive=False, grid_constructor=constructor))
    assert sol5.stats["n_steps"] == 4


def test_register_user_method_ralston():
    name = f"ralston_{uuid.uuid4().hex[:8]}"
    tab = node.ButcherTableau(name=name, order=2, c=(0, F(2, 3)), a=((), (F(2, 3),)),
                              b=(F(1, 4), F(3, 4)), source="Ralston (1962)")
    node.register_method(tab)
    assert name in node.available_methods()
    assert node.get_tableau(name) is tab
    # One step by hand.
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    h = 0.1
    k1 = LINEAR.func(torch.tensor(0.0), y0)
    k2 = LINEAR.func(torch.tensor(2 * h / 3), y0 + 2 * h / 3 * k1)
    ys = node.odeint(LINEAR.func, y0, torch.tensor([0.0, h], dtype=F64), method=name)
    # Equal to round-off (a few ulps; the solver sums the stages in a BLAS kernel, whose rounding
    # varies by CPU); a wrong coefficient would be off by ~1e-3.
    torch.testing.assert_close(ys[-1], y0 + h * (k1 / 4 + 3 * k2 / 4), rtol=0, atol=1e-14)
    # Second order.
    t = torch.tensor([0.0, 2.0], dtype=F64)
    exact = LINEAR.exact(np.array([2.0]))[0]
    e1 = max_error(node.odeint(LINEAR.func, y0, t, method=name, options=dict(step_size=0.02))[-1],
                   exact)
    e2 = max_error(node.odeint(LINEAR.func, y0, t, method=name, options=dict(step_size=0.01))[-1],
                   exact)
    assert math.log2(e1 / e2) == pytest.approx(2.0, abs=0.1)
    # A tableau object can be passed directly too.
    direct = node.odeint(LINEAR.func, y0, torch.tensor([0.0, h], dtype=F64), method=tab)
    torch.testing.assert_close(direct, ys, rtol=0, atol=0)
    # Duplicates raise unless overwrite=True; builtins are protected the same way.
    with pytest.raises(ValueError, match=name):
        node.register_method(tab)
    node.register_method(tab, overwrite=True)
    dopri5 = node.get_tableau("dopri5")
    with pytest.raises(ValueError, match="dopri5"):
        node.register_method(dopri5)
    with pytest.raises(TypeError):
        node.register_method("rk4")


def test_register_user_adaptive_method():
    """A user's embedded pair (Heun-Euler in FSAL form) runs adaptively with dense output."""
    name = f"heun_euler_{uuid.uuid4().hex[:8]}"
    tab = node.ButcherTableau(
        name=name, order=2, c=(0, 1, 1), a=((), (1,), (F(1, 2), F(1, 2))),
        b=(F(1, 2), F(1, 2), 0), b_error=(F(-1, 2), F(1, 2), 0),
    )
    node.register_method(tab)
    p = FORCED
    sol = node.solve(p.func, p.y0_tensor(), p.times(20), method=name, rtol=1e-5, atol=1e-5)
    assert sol.stats["n_steps"] > 10
    assert max_error(sol.ys, reference(p, p.times(20))) < 1e-3


def test_invalid_tableau_rejected():
    with pytest.raises(ValueError, match="sum"):
        node.ButcherTableau(name="bad", order=2, c=(0, 1), a=((), (1,)), b=(0.5, 0.6))
    with pytest.raises(ValueError, match="row"):
        node.ButcherTableau(name="bad", order=2, c=(0, 0.5), a=((), (1,)), b=(0.5, 0.5))


# --- output conventions, dtype and device ------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("method", ["dopri5", "rk4"])
@pytest.mark.parametrize("shape", [(), (3,), (2, 3)], ids=["scalar", "vector", "matrix"])
def test_output_shape_dtype_device_and_first_entry(shape, method, dtype):
    y0 = torch.linspace(0.5, 1.5, max(1, math.prod(shape)), dtype=dtype).reshape(shape)
    t = torch.linspace(0, 1, 4, dtype=dtype)
    opts = dict(step_size=0.01) if method == "rk4" else None
    ys = node.odeint(lambda t, y: -y, y0, t, method=method, options=opts)
    assert ys.shape == (4, *shape)
    assert ys.dtype == dtype and ys.device == y0.device
    assert torch.equal(ys[0], y0)
    torch.testing.assert_close(ys[-1], y0 * math.exp(-1.0), rtol=1e-5, atol=1e-6)


def test_state_dtype_kept_with_time_of_other_dtype():
    y0 = torch.ones(2, dtype=F64)
    ys = node.odeint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0], dtype=torch.float32))
    assert ys.dtype == F64
    y32 = torch.ones(2, dtype=torch.float32)
    ys = node.odeint(lambda t, y: -y, y32, torch.tensor([0.0, 1.0], dtype=F64))
    assert ys.dtype == torch.float32


def test_single_output_time_returns_y0():
    y0 = torch.ones(2, dtype=F64)
    f = CountingFunc(lambda t, y: -y)
    sol = node.solve(f, y0, torch.tensor([0.5], dtype=F64))
    assert sol.ys.shape == (1, 2) and torch.equal(sol.ys[0], y0) and f.n == 0


def test_solution_ts_is_t():
    t = torch.linspace(0, 1, 5, dtype=F64)
    sol = node.solve(lambda t, y: -y, torch.ones(1, dtype=F64), t)
    assert torch.equal(sol.ts, t)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "rk4"])
def test_cuda(method):
    dev = torch.device("cuda")
    p = VAN_DER_POL
    t = p.times(10).to(dev)
    opts = dict(step_size=0.01) if method == "rk4" else None
    sol = node.solve(p.func, p.y0_tensor().to(dev), t, method=method, rtol=1e-8, atol=1e-8,
                     options=opts)
    assert sol.ys.device.type == "cuda" and sol.ys.dtype == F64
    cpu = node.solve(p.func, p.y0_tensor(), t.cpu(), method=method, rtol=1e-8, atol=1e-8,
                     options=opts)
    torch.testing.assert_close(sol.ys.cpu(), cpu.ys, rtol=1e-9, atol=1e-9)
    assert sol.stats["nfe"] == cpu.stats["nfe"]
    y32 = node.odeint(p.func, p.y0_tensor(torch.float32).to(dev), t.float(), method=method,
                      options=opts)
    assert y32.dtype == torch.float32 and y32.device.type == "cuda"


# --- compatibility with torchdiffeq -------------------------------------------------------------

TD_CASES = [
    (method, tol)
    for method, tols in (
        ("adaptive_heun", (1e-3, 1e-4)),
        ("fehlberg2", (1e-4, 1e-6)),
        ("bosh3", (1e-4, 1e-6)),
        ("dopri5", (1e-4, 1e-6, 1e-8)),
        ("dopri8", (1e-4, 1e-6, 1e-8)),
    )
    for tol in tols
]


@pytest.mark.parametrize("problem", [VAN_DER_POL, LOTKA_VOLTERRA, FORCED], ids=lambda p: p.name)
@pytest.mark.parametrize("method,tol", TD_CASES)
def test_nfe_and_accuracy_not_worse_than_torchdiffeq(torchdiffeq, method, tol, problem):
    t = problem.times(20)
    fn, ft = CountingFunc(problem.func), CountingFunc(problem.func)
    ours = node.odeint(fn, problem.y0_tensor(), t, method=method, rtol=tol, atol=tol)
    theirs = torchdiffeq.odeint(ft, problem.y0_tensor(), t, method=method, rtol=tol, atol=tol)
    assert fn.n <= ft.n, f"{method}: node {fn.n} evaluations, torchdiffeq {ft.n}"
    ref = reference(problem, t)
    e_ours, e_theirs = max_error(ours, ref), max_error(theirs, ref)
    assert e_ours <= 1.5 * e_theirs + 1e-12, (e_ours, e_theirs)


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun2", "heun3", "rk4"])
@pytest.mark.parametrize("interp", ["linear", "cubic"])
def test_fixed_step_values_equal_torchdiffeq(torchdiffeq, method, interp):
    p = VAN_DER_POL
    t = torch.tensor([0.0, 0.33, 1.0, 1.71, 2.5], dtype=F64)
    for step in (0.1, 0.07):
        opts = dict(step_size=step, interp=interp)
        ours = node.odeint(p.func, p.y0_tensor(), t, method=method, options=opts)
        theirs = torchdiffeq.odeint(p.func, p.y0_tensor(), t, method=method, options=opts)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_fixed_step_perturb_and_grid_constructor_equal_torchdiffeq(torchdiffeq, method):
    t = torch.tensor([0.0, 0.6, 2.0], dtype=F64)
    y0 = torch.zeros(1, dtype=F64)
    for opts in (dict(step_size=0.25, perturb=True),
                 dict(grid_constructor=lambda f, y, tt: torch.linspace(0, 2, 9, dtype=F64))):
        ours = node.odeint(_kink_field, y0, t, method=method, options=opts)
        theirs = torchdiffeq.odeint(_kink_field, y0, t, method=method, options=opts)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_fixed_grid_without_step_size_equals_torchdiffeq(torchdiffeq):
    t = torch.linspace(0, 2, 11, dtype=F64)
    ours = node.odeint(FORCED.func, FORCED.y0_tensor(), t, method="rk4")
    theirs = torchdiffeq.odeint(FORCED.func, FORCED.y0_tensor(), t, method="rk4")
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_adaptive_values_equal_torchdiffeq(torchdiffeq, method):
    """Same tableau, error test and controller: the same steps up to round-off (the error
    estimate cancels digits, so step sizes agree to ~1e-8 relative, not to the last bit)."""
    p = LOTKA_VOLTERRA
    t = torch.tensor([0.0, 2.0, 6.0], dtype=F64)
    fn, ft = CountingFunc(p.func), CountingFunc(p.func)
    ours = node.odeint(fn, p.y0_tensor(), t, method=method, rtol=1e-6, atol=1e-8)
    theirs = torchdiffeq.odeint(ft, p.y0_tensor(), t, method=method, rtol=1e-6, atol=1e-8)
    assert fn.n == ft.n
    assert fn.times == pytest.approx(ft.times, rel=1e-6, abs=1e-12)
    # The value at t = 6 is interpolated; torchdiffeq's bosh3 interpolant is a different
    # (less accurate) one, so only dopri5's values agree.
    if method == "dopri5":
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_output_conventions_equal_torchdiffeq(torchdiffeq, dtype):
    y0 = torch.ones(2, 3, dtype=dtype)
    t = torch.linspace(0, 1, 4, dtype=dtype)
    for method, opts in (("dopri5", None), ("rk4", dict(step_size=0.1))):
        ours = node.odeint(lambda t, y: -y, y0, t, method=method, options=opts)
        theirs = torchdiffeq.odeint(lambda t, y: -y, y0, t, method=method, options=opts)
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        assert ours.device == theirs.device
        assert torch.equal(ours[0], y0) and torch.equal(theirs[0], y0)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    # Tuple states: a tuple of [len(t), *shape_i] tensors.
    state = (torch.ones(2, dtype=dtype), torch.ones(3, 1, dtype=dtype))
    ours = node.odeint(lambda t, s: (-s[0], -2 * s[1]), state, t)
    theirs = torchdiffeq.odeint(lambda t, s: (-s[0], -2 * s[1]), state, t)
    assert isinstance(ours, tuple) and len(ours) == 2
    assert [o.shape for o in ours] == [o.shape for o in theirs] == [(4, 2), (4, 3, 1)]
    for o, y in zip(ours, state, strict=True):
        assert torch.equal(o[0], y)


def test_float32_state_with_time_concatenated_like_torchdiffeq(torchdiffeq):
    """A common neural-ODE pattern: the time is concatenated to a float32 state.

    torchdiffeq passes ``t`` to ``func`` in the state's dtype (its ``_runge_kutta_step`` casts
    times to ``y0.dtype``), so this works there and must work as a drop-in replacement.
    """
    w = torch.tensor([[-0.5, 0.2, 0.1], [-0.3, -0.4, 0.0]])

    def f(t, y):
        ty = torch.cat([y, t.expand(y.shape[0], 1)], dim=-1)
        return ty @ w.T

    y0 = torch.tensor([[1.0, 0.5]])
    t = torch.linspace(0, 1, 3)
    theirs = torchdiffeq.odeint(f, y0, t)
    ours = node.odeint(f, y0, t)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_time_passed_to_func_matches_torchdiffeq_dtype(torchdiffeq):
    for dtype in (torch.float32, F64):
        seen = {}
        for name, lib in (("node", node), ("torchdiffeq", torchdiffeq)):
            f = CountingFunc(lambda t, y: -y)
            lib.odeint(f, torch.ones(2, dtype=dtype), torch.linspace(0, 1, 3, dtype=dtype))
            seen[name] = f.time_dtypes
        assert seen["node"] == seen["torchdiffeq"], (dtype, seen)


def test_default_method_is_dopri5():
    p = VAN_DER_POL
    a = node.solve(p.func, p.y0_tensor(), p.times(5), method=None)
    b = node.solve(p.func, p.y0_tensor(), p.times(5), method="dopri5")
    assert a.stats == b.stats and torch.equal(a.ys, b.ys)
    c = node.odeint(p.func, p.y0_tensor(), p.times(5))
    assert torch.equal(c, b.ys)


def test_default_tolerances_are_torchdiffeqs():
    import inspect

    for fn in (node.odeint, node.solve):
        params = inspect.signature(fn).parameters
        assert params["rtol"].default == 1e-7 and params["atol"].default == 1e-9
    params = inspect.signature(node.odeint).parameters
    assert params["method"].default is None and "event_fn" in params
