"""The continuous adjoint: gradients with memory independent of the number of steps.

For ``L`` depending on outputs ``y(t_i)``, the adjoint ``a(t) = dL/dy(t)`` and the parameter
adjoint ``a_p(t)`` solve, backwards in time from ``t_N`` to ``t_0``,

    dy/dt = f(t, y, p),    da/dt = -a^T df/dy,    da_p/dt = -a^T df/dp,

with ``a`` jumping by ``dL/dy(t_i)`` at each output time and ``a_p(t_N) = 0``; then
``dL/dy0 = a(t_0)`` and ``dL/dp = a_p(t_0)`` (Pontryagin; Chen et al., NeurIPS 2018). The time
gradients need no extra state: ``dL/dt_i = dL/dy(t_i) . f(t_i, y_i)`` for ``i > 0`` and
``dL/dt_0 = -a(t_0) . f(t_0, y_0)``.

Design decisions:

* The backward solve is one solve with state jumps at the output times: ``y`` is reset to the
  forward value stored at each output time (so the backward ``y`` never drifts from the forward
  one) and the step size is carried across output times instead of being selected afresh, which
  keeps the backward pass close to the forward's number of evaluations.
* The forward pass keeps only the outputs, never the steps: memory is O(len(t)), not O(steps).
* ``adjoint_options=dict(norm="seminorm")`` leaves ``a_p`` out of the error test (Kidger,
  Chen and Lyons, "Hey, that's not an ODE", ICML 2021): ``a_p`` never feeds back into the
  dynamics, so its error need not control the step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace

import torch
from torch.autograd.function import once_differentiable

from node.adjoint_norms import adjoint_norm, real_numel
from node.adjoint_state import augmented_tolerance, landing, param_gradients, real_flat
from node.callbacks import warn_uncalled
from node.errors import SolverError, Status
from node.implicit_tableau import ImplicitTableau
from node.methods import get_tableau
from node.options import options_dict, parse_options, uses_fixed_grid
from node.outcome import finish
from node.problem import Problem
from node.solution import Solution
from node.state import FlatVectorField, StateLayout
from node.stiff_adjoint import InterpolatingAdjoint


def resolve_params(func, adjoint_params, norm_choice=None) -> tuple[torch.Tensor, ...]:
    if adjoint_params is None:
        if not isinstance(func, torch.nn.Module):
            raise ValueError(
                "func must be an nn.Module when adjoint_params is not given (the adjoint needs "
                f"to know which tensors to differentiate), got {type(func).__name__}; pass "
                "adjoint_params=() if there are none"
            )
        adjoint_params = tuple(func.parameters())
    params = tuple(adjoint_params)
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"adjoint_params[{i}] must be a tensor, got {type(p).__name__}")
    kept = tuple(p for p in params if p.requires_grad)
    if len(kept) < len(params) and callable(norm_choice):
        warnings.warn("adjoint_params holds tensors that do not require gradients: they are left "
                      "out of the adjoint solve and do not appear in the tuple passed to the "
                      "adjoint norm", stacklevel=5)
    return kept


class AugmentedDynamics:
    """``(y, a, a_p) -> (f, -a^T df/dy, -a^T df/dp)`` on the flat augmented state."""

    def __init__(self, func: Callable, layout: StateLayout, params: tuple[torch.Tensor, ...]):
        self.func = func
        self.layout = layout
        self.params = params
        self.n = layout.numel

    def __call__(self, t: torch.Tensor, aug: torch.Tensor) -> torch.Tensor:
        n, layout = self.n, self.layout
        with torch.enable_grad():
            y = aug[:n].detach().requires_grad_(True)
            fy = layout.flatten(self.func(t, layout.unflatten(y))).to(aug.dtype)
            inputs = (y, *self.params)
            # A func that uses neither y nor a parameter (dy/dt = g(t)) has no graph: zeros.
            grads = (torch.autograd.grad(fy, inputs, aug[n : 2 * n], allow_unused=True)
                     if fy.requires_grad else (None,) * len(inputs))
        parts = [fy.detach()]
        for g, x in zip(grads, inputs, strict=True):
            parts.append(torch.zeros(real_numel(x), dtype=aug.dtype, device=aug.device)
                         if g is None else real_flat(g).neg())
        return torch.cat(parts)


class AdjointSolver:
    """Holds one adjoint solve: the forward problem and the backward problem's settings."""

    def __init__(self, problem: Problem, params, rtol, atol, method, options, norm_choice):
        self.problem = problem
        self.params = params
        self.f = problem.vector_field()
        self.stats: dict[str, int] = {}
        self.run = None
        n = problem.layout.numel
        n_params = sum(real_numel(p) for p in params)
        self.norm = adjoint_norm(problem.layout, getattr(problem.options, "norm", None), params,
                                 norm_choice)
        aug_layout = StateLayout(torch.empty(2 * n + n_params, dtype=problem.layout.dtype,
                                             device=problem.layout.device))
        self.backward_problem = replace(
            problem,
            func=AugmentedDynamics(problem.func, problem.layout, params),
            callback_owner=problem.func,  # torchdiffeq's callback_*_adjoint live on func
            y0=None,
            layout=aug_layout,
            direction=-problem.direction,
            tableau=method,
            options=options,
            rtol=augmented_tolerance(rtol, n_params),
            atol=augmented_tolerance(atol, n_params),
        )
        warn_uncalled(problem.func, method.name, self.backward_problem.fixed_grid, "_adjoint")

    def forward(self, y0_flat: torch.Tensor) -> torch.Tensor:
        self.run = self.problem.integrate(self.f, y0_flat)
        self.stats.update(self.run.stats.as_dict())
        self.stats["nfe"] = self.f.nfe
        return torch.stack(self.run.outputs)

    def backward(self, t: torch.Tensor, ys: torch.Tensor, grad_ys: torch.Tensor, need_t: bool):
        problem, bp = self.problem, self.backward_problem
        n_out, n = ys.shape[0], ys.shape[1]
        f_user = problem.vector_field()
        f_aug = FlatVectorField(bp.func, bp.layout, bp.options.dtype, bp.direction)
        taus_back = [bp.direction * float(v) for v in t.detach().tolist()]
        grad_t = torch.zeros_like(t) if need_t else None
        a = grad_ys[-1]
        a_p = ys.new_zeros(bp.layout.numel - 2 * n)
        # The backward solve starts with the forward's last step size (the state part of the
        # augmented system is the same dynamics) rather than a fresh, conservative initial step.
        h = self.run.h if not bp.fixed_grid and self.run.h > 0 else None
        steps = 0
        for i in range(n_out - 1, 0, -1):
            if need_t:
                k = f_user(problem.direction * float(t[i]), ys[i])
                grad_t[i] = torch.dot(k, grad_ys[i]).to(t.dtype)
            taus = [taus_back[i], taus_back[i - 1]]
            interval = replace(bp, t=t[i - 1 : i + 1].flip(0), taus=taus,
                               options=landing(bp.options, float(t[i - 1])))
            run = interval.integrate(f_aug, torch.cat([ys[i], a, a_p]), norm=self.norm,
                                     norm_homogeneous=self.norm.homogeneous, first_step=h,
                                     callback_suffix="_adjoint")
            steps += run.stats.n_steps
            if run.status is not Status.SUCCESS:
                t_reached = bp.direction * run.tau
                raise SolverError(run.status, t_reached, run.h,
                                  f"adjoint (backward) solve failed: {run.cause}; stopped at "
                                  f"t={t_reached:.10g} with step size {run.h:.6g}")
            end = run.outputs[-1]
            a = end[n : 2 * n] + grad_ys[i - 1]
            a_p = end[2 * n :]
            h = run.h if not interval.fixed_grid else None
        if need_t:
            k0 = f_user(problem.direction * float(t[0]), ys[0])
            grad_t[0] = -torch.dot(k0, a - grad_ys[0]).to(t.dtype)
        self.stats["nfe_backward"] = f_aug.nfe + f_user.nfe
        self.stats["n_steps_backward"] = steps
        return a, grad_t, param_gradients(a_p, self.params)


