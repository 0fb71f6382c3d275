"""Accuracy of every adaptive method against SciPy's DOP853 at 1e-12 (or the exact solution).

Bounds are calibrated per method: each is a small multiple (3-10x) of the error measured when
the tests were written, so a regression in a tableau, the error estimate, the controller or the
interpolant makes them fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import node
from tests.problems import (
    ADAPTIVE,
    FORCED,
    LINEAR,
    LOTKA_VOLTERRA,
    PROBLEM_IDS,
    PROBLEMS,
    VAN_DER_POL,
    RecordingFunc,
    max_error,
    reference,
)

# (rtol = atol, bound on the max abs error at 50 output times) in float64. fehlberg2's error
# estimate is that of its first-order formula, whose error constant is tiny by construction, so
# its global error is ~1000x the tolerance (torchdiffeq's fehlberg2 behaves the same).
F64 = {
    "adaptive_heun": (1e-5, 3e-4),
    "fehlberg2": (1e-7, 3e-3),
    "bosh3": (1e-8, 5e-6),
    "dopri5": (1e-8, 3e-6),
    "tsit5": (1e-8, 1e-6),
    "dopri8": (1e-10, 1e-7),
}
# Bounds in float32 at rtol=1e-5, atol=1e-6.
F32 = {
    "adaptive_heun": 3e-4,
    "fehlberg2": 5e-2,
    "bosh3": 3e-3,
    "dopri5": 5e-3,
    "tsit5": 1e-3,
    "dopri8": 5e-4,
}


@pytest.mark.parametrize("problem", PROBLEMS, ids=PROBLEM_IDS)
@pytest.mark.parametrize("method", ADAPTIVE)
def test_float64_accuracy_at_50_output_times(method, problem):
    tol, bound = F64[method]
    t = problem.times(50)
    sol = node.solve(problem.func, problem.y0_tensor(), t, method=method, rtol=tol, atol=tol)
    assert sol.success
    assert sol.ys.shape == (50, 2) and sol.ys.dtype == torch.float64
    assert torch.equal(sol.ys[0], problem.y0_tensor())
    err = max_error(sol.ys, reference(problem, t))
    assert err < bound, f"{method} on {problem.name}: max error {err:.3g} >= {bound:.3g}"


@pytest.mark.parametrize("problem", PROBLEMS, ids=PROBLEM_IDS)
@pytest.mark.parametrize("method", ADAPTIVE)
def test_float32_accuracy(method, problem):
    t = problem.times(20, dtype=torch.float32)
    y0 = problem.y0_tensor(torch.float32)
    sol = node.solve(problem.func, y0, t, method=method, rtol=1e-5, atol=1e-6)
    assert sol.ys.dtype == torch.float32
    assert torch.equal(sol.ys[0], y0)
    err = max_error(sol.ys, reference(problem, t))
    assert err < F32[method], f"{method} on {problem.name}: float32 error {err:.3g}"


@pytest.mark.parametrize("method", ADAPTIVE)
def test_error_scales_with_tolerance(method):
    """Tightening the tolerance 100x reduces the error ~100x on every problem.

    (dopri8's error at output times is that of its fifth-order interpolant, which scales like
    tol**(6/8): about 30x.)"""
    tol = F64[method][0] * 100
    factor = 8 if method == "dopri8" else 25
    for problem in PROBLEMS:
        t = problem.times(10)
        ref = reference(problem, t)
        loose = max_error(node.odeint(problem.func, problem.y0_tensor(), t, method=method,
                                      rtol=tol, atol=tol), ref)
        tight = max_error(node.odeint(problem.func, problem.y0_tensor(), t, method=method,
                                      rtol=tol / 100, atol=tol / 100), ref)
        assert tight < loose / factor, (problem.name, loose, tight)


def test_linear_problem_matches_matrix_exponential():
    """The analytic solution used as reference agrees with SciPy, and dopri8 with both."""
    t = LINEAR.times(30)
    exact = LINEAR.exact(t.numpy())
    sp = solve_ivp(LINEAR.numpy_rhs, (0.0, 6.0), np.array(LINEAR.y0), method="DOP853",
                   rtol=1e-12, atol=1e-12, t_eval=t.numpy())
    assert np.max(np.abs(sp.y.T - exact)) < 1e-10
    ys = node.odeint(LINEAR.func, LINEAR.y0_tensor(), t, method="dopri8", rtol=1e-12, atol=1e-12)
    assert max_error(ys, exact) < 1e-9


@pytest.mark.parametrize("method", [m for m in ADAPTIVE if m != "dopri8"])
@pytest.mark.parametrize("problem", [VAN_DER_POL, LOTKA_VOLTERRA], ids=lambda p: p.name)
def test_dense_output_as_accurate_as_step_ends(method, problem):
    """Interpolated outputs are about as accurate as the solver's own states at step ends.

    The step-end states are the ``y0`` that the ``callback_accept_step`` hook receives.
    """
    tol = F64[method][0]
    f = RecordingFunc(problem.func)
    t = problem.times(50)
    ys = node.odeint(f, problem.y0_tensor(), t, method=method, rtol=tol, atol=tol)
    dense_err = max_error(ys, reference(problem, t))
    step_t = [a[0] for a in f.accepted[1:]]
    step_y = torch.stack([a[1] for a in f.accepted[1:]])
    step_err = max_error(step_y, reference(problem, [problem.t0, *step_t])[1:])
    assert dense_err < 10 * step_err + tol, (
        f"{method}: dense-output error {dense_err:.3g} vs step-end error {step_err:.3g}"
    )


@pytest.mark.parametrize("problem", [VAN_DER_POL, LOTKA_VOLTERRA], ids=lambda p: p.name)
def test_dopri8_dense_output_is_fifth_order(problem, torchdiffeq):
    """dopri8 interpolates with a 5th-order extension (no extra stages): its error at output
    times follows tol**(6/9) rather than the steps' tol, yet beats torchdiffeq's 4th-order fit."""
    t = problem.times(50)
    ref = reference(problem, t)
    errors = []
    for tol in (1e-7, 1e-10):
        ys = node.odeint(problem.func, problem.y0_tensor(), t, method="dopri8", rtol=tol,
                         atol=tol)
        errors.append(max_error(ys, ref))
    loose, tight = errors
    assert tight < 1e-7
    # h ~ tol^(1/8) and interpolation error ~ h^6: 1000x tighter tolerance gives ~ 1000^(3/4).
    assert tight < loose / 30
    theirs = torchdiffeq.odeint(problem.func, problem.y0_tensor(), t, method="dopri8",
                                rtol=1e-10, atol=1e-10)
    assert tight < max_error(theirs, ref) / 5


@pytest.mark.parametrize("method", ["bosh3", "dopri5", "tsit5", "dopri8"])
def test_dense_output_between_steps_is_smooth(method):
    """Many output times inside each step: error stays at the tolerance's level."""
    t = torch.linspace(0.0, 2.0, 400, dtype=torch.float64)
    tol = F64[method][0]
    ys = node.odeint(FORCED.func, FORCED.y0_tensor(), t, method=method, rtol=tol, atol=tol)
    err = max_error(ys, reference(FORCED, t))
    assert err < F64[method][1]


