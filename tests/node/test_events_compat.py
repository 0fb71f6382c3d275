"""Terminal events, torchdiffeq compatibility (issue: events defects 1-6).

1. An event a step jumps over: dopri5 integrates free fall exactly, so its error estimate is 0
   and the step grows tenfold per step until one step spans both crossings of a level (rising
   above and falling below it), with equal signs at its ends. The issue's example is backwards in
   time: from ``(x, v) = (0, -5)`` the body was at height 1 about 0.273 s earlier.
2. An event function without autograd graph (``torch.zeros_like(t)``, torchdiffeq's
   ``learn_physics.py`` example) must not break the forward pass.
3. An event function flat in time at the event (``sign``) has an event time but no gradient:
   the error comes at backward time, and only if that gradient is asked for.
4. An event function jumping to exactly zero stops at the jump, also under ``no_grad``.
5. ``odeint_interface`` may be any callable with ``odeint``'s signature.
6. Fixed-grid methods locate events on their linear or cubic Hermite interpolant.

Free fall ``x'' = -g`` from ``(h0, v0)`` reaches ``x = c`` where ``h0 + v0 s - g s^2 / 2 = c``:
backwards, ``s = (v0 + r) / g`` with ``r = sqrt(v0^2 + 2 g (h0 - c))`` (``v0 < 0``), so
``ds/dh0 = 1/r``, ``ds/dv0 = (1 + v0/r)/g``, ``ds/dc = -1/r``, ``ds/dg = -s^2/(2r)``, and the
velocity there is ``-r``.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

import node
from tests.problems import FreeFall, G, Level, scalar

F64 = torch.float64
MODES = ["direct", "checkpoint", "adjoint"]


def backwards_to_level(h0: float, v0: float, c: float, g: float = G):
    """``(s, r)``: the time offset back to ``x = c`` and the speed there (see the docstring)."""
    r = math.sqrt(v0 * v0 + 2 * g * (h0 - c))
    return (v0 + r) / g, r


def event(func, y0, t0, mode: str, *, event_fn, **kwargs):
    kwargs.setdefault("rtol", 1e-10)
    kwargs.setdefault("atol", 1e-11)
    if mode == "adjoint":
        return node.odeint_event(func, y0, t0, event_fn=event_fn,
                                 odeint_interface=node.odeint_adjoint, **kwargs)
    return node.odeint_event(func, y0, t0, event_fn=event_fn, gradient=mode, **kwargs)


def close(a, b, tol=1e-9) -> bool:
    a, b = (float(x.detach()) if isinstance(x, torch.Tensor) else float(x) for x in (a, b))
    return abs(a - b) <= tol * max(1.0, abs(b))


# ------------------------------------------------------------- 1. crossings a step jumps over


def test_issue_example_backwards_in_time_is_found():
    f = lambda t, y: torch.stack([y[1], -9.81 * torch.ones_like(y[1])])  # noqa: E731
    event_t, sol = node.odeint_event(f, torch.tensor([0.0, -5.0], dtype=F64), 0.0,
                                     event_fn=lambda t, y: y[0] - 1, reverse_time=True)
    s, r = backwards_to_level(0.0, -5.0, 1.0)
    assert close(event_t, s, 1e-10) and abs(s + 0.273) < 1e-3
    assert close(sol[1, 0], 1.0, 1e-10) and close(sol[1, 1], -r, 1e-10)


def test_forward_in_time_pair_of_crossings_in_one_step():
    # The same defect forwards: rising through x = 1 and falling back through it.
    event_t, _ = node.odeint(FreeFall(), torch.tensor([0.0, 5.0], dtype=F64),
                             torch.tensor([0.0, 1.0], dtype=F64), event_fn=Level(1.0))
    s, _ = backwards_to_level(0.0, -5.0, 1.0)
    assert close(event_t, -s, 1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_reverse_event_gradients_match_analytic(mode):
    h0, v0, c, t00 = 0.0, -5.0, 1.0, 0.25
    h, v, t0 = scalar(h0, True), scalar(v0, True), scalar(t00, True)
    func, level = FreeFall(), Level(c)
    event_t, sol = event(func, torch.stack([h, v]), t0, mode, event_fn=level, reverse_time=True)
    s, r = backwards_to_level(h0, v0, c)
    assert close(event_t, t00 + s, 1e-10)
    grads = torch.autograd.grad(event_t, (h, v, t0, level.c, func.g), retain_graph=True)
    expected = (1 / r, (1 + v0 / r) / G, 1.0, -1 / r, -s * s / (2 * r))
    for got, want in zip(grads, expected, strict=True):
        assert close(got, want, 1e-7), (mode, grads, expected)
    # The velocity at the event, -r, moves with h0 by -g/r (through the event time).
    (dv_dh,) = torch.autograd.grad(sol[1, 1], h)
    assert close(dv_dh, -G / r, 1e-7)


@pytest.mark.parametrize("interface", [node.odeint, node.odeint_adjoint])
def test_reverse_vector_event_through_either_interface(interface):
    # Components: x - 1.2 and x - 1; going back from (0, -5), x = 1 comes first (one step spans
    # both crossings of both levels).
    h = scalar(0.0, True)
    kwargs = {"adjoint_params": ()} if interface is node.odeint_adjoint else {}
    event_t, sol = node.odeint_event(
        lambda t, y: torch.stack([y[1], -G * torch.ones_like(y[1])]), torch.stack(
            [h, scalar(-5.0)]), 0.0, reverse_time=True, odeint_interface=interface,
        event_fn=lambda t, y: torch.stack([y[0] - 1.2, y[0] - 1.0]), rtol=1e-10, atol=1e-11,
        **kwargs)
    s, r = backwards_to_level(0.0, -5.0, 1.0)
    assert close(event_t, s, 1e-10) and close(sol[1, 0], 1.0, 1e-10)
    (dt_dh,) = torch.autograd.grad(event_t, h)
    assert close(dt_dh, 1 / r, 1e-7)


@pytest.mark.parametrize("mode", MODES)
def test_reverse_per_sample_events(mode):
    starts = [(0.0, -5.0), (0.0, -4.6), (0.5, -5.0)]
    y0 = torch.tensor(starts, dtype=F64, requires_grad=True)
    event_t, sol = event(FreeFall(), y0, 0.0, mode, event_fn=Level(1.0), reverse_time=True,
                         per_sample=True)
    expected = [backwards_to_level(h0, v0, 1.0) for h0, v0 in starts]
    torch.testing.assert_close(event_t.detach(), torch.tensor([s for s, _ in expected],
                                                              dtype=F64), rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(sol[1, :, 0].detach(), torch.ones(3, dtype=F64), rtol=0,
                               atol=1e-9)
    (grad,) = torch.autograd.grad(event_t.sum(), y0)
    want = torch.tensor([[1 / r, (1 + v0 / r) / G] for (_, v0), (_, r) in zip(starts, expected,
                                                                                strict=True)],
                        dtype=F64)
    torch.testing.assert_close(grad, want, rtol=1e-7, atol=1e-9)


# ---------------------------------------------------- 2. event function without autograd graph


def terminal_at(t_end: float):
    return lambda t, y: torch.zeros_like(t) if t > t_end else torch.ones_like(t)


def test_event_fn_without_graph_returns_the_event_time():
    event_t, sol = node.odeint_event(lambda t, y: -y, torch.ones(2), torch.tensor(0.0),
                                     event_fn=terminal_at(0.3))
    assert abs(float(event_t) - 0.3) < 1e-6
    assert not event_t.requires_grad  # the jump's location moves with nothing


def test_event_fn_without_graph_with_y0_requiring_grad():
    y0 = torch.ones(2, dtype=F64, requires_grad=True)
    event_t, sol = node.odeint_event(lambda t, y: -y, y0, 0.0, event_fn=terminal_at(0.3))
    assert close(event_t, 0.3, 1e-12)
    (grad,) = torch.autograd.grad(sol[-1].sum(), y0)
    torch.testing.assert_close(grad, torch.full((2,), math.exp(-0.3), dtype=F64), rtol=1e-6,
                               atol=0)


class Dynamics(nn.Module):
    """Learned gravity ``tanh(w * 0 + b) * scale`` on a tuple state ``(pos, vel, radius)``."""

    def __init__(self) -> None:
        super().__init__()
        self.dvel = nn.Linear(1, 1)
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, t, state):
        pos, vel, *rest = state
        dvel = torch.tanh(self.dvel(torch.zeros_like(vel))) * self.scale
        return (vel, dvel, *[torch.zeros_like(r) for r in rest])


class Bouncer(nn.Module):
    """A shortened learn_physics.py: events chained by an instantaneous velocity change, the
    event's parameter carried in the state, a terminal time as an event without graph."""

    def __init__(self, gravity_bias: float, restitution_bias: float) -> None:
        super().__init__()
        self.initial_pos = nn.Parameter(torch.tensor([10.0]))
        self.initial_vel = nn.Parameter(torch.tensor([0.0]))
        self.radius = nn.Parameter(torch.tensor([0.3]))
        self.dynamics = Dynamics()
        self.restitution = nn.Linear(1, 1)
        with torch.no_grad():  # falling (tanh(bias) * 10 < 0) and bouncing back
            self.dynamics.dvel.bias.fill_(gravity_bias)
            self.restitution.bias.fill_(restitution_bias)

    def simulate(self, times):
        t0 = torch.zeros(1, dtype=times.dtype)

        def event_fn(t, state):
            if t > times[-1] + 1e-7:
                return torch.zeros_like(t)
            pos, _, radius = state
            return pos - radius.reshape_as(pos) ** 2

        state = (self.initial_pos, self.initial_vel, self.radius)
        trajectory, event_times = [state[0][None]], []
        while t0 < times[-1] and len(event_times) < 6:
            event_t, solution = node.odeint_event(self.dynamics, state, t0, event_fn=event_fn,
                                                  atol=1e-8, rtol=1e-8)
            interval = times[(times > t0) & (times <= event_t)]
            interval = torch.cat([t0.reshape(-1), interval.reshape(-1)])
            trajectory.append(node.odeint(self.dynamics, state, interval, atol=1e-8,
                                          rtol=1e-8)[0][1:])
            if event_t < times[-1]:
                pos, vel, radius = (s[-1] for s in solution)
                vel = -torch.sigmoid(self.restitution(torch.ones_like(vel))) * vel
                pos = pos + 1e-7 * self.dynamics(event_t, (pos, vel, radius))[0]
                state = (pos, vel, radius)
            event_times.append(event_t)
            t0 = event_t
        return torch.cat(trajectory).reshape(-1), event_times