class _AdjointFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, solver: AdjointSolver, y0_flat, t, *params):
        ys = solver.forward(y0_flat)
        ctx.solver = solver
        ctx.save_for_backward(t, ys)
        return ys

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_ys):
        t, ys = ctx.saved_tensors
        n = ys.shape[0]
        grad_y0, grad_t, grads_p = ctx.solver.backward(
            t[:n], ys, grad_ys, need_t=ctx.needs_input_grad[2]
        )
        if grad_t is not None and n < t.numel():
            grad_t = torch.cat([grad_t, grad_t.new_zeros(t.numel() - n)])
        return (None, grad_y0, grad_t, *grads_p)


def solve_adjoint(
    problem: Problem,
    *,
    on_failure,
    adjoint_params,
    adjoint_rtol,
    adjoint_atol,
    adjoint_method,
    adjoint_options,
    options_given: bool,
) -> Solution:
    """Solve ``problem`` with the adjoint gradient (arguments as in :func:`node.solve`;
    ``options_given``: whether the caller gave ``options``)."""
    method = problem.tableau if adjoint_method is None else get_tableau(adjoint_method)
    if adjoint_options is None:
        if method.name != problem.tableau.name and options_given:
            raise ValueError(
                f"adjoint_options must be given when adjoint_method ({method.name!r}) differs "
                f"from method ({problem.tableau.name!r}) and options are given"
            )
        options = {} if method.name != problem.tableau.name else options_dict(problem.options)
        options.pop("norm", None)
    else:
        if not isinstance(adjoint_options, dict):
            raise TypeError(
                f"adjoint_options must be a dict or None, got {type(adjoint_options).__name__}"
            )
        options = dict(adjoint_options)
    norm_choice = options.pop("norm", None)
    if isinstance(norm_choice, str) and norm_choice != "seminorm":
        raise ValueError(f"adjoint_options['norm'] must be 'seminorm' or a callable, got "
                         f"{norm_choice!r}")
    params = resolve_params(problem.func, adjoint_params, norm_choice)
    fixed = uses_fixed_grid(method.adaptive, options)
    parsed = parse_options(options, fixed_grid=fixed, method=method)
    rtol = problem.rtol if adjoint_rtol is None else problem.layout.flat_tolerance(
        "adjoint_rtol", adjoint_rtol)
    atol = problem.atol if adjoint_atol is None else problem.layout.flat_tolerance(
        "adjoint_atol", adjoint_atol)
    # Re-solving y backwards is unstable for stiff dynamics (a mode decaying forward grows
    # backward): an implicit adjoint method solves a alone along the recorded forward solution.
    solver_class = InterpolatingAdjoint if isinstance(method, ImplicitTableau) else AdjointSolver
    solver = solver_class(problem, params, rtol, atol, method, parsed, norm_choice)
    y0_flat = problem.layout.flatten(problem.y0)
    ys_flat = _AdjointFunction.apply(solver, y0_flat, problem.t, *params)
    return finish(problem, solver.run, solver.f, ys_flat, on_failure, stats=solver.stats)