# --- reverse time --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ADAPTIVE)
@pytest.mark.parametrize("problem", [LINEAR, LOTKA_VOLTERRA, FORCED], ids=lambda p: p.name)
def test_reverse_time_matches_scipy_backwards(method, problem):
    tol, bound = F64[method]
    t = problem.times(25, reverse=True)  # from t1 down to t0
    y_end = torch.tensor(reference(problem, [problem.t0, problem.t1])[-1])
    sol = node.solve(problem.func, y_end, t, method=method, rtol=tol, atol=tol)
    assert torch.equal(sol.ts, t)
    sp = solve_ivp(problem.numpy_rhs, (problem.t1, problem.t0), y_end.numpy(), method="DOP853",
                   rtol=1e-12, atol=1e-12, t_eval=t.numpy())
    err = max_error(sol.ys, sp.y.T)
    assert err < 3 * bound, f"{method} backwards on {problem.name}: {err:.3g}"
    # Backwards from the forward end state lands (close to) the initial state.
    assert max_error(sol.ys[-1], np.array(problem.y0)) < 3 * bound


@pytest.mark.parametrize("method", ["bosh3", "dopri5", "tsit5", "dopri8"])
def test_forward_then_backward_returns_y0(method):
    p = VAN_DER_POL
    t = torch.tensor([0.0, 1.3, 3.0], dtype=torch.float64)
    y_fwd = node.odeint(p.func, p.y0_tensor(), t, method=method, rtol=1e-10, atol=1e-10)
    y_back = node.odeint(p.func, y_fwd[-1], t.flip(0), method=method, rtol=1e-10, atol=1e-10)
    assert max_error(y_back[-1], np.array(p.y0)) < 1e-7
    assert max_error(y_back[1], y_fwd[1].numpy()) < 1e-7


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun3", "rk4", "dopri5"])
def test_reverse_time_fixed_grid_mirrors_forward(method):
    """A fixed grid backwards is the forward solve of the time-reversed field, step for step."""
    p = FORCED
    t_back = torch.tensor([3.0, 2.2, 1.0], dtype=torch.float64)
    grid = dict(adaptive=False, step_size=0.1)  # (adaptive=False: dopri5 on the grid too)
    back = node.odeint(p.func, p.y0_tensor(), t_back, method=method, options=grid)

    def reversed_field(s, y):  # z(s) = y(3 - s) solves z' = -f(3 - s, z)
        return -p.func(3.0 - s, y)

    fwd = node.odeint(reversed_field, p.y0_tensor(), 3.0 - t_back, method=method, options=grid)
    assert torch.allclose(back, fwd, rtol=0, atol=1e-12)


