"""``solve``: one entry point for every method, returning a :class:`~node.Solution`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch

from node.adaptive import integrate_adaptive
from node.callbacks import StepCallbacks
from node.errors import SolverError, Status
from node.fixed_grid import integrate_fixed_grid, make_grid
from node.inputs import check_func, check_times
from node.methods import get_tableau
from node.norms import mixed_rms_norm, rms_norm
from node.options import AdaptiveOptions, parse_options, uses_fixed_grid
from node.runge_kutta import coefficients
from node.solution import Integration, Solution
from node.state import FlatVectorField, StateLayout
from node.tableau import ButcherTableau
from node.time_gradient import outputs_with_t_gradients, start_with_t0_gradient
from node.tolerance import ErrorScale

OnFailure = Literal["raise", "return"]


def solve(
    func: Callable,
    y0,
    t: torch.Tensor,
    *,
    method: str | ButcherTableau | None = "dopri5",
    rtol=1e-7,
    atol=1e-9,
    options: dict[str, Any] | None = None,
    on_failure: OnFailure = "raise",
) -> Solution:
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0``, and report how it went.

    Args:
        func: the vector field ``func(t, y) -> dy/dt`` (``t`` a 0-d tensor, ``y`` like ``y0``).
        y0: initial state, a floating tensor of any shape or a tuple of such tensors.
        t: 1-D strictly increasing or decreasing output times; ``t[0]`` is the initial time.
        method: a registered method name (see :func:`node.available_methods`) or a tableau.
        rtol, atol: tolerances: numbers, per-element tensors, or tuples for tuple states.
        options: method options (see :class:`node.AdaptiveOptions`, :class:`node.FixedGridOptions`).
        on_failure: ``"raise"`` raises :class:`node.SolverError` on a numerical failure;
            ``"return"`` returns the partial solution (output times reached so far) with a
            failure ``status`` and ``message``.

    Returns:
        A :class:`~node.Solution` with ``ys`` of shape ``[len(t), *y0.shape]``.
    """
    if on_failure not in ("raise", "return"):
        raise ValueError(f"on_failure must be 'raise' or 'return', got {on_failure!r}")
    check_func(func)
    layout = StateLayout(y0)
    direction = check_times(t)
    rtol_flat = layout.flat_tolerance("rtol", rtol)
    atol_flat = layout.flat_tolerance("atol", atol)
    tableau = get_tableau(method)
    fixed = uses_fixed_grid(tableau.adaptive, options)
    opts = parse_options(options, fixed_grid=fixed, method=tableau.name)

    y0_flat = layout.flatten(y0)
    f = FlatVectorField(func, layout, opts.dtype, direction)
    taus = [direction * float(v) for v in t.detach().tolist()]
    time_grad = t.requires_grad and torch.is_grad_enabled()
    if time_grad:
        y0_flat = start_with_t0_gradient(f, t[0], y0_flat)
    co = coefficients(tableau, layout.dtype, layout.device)
    callbacks = StepCallbacks.of(func, f)
    if fixed:
        grid = make_grid(taus, opts, direction, lambda: (func, y0, t))
        run = integrate_fixed_grid(f, y0_flat, taus, grid, co, opts, callbacks)
    else:
        errors = _error_scale(rtol_flat, atol_flat, opts, layout)
        run = integrate_adaptive(f, y0_flat, taus, co, opts, errors, callbacks)
    run.stats.nfe = f.nfe
    return _finish(run, f, t, y0, layout, time_grad, on_failure)


def _error_scale(rtol, atol, opts: AdaptiveOptions, layout: StateLayout) -> ErrorScale:
    if opts.norm is not None:
        user_norm = opts.norm

        def norm(x: torch.Tensor) -> torch.Tensor:
            return torch.as_tensor(user_norm(layout.unflatten(x)))

        return ErrorScale(rtol, atol, norm, homogeneous=False)
    if layout.is_tuple and len(layout.numels) > 1:
        return ErrorScale(rtol, atol, mixed_rms_norm(layout.numels), homogeneous=True)
    return ErrorScale(rtol, atol, rms_norm, homogeneous=True)


def _finish(
    run: Integration,
    f: FlatVectorField,
    t: torch.Tensor,
    y0,
    layout: StateLayout,
    time_grad: bool,
    on_failure: OnFailure,
) -> Solution:
    outputs = run.outputs
    if time_grad:
        outputs[0] = layout.flatten(y0)  # y(t[0]) = y0 does not depend on t[0]
        if len(outputs) > 1:
            outputs[1:] = outputs_with_t_gradients(f, t[1 : len(outputs)], outputs[1:])
    ys = layout.unflatten_trajectory(torch.stack(outputs))
    n = len(outputs)
    stats = run.stats.as_dict()
    stats["nfe"] = f.nfe
    solution = Solution(ts=t[:n], ys=ys, stats=stats, status=run.status)
    if run.status is not Status.SUCCESS:
        t_reached = f.direction * run.tau
        solution.message = (
            f"{run.cause}; solve stopped at t={t_reached:.10g} with step size {run.h:.6g} "
            f"after {run.stats.n_steps} steps ({n} of {t.numel()} output times reached)"
        )
        if on_failure == "raise":
            raise SolverError(run.status, t_reached, run.h, solution.message, solution)
    return solution
