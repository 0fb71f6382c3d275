"""The public solvers, one layer above the engines.

* :func:`solve`: one entry point for every method and gradient mode, returning a
  :class:`~node.Solution` (statistics, status);
* :func:`odeint`, :func:`odeint_adjoint`, :func:`odeint_event`: torchdiffeq's interface on top
  of it (drop-in replacements).

Layering: this module validates the call, turns a complex state into its real view
(:mod:`node.complex_state`), builds the :class:`~node.problem.Problem` and hands it to the
gradient mode (:mod:`node.gradient_modes`) or to the event solve (:mod:`node.events`). Nothing
in ``node`` imports this module except ``node/__init__.py``, so the engines never call back up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from node.complex_state import ComplexView
from node.dense_output import check_dense, check_dense_problem
from node.errors import SolverError
from node.event_interface import through_interface
from node.events import solve_until_event
from node.gradient_modes import Gradient, check_modes, check_no_adjoint_arguments, solve_problem
from node.options import progress_option
from node.outcome import OnFailure
from node.per_sample_inputs import wants_per_sample
from node.per_sample_solve import solve_per_sample
from node.problem import make_problem
from node.scipy_solver import METHOD as SCIPY_METHOD
from node.scipy_solver import make_scipy_problem, no_gradient_message, solve_scipy
from node.solution import Solution
from node.tableau import ButcherTableau


def solve(
    func: Callable,
    y0,
    t: torch.Tensor,
    *,
    method: str | ButcherTableau | None = "dopri5",
    rtol=1e-7,
    atol=1e-9,
    options: dict[str, Any] | None = None,
    gradient: Gradient = "direct",
    adjoint_params: Sequence[torch.Tensor] | None = None,
    adjoint_rtol=None,
    adjoint_atol=None,
    adjoint_method: str | None = None,
    adjoint_options: dict[str, Any] | None = None,
    on_failure: OnFailure = "raise",
    progress: bool | float | None = None,
    per_sample: bool = False,
    dense: bool = False,
) -> Solution:
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0``, and report how it went.

    Args:
        func: the vector field ``func(t, y) -> dy/dt`` (``t`` a 0-d tensor, ``y`` like ``y0``).
            A derivative of another floating dtype than the state's (float64 for a float32
            state, say) is cast to the state's dtype, as torchdiffeq accepts it; a wrong shape
            or a non-floating dtype raises.
        y0: initial state, a floating or complex tensor of any shape, or a tuple of such
            tensors (of one dtype). A complex state is solved as its real view (time stays
            real; the error test measures complex entries by magnitude, as torchdiffeq does;
            see :mod:`node.complex_state`).
        t: 1-D strictly increasing or decreasing output times; ``t[0]`` is the initial time.
        method: a registered method name (see :func:`node.available_methods`), a tableau, or
            ``"scipy_solver"`` (SciPy's ``solve_ivp``, ``options=dict(solver="RK45" | "RK23" |
            "DOP853" | "Radau" | "BDF" | "LSODA")``; CPU float64, no events, gradients only with
            ``gradient="adjoint"``; see :mod:`node.scipy_solver`).
        rtol, atol: tolerances: numbers, per-element tensors, or tuples for tuple states.
        options: method options (see :class:`node.AdaptiveOptions`, :class:`node.FixedGridOptions`).
        gradient: how ``backward()`` differentiates the solve:

            * ``"direct"``: autograd through the solver's operations (fast; memory grows with
              the number of steps times the graph of one ``func`` call);
            * ``"checkpoint"``: the same exact gradient, recomputing each step in the backward
              pass (memory: one state per step);
            * ``"adjoint"``: the continuous adjoint (memory independent of the number of steps;
              the gradient is accurate to the adjoint tolerances). ``adjoint_*`` arguments as in
              :func:`node.odeint_adjoint`.
        on_failure: ``"raise"`` raises :class:`node.SolverError` on a numerical failure;
            ``"return"`` returns the partial solution (output times reached so far) with a
            failure ``status`` and ``message``.
        progress: draw a progress bar on stderr (needs ``tqdm``): ``True``, or a number of
            seconds to show it only if the solve is still running after that long. ``None``
            (default) leaves it to ``options['progress']`` (off unless given there). An adjoint
            solve shows its backward solve too, unless ``adjoint_options`` leave it out.
        per_sample: solve the leading dimension of the state as a batch of independent
            problems, each with its own steps (see the README's per-sample section).
        dense: keep every accepted step, so that ``Solution.evaluate(s)`` gives the solution
            at any time ``s`` of the interval solved (and ``Solution.derivative(s)`` its
            derivative) from the method's dense output, differentiably; adaptive methods
            with ``gradient="direct"``, per-sample solves too (see :mod:`node.dense_output`,
            :mod:`node.per_sample_dense`).

    Returns:
        A :class:`~node.Solution` with ``ys`` of shape ``[len(t), *y0.shape]``.
    """
    if not isinstance(dense, bool):
        raise TypeError(f"dense must be True or False, got {dense!r}")
    if dense:
        check_dense(method, gradient)
    if wants_per_sample(per_sample, t):
        check_modes(gradient, on_failure)
        return solve_per_sample(
            func, y0, t, method=method, rtol=rtol, atol=atol, options=options,
            gradient=gradient, on_failure=on_failure, progress=progress,
            adjoint_args=(adjoint_params, adjoint_rtol, adjoint_atol, adjoint_method,
                          adjoint_options), dense=dense)
    view = ComplexView.of(y0)
    if view is not None:
        try:
            solution = solve(
                view.func(func), view.real(y0), t, method=method, rtol=view.tolerance(rtol),
                atol=view.tolerance(atol), options=options, gradient=gradient,
                adjoint_params=adjoint_params, adjoint_rtol=view.tolerance(adjoint_rtol),
                adjoint_atol=view.tolerance(adjoint_atol), adjoint_method=adjoint_method,
                adjoint_options=adjoint_options, on_failure=on_failure, dense=dense,
            )
        except SolverError as error:
            if error.solution is not None:
                error.solution.ys = view.complex(error.solution.ys)
                if error.solution.dense is not None:
                    error.solution.dense.post = view.complex
            raise
        solution.ys = view.complex(solution.ys)
        if solution.dense is not None:
            solution.dense.post = view.complex
        return solution
    check_modes(gradient, on_failure)
    if method == SCIPY_METHOD:
        return _solve_scipy(func, y0, t, rtol, atol, options, gradient, on_failure, progress,
                            (adjoint_params, adjoint_rtol, adjoint_atol, adjoint_method,
                             adjoint_options))
    problem = make_problem(func, y0, t, method=method, rtol=rtol, atol=atol, options=options)
    if dense:
        check_dense_problem(problem)
    if progress is not None:
        problem.options = replace(problem.options, progress=progress_option(progress))
    return solve_problem(
        problem,
        gradient=gradient,
        on_failure=on_failure,
        adjoint_params=adjoint_params,
        adjoint_rtol=adjoint_rtol,
        adjoint_atol=adjoint_atol,
        adjoint_method=adjoint_method,
        adjoint_options=adjoint_options,
        options_given=options is not None,
        dense=dense,
    )


