"""Per-sample terminal events: every sample steps on its own and stops at its own event.

``odeint_event(..., per_sample=True)`` with an explicit Runge-Kutta method and direct gradients.
The per-sample loop (:mod:`node.per_sample`, or on fixed grids ``start_b + k step_size``
:mod:`node.per_sample_fixed_grid`) runs without an end time. After every iteration,
each sample that took an accepted step evaluates the event function (one batched call per point,
every sample at its own time) at the end of its step and at 4 interior points of its dense
output (on a fixed grid: of the linear or cubic interpolant, ``interp``): the detection rule of
:mod:`node.event_location`. A sample whose event values change
sign (or reach zero from a non-zero value) in its step is frozen there; its step (start time and
state, stages, size) and the bracket of each component are kept. Detection, brackets and kept
steps are device tensors updated by ``torch.where``: no host synchronisation is added to the
loop's one per iteration.

After the loop the brackets of all samples are narrowed together by the Illinois iteration
(:func:`node.event_location.narrow`), each on its own dense output, and the event state is that
dense output at the root:

    t*_b = tau0_b + theta_b (tau1_b - tau0_b),     y*_b = y0_b + h_b sum_i b_i(theta_b) k_i,b

With a graph, ``y0_b`` and ``k_i,b`` carry it (direct mode: autograd through the steps taken),
so the state at the fixed time ``t*_b`` is differentiable without a second solve. The event time
gets its gradient from the implicit function theorem (:mod:`node.event_gradient`), per sample:
``dt*/dθ = -(∂g/∂y ∂y(t*)/∂θ + ∂g/∂θ) / (∂g/∂t + ∂g/∂y f(t*, y*))``.
"""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import torch

from node.callbacks import CALLBACK_NAMES
from node.errors import SolverError
from node.event_gradient import attach_event_gradient
from node.event_location import INTERIOR_SAMPLES, first_sign_changes, narrow
from node.inputs import check_func
from node.interpolation import dense_polynomials, hermite
from node.options import parse_options, uses_fixed_grid
from node.per_sample import CODES, SampleErrorScale, SampleField, integrate_per_sample
from node.per_sample_fixed_grid import fixed_grid_options, integrate_fixed_grid_per_sample
from node.per_sample_inputs import check_sample_inputs
from node.per_sample_solve import check_options, failure_causes
from node.runge_kutta import coefficients
from node.tableau import ButcherTableau


