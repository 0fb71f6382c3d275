"""Every error path: bad arguments raise ValueError/TypeError naming the argument and the
expected and received values; numerical failures raise ``node.SolverError`` (or return a
partial solution) instead of hanging or silently returning NaN/inf."""

from __future__ import annotations

import contextlib
import math
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import node

F64 = torch.float64
NODE_DIR = Path(node.__file__).resolve().parent
T = torch.linspace(0, 1, 5, dtype=F64)
Y0 = torch.ones(3, dtype=F64)


def decay(t, y):
    return -y


class SolveTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail (instead of hanging the suite) when a solve loops forever."""
    if not hasattr(signal, "SIGALRM"):  # pragma: no cover - Windows
        yield
        return

    def handler(signum, frame):
        raise SolveTimeout(f"the solve did not finish within {seconds} s (infinite loop?)")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# --- bad arguments ------------------------------------------------------------------------------


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError) as exc:
        node.odeint(decay, Y0, T, method="dopri")
    msg = str(exc.value)
    assert "'dopri'" in msg
    for name in ("euler", "midpoint", "heun2", "heun3", "rk4", "adaptive_heun", "fehlberg2",
                 "bosh3", "dopri5", "tsit5", "dopri8"):
        assert name in msg
    with pytest.raises(TypeError, match="method"):
        node.odeint(decay, Y0, T, method=5)


@pytest.mark.parametrize(
    "method,options,bad",
    [
        ("dopri5", dict(rtoll=1e-3), "rtoll"),
        ("dopri5", dict(first_stepp=0.1), "first_stepp"),
        ("dopri5", dict(rtol=1e-3), "rtol"),  # a tolerance is an argument, not an option
        ("rk4", dict(step_sizee=0.1), "step_sizee"),
        ("euler", dict(stepsize=0.1), "stepsize"),
        ("dopri5", dict(adaptive=False, step_size=0.1, intrep="cubic"), "intrep"),
    ],
)
def test_unknown_option_lists_valid_keys(method, options, bad):
    with pytest.raises(ValueError) as exc:
        node.odeint(decay, Y0, T, method=method, options=options)
    msg = str(exc.value)
    assert repr(bad) in msg and method in msg
    valid = ("step_size", "grid_constructor", "perturb", "interp") if (
        method in ("rk4", "euler") or "adaptive" in options
    ) else ("first_step", "safety", "ifactor", "dfactor", "max_num_steps", "jump_t", "norm")
    for key in valid:
        assert key in msg


@pytest.mark.parametrize("key,value", [("first_step", 0.1), ("step_t", [0.5]),
                                       ("jump_t", [0.5]), ("max_step", 0.1), ("min_step", 0.01),
                                       ("safety", 0.8), ("norm", lambda x: x.abs().max()),
                                       ("controller", "pid")])
def test_adaptive_only_option_on_fixed_method_warns(key, value):
    # torchdiffeq warns about an option the method does not use, and goes on without it.
    with pytest.warns(UserWarning, match=key):
        node.odeint(decay, Y0, T, method="rk4", options={key: value})
    # ... and on an adaptive method run on a fixed grid.
    with pytest.warns(UserWarning, match=key):
        node.odeint(decay, Y0, T, method="dopri5",
                    options={key: value, "adaptive": False, "step_size": 0.1})


@pytest.mark.parametrize("key,value", [("perturb", True), ("interp", "cubic"), ("step_size", 0.1),
                                       ("grid_constructor", lambda f, y0, t: t)])
def test_fixed_only_option_on_adaptive_solve_warns(key, value):
    with pytest.warns(UserWarning, match=key):
        node.odeint(decay, Y0, T, method="dopri5", options={key: value})


@pytest.mark.parametrize(
    "options,exc_type,words",
    [
        (dict(interp="quadratic"), ValueError, ["interp", "linear", "cubic", "quadratic"]),
        (dict(step_size=-0.1), ValueError, ["step_size", "-0.1"]),
        (dict(step_size=0.0), ValueError, ["step_size"]),
        (dict(step_size="0.1"), TypeError, ["step_size", "str"]),
        (dict(step_size=0.1, grid_constructor=3), TypeError, ["grid_constructor"]),
        (dict(step_size=0.1, max_num_steps=0), ValueError, ["max_num_steps", "0"]),
        (dict(step_size=0.1, dtype=torch.int32), TypeError, ["dtype", "int32"]),
    ],
)
def test_invalid_fixed_grid_option_values(options, exc_type, words):
    with pytest.raises(exc_type) as exc:
        node.odeint(decay, Y0, T, method="rk4", options=options)
    for w in words:
        assert w in str(exc.value)


@pytest.mark.parametrize(
    "options,exc_type,words",
    [
        (dict(controller="pi"), ValueError, ["controller", "integral", "pid", "'pi'"]),
        (dict(max_num_steps=0), ValueError, ["max_num_steps", "0"]),
        (dict(max_num_steps=1.5), ValueError, ["max_num_steps", "1.5"]),
        (dict(first_step=-0.1), ValueError, ["first_step", "-0.1"]),
        (dict(first_step=float("nan")), ValueError, ["first_step", "nan"]),
        (dict(safety=0.0), ValueError, ["safety"]),
        (dict(min_step=-1.0), ValueError, ["min_step", "-1.0"]),
        (dict(max_step=0.0), ValueError, ["max_step"]),
        (dict(min_step=0.5, max_step=0.1), ValueError, ["min_step", "max_step"]),
        (dict(norm="rms"), TypeError, ["norm", "str"]),
        (dict(dtype=torch.int64), TypeError, ["dtype", "int64"]),
        (dict(dtype="float32"), TypeError, ["dtype", "float32"]),
        (dict(step_t=3.0), TypeError, ["step_t", "float"]),
        (dict(jump_t=torch.zeros(2, 2)), ValueError, ["jump_t", "(2, 2)"]),
        (dict(step_t=[0.5], jump_t=[0.5]), ValueError, ["step_t", "jump_t"]),
    ],
)
def test_invalid_adaptive_option_values(options, exc_type, words):
    with pytest.raises(exc_type) as exc:
        node.odeint(decay, Y0, T, options=options)
    for w in words:
        assert w in str(exc.value)


@pytest.mark.parametrize("options", [[("rtol", 1)], "dopri5", 3])
def test_options_not_a_dict(options):
    with pytest.raises(TypeError, match="options"):
        node.odeint(decay, Y0, T, options=options)


def test_options_dataclass_accepted_for_adaptive_and_fixed_methods():
    """``parse_options`` accepts the typed option classes; so must the whole entry point."""
    a = node.odeint(decay, Y0, T, options=node.AdaptiveOptions(first_step=0.01))
    b = node.odeint(decay, Y0, T, options=dict(first_step=0.01))
    assert torch.equal(a, b)
    c = node.odeint(decay, Y0, T, method="rk4", options=node.FixedGridOptions(step_size=0.1))
    d = node.odeint(decay, Y0, T, method="rk4", options=dict(step_size=0.1))
    assert torch.equal(c, d)


@pytest.mark.parametrize(
    "t,exc_type,words",
    [
        (torch.zeros(2, 2, dtype=F64), ValueError, ["t", "1-D", "(2, 2)"]),
        (torch.tensor(0.5, dtype=F64), ValueError, ["t", "1-D", "()"]),
        (torch.tensor([], dtype=F64), ValueError, ["t", "0"]),
        (torch.tensor([0.0, 1.0, 0.5], dtype=F64), ValueError, ["t", "monotonic", "0.5"]),
        (torch.tensor([0.0, 1.0, 1.0], dtype=F64), ValueError, ["t", "strictly"]),
        (torch.tensor([0, 1]), TypeError, ["t", "floating", "int64"]),
        ([0.0, 1.0], TypeError, ["t", "Tensor", "list"]),
        (torch.tensor([0.0, float("nan")], dtype=F64), ValueError, ["t"]),
    ],
)
def test_bad_t(t, exc_type, words):
    with pytest.raises(exc_type) as exc:
        node.odeint(decay, Y0, t)
    msg = str(exc.value)
    for w in words:
        if w == "monotonic":
            assert "increasing" in msg and "decreasing" in msg
        else:
            assert w in msg, msg


@pytest.mark.parametrize("t", [[0.0, math.inf], [0.0, -1.0, -math.inf], [-math.inf, 0.0]])
def test_non_finite_t_rejected(t):
    """An infinite time cannot be reached: reject it up front (not integrate for 2**31 steps)."""
    with time_limit(2), pytest.raises(ValueError, match="t"):
        node.odeint(lambda t, y: torch.zeros_like(y), Y0, torch.tensor(t, dtype=F64))


@pytest.mark.parametrize(
    "y0,exc_type,words",
    [
        (torch.tensor([1, 2]), TypeError, ["y0", "floating", "int64"]),
        (torch.tensor([True]), TypeError, ["y0", "floating", "bool"]),
        ((torch.ones(2, dtype=torch.complex128), torch.ones(2, dtype=F64)), TypeError,
         ["y0[1]", "float64", "complex128"]),
        ([1.0, 2.0], TypeError, ["y0", "Tensor", "float"]),
        (1.0, TypeError, ["y0", "Tensor", "float"]),
        ((), TypeError, ["y0"]),
        ((torch.ones(2, dtype=F64), torch.ones(2)), TypeError, ["y0[1]", "float32", "float64"]),
        ((torch.ones(2), torch.tensor([1, 2])), TypeError, ["y0[1]", "floating", "int64"]),
    ],
)
def test_bad_y0(y0, exc_type, words):
    with pytest.raises(exc_type) as exc:
        node.odeint(lambda t, y: y, y0, T)
    for w in words:
        assert w in str(exc.value), str(exc.value)


@pytest.mark.parametrize(
    "kwargs,exc_type,words",
    [
        (dict(rtol=-1e-3), ValueError, ["rtol", "-0.001"]),
        (dict(atol=-1e-3), ValueError, ["atol", "-0.001"]),
        (dict(rtol=float("nan")), ValueError, ["rtol", "nan"]),
        (dict(atol=float("inf")), ValueError, ["atol", "inf"]),
        (dict(atol=torch.tensor([1e-3, -1.0, 1e-3], dtype=F64)), ValueError, ["atol", "-1"]),
        (dict(rtol=torch.tensor([1e-3, 1e-3], dtype=F64)), ValueError, ["rtol", "(2,)", "(3,)"]),
        (dict(rtol="1e-3"), TypeError, ["rtol", "str"]),
        (dict(rtol=(1e-3, 1e-3)), TypeError, ["rtol", "tuple"]),
    ],
)
def test_bad_tolerances(kwargs, exc_type, words):
    with pytest.raises(exc_type) as exc:
        node.odeint(decay, Y0, T, **kwargs)
    for w in words:
        assert w in str(exc.value), str(exc.value)


def test_bad_tuple_tolerances():
    y0 = (torch.ones(2, dtype=F64), torch.ones(3, dtype=F64))

    def f(t, s):
        return (-s[0], -s[1])

    with pytest.raises(ValueError, match=r"rtol.*1.*2"):
        node.odeint(f, y0, T, rtol=(1e-3,))
    with pytest.raises(ValueError, match="atol"):
        node.odeint(f, y0, T, atol=(1e-3, torch.full((2,), 1e-3)))
    with pytest.raises(ValueError, match="rtol"):
        node.odeint(f, y0, T, rtol=(1e-3, -1e-3))


def test_func_not_callable():
    with pytest.raises(TypeError, match="func.*int"):
        node.odeint(3, Y0, T)


@pytest.mark.parametrize("method", ["dopri5", "rk4", "tsit5"])
def test_func_returning_wrong_shape_names_both_shapes(method):
    with pytest.raises(ValueError) as exc:
        node.odeint(lambda t, y: torch.zeros(4, dtype=F64), Y0, T, method=method)
    msg = str(exc.value)
    assert "func" in msg and "(4,)" in msg and "(3,)" in msg
    # A broadcastable shape is still an error (it would silently change the state's shape).
    with pytest.raises(ValueError, match=r"\(1, 3\)"):
        node.odeint(lambda t, y: torch.zeros(1, 3, dtype=F64), Y0, T, method=method)


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_func_returning_wrong_dtype_names_both(method):
    # (Another floating dtype is cast to the state's, as torchdiffeq accepts it; see
    # tests/node/test_torchdiffeq_compat.py.)
    with pytest.raises(TypeError) as exc:
        node.odeint(lambda t, y: (-y).to(torch.int64), Y0, T, method=method)
    msg = str(exc.value)
    assert "func" in msg and "int64" in msg and "float64" in msg


@pytest.mark.parametrize("ret", [1.0, None, [0.0, 0.0, 0.0], "x"])
def test_func_returning_non_tensor(ret):
    with pytest.raises(TypeError) as exc:
        node.odeint(lambda t, y: ret, Y0, T)
    assert "func" in str(exc.value) and type(ret).__name__ in str(exc.value)


def test_func_returning_wrong_structure_for_tuple_state():
    y0 = (torch.ones(2, dtype=F64), torch.ones(3, dtype=F64))
    with pytest.raises(TypeError, match="tuple"):
        node.odeint(lambda t, s: torch.zeros(5, dtype=F64), y0, T)
    with pytest.raises(ValueError, match=r"1.*2"):
        node.odeint(lambda t, s: (-s[0],), y0, T)
    with pytest.raises(ValueError) as exc:
        node.odeint(lambda t, s: (-s[0], torch.zeros(2, dtype=F64)), y0, T)
    assert "[1]" in str(exc.value) and "(2,)" in str(exc.value) and "(3,)" in str(exc.value)
    # A tensor state whose func returns a tuple.
    with pytest.raises(TypeError, match="tuple"):
        node.odeint(lambda t, y: (-y,), Y0, T)


def test_on_failure_value_checked():
    with pytest.raises(ValueError, match="on_failure.*'ignore'"):
        node.solve(decay, Y0, T, on_failure="ignore")


def test_grid_constructor_returning_bad_grid():
    with pytest.raises(ValueError, match="grid_constructor"):
        node.odeint(decay, Y0, T, method="rk4",
                    options=dict(grid_constructor=lambda f, y, t: torch.tensor([0.0, 0.5])))
    with pytest.raises(ValueError, match="grid_constructor"):
        node.odeint(decay, Y0, T, method="rk4",
                    options=dict(grid_constructor=lambda f, y, t: torch.tensor([0.0, 0.7, 0.5,
                                                                                1.0])))


# --- numerical failures -------------------------------------------------------------------------


def test_solver_error_is_runtime_error():
    assert issubclass(node.SolverError, RuntimeError)
    assert {s.name for s in node.Status} >= {"SUCCESS", "MAX_STEPS", "STEP_TOO_SMALL",
                                              "NON_FINITE"}


def _nan_after(t_bad):
    def f(t, y):
        return -y if t < t_bad else y * float("nan")

    return f


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "tsit5", "dopri8", "adaptive_heun"])
def test_non_finite_derivative_raises_with_time(method):
    t = torch.linspace(0, 2, 9, dtype=F64)
    with time_limit(5), pytest.raises(node.SolverError) as exc:
        node.odeint(_nan_after(1.3), torch.ones(2, dtype=F64), t, method=method)
    err = exc.value
    assert err.status is node.Status.NON_FINITE
    assert "non-finite" in str(err)
    assert err.t == pytest.approx(1.3, abs=1e-6)
    assert f"{err.t:.6g}"[:3] in str(err)  # the time is in the message
    assert math.isfinite(err.dt) or math.isnan(err.dt)
    # The partial solution holds the output times before t = 1.3.
    assert err.solution is not None
    assert err.solution.ts.tolist() == t[:6].tolist()
    assert torch.allclose(err.solution.ys, torch.exp(-t[:6]).unsqueeze(-1).expand(6, 2),
                          atol=1e-6)


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_non_finite_state_on_fixed_grid_raises(method):
    t = torch.linspace(0, 2, 9, dtype=F64)
    with pytest.raises(node.SolverError) as exc:
        node.odeint(_nan_after(1.3), torch.ones(2, dtype=F64), t, method=method,
                    options=dict(step_size=0.1))
    err = exc.value
    assert err.status is node.Status.NON_FINITE and "non-finite" in str(err)
    assert 1.2 <= err.t <= 1.3 + 1e-9


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_non_finite_derivative_at_start(method, bad):
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with time_limit(2), pytest.raises(node.SolverError) as exc:
        node.odeint(lambda t, y: y * bad, torch.ones(2, dtype=F64), t, method=method)
    assert exc.value.status is node.Status.NON_FINITE
    assert exc.value.t == 0.0 and "non-finite" in str(exc.value)


def test_non_finite_y0():
    t = torch.tensor([0.0, 1.0], dtype=F64)
    y0 = torch.tensor([float("nan"), 1.0], dtype=F64)
    for method in ("dopri5", "rk4"):
        with time_limit(5), pytest.raises((node.SolverError, ValueError)):
            node.odeint(decay, y0, t, method=method)


def test_max_num_steps_exhausted():
    t = torch.linspace(0, 2, 9, dtype=F64)
    with pytest.raises(node.SolverError) as exc:
        node.odeint(decay, Y0, t, options=dict(max_num_steps=5))
    err = exc.value
    assert err.status is node.Status.MAX_STEPS
    assert "max_num_steps" in str(err) and "5" in str(err)
    assert 0 < err.t < 2
    assert err.solution.stats["n_steps"] == 5
    assert err.solution.ts[-1] <= err.t


def test_max_num_steps_counts_rejected_steps_too():
    def f(t, y):
        return -50 * (y - torch.cos(t))

    sol = node.solve(f, torch.zeros(1, dtype=F64), torch.tensor([0.0, 5.0], dtype=F64),
                     rtol=1e-3, atol=1e-6)
    assert sol.stats["n_rejected"] > 0
    limit = sol.stats["n_steps"] - 1
    res = node.solve(f, torch.zeros(1, dtype=F64), torch.tensor([0.0, 5.0], dtype=F64),
                     rtol=1e-3, atol=1e-6, options=dict(max_num_steps=limit), on_failure="return")
    assert res.status is node.Status.MAX_STEPS
    assert res.stats["n_steps"] == limit


def test_max_num_steps_on_fixed_grid():
    with pytest.raises(node.SolverError) as exc:
        node.odeint(decay, Y0, T, method="euler", options=dict(step_size=0.01, max_num_steps=5))
    assert exc.value.status is node.Status.MAX_STEPS
    assert exc.value.t == 0.0  # a grid longer than the budget fails before its first step


def test_min_step_is_a_floor_that_forces_progress():
    """torchdiffeq's meaning: steps of min_step are accepted whatever their error, with a
    warning here, so a tolerance the floor cannot meet still ends with an answer."""
    def vdp(t, y):
        return torch.stack([y[1], (1 - y[0] ** 2) * y[1] - y[0]])

    y0 = torch.tensor([2.0, 0.0], dtype=F64)
    with pytest.warns(UserWarning, match="min_step=0.1"):
        sol = node.solve(vdp, y0, T, rtol=1e-10, atol=1e-10, options=dict(min_step=0.1))
    assert sol.success and bool(torch.isfinite(sol.ys).all())
    span = float(T[-1] - T[0])
    assert sol.stats["n_accepted"] <= span / 0.1 + 1  # no accepted step shorter than the floor
    exact = node.odeint(vdp, y0, T, rtol=1e-10, atol=1e-10)
    assert torch.allclose(sol.ys, exact, atol=0.05)  # dopri5 at h = 0.1 on a smooth problem


def test_non_finite_step_at_min_step_raises():
    with pytest.raises(node.SolverError) as exc:
        node.odeint(lambda t, y: y**2, torch.tensor([1.0], dtype=F64),
                    torch.tensor([0.0, 2.0], dtype=F64), options=dict(min_step=0.05))
    assert exc.value.status in (node.Status.NON_FINITE, node.Status.STEP_TOO_SMALL)
    assert 0.8 < exc.value.t < 1.2  # forced steps of 0.05 may carry it a step past t = 1


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "dopri8"])
def test_blow_up_raises_instead_of_hanging(method):
    """y' = y^2, y(0) = 1 blows up at t = 1. The solve must stop with an error near t = 1 (with
    the default max_num_steps), not loop forever at a step size of a few ulps and not return
    NaN/inf silently."""
    t = torch.tensor([0.0, 0.5, 0.9, 2.0], dtype=F64)
    with time_limit(2), pytest.raises(node.SolverError) as exc:
        node.odeint(lambda t, y: y * y, torch.ones(1, dtype=F64), t, method=method)
    err = exc.value
    assert err.status in (node.Status.STEP_TOO_SMALL, node.Status.NON_FINITE)
    assert err.t == pytest.approx(1.0, abs=1e-3)
    ys = err.solution.ys
    assert torch.isfinite(ys).all() and len(ys) >= 3
    torch.testing.assert_close(ys[:3, 0], 1 / (1 - t[:3]), rtol=1e-5, atol=0)


def test_blow_up_on_fixed_grid():
    t = torch.tensor([0.0, 0.5, 2.0], dtype=F64)
    with pytest.raises(node.SolverError) as exc:
        node.odeint(lambda t, y: y * y, torch.ones(1, dtype=F64), t, method="rk4",
                    options=dict(step_size=0.01))
    assert exc.value.status is node.Status.NON_FINITE
    assert 0.99 < exc.value.t < 1.1


def test_zero_tolerances_do_not_hang():
    """rtol = atol = 0 makes every error ratio 0/0 or x/0: raise (ValueError or SolverError),
    do not loop with a NaN step size."""
    with time_limit(2), pytest.raises((ValueError, node.SolverError)):
        node.odeint(decay, Y0, T, rtol=0.0, atol=0.0)


def test_pure_relative_tolerance_from_zero_state():
    """atol = 0 with y0 = 0: the automatic first step divides 0 by 0. That must not give a NaN
    step size, which loops until max_num_steps (2**31 - 1 by default). Either integrate (as
    scipy does) or raise a clear error right away (torchdiffeq raises)."""
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with time_limit(2):
        try:
            sol = node.solve(lambda t, y: torch.cos(t).expand(2), torch.zeros(2, dtype=F64), t,
                             rtol=1e-6, atol=0.0)
        except ValueError as err:
            assert "atol" in str(err)
        else:
            assert abs(sol.ys[-1, 0].item() - math.sin(1.0)) < 1e-4


# --- on_failure="return" -----------------------------------------------------------------------


def test_on_failure_return_gives_partial_solution():
    t = torch.linspace(0, 2, 9, dtype=F64)
    sol = node.solve(_nan_after(1.3), torch.ones(2, dtype=F64), t, on_failure="return")
    assert sol.status is node.Status.NON_FINITE and sol.status != node.Status.SUCCESS
    assert not sol.success
    assert sol.ts.tolist() == t[:6].tolist()
    assert sol.ys.shape == (6, 2)
    assert torch.isfinite(sol.ys).all()
    assert "non-finite" in sol.message and "1.3" in sol.message
    assert sol.stats["n_steps"] == sol.stats["n_accepted"] + sol.stats["n_rejected"]


def test_on_failure_return_max_steps_and_tuple_state():
    t = torch.linspace(0, 2, 9, dtype=F64)
    y0 = (torch.ones(2, dtype=F64), torch.ones(1, 3, dtype=F64))
    sol = node.solve(lambda t, s: (-s[0], -s[1]), y0, t, options=dict(max_num_steps=4),
                     on_failure="return")
    assert sol.status is node.Status.MAX_STEPS and not sol.success
    n = len(sol.ts)
    assert 1 <= n < 9
    assert isinstance(sol.ys, tuple) and sol.ys[0].shape == (n, 2) and sol.ys[1].shape == (n, 1, 3)
    assert "max_num_steps" in sol.message


def test_on_failure_return_success_is_plain_solution():
    sol = node.solve(decay, Y0, T, on_failure="return")
    assert sol.success and sol.status is node.Status.SUCCESS and len(sol.ts) == 5


def test_odeint_raises_solver_error():
    with pytest.raises(node.SolverError):
        node.odeint(decay, Y0, T, options=dict(max_num_steps=2))


# --- no bare asserts: python -O changes nothing ------------------------------------------------


def test_no_bare_assert_in_node_package():
    offenders = []
    for path in NODE_DIR.rglob("*.py"):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"^\s*assert\b", line):
                offenders.append(f"{path.relative_to(NODE_DIR.parent)}:{lineno}: {line.strip()}")
    assert not offenders, "bare asserts vanish under python -O:\n" + "\n".join(offenders)


@pytest.mark.slow
def test_errors_raised_under_python_O():
    code = textwrap.dedent(
        """
        import torch, node
        t = torch.linspace(0, 1, 3, dtype=torch.float64)
        y0 = torch.ones(2, dtype=torch.float64)
        checks = [
            lambda: node.odeint(lambda t, y: -y, y0, t, method="nope"),
            lambda: node.odeint(lambda t, y: -y, y0, t, options=dict(rtoll=1)),
            lambda: node.odeint(lambda t, y: -y, y0, t.flip(0)[[0, 2, 1]]),
            lambda: node.odeint(lambda t, y: torch.zeros(3, dtype=torch.float64), y0, t),
            lambda: node.odeint(lambda t, y: -y, y0, t, rtol=-1.0),
            lambda: node.odeint(lambda t, y: -y, y0, t, options=dict(max_num_steps=1)),
        ]
        for check in checks:
            try:
                check()
            except (ValueError, TypeError, node.SolverError):
                pass
            else:
                raise SystemExit("no error raised under -O")
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