def _solve_scipy(func, y0, t, rtol, atol, options, gradient, on_failure, progress, adjoint):
    """``solve`` with ``method="scipy_solver"``: gradients by the adjoint only (its backward
    solve runs SciPy too, unless ``adjoint_method`` names one of node's), no progress bar."""
    if gradient == "checkpoint":
        raise ValueError(no_gradient_message(f"run with gradient={gradient!r}"))
    if progress:
        raise ValueError(f"progress is not supported by method={SCIPY_METHOD!r}")
    if gradient == "direct":
        check_no_adjoint_arguments(gradient, adjoint)
        return solve_scipy(func, y0, t, rtol=rtol, atol=atol, options=options,
                           on_failure=on_failure)
    problem = make_scipy_problem(func, y0, t, rtol=rtol, atol=atol, options=options)
    adjoint_params, adjoint_rtol, adjoint_atol, adjoint_method, adjoint_options = adjoint
    return solve_problem(problem, gradient=gradient, on_failure=on_failure,
                         adjoint_params=adjoint_params, adjoint_rtol=adjoint_rtol,
                         adjoint_atol=adjoint_atol, adjoint_method=adjoint_method,
                         adjoint_options=adjoint_options, options_given=options is not None)


def odeint(
    func: Callable,
    y0,
    t: torch.Tensor,
    *,
    rtol=1e-7,
    atol=1e-9,
    method: str | None = None,
    options: dict[str, Any] | None = None,
    event_fn: Callable | None = None,
    per_sample: bool = False,
):
    """Integrate ``dy/dt = func(t, y)`` from ``y(t[0]) = y0``; drop-in for torchdiffeq's ``odeint``.

    Returns the solution at every time in ``t``: a tensor ``[len(t), *y0.shape]`` (``ys[0]`` is
    ``y0``), or a tuple of such tensors for a tuple ``y0``. ``method=None`` means ``"dopri5"``.
    Gradients flow to ``y0``, to the parameters ``func`` uses and to ``t`` by ordinary autograd
    through the solver's operations.

    With ``event_fn``, ``t`` must hold two times of which only ``t[0]`` is used; the solve stops
    where ``event_fn(t, y)`` crosses zero and ``(event_t, ys)`` is returned (see
    :func:`node.odeint_event`; with ``per_sample=True`` every sample stops at its own event).

    ``per_sample=True`` (or ``t`` of shape ``[B, T]``) solves every sample of the leading batch
    dimension with its own step sizes (see :func:`node.solve`); ``func`` then receives ``t`` of
    shape ``[B, 1, ..., 1]``, and the result is ``[T, B, ...]``.

    As in torchdiffeq: ``y0`` may be complex (time stays real; see :mod:`node.complex_state`);
    ``func`` may return another floating dtype than the state's (it is cast to the state's);
    an option the method does not use (``step_size`` for ``dopri5``, ``first_step`` for
    ``rk4``, ...) is ignored with a warning, so ``step_size`` never makes an adaptive method
    step on a grid: ``options=dict(adaptive=False, step_size=h)`` does.

    Raises:
        ValueError, TypeError: bad arguments (named in the message); non-monotonic ``t`` raises
            :class:`node.TimeOrderError`, which is also an ``AssertionError`` (torchdiffeq's
            type for it).
        node.SolverError: a numerical failure (step budget, step size, non-finite values); also
            an ``AssertionError``, so code written for torchdiffeq that catches those works.
    """
    if event_fn is not None:
        if isinstance(t, torch.Tensor) and t.dim() == 2:
            raise ValueError("odeint with event_fn takes 1-D t of two times, not a [B, T] t "
                             "(per-sample start times: node.odeint_event(func, y0, t0 of shape "
                             "[B], per_sample=True))")
        return solve_until_event(
            func, y0, t, event_fn=event_fn, rtol=rtol, atol=atol, method=method, options=options,
            per_sample=wants_per_sample(per_sample, t),
        )
    return solve(func, y0, t, method=method, rtol=rtol, atol=atol, options=options,
                 per_sample=per_sample).ys