def test_learn_physics_scenario_trains():
    # In float64 as the example (set_default_dtype): in float32 the state at the event is a few
    # 1e-6 off the level, and the example's nudge of 1e-7 * velocity does not clear it.
    torch.manual_seed(0)
    times = torch.linspace(0.0, 5.0, 60, dtype=F64)
    with torch.no_grad():
        gt, gt_events = Bouncer(-2.3, 1.5).double().simulate(times)
    model = Bouncer(-2.0, 1.0).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        trajectory, events = model.simulate(times)
        loss = ((trajectory - gt) / (gt.abs() + 1e-3)).abs().mean()
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
        optimizer.step()
        losses.append(float(loss.detach()))
    assert len(gt_events) >= 3 and len(events) >= 3  # bounces, then the terminal time
    assert abs(float(gt_events[-1]) - 5.0) < 1e-6 and abs(float(events[-1]) - 5.0) < 1e-6
    assert losses[-1] < losses[0]


# ------------------------------------------------------ 3. an event flat in time: no gradient


def sign_event(t, y):
    return torch.sign(y[0] - 0.5)


def test_flat_event_function_forward_returns_the_event_time():
    event_t, sol = node.odeint_event(lambda t, y: -y, torch.ones(2), torch.tensor(0.0),
                                     event_fn=sign_event)
    assert abs(float(event_t) - math.log(2)) < 1e-6
    assert abs(float(sol[1, 0]) - 0.5) < 1e-6


