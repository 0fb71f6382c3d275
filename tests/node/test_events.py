"""Terminal events (issue 4): location, gradients through the event time, per-sample events.

Most checks use free fall, ``x'' = -g``, whose impact times are known in closed form: from
height ``h`` with initial velocity ``v0`` the ball reaches ``x = 0`` after
``t* = (v0 + s) / g`` with ``s = sqrt(v0**2 + 2 g h)``, so ``dt*/dh = 1/s`` and
``dt*/dv0 = t*/s`` (``1/sqrt(2 g h)`` and ``1/g`` at ``v0 = 0``). Dopri5 integrates the quadratic
trajectory exactly, so the analytic values are met to rounding. Nonlinear problems (damped
pendulum, Van der Pol) check the location against scipy and per-sample events against
single-sample solves, where agreement is to the solver's tolerance.

Some tests fail against the first version of ``node/events.py`` (commit 2588890) and document
its bugs: a scalar per-sample event raising IndexError, fixed-step methods reporting a misleading
dense-output error, per-sample root finding running ~45 iterations per crossing, and the event
path always passing ``options`` to the adjoint.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import node
from tests.problems import DampedPendulum, FreeFall, G, Level, frozen_steps, scalar

F64 = torch.float64
MODES = ["direct", "checkpoint", "adjoint"]


def height(t, y):
    return y[..., 0]


def van_der_pol(t, y, mu=2.0):
    return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])


def event_in_mode(func, y0, t0, mode: str, *, event_fn=height, **kwargs):
    """``odeint_event`` in one of the three gradient modes (adjoint via ``odeint_interface``)."""
    kwargs.setdefault("rtol", 1e-10)
    kwargs.setdefault("atol", 1e-11)
    if mode == "adjoint":
        if not isinstance(func, nn.Module):
            kwargs.setdefault("adjoint_params", ())
        return node.odeint_event(func, y0, t0, event_fn=event_fn,
                                 odeint_interface=node.odeint_adjoint, **kwargs)
    return node.odeint_event(func, y0, t0, event_fn=event_fn, gradient=mode, **kwargs)


def impact(h: float, v0: float = 0.0, g: float = G) -> tuple[float, float]:
    """Time to fall from height ``h`` with upward velocity ``v0``, and ``s = |v(t*)|``."""
    s = math.sqrt(v0 * v0 + 2 * g * h)
    return (v0 + s) / g, s


def close(a, b, tol=1e-9) -> bool:
    a, b = (float(x.detach()) if isinstance(x, torch.Tensor) else float(x) for x in (a, b))
    return abs(a - b) <= tol * max(1.0, abs(b))


# --------------------------------------------------------------------------- free fall, gradients


@pytest.mark.parametrize("mode", MODES)
def test_free_fall_impact_time_and_height_derivative(mode):
    h0 = 2.0
    h = scalar(h0, grad=True)
    y0 = torch.stack([h, scalar(0.0)])
    event_t, sol = event_in_mode(FreeFall(), y0, 0.0, mode)
    assert sol.shape == (2, 2)
    assert torch.equal(sol[0].detach(), y0.detach())
    t_star = math.sqrt(2 * h0 / G)
    assert close(event_t, t_star, 1e-11)
    assert close(sol[1, 0], 0.0, 1e-11)
    assert close(sol[1, 1], -G * t_star, 1e-11)
    (dt_dh,) = torch.autograd.grad(event_t, h)
    assert close(dt_dh, 1 / math.sqrt(2 * G * h0), 1e-9)


@pytest.mark.parametrize("mode", MODES)
def test_gradients_wrt_initial_height_and_velocity_including_event_state(mode):
    h0, v0 = 1.5, 2.0
    h, v = scalar(h0, grad=True), scalar(v0, grad=True)
    event_t, sol = event_in_mode(FreeFall(), torch.stack([h, v]), 0.0, mode)
    t_star, s = impact(h0, v0)
    assert close(event_t, t_star, 1e-11)
    dt = torch.autograd.grad(event_t, (h, v), retain_graph=True)
    assert close(dt[0], 1 / s) and close(dt[1], t_star / s)
    # The state at the event moves with the event: x* stays 0, v* = -s.
    dx = torch.autograd.grad(sol[1, 0], (h, v), retain_graph=True)
    assert abs(float(dx[0])) < 1e-9 and abs(float(dx[1])) < 1e-9
    dv = torch.autograd.grad(sol[1, 1], (h, v))
    assert close(dv[0], -G / s) and close(dv[1], -v0 / s)


@pytest.mark.parametrize("mode", MODES)
def test_gradient_wrt_t0_autonomous(mode):
    h0 = 2.0
    t0 = scalar(0.5, grad=True)
    event_t, sol = event_in_mode(FreeFall(), torch.tensor([h0, 0.0], dtype=F64), t0, mode)
    assert close(event_t, 0.5 + math.sqrt(2 * h0 / G), 1e-11)
    (dt_dt0,) = torch.autograd.grad(event_t, t0, retain_graph=True)
    (dv_dt0,) = torch.autograd.grad(sol[1, 1], t0)
    assert close(dt_dt0, 1.0)  # the whole trajectory shifts with t0
    assert abs(float(dv_dt0)) < 1e-9


@pytest.mark.parametrize("mode", MODES)
def test_gradient_wrt_t0_with_time_dependent_event(mode):
    # A rising floor c * t: with s = t* - t0, h - g s^2/2 = c (s + t0), so
    # dt*/dt0 = 1 - c / sqrt(c^2 + 2 g (h - c t0)).
    h0, c, t00 = 3.0, 0.7, 0.4
    t0 = scalar(t00, grad=True)

    def rising_floor(t, y):
        return y[0] - c * t

    event_t, _ = event_in_mode(FreeFall(), torch.tensor([h0, 0.0], dtype=F64), t0, mode,
                               event_fn=rising_floor)
    root = math.sqrt(c * c + 2 * G * (h0 - c * t00))
    assert close(event_t, t00 + (-c + root) / G, 1e-11)
    (dt_dt0,) = torch.autograd.grad(event_t, t0)
    assert close(dt_dt0, 1 - c / root)


@pytest.mark.parametrize("mode", MODES)
def test_gradient_wrt_parameter_of_func(mode):
    h0 = 2.0
    field = FreeFall(G)
    event_t, sol = event_in_mode(field, torch.tensor([h0, 0.0], dtype=F64), 0.0, mode)
    t_star = math.sqrt(2 * h0 / G)
    (dt_dg,) = torch.autograd.grad(event_t, field.g, retain_graph=True)
    assert close(dt_dg, -t_star / (2 * G))
    # v* = -sqrt(2 g h): dv*/dg = -h / sqrt(2 g h).
    (dv_dg,) = torch.autograd.grad(sol[1, 1], field.g)
    assert close(dv_dg, -h0 / math.sqrt(2 * G * h0))


@pytest.mark.parametrize("mode", MODES)
def test_gradient_wrt_parameter_of_event_fn(mode):
    # torchdiffeq needs event parameters to be part of the state (its issue #208); here they are
    # ordinary parameters of an nn.Module event function.
    h0, c0 = 3.0, 0.5
    floor = Level(c0)
    event_t, sol = event_in_mode(FreeFall(), torch.tensor([h0, 0.0], dtype=F64), 0.0, mode,
                                 event_fn=floor)
    t_star = math.sqrt(2 * (h0 - c0) / G)
    assert close(event_t, t_star, 1e-11)
    assert close(sol[1, 0], c0, 1e-11)
    (dt_dc,) = torch.autograd.grad(event_t, floor.c, retain_graph=True)
    assert close(dt_dc, -1 / math.sqrt(2 * G * (h0 - c0)))
    # x* = c exactly, so dx*/dc = 1.
    (dx_dc,) = torch.autograd.grad(sol[1, 0], floor.c)
    assert close(dx_dc, 1.0)


def test_gradient_modes_agree_on_nonlinear_problem():
    grads = {}
    for mode in MODES:
        field = DampedPendulum(0.3)
        floor = Level(0.2)
        y0 = torch.tensor([1.2, 0.1], dtype=F64, requires_grad=True)
        t0 = scalar(0.1, grad=True)
        event_t, sol = event_in_mode(field, y0, t0, mode, event_fn=floor)
        loss = event_t + 0.5 * sol[1, 1]
        grads[mode] = torch.autograd.grad(loss, (y0, t0, field.k, floor.c))
    for mode in ("checkpoint", "adjoint"):
        for a, b in zip(grads[mode], grads["direct"], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------- vector events


def test_vector_event_first_crossing_wins():
    h0 = 3.0
    h = scalar(h0, grad=True)
    def events(t, y):
        # x + 1 crosses later, x - 1 first, t - 100 never within the fall.
        return torch.stack([y[0] + 1.0, y[0] - 1.0, t - 100.0])

    event_t, sol = node.odeint_event(FreeFall(), torch.stack([h, scalar(0.0)]), 0.0,
                                     event_fn=events, rtol=1e-10, atol=1e-12)
    assert close(event_t, math.sqrt(2 * (h0 - 1) / G), 1e-11)
    assert close(sol[1, 0], 1.0, 1e-11)
    (dt_dh,) = torch.autograd.grad(event_t, h)
    assert close(dt_dh, 1 / math.sqrt(2 * G * (h0 - 1)))


def test_vector_event_crossing_in_the_same_step_picks_the_earliest():
    # Both components cross inside the first steps of a very loose solve; the later one is
    # listed first, so picking by index instead of time would be wrong.
    def events(t, y):
        return torch.stack([y[0] - 0.5, y[0] - 0.52])

    event_t, sol = node.odeint_event(FreeFall(), torch.tensor([1.0, 0.0], dtype=F64), 0.0,
                                     event_fn=events, rtol=1e-3, atol=1e-3)
    assert close(event_t, math.sqrt(2 * (1 - 0.52) / G), 1e-9)
    assert close(sol[1, 0], 0.52, 1e-9)


def test_matrix_valued_event_function():
    def events(t, y):
        return torch.stack([y[0] - 1.0, y[0] - 2.0, y[0] + 1, y[0] + 2]).reshape(2, 2)

    event_t, _ = node.odeint_event(FreeFall(), torch.tensor([4.0, 0.0], dtype=F64), 0.0,
                                   event_fn=events)
    assert close(event_t, math.sqrt(2 * 2.0 / G), 1e-9)


# --------------------------------------------------------------------------- per-sample events


def _single(func, y0_row, t0, mode, event_fn):
    return event_in_mode(func, y0_row, t0, mode, event_fn=event_fn, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_per_sample_events_match_single_sample_solves(mode):
    angles = [0.5, 1.7, 2.6]
    batch = len(angles)
    y0_rows = torch.tensor([[a, 0.0] for a in angles], dtype=F64)

    field = DampedPendulum(0.3)
    y0 = y0_rows.clone().requires_grad_(True)
    event_t, sol = event_in_mode(field, y0, 0.0, mode, event_fn=height, per_sample=True,
                                 rtol=1e-9, atol=1e-10)
    assert event_t.shape == (batch,)
    assert sol.shape == (2, batch, 2)
    torch.testing.assert_close(sol[0].detach(), y0_rows)
    # Event times are distinct (the period depends on the amplitude) and increasing with it.
    assert bool((event_t[1:] > event_t[:-1]).all())
    per_sample_grads = []
    for b in range(batch):
        per_sample_grads.append(
            torch.autograd.grad(event_t[b] + sol[1, b, 1], (y0, field.k), retain_graph=True))

    for b in range(batch):
        field_b = DampedPendulum(0.3)
        y0_b = y0_rows[b].clone().requires_grad_(True)
        t_b, sol_b = _single(field_b, y0_b, 0.0, mode, height)
        torch.testing.assert_close(event_t[b].detach(), t_b.detach(), rtol=1e-7, atol=1e-7)
        torch.testing.assert_close(sol[1, b].detach(), sol_b[1].detach(), rtol=1e-6, atol=1e-7)
        g_y0, g_k = torch.autograd.grad(t_b + sol_b[1, 1], (y0_b, field_b.k))
        torch.testing.assert_close(per_sample_grads[b][0][b], g_y0, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(per_sample_grads[b][1], g_k, rtol=1e-5, atol=1e-6)
        # Samples are independent: no gradient leaks into the other rows of y0.
        others = torch.cat([per_sample_grads[b][0][:b], per_sample_grads[b][0][b + 1:]])
        assert float(others.abs().max()) < 1e-12


def test_per_sample_free_fall_heights_and_event_parameters():
    heights = [0.5, 1.0, 2.0, 4.5]
    h = torch.tensor(heights, dtype=F64, requires_grad=True)
    y0 = torch.stack([h, torch.zeros_like(h)], dim=1)
    floor = Level(0.25)
    event_t, sol = node.odeint_event(FreeFall(), y0, 0.0, event_fn=floor, per_sample=True,
                                     rtol=1e-10, atol=1e-12)
    expected = torch.tensor([math.sqrt(2 * (x - 0.25) / G) for x in heights], dtype=F64)
    torch.testing.assert_close(event_t.detach(), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sol[1, :, 0].detach(), torch.full((4,), 0.25, dtype=F64))
    (dt_dh,) = torch.autograd.grad(event_t.sum(), h, retain_graph=True)
    expected_dh = torch.tensor([1 / math.sqrt(2 * G * (x - 0.25)) for x in heights], dtype=F64)
    torch.testing.assert_close(dt_dh, expected_dh, rtol=1e-9, atol=0)
    (dt_dc,) = torch.autograd.grad(event_t.sum(), floor.c)
    torch.testing.assert_close(dt_dc, -expected_dh.sum(), rtol=1e-9, atol=0)


def test_per_sample_vector_event_components_differ_between_samples():
    # Sample 0 (from 1 m) never reaches x = 2 downwards and stops at the floor; sample 1 (from
    # 4 m) stops at x = 2 first.
    h = torch.tensor([1.0, 4.0], dtype=F64, requires_grad=True)
    y0 = torch.stack([h, torch.zeros_like(h)], dim=1)
    event_t, sol = node.odeint_event(FreeFall(), y0, 0.0, per_sample=True,
                                     event_fn=lambda t, y: torch.stack([y[:, 0] - 2, y[:, 0]], 1))
    torch.testing.assert_close(event_t.detach(), torch.tensor([2 / G, 4 / G], dtype=F64).sqrt())
    torch.testing.assert_close(sol[1, :, 0].detach(), torch.tensor([0.0, 2.0], dtype=F64))
    (dt_dh,) = torch.autograd.grad(event_t.sum(), h)
    expected = torch.tensor([1 / math.sqrt(2 * G * 1.0), 1 / math.sqrt(2 * G * 2.0)], dtype=F64)
    torch.testing.assert_close(dt_dh, expected)


def test_per_sample_root_finding_stays_superlinear():
    # Illinois needs a handful of interpolant evaluations per crossing (docstring: 5-8). In a
    # batch, samples that did not cross in the step (or crossed earlier) must not keep the
    # iteration running: root-finding evaluations are those at per-sample (non-uniform) times.
    root_calls = []

    def events(t, y):
        if not torch.is_grad_enabled() and bool((t != t[0]).any()):
            root_calls.append(1)
        return y[:, 0]

    # (the joint solve's location, here in the checkpoint mode: per-sample steps evaluate
    # every sample at its own time; their root finding: tests/node/test_per_sample_events.py)
    y0 = torch.tensor([[a, 0.0] for a in (0.5, 1.0, 1.7, 2.6)], dtype=F64)
    event_t, _ = node.odeint_event(DampedPendulum(0.3), y0, 0.0, event_fn=events,
                                   per_sample=True, rtol=1e-10, atol=1e-12,
                                   gradient="checkpoint")
    crossing_steps = len(set(event_t.tolist()))
    assert len(root_calls) <= 12 * crossing_steps, (len(root_calls), crossing_steps)


def test_per_sample_event_fn_receives_batched_time():
    seen = []

    def events(t, y):
        seen.append(tuple(t.shape))
        return y[:, 0]

    y0 = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=F64)
    node.odeint_event(FreeFall(), y0, 0.0, event_fn=events, per_sample=True)
    assert set(seen) == {(2,)}


# --------------------------------------------------------------------------- direction, start


@pytest.mark.parametrize("mode", MODES)
def test_reverse_time(mode):
    # Backwards from (h, v) at t0: h + v s - g s^2/2 = 0 for s < 0 gives s = (v - r)/g,
    # r = sqrt(v^2 + 2 g h), and ds/dh = -1/r.
    h0, v0, t00 = 2.0, 1.0, 0.5
    h = scalar(h0, grad=True)
    t0 = scalar(t00, grad=True)
    event_t, sol = event_in_mode(FreeFall(), torch.stack([h, scalar(v0)]), t0, mode,
                                 reverse_time=True)
    r = math.sqrt(v0 * v0 + 2 * G * h0)
    assert float(event_t.detach()) < t00
    assert close(event_t, t00 + (v0 - r) / G, 1e-11)
    assert close(sol[1, 1], r, 1e-12)  # moving upwards when it was at the floor
    dt_dh, dt_dt0 = torch.autograd.grad(event_t, (h, t0))
    assert close(dt_dh, -1 / r)
    assert close(dt_dt0, 1.0)


def test_reverse_time_through_odeint_with_decreasing_t():
    event_t, sol = node.odeint(FreeFall(), torch.tensor([2.0, 1.0], dtype=F64),
                               torch.tensor([0.5, -1.0], dtype=F64), event_fn=height)
    r = math.sqrt(1 + 2 * G * 2.0)
    assert close(event_t, 0.5 + (1 - r) / G, 1e-9)


def test_event_fn_zero_at_t0_does_not_stop_there():
    # Starting on the floor going up: the event is the landing at 2 v0 / g, not t0.
    v0 = 3.0
    v = scalar(v0, grad=True)
    event_t, sol = node.odeint_event(FreeFall(), torch.stack([scalar(0.0), v]), 0.0,
                                     event_fn=height)
    assert close(event_t, 2 * v0 / G, 1e-9)
    assert close(sol[1, 1], -v0, 1e-9)
    (dt_dv,) = torch.autograd.grad(event_t, v)
    assert close(dt_dv, 2 / G)


def test_event_fn_zero_at_t0_per_sample():
    y0 = torch.tensor([[0.0, 3.0], [2.0, 0.0], [0.0, 1.0]], dtype=F64)
    event_t, _ = node.odeint_event(FreeFall(), y0, 0.0, event_fn=height, per_sample=True)
    expected = torch.tensor([2 * 3.0 / G, math.sqrt(4 / G), 2 * 1.0 / G], dtype=F64)
    torch.testing.assert_close(event_t, expected, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- accuracy, interface


def test_event_location_matches_scipy_on_van_der_pol():
    from scipy import integrate as scipy_integrate

    y_start = [2.0, 0.0]

    def rhs(t, y):
        return [y[1], 2.0 * (1 - y[0] ** 2) * y[1] - y[0]]

    def crossing(t, y):
        return y[0] - 0.5

    crossing.terminal = True
    ref = scipy_integrate.solve_ivp(rhs, (0.0, 20.0), y_start, method="DOP853", rtol=1e-13,
                                    atol=1e-13, events=crossing)
    assert ref.status == 1
    t_ref, y_ref = ref.t_events[0][0], ref.y_events[0][0]

    event_t, sol = node.odeint_event(van_der_pol, torch.tensor(y_start, dtype=F64), 0.0,
                                     event_fn=lambda t, y: y[0] - 0.5, rtol=1e-11, atol=1e-12)
    assert close(event_t, t_ref, 1e-8)
    torch.testing.assert_close(sol[1], torch.tensor(y_ref, dtype=F64), rtol=0, atol=1e-8)


def test_torchdiffeq_compatible_call():
    # As in torchdiffeq: float32 state and times, only t[0] is used.
    def f(t, y):
        return torch.stack([y[1], -G * torch.ones_like(y[1])])

    def ev(t, y):
        return y[0]

    y0 = torch.tensor([2.0, 0.0])
    event_t, solution = node.odeint(f, y0, torch.tensor([0.0, 1.0]), event_fn=ev)
    assert event_t.dtype == torch.float32 and event_t.dim() == 0
    assert solution.shape == (2, 2) and solution.dtype == torch.float32
    assert torch.equal(solution[0], y0)
    assert abs(float(event_t) - math.sqrt(4 / G)) < 1e-6
    assert abs(float(solution[1, 0])) < 1e-5
    # odeint_adjoint with event_fn returns the same.
    event_t2, solution2 = node.odeint_adjoint(f, y0, torch.tensor([0.0, 1.0]), event_fn=ev,
                                              adjoint_params=())
    torch.testing.assert_close(event_t2, event_t)
    torch.testing.assert_close(solution2, solution)


def test_tuple_state():
    h = scalar(2.0, grad=True)

    def f(t, y):
        x, v = y
        return v, -G * torch.ones_like(x)

    event_t, (xs, vs) = node.odeint_event(f, (h.reshape(1), scalar(0.0).reshape(1)), 0.0,
                                          event_fn=lambda t, y: y[0][0])
    assert xs.shape == (2, 1) and vs.shape == (2, 1)
    assert close(event_t, math.sqrt(4 / G), 1e-11)
    (dt_dh,) = torch.autograd.grad(event_t, h)
    assert close(dt_dh, 1 / math.sqrt(2 * G * 2.0))


def test_adjoint_method_differing_from_method_without_options():
    # odeint_event adds a default step budget to ``options``; that must not count as options
    # given by the user for the adjoint's rule "a different adjoint_method needs
    # adjoint_options when options are given" (plain odeint_adjoint accepts this call).
    h = scalar(2.0, grad=True)
    event_t, _ = node.odeint_event(FreeFall(), torch.stack([h, scalar(0.0)]), 0.0,
                                   event_fn=height, odeint_interface=node.odeint_adjoint,
                                   adjoint_method="bosh3")
    (dt_dh,) = torch.autograd.grad(event_t, h)
    assert close(dt_dh, 1 / math.sqrt(2 * G * 2.0), 1e-6)


def test_gradcheck_event_time_wrt_y0():
    """On pinned steps (finite differences must not move the steps, see test_solver_gradients)
    the event time is a smooth function of y0; the implicit-function gradient uses ``f`` where
    the located root follows the dense output, a difference below 1e-9 at h = 0.05. What is
    left is the root's own precision (a few ulps, over ``eps``): up to about 5e-9."""

    def event_time(y0):
        event_t, _ = node.odeint_event(van_der_pol, y0, 0.0, event_fn=lambda t, y: y[0] - 0.5,
                                       method="dopri8", **frozen_steps(0.05))
        return event_t

    y0 = torch.tensor([2.0, 0.3], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(event_time, (y0,), eps=1e-5, atol=1e-7, rtol=1e-6)


def test_no_gradient_work_under_no_grad():
    with torch.no_grad():
        event_t, sol = node.odeint_event(FreeFall(), torch.tensor([2.0, 0.0], dtype=F64), 0.0,
                                         event_fn=height)
    assert not event_t.requires_grad and not sol.requires_grad
    assert close(event_t, math.sqrt(4 / G), 1e-9)


# --------------------------------------------------------------------------- errors


def test_event_that_never_comes_raises_solver_error():
    def oscillator(t, y):
        return torch.stack([y[1], -y[0]])

    with pytest.raises(node.SolverError, match="no event found") as info:
        node.odeint_event(oscillator, torch.tensor([1.0, 0.0], dtype=F64), 0.0,
                          event_fn=lambda t, y: y[0] - 2.0, options={"max_num_steps": 50})
    assert info.value.status is node.Status.MAX_STEPS


def test_per_sample_event_with_wrong_batch_dimension_raises():
    y0 = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=F64)
    with pytest.raises(ValueError, match="per_sample"):
        node.odeint_event(FreeFall(), y0, 0.0, per_sample=True,
                          event_fn=lambda t, y: torch.cat([y[:, 0], y[:1, 0]]))