def odeint_adjoint(
    func: Callable,
    y0,
    t: torch.Tensor,
    *,
    rtol=1e-7,
    atol=1e-9,
    method: str | None = None,
    options: dict[str, Any] | None = None,
    event_fn: Callable | None = None,
    adjoint_rtol=None,
    adjoint_atol=None,
    adjoint_method: str | None = None,
    adjoint_options: dict[str, Any] | None = None,
    adjoint_params: Sequence[torch.Tensor] | None = None,
    per_sample: bool = False,
):
    """``odeint`` whose backward pass solves the adjoint ODE (drop-in for torchdiffeq's).

    ``func`` must be an ``nn.Module`` (its parameters get gradients) unless ``adjoint_params``
    lists the tensors to differentiate (``()`` is allowed). ``adjoint_rtol``, ``adjoint_atol``,
    ``adjoint_method`` and ``adjoint_options`` default to the forward solve's; if
    ``adjoint_method`` differs from ``method`` and ``options`` is given, ``adjoint_options`` must
    be given too. ``adjoint_options=dict(norm="seminorm")`` leaves the parameter adjoint out of
    the error test. A callable ``norm`` in ``adjoint_options`` receives torchdiffeq's tuple
    ``(t, *y, *a, *a_params)`` (see :mod:`node.adjoint_norms`). With ``method`` or
    ``adjoint_method`` ``"scipy_solver"`` that solve runs SciPy's ``solve_ivp`` (which takes no
    norm: ``adjoint_options['norm']`` is then ignored with a warning).

    ``per_sample=True`` (or ``t`` of shape ``[B, T]``): every sample of the batch solves its
    forward and its adjoint with its own step sizes (see :mod:`node.per_sample_adjoint`).
    """
    kwargs = dict(
        adjoint_params=adjoint_params,
        adjoint_rtol=adjoint_rtol,
        adjoint_atol=adjoint_atol,
        adjoint_method=adjoint_method,
        adjoint_options=adjoint_options,
    )
    if event_fn is not None:
        if wants_per_sample(per_sample, t):
            raise ValueError("odeint_adjoint with event_fn does not take per_sample=True or a "
                             "[B, T] t (per-sample events: node.odeint_event(..., "
                             "per_sample=True))")
        return solve_until_event(
            func, y0, t, event_fn=event_fn, rtol=rtol, atol=atol, method=method,
            options=options, gradient="adjoint", **kwargs,
        )
    return solve(
        func, y0, t, rtol=rtol, atol=atol, method=method, options=options, gradient="adjoint",
        per_sample=per_sample, **kwargs,
    ).ys