class SampleEventWatch:
    """The loop's observer: detects each sample's first event in its accepted steps and keeps
    that step (see the module docstring); :meth:`locate` then finds the roots."""

    def __init__(self, event_fn, field: SampleField, tableau: ButcherTableau, batch: int,
                 numel: int, sign: float, dtype, device, interp: str | None = None) -> None:
        self.event_fn = event_fn
        self.field = field
        self.batch, self.numel, self.sign = batch, numel, sign
        # The interpolant: the dense output (None), or a fixed grid's "linear" or "cubic".
        self.interp = interp
        n = INTERIOR_SAMPLES + 1
        self.fractions = [j / n for j in range(1, n)] + [1.0]
        self.stages = tableau.stages
        if interp is None:
            polys = dense_polynomials(tableau)
            self.polys_t = torch.tensor(polys, dtype=torch.float64, device=device).T  # [P, S]
            inner = torch.tensor(self.fractions[:-1], dtype=torch.float64, device=device)
            self.inner_weights = self._weights(inner).to(dtype)  # [M, S]
        self.done = torch.zeros((batch, 1), dtype=torch.bool, device=device)
        self.g_prev = None  # [B, k]: the last non-zero event value (zero: no sign yet)
        self.kept = None  # the kept step and brackets, once the first values are known

    def _weights(self, theta: torch.Tensor) -> torch.Tensor:
        """``b_i(theta)`` as ``[len(theta), S]`` (float64)."""
        powers = theta[:, None].expand(-1, self.polys_t.shape[0]).cumprod(-1)
        return powers @ self.polys_t

    def values(self, t_solver: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Event values ``[B, k]`` (float64) at solver times ``[B]`` and flat states ``[B, N]``."""
        t_user = (t_solver * self.sign).reshape(self.batch)
        if self.field.time_dtype is not None:
            t_user = t_user.to(self.field.time_dtype)
        elif self.field.layout.dtype != torch.float64:
            t_user = t_user.to(self.field.layout.dtype)
        g = self.event_fn(t_user, y.view(self.field.shape))
        if not isinstance(g, torch.Tensor) or g.dim() == 0 or g.shape[0] != self.batch:
            raise ValueError(
                f"with per_sample=True, event_fn must return a tensor whose first dimension is "
                f"the batch ({self.batch}), got "
                f"{tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__}")
        return g.reshape(self.batch, -1).double()

    def start(self, tau0: torch.Tensor, y0: torch.Tensor) -> None:
        """The event values at the start (``tau0``: ``[B]`` solver times)."""
        with torch.no_grad():
            g0 = self.values(tau0, y0)
        self.g_prev = g0
        zeros = torch.zeros_like(g0)
        col = tau0.new_zeros((self.batch, 1))
        state = torch.zeros_like(y0)
        self.kept = SimpleNamespace(
            lo=zeros, hi=torch.ones_like(g0), g_lo=zeros, g_hi=zeros,
            crossed=torch.zeros_like(g0, dtype=torch.bool), tau0=col, tau1=col, h=col,
            y0=state, y1=state, f0=state, f1=state,
            K=y0.new_zeros((self.batch, self.stages, self.numel)))

    def _interpolate(self, theta, hu, y0, y1, K, f0, f1) -> torch.Tensor:
        """The state at fraction ``theta`` (a number or ``[B, 1]``) of the steps."""
        if self.interp is None:
            w = self._weights(theta.view(-1)).to(K.dtype)  # [B, S]
            return y0 + hu * torch.bmm(w[:, None, :], K).view(self.batch, self.numel)
        if self.interp == "cubic":
            return hermite(y0, y1, f0, f1, hu, theta.to(y0.dtype))
        return torch.lerp(y0, y1, theta.to(y0.dtype))

    def __call__(self, tau0, tau1, h, y0, y1, K, stepped, f0=None, f1=None) -> torch.Tensor:
        """One iteration (arguments as the loop's ``observer``; ``f0``, ``f1``: the slopes at
        the steps' ends on a fixed grid): the samples that fired."""
        with torch.no_grad():
            hu = (h * self.sign).to(y0.dtype)
            vals = []
            if self.interp is None:
                inc = torch.einsum("ms,bsn->mbn", self.inner_weights, K)
                inner = [y0 + hu * inc_m for inc_m in inc.unbind(0)]
            else:
                inner = [self._interpolate(torch.full_like(tau0, theta), hu, y0, y1, K, f0, f1)
                         for theta in self.fractions[:-1]]
            for theta, y_m in zip(self.fractions[:-1], inner, strict=True):
                vals.append(self.values(tau0 + theta * (tau1 - tau0), y_m))
            vals.append(self.values(tau1, y1))
            ref = self.g_prev
            pending = stepped & ~self.done
            lo, hi, g_lo, g_hi, crossed, ref = first_sign_changes(ref, vals, self.fractions,
                                                                  pending)
            self.g_prev = torch.where(pending, ref, self.g_prev)
            # Only the components crossing in the earliest sub-interval can fire first.
            first = torch.where(crossed, hi, math.inf).min(dim=1, keepdim=True).values
            crossed &= hi == first
            fired = crossed.any(dim=1, keepdim=True)
            self.done |= fired
            k = self.kept
            k.lo, k.hi = torch.where(fired, lo, k.lo), torch.where(fired, hi, k.hi)
            k.g_lo, k.g_hi = torch.where(fired, g_lo, k.g_lo), torch.where(fired, g_hi, k.g_hi)
            k.crossed = torch.where(fired, crossed, k.crossed)
            k.tau0, k.tau1 = torch.where(fired, tau0, k.tau0), torch.where(fired, tau1, k.tau1)
            k.h = torch.where(fired, h, k.h)
        # With a graph, the kept states and stages carry it (the event state's gradient).
        k.y0 = torch.where(fired, y0, k.y0)
        if self.interp is None:
            k.K = torch.where(fired[:, :, None], K, k.K)
        else:
            k.y1 = torch.where(fired, y1, k.y1)
            if self.interp == "cubic":
                k.f0, k.f1 = torch.where(fired, f0, k.f0), torch.where(fired, f1, k.f1)
        return fired

    def state_at(self, theta: torch.Tensor) -> torch.Tensor:
        """Each sample's interpolant at its own fraction ``theta[b]`` of its kept step."""
        k = self.kept
        hu = (k.h * self.sign).to(k.y0.dtype)
        return self._interpolate(theta.view(-1, 1), hu, k.y0, k.y1, k.K, k.f0, k.f1)

    def locate(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every sample's event: ``(theta, solver time, component)`` (``[B]`` each)."""
        k = self.kept
        h = k.h.view(-1)
        # As close as the interpolant (in the state's precision) can tell.
        eps = torch.finfo(k.y0.dtype).eps
        tol = 4 * eps * torch.clamp_min(k.tau0.view(-1).abs() + h, 1.0)
        tol_theta = tol / torch.where(h > 0, h, 1.0)
        tau0, span = k.tau0.view(-1), (k.tau1 - k.tau0).view(-1)
        best = torch.full_like(h, math.inf)
        comp = torch.zeros(self.batch, dtype=torch.long, device=h.device)
        with torch.no_grad():
            for c in k.crossed.any(dim=0).nonzero().flatten().tolist():
                def values(theta, c=c):
                    return self.values(tau0 + theta * span, self.state_at(theta))[:, c]

                active = k.crossed[:, c]
                theta_c = narrow(values, k.lo[:, c], k.hi[:, c], k.g_lo[:, c], k.g_hi[:, c],
                                 active, tol_theta)
                wins = active & (theta_c < best)
                best = torch.where(wins, theta_c, best)
                comp = torch.where(wins, c, comp)
        theta = torch.where(torch.isfinite(best), best, 1.0)
        return theta, tau0 + theta * span, comp


def solve_per_sample_event(func, y0, t0: torch.Tensor, direction: float, event_fn, *, rtol,
                           atol, tableau: ButcherTableau, options):
    """``(event_t, ys)`` of per-sample events: ``event_t`` ``[B]`` (``t0``'s dtype), ``ys``
    ``[2, B, ...]`` the states at the start and at each sample's event.

    ``t0``: a scalar or ``[B]`` (each sample's own start); ``direction``: ``+-1.0``;
    ``tableau``: an explicit Runge-Kutta method (adaptive, or on a fixed grid with
    ``options['step_size']``). ``options`` already hold the event solve's step budget.
    """
    check_func(func)
    check_func(event_fn)
    if not isinstance(y0, torch.Tensor) or y0.dim() == 0:
        raise ValueError("per_sample=True needs y0 to be a tensor whose first dimension is the "
                         "batch")
    batch = y0.shape[0]
    if t0.dim() == 1 and t0.shape[0] != batch:
        raise ValueError(f"t0 of shape {tuple(t0.shape)}: expected a scalar or one start time per "
                         f"sample ([B] with B = y0.shape[0] = {batch})")
    starts = t0.detach().reshape(-1, 1).expand(batch, 1)
    t = torch.cat([starts, starts + direction], dim=1)  # the direction, as check_sample_inputs
    inputs = check_sample_inputs(y0, t, rtol, atol)
    hooks = [n for n in CALLBACK_NAMES if getattr(func, n, None) is not None]
    if hooks:
        warnings.warn(f"func's {', '.join(hooks)} are not called by per-sample solves",
                      UserWarning, stacklevel=4)
    shift = None
    if t0.requires_grad and torch.is_grad_enabled():
        # The gradient with respect to t0: the solve is that of s = t - t0 (func and event_fn
        # at s + t0), with t0 a parameter. The loop's times carry no graph; a zero-valued
        # t0 - t0.detach() added to the times func and event_fn receive carries t0's.
        shift = (t0 - t0.detach()).reshape(-1).expand(batch)
        func, event_fn = _shifted(func, shift, y0.dim()), _shifted(event_fn, shift, 1)
    fixed = uses_fixed_grid(tableau.adaptive, options)
    if fixed:  # each sample on its grid start + k step_size (node.per_sample_fixed_grid)
        opts, steps = fixed_grid_options(options, batch, tableau.name, y0.device)
    else:
        opts = parse_options(options, fixed_grid=False, method=tableau.name)
        check_options(opts)
    layout = inputs.layout
    co = coefficients(tableau, layout.dtype, layout.device)
    field = SampleField(func, layout, opts.dtype)
    taus = inputs.taus.clone()
    taus[:, 1] = math.inf  # no end time: every sample runs until its event
    watch = SampleEventWatch(event_fn, field, tableau, batch, inputs.numel, direction,
                             layout.dtype, layout.device, opts.interp if fixed else None)
    watch.start(taus[:, 0], y0.reshape(batch, -1))
    if fixed:
        inputs.taus = taus
        run = integrate_fixed_grid_per_sample(field, y0, inputs, co, opts, steps, observer=watch)
    else:
        errors = SampleErrorScale(inputs.rtol, inputs.atol, batch, inputs.numel, layout.dtype,
                                  layout.device, opts.norm, layout.shapes[0])
        run = integrate_per_sample(field, y0, taus, direction, co, opts, errors, observer=watch)
    _raise_if_missed(run, inputs, opts, direction)
    theta, tau_event, comps = watch.locate()
    # The state at each event: recomputed at the root (with the graph of the kept step).
    flat = watch.state_at(theta)
    y_event = flat.view(layout.shapes[0])
    times = (tau_event * direction).to(t0.dtype)

    def field_at(times, flat_event):  # f(t*, y*) of every sample at its own time: one call
        t_b = times.detach().double().view(field.t_shape)
        return field(t_b, flat_event.view(field.shape)).reshape(batch, -1)

    event_t, y_event = attach_event_gradient(SimpleNamespace(layout=layout), event_fn, times,
                                             comps, y_event, True, field=field_at)
    if shift is not None:
        event_t = event_t + shift.to(event_t.dtype)  # t* = s* + t0
    return event_t, torch.stack([y0, y_event])


def _shifted(fn, shift: torch.Tensor, dims: int):
    """``fn(t + shift, y)``, ``shift`` (``[B]``, zero-valued) shaped ``[B, 1, ..., 1]`` to
    ``dims`` dimensions, as the times ``fn`` receives."""
    shaped = shift.reshape((-1,) + (1,) * (dims - 1))

    def wrapped(t, y):
        return fn(t + shaped.to(t.dtype), y)

    return wrapped


def _raise_if_missed(run, inputs, opts, direction: float) -> None:
    """A sample without an event stopped on a failure (its step budget, at the latest)."""
    codes = run.status.tolist()
    failed = [b for b, c in enumerate(codes) if c]
    if not failed:
        return
    first = failed[0]
    t_first = float(run.tau[first]) * direction
    error = SolverError(CODES[codes[first]], t_first, float(run.h[first]),
                        f"no event found for {len(failed)} of {inputs.batch} samples: "
                        + failure_causes(run, inputs, opts, failed))
    error.samples = failed
    raise error