def test_per_sample_event_returning_a_scalar_raises_value_error():
    # A common mistake: reducing over the batch. Must be a ValueError naming per_sample, not an
    # IndexError from inside the locator.
    y0 = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=F64)
    with pytest.raises(ValueError, match="per_sample"):
        node.odeint_event(FreeFall(), y0, 0.0, per_sample=True,
                          event_fn=lambda t, y: y[:, 0].min())


def test_per_sample_needs_a_batched_tensor_state():
    with pytest.raises(ValueError, match="per_sample"):
        node.odeint_event(lambda t, y: -y, torch.tensor(1.0, dtype=F64), 0.0,
                          per_sample=True, event_fn=lambda t, y: y)


@pytest.mark.parametrize(("method", "options"), [
    ("rk4", None),
    ("euler", {"grid_constructor": lambda func, y0, t: t}),
    ("dopri5", {"adaptive": False}),
])
def test_fixed_step_method_without_step_size_raises_clear_value_error(method, options):
    # Fixed-grid events are supported (tests/node/test_events_compat.py) but need a step size.
    with pytest.raises(ValueError, match=r"need options\['step_size'\]"):
        node.odeint_event(FreeFall(), torch.tensor([1.0, 0.0], dtype=F64), 0.0,
                          event_fn=height, method=method, options=options)