def test_flat_event_function_raises_only_when_its_gradient_is_asked_for():
    y0 = torch.ones(2, dtype=F64, requires_grad=True)
    event_t, sol = node.odeint_event(lambda t, y: -y, y0, 0.0, event_fn=sign_event)
    assert close(event_t, math.log(2), 1e-7)
    # A loss that does not involve the event works.
    (grad,) = torch.autograd.grad(sol[0].sum(), y0, retain_graph=True)
    torch.testing.assert_close(grad, torch.ones(2, dtype=F64))
    with pytest.raises(node.SolverError, match="has no gradient"):
        torch.autograd.grad(event_t, y0, retain_graph=True)
    with pytest.raises(node.SolverError, match="has no gradient"):
        torch.autograd.grad(sol[1].sum(), y0)


# ------------------------------------------------------------- 4. a jump to exactly zero


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("grad", [False, True])
def test_event_function_jumping_to_zero_stops_at_the_jump(dtype, grad):
    with torch.set_grad_enabled(grad):
        event_t, sol = node.odeint_event(lambda t, y: -y, torch.ones(2, dtype=dtype),
                                         torch.tensor(0.0, dtype=dtype),
                                         event_fn=terminal_at(0.3))
    assert abs(float(event_t) - 0.3) < (1e-6 if dtype == torch.float32 else 1e-12)
    assert abs(float(sol[1, 0]) - math.exp(-0.3)) < 1e-6


