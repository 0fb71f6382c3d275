"""Locating terminal events: where ``event_fn(t, y)`` first reaches zero, without gradients.

Detection. After every accepted step the event function is evaluated at the step's end and at
``INTERIOR_SAMPLES`` equally spaced points of the step's interpolant (its dense output for
adaptive methods; the linear or cubic Hermite interpolant of ``interp`` on a fixed grid). A sign
change between consecutive samples, or an exact zero reached from a non-zero value, brackets the
event. The interior samples matter: an error estimate that vanishes (dopri5 integrates a
quadratic trajectory exactly) lets the step grow tenfold each step, until one step spans both
crossings of a level that the trajectory rises above and falls below again, with equal signs at
its ends. Two crossings closer together than a fifth of a step can still be missed. A value that
is exactly zero at ``t0`` has no sign yet and does not stop the solve there.

Location. The bracket ``(lo, hi]`` (``hi``: the event has happened) is narrowed with the Illinois
variant of regula falsi, superlinear (typically 5-8 evaluations of the interpolant), with two
safeguards that make it work for discontinuous event functions too: a bisection step whenever
two iterations did not halve the bracket, and the event is reported at ``hi``, so an event
function that jumps to exactly zero (``0 if t > T else 1``) stops at the jump ``T``, the first
time it is zero, not at the first zero the iteration happened to evaluate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from node.errors import SolverError, Status
from node.interpolation import dense_polynomials, hermite, interpolate, weights_at
from node.problem import Problem

INTERIOR_SAMPLES = 4
_ROOT_ITERATIONS = 200  # a cap; bisection alone needs at most ~55 to reach the tolerance


@dataclass
class _Step:
    """One accepted step in solver time: what its interpolant needs."""

    tau0: float
    y0: torch.Tensor
    tau1: float
    y1: torch.Tensor
    K: torch.Tensor
    h: float  # signed step in user time
    f1: torch.Tensor | None  # f(t1, y1) for the cubic fixed-grid interpolant
    f0: torch.Tensor | None  # f(t0, y0) for it (not K[0] if the first stage is implicit)


class EventLocator:
    """Runs the solve without gradients and locates each sample's first event.

    After :meth:`run`: ``times`` (user time of each sample's event), ``components`` (which
    event value fired), ``states`` (``[batch, n]`` rows of the flat state at the events) and
    ``step_ends`` (solver time of the end of each event's step).
    """

    def __init__(self, problem: Problem, event_fn: Callable, per_sample: bool) -> None:
        self.problem = replace(problem, taus=[problem.taus[0], math.inf])
        self.event_fn = event_fn
        self.per_sample = per_sample
        self.batch = problem.layout.shapes[0][0] if per_sample else 1
        self.f = self.problem.vector_field()
        self.cubic = problem.fixed_grid and problem.options.interp == "cubic"
        self.polys = None if problem.fixed_grid else dense_polynomials(problem.tableau)
        self.coeffs = None if self.polys is None else torch.tensor(self.polys, dtype=torch.float64)
        self.times: list[float] = [math.nan] * self.batch
        self.components: list[int] = [0] * self.batch
        self.step_ends: list[float] = [math.nan] * self.batch
        self.done = torch.zeros(self.batch, dtype=torch.bool)
        self.states = problem.layout.flatten(problem.y0).detach().clone().view(self.batch, -1)

    def values(self, t_user, y_flat: torch.Tensor) -> torch.Tensor:
        """Event values as ``[batch, k]`` at user time(s) ``t_user`` (float or ``[batch]``)."""
        layout = self.problem.layout
        dtype = self.problem.options.dtype or layout.dtype
        if self.per_sample:
            t = torch.as_tensor(t_user, dtype=dtype, device=layout.device).expand(self.batch)
            g = self.event_fn(t, layout.unflatten(y_flat))
            if not isinstance(g, torch.Tensor) or g.dim() == 0 or g.shape[0] != self.batch:
                raise ValueError(
                    f"with per_sample=True, event_fn must return a tensor whose first dimension "
                    f"is the batch ({self.batch}), got "
                    f"{tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__}")
            return g.reshape(self.batch, -1)
        t = torch.as_tensor(t_user, dtype=dtype, device=layout.device)
        g = self.event_fn(t, layout.unflatten(y_flat))
        if not isinstance(g, torch.Tensor):
            raise TypeError(f"event_fn must return a tensor, got {type(g).__name__}")
        return g.reshape(1, -1)

    def run(self) -> None:
        problem = self.problem
        y0 = problem.layout.flatten(problem.y0)
        self.g_prev = self.values(problem.direction * problem.taus[0], y0).double().cpu()
        run = problem.integrate(self.f, y0, observer=self.observe)
        if run.status is not Status.SUCCESS:
            t_reached = problem.direction * run.tau
            raise SolverError(run.status, t_reached, run.h,
                              f"no event found: {run.cause}; solve stopped at t={t_reached:.10g}")

    def observe(self, tau0, y0, tau1, y1, K, h, f1=None, f0=None) -> bool:
        """Called after each accepted step; True ends the solve (every sample has fired).
        ``f0``, ``f1``: the derivatives at the step's ends of the fixed grid's cubic interpolant
        (``f0`` defaults to ``K[0]``, as the multistep loop passes it)."""
        step = _Step(tau0, y0, tau1, y1, K, h, f1, K[0] if f0 is None else f0)
        direction = self.problem.direction
        n = INTERIOR_SAMPLES + 1
        thetas = [j / n for j in range(1, n)]
        interior = self._states_at_fractions(step, thetas).T.contiguous()  # [M, N]
        vals = [self.values(direction * (tau0 + th * (tau1 - tau0)), y)
                for th, y in zip(thetas, interior, strict=True)]
        vals.append(self.values(direction * tau1, y1))
        vals = torch.stack(vals).double().cpu()  # [M + 1, batch, k]: one device sync
        ref = self.g_prev  # the last non-zero value (zero: no sign yet)
        if bool((vals * ref > 0).all()):  # the common step: no zero, no sign change
            self.g_prev = vals[-1]
            return False
        scan = first_sign_changes(ref, vals, [*thetas, 1.0], ~self.done.unsqueeze(1))
        lo, hi, g_lo, g_hi, crossed, self.g_prev = scan
        if not bool(crossed.any()):
            return False
        # Per sample, only the components crossing in the earliest sub-interval can fire first.
        first = torch.where(crossed, hi, math.inf).min(dim=1, keepdim=True).values
        crossed &= hi == first
        theta_event = torch.ones(self.batch, dtype=torch.float64)
        best = torch.full((self.batch,), math.inf, dtype=torch.float64)
        for k in crossed.any(dim=0).nonzero().flatten().tolist():
            active = crossed[:, k]
            theta_k = self._root(step, k, lo[:, k], hi[:, k], g_lo[:, k], g_hi[:, k], active)
            wins = active & (theta_k < best)
            best = torch.where(wins, theta_k, best)
            for b in wins.nonzero().flatten().tolist():
                self.components[b] = k
        fired = crossed.any(dim=1)
        theta_event = torch.where(fired, best, theta_event)
        states = self._state_at(step, theta_event).view(self.batch, -1)
        for b in fired.nonzero().flatten().tolist():
            theta_b = float(theta_event[b])
            self.times[b] = direction * (tau0 + theta_b * (tau1 - tau0))
            self.step_ends[b] = tau1
            self.states[b] = states[b]
            self.done[b] = True
        return bool(self.done.all())

    def _root(self, step: _Step, k: int, lo, hi, g_lo, g_hi, active) -> torch.Tensor:
        """Narrow the brackets of component ``k`` within ``step`` (see :func:`narrow`)."""
        h_tau = abs(step.h)
        # As close as the interpolant (in the state's precision) can tell.
        tol = 4 * torch.finfo(step.y0.dtype).eps * max(1.0, abs(step.tau0) + h_tau)
        return narrow(lambda theta: self._values_at(step, theta)[:, k], lo, hi, g_lo, g_hi,
                      active, tol / h_tau)

    def _states_at_fractions(self, step: _Step, thetas: list[float]) -> torch.Tensor:
        """The flat states at fractions ``thetas`` of the step (all samples), ``[N, M]``."""
        if self.polys is not None:
            return interpolate(step.y0, step.K, step.h, self.polys, thetas)
        th = torch.tensor(thetas, dtype=step.y0.dtype, device=step.y0.device)
        y0, y1 = step.y0.unsqueeze(1), step.y1.unsqueeze(1)
        if self.cubic:
            return hermite(y0, y1, step.f0.unsqueeze(1), step.f1.unsqueeze(1), step.h, th)
        return y0 + th * (y1 - y0)

    def _state_at(self, step: _Step, theta: torch.Tensor) -> torch.Tensor:
        """The flat state with each sample at its own fraction ``theta[b]`` of the step."""
        n_per = step.y0.shape[0] // self.batch
        if self.polys is not None:
            weights = weights_at(self.coeffs, theta).T.to(dtype=step.K.dtype,
                                                          device=step.K.device)  # [S, B]
            w = weights.repeat_interleave(n_per, dim=1)  # [S, N]
            return step.y0 + step.h * (step.K * w).sum(dim=0)
        # The fixed grid's own interpolants, as in node.fixed_grid.
        th = theta.to(dtype=step.y0.dtype, device=step.y0.device).repeat_interleave(n_per)
        if self.cubic:
            return hermite(step.y0, step.y1, step.f0, step.f1, step.h, th)
        return torch.lerp(step.y0, step.y1, th)

    def _values_at(self, step: _Step, theta: torch.Tensor) -> torch.Tensor:
        """Event values ``[batch, k]`` (float64, CPU), each sample at its own ``theta[b]``."""
        y = self._state_at(step, theta)
        t_user = self.problem.direction * (step.tau0 + theta * (step.tau1 - step.tau0))
        t_arg = t_user.to(y.device) if self.per_sample else float(t_user[0])
        return self.values(t_arg, y).double().cpu()


def first_sign_changes(ref, vals, thetas, pending):
    """Scan the event values ``vals[j]`` at step fractions ``thetas[j]`` (increasing, the last
    1) for each component's first sign change, or exact zero reached from a non-zero value,
    after ``ref`` (the last non-zero values before the step; zero: no sign yet). Components
    where ``pending`` is False are not scanned.

    Returns ``(lo, hi, g_lo, g_hi, crossed, ref)``: the bracketing fractions and values of the
    first change of every crossed component, the mask ``crossed``, and the last non-zero values
    at the step's end (the next step's ``ref``)."""
    lo, hi = torch.zeros_like(ref), torch.ones_like(ref)
    g_lo, g_hi = ref, ref
    crossed = torch.zeros_like(ref, dtype=torch.bool)
    theta_prev = 0.0
    for theta, g in zip(thetas, vals, strict=True):
        new = pending & ~crossed & (((ref * g) < 0) | ((g == 0) & (ref != 0)))
        lo = torch.where(new, theta_prev, lo)
        hi = torch.where(new, theta, hi)
        g_lo = torch.where(new, ref, g_lo)
        g_hi = torch.where(new, g, g_hi)
        crossed |= new
        ref = torch.where(g == 0, ref, g)
        theta_prev = theta
    return lo, hi, g_lo, g_hi, crossed, ref


def narrow(values, lo, hi, g_lo, g_hi, active, tol_theta) -> torch.Tensor:
    """Narrow the brackets ``(lo, hi]`` of fractions of a step (vectorised over samples) to
    ``tol_theta`` (a number, or one per sample); ``values(theta)`` gives the event component's
    value of every sample at its own fraction ``theta[b]``.

    Invariants: ``g_lo`` has the sign of the start (never zero), ``g_hi`` the other sign or
    zero; the returned ``hi`` is a fraction of the step where the event has happened.
    """
    side = torch.zeros_like(lo, dtype=torch.int8)  # which end moved last: 1 lo, -1 hi
    inf = torch.full_like(lo, math.inf)
    widths = [inf, inf, hi - lo]  # per sample, at the start of the last three iterations
    bisect = torch.zeros_like(active)
    # An exact zero at the bracket's end is usually the root itself (a continuous g): a
    # probe just before it settles that instead of bisecting towards it. If the probe is
    # zero as well, g is flat at zero there (a jump to zero): no more probes, bisect.
    probe = g_hi == 0
    may_probe = torch.ones_like(active)
    for _ in range(_ROOT_ITERATIONS):
        if not bool((active & (hi - lo > tol_theta)).any()):
            break
        mid = (lo + hi) / 2
        denom = g_hi - g_lo
        secant = torch.where(denom != 0, (lo * g_hi - hi * g_lo) / denom, mid)
        outside = (secant <= lo) | (secant >= hi) | ~torch.isfinite(secant)
        theta = torch.where(bisect | outside, mid, secant)
        theta = torch.where(probe, torch.clamp(hi - tol_theta, min=lo), theta)
        g = values(theta)
        may_probe &= ~(probe & (g == 0))
        past = torch.sign(g) != torch.sign(g_lo)  # the event has happened by theta
        # Illinois: when the same end is kept twice, halve the value at the other end.
        g_hi = torch.where(~past & (side == 1), g_hi / 2, g_hi)
        g_lo = torch.where(past & (side == -1), g_lo / 2, g_lo)
        lo, g_lo = torch.where(past, lo, theta), torch.where(past, g_lo, g)
        hi, g_hi = torch.where(past, theta, hi), torch.where(past, g, g_hi)
        side = torch.where(past, -1, 1).to(torch.int8)
        probe = may_probe & ~probe & past & (g == 0)
        # Regula falsi can stall on a one-sided bracket (always so on a step function);
        # Illinois needs up to three iterations to cross over: bisect when three
        # iterations together did not halve the bracket.
        bisect = (hi - lo) > 0.5 * widths[0]
        widths = [widths[1], widths[2], hi - lo]
    return hi
