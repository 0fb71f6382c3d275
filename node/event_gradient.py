"""Gradients of terminal events by the implicit function theorem, built in the backward pass.

With ``g(t*, y(t*; θ); θ) = 0`` for the event component that fired,

    dt*/dθ = -(∂g/∂y · ∂y(t*)/∂θ + ∂g/∂θ) / D,    D = ∂g/∂t + ∂g/∂y · f(t*, y*),

for every θ that ``g`` depends on: ``y0``, ``t0``, the parameters of ``func`` (through the state
at the fixed time ``t*``, from a solve in the requested gradient mode) and the parameters of
``event_fn`` itself; the state at the event moves with it, ``dy*/dθ = ∂y(t*)/∂θ + f dt*/dθ``.

In the graph, ``g`` evaluated on the differentiable state at fixed ``t*`` feeds
:class:`_EventShift`, whose zero-valued outputs are added to ``t*`` and ``y*``; its backward
scales the incoming gradient by ``-1/D``. ``D`` (one call of ``func`` and one vector-Jacobian
product of ``event_fn``) is computed there, only when a gradient reaches it, so the forward pass
works for any event function. When ``D`` is zero (an event function that is flat in time at
the event, such as ``sign(y - c)``) the event time exists but has no derivative: the backward
pass raises then, and only if a non-zero gradient of the event time or state is asked for. An
event function whose value does not depend on any input (``torch.zeros_like(t)`` past a terminal
time) gives an event time without gradient: its location does not move with any θ.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from node.errors import SolverError, Status
from node.problem import Problem


class _EventJacobian:
    """What the backward pass needs: ``f`` and the event function at the (detached) events."""

    def __init__(self, problem: Problem, event_fn, times, flat_event, comps, batch, per_sample,
                 field=None):
        self.problem = problem
        self.field_at = field
        self.event_fn = event_fn
        self.times = times.detach() if per_sample else times.detach().reshape(())
        self.flat_event = flat_event.detach()
        self.comps = comps
        self.batch = batch
        self.per_sample = per_sample

    def field(self) -> torch.Tensor:
        """``f(t*, y*)`` as ``[batch, n]``; per sample, ``func`` (which takes a scalar time) is
        called once per distinct event time and the rows of the samples at that time kept
        (unless the caller gave its own ``field(times, flat_event)``)."""
        y = self.flat_event
        if self.field_at is not None:
            return self.field_at(self.times, y).reshape(self.batch, -1)
        f = self.problem.vector_field()
        if not self.per_sample:
            return f.at(self.times, y).reshape(1, -1)
        rows = y.new_empty(self.batch, y.numel() // self.batch)
        for value in torch.unique(self.times).tolist():
            mask = self.times == value
            rows[mask] = f.at(self.times.new_tensor(value), y).reshape(self.batch, -1)[mask]
        return rows

    def rate(self, fy: torch.Tensor) -> torch.Tensor:
        """``D = ∂g/∂t + ∂g/∂y · f`` per sample, from one vector-Jacobian product."""
        with torch.enable_grad():
            t_req = self.times.clone().requires_grad_(True)
            y_req = self.flat_event.clone().requires_grad_(True)
            g = selected(self, t_req, y_req)
            if not g.requires_grad:
                return torch.zeros(self.batch, dtype=fy.dtype, device=fy.device)
            g_t, g_y = torch.autograd.grad(g.sum(), (t_req, y_req), allow_unused=True)
        d = (g_y.reshape(self.batch, -1) * fy).sum(dim=1) if g_y is not None else fy.new_zeros(
            self.batch)
        if g_t is not None:
            d = d + g_t.to(d.dtype).reshape(self.batch)
        return d


def selected(jac: _EventJacobian, t, y_flat) -> torch.Tensor:
    """The event component that fired, per sample, as ``[batch]``."""
    y = jac.problem.layout.unflatten(y_flat)
    if jac.per_sample:
        g = jac.event_fn(t.expand(jac.batch), y).reshape(jac.batch, -1)
    else:
        g = jac.event_fn(t, y).reshape(1, -1)
    return g.gather(1, jac.comps.reshape(-1, 1)).reshape(-1)


class _EventShift(torch.autograd.Function):
    """``(g) -> (dt*, dy*)``, both zero-valued; backward: ``dL/dg = -(dL/dt* + dL/dy*·f) / D``."""

    @staticmethod
    def forward(ctx, g, jac: _EventJacobian):
        ctx.jac = jac
        ctx.g_dtype = g.dtype
        return torch.zeros_like(jac.times), torch.zeros_like(jac.flat_event)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_t, grad_y):
        jac = ctx.jac
        fy = jac.field()
        c = grad_t.to(fy.dtype).reshape(jac.batch) + (grad_y.reshape(jac.batch, -1) * fy).sum(1)
        if not bool((c != 0).any()):
            return torch.zeros_like(c, dtype=ctx.g_dtype), None
        d = jac.rate(fy)
        bad = (c != 0) & ((d == 0) | ~torch.isfinite(d))
        if bool(bad.any()):
            t_bad = float(jac.times.reshape(-1)[bad.nonzero()[0, 0]])
            raise SolverError(
                Status.NON_FINITE, t_bad, 0.0,
                f"the event at t={t_bad:.10g} has no gradient: the event function's time "
                f"derivative there, d/dt event_fn(t, y(t)) = {float(d[bad][0]):.3g}, is not a "
                "non-zero number (it is flat or tangent to zero at the event); the event time "
                "itself is valid, only gradients through it are not")
        grad_g = torch.where(c != 0, -c / torch.where(bad | (c == 0), 1.0, d), 0.0)
        return grad_g.to(ctx.g_dtype), None


def attach_event_gradient(problem: Problem, event_fn, times: torch.Tensor, comps, y_event,
                          per_sample: bool, field=None):
    """Event time(s) and state(s) carrying implicit-function-theorem gradients.

    ``times``: the located event time(s) (``[batch]``, no gradient); ``comps``: the component
    that fired per sample; ``y_event``: the differentiable state at those fixed times (the
    user's structure, or ``[batch, ...]`` per sample). ``field(times, flat_event)``: ``f`` at
    the events as ``[batch, n]``, if not ``problem``'s vector field (per-sample solves call
    ``func`` once with every sample's own time); only ``problem.layout`` is used then.
    """
    layout = problem.layout
    batch = times.numel()
    flat_event = y_event.reshape(-1) if per_sample else layout.flatten(y_event)
    comps = torch.as_tensor(comps, device=layout.device)
    jac = _EventJacobian(problem, event_fn, times, flat_event, comps, batch, per_sample, field)
    time_arg = times if per_sample else times.reshape(())
    if not torch.is_grad_enabled():
        return time_arg, y_event
    g = selected(jac, time_arg, flat_event)
    if not g.requires_grad:
        return time_arg, y_event
    dt, dy = _EventShift.apply(g, jac)
    event_t = time_arg + dt
    flat_moved = flat_event + dy
    if per_sample:
        return event_t, flat_moved.view_as(y_event)
    return event_t, layout.unflatten(flat_moved)