def test_per_sample_jumps_to_zero():
    ends = torch.tensor([0.3, 0.55, 0.1], dtype=F64)
    with torch.no_grad():
        event_t, _ = node.odeint_event(
            lambda t, y: -y, torch.ones(3, 2, dtype=F64), 0.0, per_sample=True,
            event_fn=lambda t, y: (t <= ends).to(y.dtype))
    torch.testing.assert_close(event_t, ends, rtol=0, atol=1e-12)


# --------------------------------------------------------------- 5. any odeint_interface


def located_then_fixed_time(func, y0, t, *, event_fn, **kwargs):
    """torchdiffeq's protocol: the event time without gradient, the state at fixed t*."""
    with torch.no_grad():
        event_t, _ = node.odeint(func, y0, t, event_fn=event_fn, **kwargs)
    return event_t, node.odeint(func, y0, torch.stack([t[0], event_t.to(t)]), **kwargs)


def torchdiffeq_odeint(*args, **kwargs):
    return pytest.importorskip("torchdiffeq").odeint(*args, **kwargs)


@pytest.mark.parametrize("interface", [
    lambda *a, **k: node.odeint(*a, **k),
    functools.partial(node.odeint_adjoint, adjoint_params=()),
    located_then_fixed_time,
    torchdiffeq_odeint,
], ids=["lambda-odeint", "partial-adjoint", "fixed-time-state", "torchdiffeq"])
def test_any_odeint_interface(interface):
    # Falling from rest at h0 to c: t* = r/g with r = sqrt(2 g (h0 - c)), dt*/dh0 = 1/r, and the
    # velocity there, -r, moves with h0 by -g/r.
    h0, c = 2.0, 1.0
    h = scalar(h0, True)
    func = lambda t, y: torch.stack([y[1], -G * torch.ones_like(y[1])])  # noqa: E731
    event_t, sol = node.odeint_event(func, torch.stack([h, scalar(0.0)]), scalar(0.0),
                                     event_fn=lambda t, y: y[0] - c, odeint_interface=interface,
                                     rtol=1e-10, atol=1e-11)
    r = math.sqrt(2 * G * (h0 - c))
    assert close(event_t, r / G, 1e-8) and close(sol[1, 0], c, 1e-8)
    dt_dh, = torch.autograd.grad(event_t, h, retain_graph=True)
    assert close(dt_dh, 1 / r, 1e-6)
    dv_dh, = torch.autograd.grad(sol[1, 1], h)  # the event's motion counted once, not twice
    assert close(dv_dh, -G / r, 1e-6)


def test_per_sample_needs_nodes_own_interface():
    with pytest.raises(ValueError, match="per_sample"):
        node.odeint_event(FreeFall(), torch.zeros(2, 2, dtype=F64), 0.0, event_fn=Level(1.0),
                          per_sample=True, odeint_interface=lambda *a, **k: node.odeint(*a, **k))


