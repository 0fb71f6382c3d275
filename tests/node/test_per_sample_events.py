"""Per-sample events with per-sample steps (issue 17): ``odeint_event(..., per_sample=True)``
with an explicit Runge-Kutta method and direct gradients steps every sample on its own, stops
each at its own event and returns ``[B]`` event times.

Free fall ``x'' = -g`` gives closed forms (dopri5 integrates the quadratic exactly): from height
``h`` at rest the ball reaches level ``c`` after ``sqrt(2 (h - c) / g)``, with
``dt*/dh = 1 / sqrt(2 g (h - c))``. Nonlinear problems are checked against each sample solved
alone by the joint solver (same steps: the per-sample loop is the joint loop per sample).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import node
from tests.problems import DampedPendulum, FreeFall, G, Level, scalar

F64 = torch.float64


class VanDerPol(nn.Module):
    """Van der Pol with one ``mu`` per sample (stiffer samples need many more steps)."""

    def __init__(self, mu: torch.Tensor) -> None:
        super().__init__()
        self.mu = mu

    def forward(self, t, y):
        x, v = y[..., 0], y[..., 1]
        mu = self.mu if y.dim() > 1 else self.mu.reshape(())
        return torch.stack([v, mu * (1 - x**2) * v - x], dim=-1)


def height(t, y):
    return y[..., 0]


def per_sample_event(func, y0, t0=0.0, **kwargs):
    kwargs.setdefault("rtol", 1e-10)
    kwargs.setdefault("atol", 1e-12)
    return node.odeint_event(func, y0, t0, per_sample=True, **kwargs)


def drops(heights, grad=False):
    h = torch.tensor(heights, dtype=F64, requires_grad=grad)
    return h, torch.stack([h, torch.zeros_like(h)], dim=1)


# ------------------------------------------------------------------------ steps of their own


def test_func_receives_per_sample_times():
    # The evidence of per-sample steps: func gets t of shape [B, 1] with different times.
    seen = []

    class Recording(FreeFall):
        def forward(self, t, y):
            seen.append(t.detach().clone())
            return super().forward(t, y)

    _, y0 = drops([0.5, 8.0])
    per_sample_event(Recording(), y0, event_fn=height)
    assert {tuple(t.shape) for t in seen} == {(2, 1)}
    assert any(float(t[0, 0]) != float(t[1, 0]) for t in seen)


def test_each_sample_matches_its_solve_alone():
    mu = torch.tensor([0.5, 2.0, 6.0, 10.0], dtype=F64)
    y0 = torch.tensor([[2.0, 0.0], [1.5, 0.5], [2.0, -1.0], [0.5, 1.0]], dtype=F64)
    with torch.no_grad():
        event_t, sol = per_sample_event(VanDerPol(mu), y0, event_fn=height, rtol=1e-8,
                                        atol=1e-10)
    assert event_t.shape == (4,) and sol.shape == (2, 4, 2)
    for b in range(4):
        with torch.no_grad():
            t_b, sol_b = node.odeint_event(VanDerPol(mu[b]), y0[b], 0.0, event_fn=height,
                                           rtol=1e-8, atol=1e-10)
        # The same steps as alone: agreement to rounding, far below the tolerance.
        torch.testing.assert_close(event_t[b], t_b, rtol=1e-11, atol=1e-12)
        torch.testing.assert_close(sol[1, b], sol_b[1], rtol=1e-9, atol=1e-11)
    assert float(sol[1, :, 0].abs().max()) < 1e-12


def test_pendulum_event_times_and_gradients_match_solves_alone():
    angles = [0.5, 1.7, 2.6]
    rows = torch.tensor([[a, 0.0] for a in angles], dtype=F64)
    field = DampedPendulum(0.3)
    y0 = rows.clone().requires_grad_(True)
    event_t, sol = per_sample_event(field, y0, event_fn=height, rtol=1e-9, atol=1e-10)
    for b in range(len(angles)):
        g_y0, g_k = torch.autograd.grad(event_t[b] + sol[1, b, 1], (y0, field.k),
                                        retain_graph=True)
        field_b = DampedPendulum(0.3)
        y0_b = rows[b].clone().requires_grad_(True)
        t_b, sol_b = node.odeint_event(field_b, y0_b, 0.0, event_fn=height, rtol=1e-9,
                                       atol=1e-10)
        torch.testing.assert_close(event_t[b].detach(), t_b.detach(), rtol=1e-10, atol=1e-12)
        want_y0, want_k = torch.autograd.grad(t_b + sol_b[1, 1], (y0_b, field_b.k))
        torch.testing.assert_close(g_y0[b], want_y0, rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(g_k, want_k, rtol=1e-7, atol=1e-9)
        # Samples are independent: no gradient in the other rows of y0.
        assert float(torch.cat([g_y0[:b], g_y0[b + 1:]]).abs().max()) == 0.0


def test_event_time_gradient_matches_finite_differences():
    angles = torch.tensor([[0.8, 0.0], [2.0, 0.3]], dtype=F64)
    field = DampedPendulum(0.3)
    event_t, _ = per_sample_event(field, angles, event_fn=height)
    (g_k,) = torch.autograd.grad(event_t.sum(), field.k)
    eps = 1e-5
    with torch.no_grad():
        plus, _ = per_sample_event(DampedPendulum(0.3 + eps), angles, event_fn=height)
        minus, _ = per_sample_event(DampedPendulum(0.3 - eps), angles, event_fn=height)
    fd = float((plus - minus).sum()) / (2 * eps)
    assert abs(float(g_k) - fd) < 1e-6 * max(1.0, abs(fd))


# ------------------------------------------------------------------------ closed forms


def test_free_fall_heights_and_gradients():
    heights = [0.5, 1.0, 2.0, 4.5, 30.0]
    h, y0 = drops(heights, grad=True)
    floor = Level(0.25)
    event_t, sol = per_sample_event(FreeFall(), y0, event_fn=floor)
    expected = torch.tensor([math.sqrt(2 * (x - 0.25) / G) for x in heights], dtype=F64)
    torch.testing.assert_close(event_t.detach(), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sol[1, :, 0].detach(), torch.full((5,), 0.25, dtype=F64))
    (dt_dh,) = torch.autograd.grad(event_t.sum(), h, retain_graph=True)
    rate = torch.tensor([1 / math.sqrt(2 * G * (x - 0.25)) for x in heights], dtype=F64)
    torch.testing.assert_close(dt_dh, rate, rtol=1e-9, atol=0)
    (dt_dc,) = torch.autograd.grad(event_t.sum(), floor.c, retain_graph=True)
    torch.testing.assert_close(dt_dc, -rate.sum(), rtol=1e-9, atol=0)
    # The state at the event moves with it: the velocity -sqrt(2 g (h - c)) has
    # d/dh = -g / sqrt(2 g (h - c)).
    (dv_dh,) = torch.autograd.grad(sol[1, :, 1].sum(), h)
    torch.testing.assert_close(dv_dh, -G * rate, rtol=1e-9, atol=0)


def test_reverse_time():
    # Backwards from (x0, v0) to the level 1: x(t) = x0 + v0 t - g t^2 / 2 for t < 0.
    starts = [(0.0, -5.0), (0.5, -5.0), (0.0, -7.0)]
    y0 = torch.tensor(starts, dtype=F64, requires_grad=True)
    event_t, sol = per_sample_event(FreeFall(), y0, event_fn=Level(1.0), reverse_time=True)
    want, grads = [], []
    for x0, v0 in starts:
        r = math.sqrt(v0**2 - 2 * G * (1.0 - x0))
        s = (v0 + r) / G  # the larger root of x0 + v0 s - g s^2 / 2 = 1 ... as t = s < 0
        want.append(s)
        grads.append([1 / r, (1 + v0 / r) / G])
    torch.testing.assert_close(event_t.detach(), torch.tensor(want, dtype=F64), rtol=1e-10,
                               atol=1e-12)
    assert bool((event_t < 0).all())
    torch.testing.assert_close(sol[1, :, 0].detach(), torch.ones(3, dtype=F64), rtol=0,
                               atol=1e-10)
    (grad,) = torch.autograd.grad(event_t.sum(), y0)
    torch.testing.assert_close(grad, torch.tensor(grads, dtype=F64), rtol=1e-8, atol=1e-10)


def test_bouncing_balls_chain_per_sample_start_times():
    # Each ball restarts from the floor at its own impact time (t0 of shape [B], carrying the
    # gradient of the first impact): t2 = t1 + 2 e v1 / g with t1 = sqrt(2 h / g),
    # v1 = sqrt(2 g h); dt2/de = 2 v1 / g and dt2/dh = (1 + 2 e) / sqrt(2 g h).
    h, y0 = drops([1.0, 2.0, 0.5], grad=True)
    e = scalar(0.8, grad=True)
    t1, sol = per_sample_event(FreeFall(), y0, event_fn=height)
    x = sol[1, :, 0]
    # Restart exactly on the floor (-1e-16 would read as a crossing at the start).
    bounced = torch.stack([x - x.detach(), -e * sol[1, :, 1]], dim=1)
    t2, _ = per_sample_event(FreeFall(), bounced, t1, event_fn=height)
    v1 = torch.sqrt(2 * G * h.detach())
    torch.testing.assert_close(t2.detach(), torch.sqrt(2 * h.detach() / G) + 2 * 0.8 * v1 / G,
                               rtol=1e-12, atol=1e-12)
    g_e, g_h = torch.autograd.grad(t2.sum(), (e, h))
    torch.testing.assert_close(g_e, (2 * v1 / G).sum(), rtol=1e-9, atol=0)
    torch.testing.assert_close(g_h, (1 + 2 * 0.8) / v1, rtol=1e-9, atol=0)


def test_start_time_gradient():
    # A time-dependent field: x' = -t, from x0 at t0: the level 0 at t* = sqrt(t0^2 + 2 x0),
    # dt*/dt0 = t0 / t*.
    t0 = torch.tensor([0.5, 1.0, 2.0], dtype=F64, requires_grad=True)
    x0 = torch.tensor([[1.0], [2.0], [0.5]], dtype=F64)
    event_t, _ = per_sample_event(lambda t, y: -t * torch.ones_like(y), x0, t0,
                                  event_fn=lambda t, y: y[:, 0])
    want = torch.sqrt(t0.detach() ** 2 + 2 * x0[:, 0])
    torch.testing.assert_close(event_t.detach(), want, rtol=1e-10, atol=1e-12)
    (g,) = torch.autograd.grad(event_t.sum(), t0)
    torch.testing.assert_close(g, t0.detach() / want, rtol=1e-8, atol=1e-12)


def test_vector_event_components_differ_between_samples():
    h, y0 = drops([1.0, 4.0], grad=True)
    event_t, sol = per_sample_event(FreeFall(), y0,
                                    event_fn=lambda t, y: torch.stack([y[:, 0] - 2, y[:, 0]], 1))
    torch.testing.assert_close(event_t.detach(), torch.tensor([2 / G, 4 / G], dtype=F64).sqrt())
    torch.testing.assert_close(sol[1, :, 0].detach(), torch.tensor([0.0, 2.0], dtype=F64))
    (dt_dh,) = torch.autograd.grad(event_t.sum(), h)
    want = torch.tensor([1 / math.sqrt(2 * G), 1 / math.sqrt(4 * G)], dtype=F64)
    torch.testing.assert_close(dt_dh, want)


def test_float32_state():
    _, y0 = drops([1.0, 3.0])
    event_t, sol = per_sample_event(FreeFall(), y0.float(), event_fn=height, rtol=1e-6,
                                    atol=1e-7)
    assert event_t.dtype == torch.float64 and sol.dtype == torch.float32
    torch.testing.assert_close(event_t, torch.tensor([2 / G, 6 / G], dtype=F64).sqrt(),
                               rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------ location, cost


def test_root_finding_is_vectorised_over_samples():
    # The brackets of all samples are narrowed together after the loop: a handful of
    # evaluations for the whole batch (Illinois: 5-8 per crossing), not per sample.
    calls = {"event": 0, "after_func": 0}

    def field(t, y):
        calls["after_func"] = 0
        return DampedPendulum(0.3)(t, y)

    def events(t, y):
        calls["after_func"] += 1
        return y[:, 0]

    y0 = torch.tensor([[a, 0.0] for a in (0.3, 0.5, 1.0, 1.7, 2.2, 2.6, 2.9, 3.0)], dtype=F64)
    with torch.no_grad():
        per_sample_event(field, y0, event_fn=events)
    assert 0 < calls["after_func"] <= 12


def test_no_grad_and_grad_solve_once_and_agree():
    class Counting(FreeFall):
        calls = 0

        def forward(self, t, y):
            Counting.calls += 1
            return super().forward(t, y)

    _, y0 = drops([2.0, 0.7])
    y0 = torch.cat([y0, torch.tensor([[1.0, 0.5]], dtype=F64)])
    with torch.no_grad():
        t_a, sol_a = per_sample_event(Counting(), y0, event_fn=height)
    calls, Counting.calls = Counting.calls, 0
    t_b, sol_b = per_sample_event(Counting(), y0.clone().requires_grad_(True), event_fn=height)
    assert Counting.calls == calls  # no second solve for the gradient
    torch.testing.assert_close(t_a, t_b.detach(), rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(sol_a, sol_b.detach(), rtol=1e-12, atol=1e-13)


def test_two_crossings_inside_one_step_are_seen():
    # A quadratic trajectory that rises above 1 and falls back within one (growing) step.
    y0 = torch.tensor([[0.0, 5.0], [0.0, 6.0]], dtype=F64)
    event_t, _ = per_sample_event(FreeFall(), y0, event_fn=Level(1.0))
    want = [(v - math.sqrt(v * v - 2 * G)) / G for v in (5.0, 6.0)]
    torch.testing.assert_close(event_t, torch.tensor(want, dtype=F64), rtol=1e-10, atol=1e-12)


def test_a_missing_event_names_the_sample():
    # Sample 1 rises forever: no event within its step budget; sample 0 finds its own.
    y0 = torch.tensor([[1.0], [1.0]], dtype=F64)
    with pytest.raises(node.SolverError, match="sample 1") as info:
        per_sample_event(lambda t, y: torch.cat([-torch.ones_like(y[:1]), torch.ones_like(
            y[1:])]), y0, event_fn=lambda t, y: y[:, 0], options=dict(max_num_steps=50))
    assert info.value.samples == [1]
    assert "no event found for 1 of 2 samples" in str(info.value)


# ------------------------------------------------------------------------ bad input


def test_event_fn_without_batch_dimension_raises():
    _, y0 = drops([1.0, 2.0])
    with pytest.raises(ValueError, match="per_sample.*batch"):
        per_sample_event(FreeFall(), y0, event_fn=lambda t, y: y[:, 0].sum())


def test_start_times_of_the_wrong_length_raise():
    _, y0 = drops([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"t0 of shape \(2,\).*y0.shape\[0\] = 3"):
        per_sample_event(FreeFall(), y0, torch.zeros(2, dtype=F64), event_fn=height)


def test_start_times_need_per_sample_steps():
    _, y0 = drops([1.0, 2.0])
    with pytest.raises(ValueError, match="t0 of shape \\[B\\].*gradient='checkpoint'"):
        per_sample_event(FreeFall(), y0, torch.zeros(2, dtype=F64), event_fn=height,
                         gradient="checkpoint")
    with pytest.raises(ValueError, match="t0 must be a scalar"):
        node.odeint_event(FreeFall(), y0, torch.zeros(2, dtype=F64), event_fn=height)


def test_unsupported_options_are_named():
    _, y0 = drops([1.0, 2.0])
    with pytest.raises(ValueError, match="norm"):
        per_sample_event(FreeFall(), y0, event_fn=height, options=dict(norm=lambda x: x.abs()
                                                                       .max()))


def test_adjoint_arguments_are_refused_in_the_direct_mode():
    _, y0 = drops([1.0, 2.0])
    with pytest.raises(ValueError, match="adjoint_"):
        per_sample_event(FreeFall(), y0, event_fn=height, adjoint_rtol=1e-6)


def test_odeint_with_event_fn_takes_per_sample():
    _, y0 = drops([1.0, 2.0])
    event_t, sol = node.odeint(FreeFall(), y0, torch.tensor([0.0, 1.0], dtype=F64),
                               event_fn=height, per_sample=True, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(event_t, torch.tensor([2 / G, 4 / G], dtype=F64).sqrt())
    assert sol.shape == (2, 2, 2)
    with pytest.raises(ValueError, match=r"1-D t of two times, not a \[B, T\] t"):
        node.odeint(FreeFall(), y0, torch.zeros(2, 2, dtype=F64), event_fn=height)


# ------------------------------------------------------------------------ fixed grids


@pytest.mark.parametrize("interp", ["linear", "cubic"])
@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_fixed_grid_events_match_solves_alone(method, interp):
    # Every sample on its grid k * step_size, located on the grid's interpolant, as alone.
    field = DampedPendulum(0.3)
    rows = torch.tensor([[0.5, 0.0], [1.7, 0.0], [2.6, 0.3]], dtype=F64)
    y0 = rows.clone().requires_grad_(True)
    options = {"step_size": 0.05, "interp": interp}
    event_t, sol = per_sample_event(field, y0, event_fn=height, method=method, options=options)
    for b in range(3):
        g_y0, g_k = torch.autograd.grad(event_t[b], (y0, field.k), retain_graph=True)
        field_b = DampedPendulum(0.3)
        y0_b = rows[b].clone().requires_grad_(True)
        t_b, sol_b = node.odeint_event(field_b, y0_b, 0.0, event_fn=height, method=method,
                                       options=options)
        torch.testing.assert_close(event_t[b].detach(), t_b.detach(), rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(sol[1, b].detach(), sol_b[1].detach(), rtol=1e-11,
                                   atol=1e-12)
        want_y0, want_k = torch.autograd.grad(t_b, (y0_b, field_b.k))
        torch.testing.assert_close(g_y0[b], want_y0, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g_k, want_k, rtol=1e-10, atol=1e-12)


def test_fixed_grid_events_with_a_step_size_per_sample():
    # rk4 integrates the quadratic fall exactly and the cubic interpolant reproduces it: the
    # analytic times whatever each sample's step size; a reverse solve too.
    h, y0 = drops([1.0, 2.0, 4.5], grad=True)
    steps = torch.tensor([0.1, 0.03, 0.2], dtype=F64)
    event_t, _ = per_sample_event(FreeFall(), y0, event_fn=Level(0.25), method="rk4",
                                  options={"step_size": steps, "interp": "cubic"})
    expected = torch.sqrt(2 * (h.detach() - 0.25) / G)
    torch.testing.assert_close(event_t.detach(), expected, rtol=1e-12, atol=1e-12)
    (dt_dh,) = torch.autograd.grad(event_t.sum(), h)
    torch.testing.assert_close(dt_dh, 1 / torch.sqrt(2 * G * (h.detach() - 0.25)), rtol=1e-9,
                               atol=0)
    back, _ = per_sample_event(FreeFall(), torch.tensor([[0.0, -5.0], [0.5, -5.0]], dtype=F64),
                               event_fn=Level(1.0), reverse_time=True, method="rk4",
                               options={"step_size": torch.tensor([0.01, 0.02], dtype=F64),
                                        "interp": "cubic"})
    want = [(v0 + math.sqrt(v0**2 - 2 * G * (1.0 - x0))) / G for x0, v0 in ((0, -5), (0.5, -5))]
    torch.testing.assert_close(back, torch.tensor(want, dtype=F64), rtol=1e-11, atol=1e-12)


def test_step_sizes_per_sample_need_per_sample_steps():
    _, y0 = drops([1.0, 2.0])
    with pytest.raises(ValueError, match=r"one step size per sample.*gradient='checkpoint'"):
        per_sample_event(FreeFall(), y0, event_fn=height, method="rk4", gradient="checkpoint",
                         options={"step_size": torch.tensor([0.1, 0.2], dtype=F64)})
    with pytest.raises(ValueError, match=r"step_size.*\[2\].*got shape \(3,\)"):
        per_sample_event(FreeFall(), y0, event_fn=height, method="rk4",
                         options={"step_size": torch.tensor([0.1, 0.2, 0.3], dtype=F64)})


def test_complex_states_keep_the_joint_steps():
    # Per-sample solves take real states only: a complex state's events are located on one
    # joint solve, each sample still stopping at its own event; func still receives the
    # per-sample times [B, 1] (one convention for func whichever path runs).
    seen = []

    def rotate(t, z):
        seen.append(tuple(t.shape))
        return 1j * z

    z0 = torch.tensor([[1.0 + 0.0j], [2.0 + 0.0j]], dtype=torch.complex128)
    event_t, _ = per_sample_event(rotate, z0, event_fn=lambda t, z: z[:, 0].real - 0.5 * z[:, 0]
                                  .abs())
    # Re z = |z| cos t: the level |z| / 2 at t = pi / 3 for both.
    torch.testing.assert_close(event_t, torch.full((2,), math.pi / 3, dtype=F64), rtol=1e-9,
                               atol=1e-10)
    assert set(seen) == {(2, 1)}


class _TimeShapes(nn.Module):
    """A field recording the shapes of the times it receives."""

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = field
        self.shapes: set[tuple[int, ...]] = set()

    def forward(self, t, y):
        self.shapes.add(tuple(t.shape))
        return self.field(t, y)


@pytest.mark.parametrize("gradient, method", [("checkpoint", "dopri5"), ("adjoint", "dopri5"),
                                              ("direct", "kvaerno5")])
def test_joint_fallback_gives_func_per_sample_times(gradient, method):
    # The joint fallback (other gradient modes, implicit methods) keeps func's convention of the
    # per-sample path, t of shape [B, 1], and the event times and their gradients agree with it.
    y0 = torch.tensor([[0.5, 0.0], [1.0, 0.0], [1.5, 0.2]], dtype=F64)

    def level(t, y):
        return y[..., 0] - 0.1

    def times(gradient, method):
        field = _TimeShapes(DampedPendulum())
        start = y0.clone().requires_grad_()
        event_t, _ = per_sample_event(field, start, event_fn=level, gradient=gradient,
                                      method=method, rtol=1e-9, atol=1e-11)
        (grad,) = torch.autograd.grad(event_t.sum(), start)
        return event_t.detach(), grad, field.shapes

    ref_t, ref_grad, ref_shapes = times("direct", "dopri5")
    event_t, grad, shapes = times(gradient, method)
    assert ref_shapes == {(3, 1)}
    assert shapes == {(3, 1)}
    torch.testing.assert_close(event_t, ref_t, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)