# --- tuple states ----------------------------------------------------------------------------


def _tuple_field(t, state):
    a, b = state
    return (-a * b.sum() + torch.sin(t), 0.1 * a.sum() * b - b.roll(1, dims=-1))


def _concat_field(t, y):
    a, b = y[:2], y[2:].view(2, 3)
    da, db = _tuple_field(t, (a, b))
    return torch.cat([da, db.reshape(-1)])


def _tuple_state():
    a0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    b0 = torch.tensor([[0.2, 0.3, 0.1], [0.0, -0.1, 0.4]], dtype=torch.float64)
    return a0, b0


def _rms(x):
    return x.pow(2).mean().sqrt()


@pytest.mark.parametrize("method", ["rk4", "heun3", "dopri5"])
def test_tuple_state_fixed_grid_equals_concatenated(method):
    a0, b0 = _tuple_state()
    t = torch.linspace(0, 2, 6, dtype=torch.float64)
    grid = dict(adaptive=False, step_size=0.1)  # (adaptive=False: dopri5 on the grid too)
    ya, yb = node.odeint(_tuple_field, (a0, b0), t, method=method, options=grid)
    yc = node.odeint(_concat_field, torch.cat([a0, b0.reshape(-1)]), t, method=method,
                     options=grid)
    assert ya.shape == (6, 2) and yb.shape == (6, 2, 3)
    torch.testing.assert_close(ya, yc[:, :2], rtol=0, atol=1e-14)
    torch.testing.assert_close(yb.reshape(6, -1), yc[:, 2:], rtol=0, atol=1e-14)


@pytest.mark.parametrize("method", ADAPTIVE)
def test_tuple_state_adaptive_equals_concatenated(method):
    """With the same norm (RMS over everything), a tuple solve is the concatenated solve."""
    a0, b0 = _tuple_state()
    t = torch.linspace(0, 2, 6, dtype=torch.float64)
    tol = 1e-6
    ct, cc = RecordingFunc(_tuple_field), RecordingFunc(_concat_field)

    def whole_rms(state):
        return _rms(torch.cat([s.reshape(-1) for s in state]))

    st = node.solve(ct, (a0, b0), t, method=method, rtol=tol, atol=tol,
                    options=dict(norm=whole_rms))
    sc = node.solve(cc, torch.cat([a0, b0.reshape(-1)]), t, method=method, rtol=tol, atol=tol)
    assert isinstance(st.ys, tuple) and len(st.ys) == 2
    assert st.stats["nfe"] == sc.stats["nfe"]
    torch.testing.assert_close(st.ys[0], sc.ys[:, :2], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(st.ys[1].reshape(6, -1), sc.ys[:, 2:], rtol=1e-12, atol=1e-12)


def test_tuple_state_default_norm_is_max_of_per_tensor_rms():
    """torchdiffeq's tuple norm: passing it explicitly changes nothing."""
    a0, b0 = _tuple_state()
    t = torch.linspace(0, 2, 6, dtype=torch.float64)

    def mixed(state):
        return torch.stack([_rms(s) for s in state]).max()

    s_default = node.solve(_tuple_field, (a0, b0), t, rtol=1e-6, atol=1e-6)
    s_mixed = node.solve(_tuple_field, (a0, b0), t, rtol=1e-6, atol=1e-6,
                         options=dict(norm=mixed))
    assert s_default.stats == s_mixed.stats
    for u, v in zip(s_default.ys, s_mixed.ys, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-13, atol=1e-13)


def test_tuple_state_accuracy_and_tuple_tolerances():
    """A looser tolerance on one tensor of the tuple does not loosen the other one."""
    a0, b0 = _tuple_state()
    t = torch.linspace(0, 3, 7, dtype=torch.float64)
    # Reference: the concatenated problem at a very tight tolerance.
    ref = node.odeint(_concat_field, torch.cat([a0, b0.reshape(-1)]), t, method="dopri8",
                      rtol=1e-12, atol=1e-12)
    tight = node.solve(_tuple_field, (a0, b0), t, rtol=1e-9, atol=1e-9)
    mixed = node.solve(_tuple_field, (a0, b0), t, rtol=(1e-9, 1e-3), atol=(1e-9, 1e-3))
    loose = node.solve(_tuple_field, (a0, b0), t, rtol=1e-3, atol=1e-3)
    err_a = {k: max_error(s.ys[0], ref[:, :2].numpy()) for k, s in
             (("tight", tight), ("mixed", mixed), ("loose", loose))}
    assert err_a["tight"] < 1e-7
    # The tight component is coupled to the loose one, so it cannot be better than the loose
    # component's error feeding into it, but it is far better than with a loose tolerance.
    assert err_a["mixed"] < err_a["loose"] / 10
    assert loose.stats["nfe"] < mixed.stats["nfe"] <= tight.stats["nfe"]
    # Per-element tensors inside the tuple work too.
    per_elem = node.solve(_tuple_field, (a0, b0), t, rtol=(torch.full((2,), 1e-9), 1e-3),
                          atol=(1e-9, torch.full((2, 3), 1e-3)))
    assert per_elem.stats == mixed.stats


# --- per-element tolerances ------------------------------------------------------------------


def _two_oscillators(t, y):
    # Two uncoupled rotations: components (0, 1) at frequency 1, (2, 3) at frequency 3.
    return torch.stack([-y[1], y[0], -3 * y[3], 3 * y[2]])


def _two_oscillators_exact(t):
    t = np.asarray(t)
    return np.stack([np.cos(t), np.sin(t), np.cos(3 * t), np.sin(3 * t)], axis=-1)


Y0_OSC = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)