# ------------------------------------------------------------------ 6. fixed-grid methods


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
def test_fixed_grid_cubic_event_is_exact_for_free_fall(mode, reverse):
    # rk4 integrates the parabola exactly and the cubic Hermite interpolant reproduces it, so
    # time and gradients match the closed form to rounding.
    h0, v0 = (0.0, -5.0) if reverse else (0.0, 5.0)
    h, v = scalar(h0, True), scalar(v0, True)
    level = Level(1.0)
    event_t, sol = event(FreeFall(), torch.stack([h, v]), 0.0, mode, event_fn=level,
                         method="rk4", options={"step_size": 0.3, "interp": "cubic"},
                         reverse_time=reverse)
    s, r = backwards_to_level(0.0, -5.0, 1.0)
    sign = 1.0 if reverse else -1.0
    assert close(event_t, sign * s, 1e-10)
    assert close(sol[1, 0], 1.0, 1e-10)
    dt_dh, dt_dv = torch.autograd.grad(event_t, (h, v))
    assert close(dt_dh, sign / r, 1e-8)
    assert close(dt_dv, (1 + v0 / r) / G if reverse else (1 - v0 / r) / G, 1e-8)


@pytest.mark.parametrize("mode", MODES)
def test_fixed_grid_linear_event_on_the_interpolant(mode):
    # On the chord between exact grid values x_k, x_k+1 the event is t_k + dt x_k/(x_k - x_k+1)
    # (falling from 2 to 0, step 0.25); the gradient is the implicit-function one of the
    # interpolated state, whose velocity is exact (linear in t): dt*/dh0 = 1 / |v*|.
    h0, dt = 2.0, 0.25
    h = scalar(h0, True)
    event_t, sol = event(FreeFall(), torch.stack([h, scalar(0.0)]), 0.0, mode,
                         event_fn=Level(0.0), method="rk4", options={"step_size": dt})

    def x(t):
        return h0 - G * t * t / 2

    k = math.floor(math.sqrt(2 * h0 / G) / dt)
    t_k = k * dt
    expected = t_k + dt * x(t_k) / (x(t_k) - x(t_k + dt))
    assert close(event_t, expected, 1e-12)
    assert abs(float(event_t.detach()) - math.sqrt(2 * h0 / G)) > 1e-3  # really the chord's root
    (dt_dh,) = torch.autograd.grad(event_t, h)
    assert close(dt_dh, 1 / (G * expected), 1e-8)


def test_fixed_grid_per_sample_events():
    heights = [1.0, 2.0, 0.5]
    y0 = torch.tensor([[x, 0.0] for x in heights], dtype=F64)
    event_t, sol = node.odeint_event(FreeFall(), y0, 0.0, event_fn=Level(0.0), per_sample=True,
                                     method="rk4", options={"step_size": 0.1, "interp": "cubic"})
    expected = torch.tensor([math.sqrt(2 * x / G) for x in heights], dtype=F64)
    torch.testing.assert_close(event_t.detach(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun3", "rk4", "dopri5"])
def test_fixed_grid_methods_match_adaptive_location(method):
    # A nonlinear problem (exponential decay to a level): every explicit method on a fine grid
    # finds the event close to the exact ln 2.
    event_t, _ = node.odeint_event(lambda t, y: -y, torch.ones(1, dtype=F64), 0.0,
                                   event_fn=lambda t, y: y[0] - 0.5, method=method,
                                   options={"step_size": 0.01, "interp": "cubic"})
    tol = 1e-2 if method == "euler" else 1e-4
    assert abs(float(event_t) - math.log(2)) < tol


def test_event_closer_to_t0_than_the_time_resolution():
    # float32 times: an event 1e-9 after t0 = 1 rounds to t0 (learn_physics.py's nudge of
    # 1e-7 * velocity off the floor can leave the state this close). The state there is y0.
    x0 = torch.tensor([1e-9], requires_grad=True)
    event_t, sol = node.odeint_event(lambda t, y: -torch.ones_like(y), x0, torch.tensor(1.0),
                                     event_fn=lambda t, y: y[0])
    assert event_t.dtype == torch.float32 and float(event_t.detach()) == 1.0
    torch.testing.assert_close(sol[1].detach(), x0.detach())
    (dt_dx0,) = torch.autograd.grad(event_t, x0)
    assert abs(float(dt_dx0) - 1.0) < 1e-6