def test_t_with_more_than_two_times_raises():
    with pytest.raises(ValueError, match="2 times"):
        node.odeint(FreeFall(), torch.tensor([1.0, 0.0], dtype=F64),
                    torch.tensor([0.0, 1.0, 2.0], dtype=F64), event_fn=height)


class CountingFreeFall(FreeFall):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return super().forward(t, y)


@pytest.mark.parametrize("per_sample", [False, True])
def test_no_grad_returns_located_states_without_a_second_solve(per_sample):
    # Per-sample events are checked in the checkpoint mode, which locates them on a joint solve
    # (direct per-sample events never solve twice: tests/node/test_per_sample_events.py).
    func = CountingFreeFall()
    y0 = torch.tensor([[2.0, 0.0], [1.0, 0.5]], dtype=F64) if per_sample else \
        torch.tensor([2.0, 0.0], dtype=F64)
    kw = dict(gradient="checkpoint") if per_sample else {}
    with torch.no_grad():
        event_t, sol = node.odeint_event(func, y0, 0.0, event_fn=height, per_sample=per_sample,
                                         rtol=1e-10, atol=1e-11, **kw)
    calls_no_grad = func.calls
    func.calls = 0
    event_t2, sol2 = node.odeint_event(func, y0, 0.0, event_fn=height, per_sample=per_sample,
                                       rtol=1e-10, atol=1e-11, **kw)
    assert calls_no_grad < func.calls  # the gradient path solves twice
    torch.testing.assert_close(event_t, event_t2.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sol, sol2.detach(), rtol=1e-9, atol=1e-9)


def test_odeint_interface_returning_no_event_raises():
    # Any odeint-like callable is accepted (tests/node/test_events_compat.py); it must return a
    # pair.
    with pytest.raises(ValueError, match="odeint_interface"):
        node.odeint_event(FreeFall(), torch.tensor([2.0, 0.0], dtype=F64), 0.0,
                          event_fn=height, odeint_interface=lambda *a, **k: None)