@pytest.mark.parametrize("method", ["bosh3", "dopri5", "tsit5"])
def test_per_element_tolerance_does_not_loosen_other_components(method):
    """Tight tolerance on the slow pair, loose on the fast pair: the slow pair is as accurate as
    when solved alone at the tight tolerance, and the fast pair no longer dictates the steps."""
    t = torch.linspace(0, 5, 11, dtype=torch.float64)
    exact = _two_oscillators_exact(t)
    tight, loose = 1e-8, 1e-3
    tol = torch.tensor([tight, tight, loose, loose], dtype=torch.float64)
    s_mixed = node.solve(_two_oscillators, Y0_OSC, t, method=method, rtol=tol, atol=tol)
    s_tight = node.solve(_two_oscillators, Y0_OSC, t, method=method, rtol=tight, atol=tight)
    s_loose = node.solve(_two_oscillators, Y0_OSC, t, method=method, rtol=loose, atol=loose)
    s_alone = node.solve(lambda t, y: _two_oscillators(t, torch.cat([y, y]))[:2], Y0_OSC[:2], t,
                         method=method, rtol=tight, atol=tight)

    def err(s, comps):
        return max_error(s.ys[:, comps], exact[:, comps])

    alone = max_error(s_alone.ys, exact[:, :2])
    # RMS over four components of which two are (nearly) error-free allows sqrt(2) more error.
    assert err(s_mixed, [0, 1]) < 3 * alone
    assert err(s_mixed, [0, 1]) < err(s_loose, [0, 1]) / 100
    # The loose pair is solved at (about) its loose tolerance, not at the tight one.
    assert err(s_mixed, [2, 3]) > 10 * err(s_tight, [2, 3])
    assert s_loose.stats["nfe"] < s_mixed.stats["nfe"] < s_tight.stats["nfe"] / 2


def test_per_element_tolerance_equal_values_is_scalar_tolerance():
    t = torch.linspace(0, 5, 11, dtype=torch.float64)
    f64 = dict(dtype=torch.float64)
    s_scalar = node.solve(_two_oscillators, Y0_OSC, t, rtol=1e-6, atol=1e-8)
    s_tensor = node.solve(_two_oscillators, Y0_OSC, t, rtol=torch.full((4,), 1e-6, **f64),
                          atol=torch.full((4,), 1e-8, **f64))
    s_0d = node.solve(_two_oscillators, Y0_OSC, t, rtol=torch.tensor(1e-6, **f64),
                      atol=torch.tensor(1e-8, **f64))
    assert s_scalar.stats == s_tensor.stats == s_0d.stats
    torch.testing.assert_close(s_scalar.ys, s_tensor.ys, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s_scalar.ys, s_0d.ys, rtol=0, atol=0)


def test_per_element_tolerance_broadcasts_over_batch():
    """A tolerance of shape [n] broadcasts against a state [batch, n] (per-column tolerances)."""
    y0 = torch.stack([Y0_OSC, 2 * Y0_OSC])
    t = torch.linspace(0, 5, 11, dtype=torch.float64)

    def batched(t, y):
        return torch.stack([-y[:, 1], y[:, 0], -3 * y[:, 3], 3 * y[:, 2]], dim=-1)

    tol = torch.tensor([1e-9, 1e-9, 1e-3, 1e-3], dtype=torch.float64)
    s = node.solve(batched, y0, t, rtol=tol, atol=tol)
    full = node.solve(batched, y0, t, rtol=tol.expand(2, 4), atol=tol.expand(2, 4))
    assert s.stats == full.stats
    exact = _two_oscillators_exact(t)
    assert max_error(s.ys[:, 0, :2], exact[:, :2]) < 1e-6