def odeint_event(
    func: Callable,
    y0,
    t0,
    *,
    event_fn: Callable,
    reverse_time: bool = False,
    odeint_interface: Callable | None = None,
    per_sample: bool = False,
    **kwargs,
):
    """Solve from ``t0`` until ``event_fn(t, y)`` crosses zero (torchdiffeq's ``odeint_event``).

    Returns ``(event_t, solution)`` where ``solution`` stacks the states at ``t0`` and at
    ``event_t``. ``odeint_interface`` is :func:`node.odeint` (direct gradients, default),
    :func:`node.odeint_adjoint`, or any callable with ``odeint``'s signature, called as
    ``odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)``; ``kwargs`` go to it
    (``rtol``, ``atol``, ``method``, ``options``, ``adjoint_*``), and for node's own two
    ``gradient="checkpoint"`` selects the checkpoint mode. With ``per_sample=True`` (node's own
    interfaces only) each sample of the batch (first dimension) stops at its own event and
    ``event_t`` has shape ``[batch]``. With an explicit Runge-Kutta method and direct gradients
    (the default) each sample then also takes its own steps, as in per-sample solves (``func``
    receives ``t`` of shape ``[batch, 1, ..., 1]``), and ``t0`` may be a ``[batch]`` tensor of
    start times; the checkpoint and adjoint modes and other methods locate every sample's event
    on one joint solve (``func`` still receives ``t`` of shape ``[batch, 1, ..., 1]``).
    """
    if not isinstance(t0, torch.Tensor):
        t0 = torch.tensor(float(t0), dtype=torch.float64)
    starts = None
    if per_sample and t0.dim() == 1 and t0.numel() > 1:
        starts, t0 = t0, t0[0]  # one start per sample; t0[0] stands for them in the checks
    elif t0.numel() != 1:
        raise ValueError(f"t0 must be a scalar time (or, with per_sample=True, one per sample), "
                         f"got shape {tuple(t0.shape)}")
    t0 = t0.reshape(())
    t = torch.stack([t0, t0.detach() + (-1.0 if reverse_time else 1.0)])
    if starts is not None:
        kwargs["starts"] = starts
    if odeint_interface is odeint_adjoint:
        kwargs.setdefault("gradient", "adjoint")
    elif odeint_interface not in (None, odeint):
        return through_interface(odeint_interface, func, y0, t, event_fn, per_sample, kwargs)
    return solve_until_event(func, y0, t, event_fn=event_fn, per_sample=per_sample, **kwargs)
