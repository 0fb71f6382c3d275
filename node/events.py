"""Terminal events: integrate until ``event_fn(t, y)`` crosses zero, with gradients.

The event is located without gradients (:mod:`node.event_location`) on the interpolant of the
method: the dense output of adaptive methods, or on a fixed grid (``options['step_size']``) the
linear or cubic Hermite interpolant chosen by ``interp``. With gradients enabled, the solve is
then repeated with output times ``[t0, t*]`` in the requested gradient mode (direct, checkpoint
or adjoint; its steps are the same ones, since output times never change steps: on a fixed grid
the grid point after the last event is added as a final output time, so that ``t*`` is
interpolated in its grid step as in the location), and the event time is attached to the graph
by the implicit function theorem (:mod:`node.event_gradient`).

Per-sample events. With ``per_sample=True`` the first dimension of the state is a batch of
independent problems: each sample stops at its own first event (``event_fn`` then receives ``t``
of shape ``[batch]`` and must return values of shape ``[batch]`` or ``[batch, k]``), and the
event times and states are returned per sample. With an explicit Runge-Kutta method and direct
gradients each sample also takes its own steps (:mod:`node.per_sample_events`; ``func`` then
receives ``t`` of shape ``[batch, 1, ..., 1]``, as in per-sample solves, and ``t0`` may hold one
start time per sample). Otherwise (checkpoint or adjoint gradients, implicit or multistep
methods, complex states) the samples share the steps of one joint solve, as below, and ``func``
still receives ``t`` of shape ``[batch, 1, ..., 1]`` (:mod:`node.per_sample_times`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from node.complex_state import ComplexView
from node.event_gradient import attach_event_gradient
from node.event_location import EventLocator
from node.gradient_modes import check_no_adjoint_arguments, solve_problem
from node.inputs import check_func
from node.methods import get_tableau
from node.per_sample_events import solve_per_sample_event
from node.per_sample_times import with_sample_times
from node.problem import Problem, make_problem
from node.scipy_solver import check_no_events
from node.tableau import ButcherTableau

_EVENT_STEP_BUDGET = 100_000  # default max_num_steps: a solve whose event never comes must end


def solve_until_event(
    func: Callable,
    y0,
    t: torch.Tensor,
    *,
    event_fn: Callable,
    rtol=1e-7,
    atol=1e-9,
    method: str | None = None,
    options: dict[str, Any] | None = None,
    gradient: str = "direct",
    per_sample: bool = False,
    starts: torch.Tensor | None = None,
    **adjoint_kwargs,
):
    """The event solve behind ``odeint(..., event_fn=...)`` and :func:`node.odeint_event`:
    ``(event_t, ys)``, ``ys`` the states at ``t[0]`` and at ``event_t``.

    ``t`` holds two times: ``t[0]`` is the start and the sign of ``t[1] - t[0]`` the direction.
    ``starts``: per-sample start times ``[B]`` (with ``per_sample``), replacing ``t[0]``.
    A complex state is solved as its real view (:mod:`node.complex_state`).
    """
    check_func(event_fn)
    check_no_events(method)
    view = ComplexView.of(y0)
    if (per_sample and callable(func) and isinstance(y0, torch.Tensor) and y0.dim() > 0
            and not _steps_per_sample(get_tableau(method), gradient, view is not None)):
        # The samples share the steps of one joint solve; func still gets per-sample times.
        func = with_sample_times(func, y0.shape)
    if view is None:
        return _solve_real(func, y0, t, event_fn, rtol, atol, method, options, gradient,
                           per_sample, starts, adjoint_kwargs)

    def real_event_fn(t, y):
        return event_fn(t, view.complex(y))

    for name in ("adjoint_rtol", "adjoint_atol"):
        if name in adjoint_kwargs:
            adjoint_kwargs[name] = view.tolerance(adjoint_kwargs[name])
    event_t, ys = _solve_real(view.func(func), view.real(y0), t, real_event_fn,
                              view.tolerance(rtol), view.tolerance(atol), method, options,
                              gradient, per_sample, starts, adjoint_kwargs)
    return event_t, view.complex(ys)


def _solve_real(func, y0, t, event_fn, rtol, atol, method, options, gradient, per_sample,
                starts, adjoint_kwargs):
    """:func:`solve_until_event` for a real state."""
    if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.numel() != 2:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"with event_fn, t must be a 1-D tensor of 2 times (only t[0] is used), "
                         f"got {got}")
    user_options = options
    options = dict(options or {})
    options.setdefault("max_num_steps", _EVENT_STEP_BUDGET)
    step = options.get("step_size")
    steps_given = per_sample and isinstance(step, torch.Tensor) and step.numel() > 1
    # One step size per sample is checked by node.per_sample_fixed_grid; a number stands in.
    problem = make_problem(func, y0, t, method=method, rtol=rtol, atol=atol,
                           options=dict(options, step_size=1.0) if steps_given else options)
    if problem.fixed_grid and problem.options.step_size is None:
        given = ", grid_constructor given" if problem.options.grid_constructor else ""
        raise ValueError(
            f"events with the fixed-grid method {problem.tableau.name!r} need "
            "options['step_size'] (the event solve has no end time to build a grid to); got "
            f"step_size=None{given}")
    if per_sample:
        if problem.layout.is_tuple or len(problem.layout.shapes[0]) == 0:
            raise ValueError("per_sample=True needs y0 to be a tensor whose first dimension is "
                             "the batch")
        if _steps_per_sample(problem.tableau, gradient, problem.complex_view is not None):
            check_no_adjoint_arguments(gradient, tuple(adjoint_kwargs.values()))
            return solve_per_sample_event(
                func, y0, t[0] if starts is None else starts, problem.direction, event_fn,
                rtol=rtol, atol=atol, tableau=problem.tableau, options=options)
    if starts is not None or steps_given:
        what = ("one start time per sample (t0 of shape [B])" if starts is not None else
                "one step size per sample (options['step_size'] of shape [B])")
        raise ValueError(
            f"{what} needs per-sample steps: per_sample=True with an explicit Runge-Kutta "
            f"method and gradient='direct', got method={problem.tableau.name!r}, "
            f"gradient={gradient!r}")
    locator = EventLocator(problem, event_fn, per_sample)
    with torch.no_grad():
        locator.run()
    if not torch.is_grad_enabled():
        return _without_gradients(problem, locator, t.dtype, per_sample)
    # Differentiable states at the event times, in the requested gradient mode.
    # The output times in t's dtype: event times that round to the same value share an output,
    # and one that rounds to t[0] (an event closer to the start than t's resolution) is y0.
    direction = problem.direction
    times = torch.tensor(locator.times, dtype=t.dtype, device=problem.layout.device)
    rounded = times.tolist()
    start = float(t[0].detach())
    order = sorted(set(rounded) - {start}, key=lambda v: direction * v)
    if problem.fixed_grid:
        # End the re-solve on the grid point closing the last event's step, so that the event
        # times are interpolated inside the same grid steps as when they were located.
        grid_end = torch.tensor(direction * max(locator.step_ends), dtype=t.dtype).item()
        if not order or direction * grid_end > direction * order[-1]:
            order.append(grid_end)
    t_out = torch.cat([t[:1], torch.tensor(order, dtype=t.dtype, device=t.device)])
    # The user's options: the step budget above only guards the search (same steps here), and
    # the adjoint treats "options given" specially (adjoint_method vs adjoint_options).
    resolve = make_problem(func, y0, t_out, method=method, rtol=rtol, atol=atol,
                           options=user_options)
    sol = solve_problem(resolve, gradient=gradient, options_given=user_options is not None,
                        **adjoint_kwargs)
    ys = sol.ys
    index = {v: i + 1 for i, v in enumerate(order)} | {start: 0}
    if per_sample:
        rows = torch.tensor([index[v] for v in rounded], device=ys.device)
        y_event = ys[rows, torch.arange(ys.shape[1], device=ys.device)]
    elif problem.layout.is_tuple:
        y_event = tuple(y[index[rounded[0]]] for y in ys)
    else:
        y_event = ys[index[rounded[0]]]
    event_t, y_event = attach_event_gradient(problem, event_fn, times, locator.components,
                                             y_event, per_sample)
    if problem.layout.is_tuple:
        return event_t, tuple(torch.stack([a, b]) for a, b in zip(problem.y0, y_event,
                                                                     strict=True))
    return event_t, torch.stack([problem.y0, y_event])


def _steps_per_sample(tableau, gradient: str, complex_state: bool) -> bool:
    """Whether per-sample events take per-sample steps (:mod:`node.per_sample_events`): an
    explicit Runge-Kutta method (adaptive, or on a fixed grid) and direct gradients. The other
    modes and methods locate each sample's event on one joint solve (per-sample steps for
    them: not yet), as do complex states (per-sample solves take real states only); ``func``
    gets per-sample times ``[B, 1, ..., 1]`` either way (:mod:`node.per_sample_times`)."""
    return gradient == "direct" and isinstance(tableau, ButcherTableau) and not complex_state


def _without_gradients(problem: Problem, locator: EventLocator, t_dtype, per_sample: bool):
    """Under ``torch.no_grad()`` the located states are the answer: no second solve."""
    layout = problem.layout
    times = torch.tensor(locator.times, dtype=t_dtype, device=layout.device)
    if per_sample:
        y_event = locator.states.view(layout.shapes[0])
        return times, torch.stack([problem.y0, y_event])
    y_event = layout.unflatten(locator.states.view(-1))
    if layout.is_tuple:
        return times[0], tuple(torch.stack([a, b]) for a, b in zip(problem.y0, y_event,
                                                                      strict=True))
    return times[0], torch.stack([problem.y0, y_event])
