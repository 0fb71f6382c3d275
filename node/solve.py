"""``solve``: one entry point for every method and gradient mode, returning a Solution."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Literal

import torch

from node.checkpoint import integrate_checkpointed
from node.complex_state import ComplexView
from node.errors import SolverError, Status
from node.options import progress_option
from node.problem import Problem, make_problem
from node.solution import Integration, Solution
from node.state import FlatVectorField
from node.tableau import ButcherTableau
from node.time_gradient import outputs_with_t_gradients, start_with_t0_gradient

OnFailure = Literal["raise", "return"]
Gradient = Literal["direct", "adjoint", "checkpoint"]
GRADIENT_MODES = ("direct", "adjoint", "checkpoint")


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
        method: a registered method name (see :func:`node.available_methods`) or a tableau.
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

    Returns:
        A :class:`~node.Solution` with ``ys`` of shape ``[len(t), *y0.shape]``.
    """
    view = ComplexView.of(y0)
    if view is not None:
        try:
            solution = solve(
                view.func(func), view.real(y0), t, method=method, rtol=view.tolerance(rtol),
                atol=view.tolerance(atol), options=options, gradient=gradient,
                adjoint_params=adjoint_params, adjoint_rtol=view.tolerance(adjoint_rtol),
                adjoint_atol=view.tolerance(adjoint_atol), adjoint_method=adjoint_method,
                adjoint_options=adjoint_options, on_failure=on_failure,
            )
        except SolverError as error:
            if error.solution is not None:
                error.solution.ys = view.complex(error.solution.ys)
            raise
        solution.ys = view.complex(solution.ys)
        return solution
    if on_failure not in ("raise", "return"):
        raise ValueError(f"on_failure must be 'raise' or 'return', got {on_failure!r}")
    if gradient not in GRADIENT_MODES:
        raise ValueError(f"gradient must be one of {GRADIENT_MODES}, got {gradient!r}")
    problem = make_problem(func, y0, t, method=method, rtol=rtol, atol=atol, options=options)
    if progress is not None:
        problem.options = replace(problem.options, progress=progress_option(progress))
    if gradient == "adjoint":
        from node.adjoint import solve_adjoint

        return solve_adjoint(
            problem,
            on_failure=on_failure,
            adjoint_params=adjoint_params,
            adjoint_rtol=adjoint_rtol,
            adjoint_atol=adjoint_atol,
            adjoint_method=adjoint_method,
            adjoint_options=adjoint_options,
            options_given=options is not None,
        )
    if any(a is not None for a in (adjoint_params, adjoint_rtol, adjoint_atol, adjoint_method,
                                   adjoint_options)):
        raise ValueError(f"adjoint_* arguments need gradient='adjoint', got gradient={gradient!r}")
    checkpointed = gradient == "checkpoint" and torch.is_grad_enabled()
    return solve_autograd(problem, checkpointed=checkpointed, on_failure=on_failure)


def solve_autograd(
    problem: Problem, *, checkpointed: bool = False, on_failure: OnFailure = "raise"
) -> Solution:
    """The direct and checkpoint modes: gradients by autograd, through the solver's operations
    or through their replay (:mod:`node.checkpoint`)."""
    f = problem.vector_field()
    y0_flat = problem.layout.flatten(problem.y0)
    time_grad = problem.t.requires_grad and torch.is_grad_enabled()
    if time_grad:
        y0_flat = start_with_t0_gradient(f, problem.t[0], y0_flat)
    job = None
    if checkpointed:
        run, outputs, job = integrate_checkpointed(problem, f, y0_flat)
    else:
        run = problem.integrate(f, y0_flat)
        outputs = run.outputs
    if time_grad:
        outputs[0] = problem.layout.flatten(problem.y0)  # y(t[0]) = y0 does not depend on t[0]
        if len(outputs) > 1:
            outputs[1:] = outputs_with_t_gradients(f, problem.t[1 : len(outputs)], outputs[1:])
    solution = finish(problem, run, f, torch.stack(outputs), on_failure)
    if job is not None:
        job.stats = solution.stats
    return solution


def finish(
    problem: Problem,
    run: Integration,
    f: FlatVectorField,
    ys_flat: torch.Tensor,
    on_failure: OnFailure,
    stats: dict | None = None,
) -> Solution:
    """Package a run as a Solution, raising :class:`SolverError` on failure if asked to."""
    n = ys_flat.shape[0]
    if stats is None:
        stats = run.stats.as_dict()
    stats["nfe"] = f.nfe
    t = problem.t
    ys = problem.layout.unflatten_trajectory(ys_flat)
    solution = Solution(ts=t[:n], ys=ys, stats=stats, status=run.status)
    if run.status is not Status.SUCCESS:
        t_reached = problem.direction * run.tau
        solution.message = (
            f"{run.cause}; solve stopped at t={t_reached:.10g} with step size {run.h:.6g} "
            f"after {run.stats.n_steps} steps ({n} of {t.numel()} output times reached)"
        )
        if on_failure == "raise":
            raise SolverError(run.status, t_reached, run.h, solution.message, solution)
    return solution
