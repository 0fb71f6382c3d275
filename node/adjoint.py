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
* Either solve may run SciPy (``method`` or ``adjoint_method`` ``"scipy_solver"``): the forward
  problem is then a :class:`~node.scipy_solver.ScipyProblem` (same ``integrate`` /
  ``vector_field`` interface), the backward one fresh ``solve_ivp`` call per output interval
  (SciPy's step size cannot be carried over, nor its norm replaced).
* ``adjoint_options=dict(norm="seminorm")`` leaves ``a_p`` out of the error test (Kidger,
  Chen and Lyons, "Hey, that's not an ODE", ICML 2021): ``a_p`` never feeds back into the
  dynamics, so its error need not control the step.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import replace

import torch
from torch.autograd.function import once_differentiable

from node.adjoint_diagnosis import backward_failure_hint
from node.adjoint_norms import adjoint_norm, real_numel
from node.adjoint_state import augmented_tolerance, landing, param_gradients, real_flat
from node.callbacks import warn_uncalled
from node.errors import SolverError, Status
from node.implicit_tableau import ImplicitTableau
from node.methods import get_tableau
from node.options import options_dict, parse_options, uses_fixed_grid
from node.outcome import finish
from node.problem import Problem
from node.scipy_solver import METHOD as SCIPY_METHOD
from node.scipy_solver import ScipyProblem, finish_scipy, scipy_options, warn_uncalled_callbacks
from node.solution import Integration, Solution
from node.state import StateLayout
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
    """Holds one adjoint solve: the forward problem (node's :class:`~node.problem.Problem` or a
    :class:`~node.scipy_solver.ScipyProblem`) and the backward solve's engine."""

    def __init__(self, problem: Problem | ScipyProblem, params, rtol, atol, method, options,
                 norm_choice):
        self.problem = problem
        self.params = params
        self.f = problem.vector_field()
        self.stats: dict[str, int] = {}
        self.run = None
        n = problem.layout.numel
        n_params = sum(real_numel(p) for p in params)
        aug_layout = StateLayout(torch.empty(2 * n + n_params, dtype=problem.layout.dtype,
                                             device=problem.layout.device))
        aug_func = AugmentedDynamics(problem.func, problem.layout, params)
        rtol = augmented_tolerance(rtol, n_params)
        atol = augmented_tolerance(atol, n_params)
        if method == SCIPY_METHOD:
            warn_uncalled_callbacks(problem.func, "_adjoint")
            self.intervals = _ScipyIntervals(ScipyProblem(
                aug_func, None, problem.t, aug_layout, -problem.direction, rtol, atol, options),
                n)
            return
        # the forward's options['norm'] (a fixed grid's options and SciPy's dict have none)
        state_norm = getattr(getattr(problem, "options", None), "norm", None)
        norm = adjoint_norm(problem.layout, state_norm, params, norm_choice)
        backward_problem = Problem(
            func=aug_func,
            y0=None,
            t=problem.t,
            layout=aug_layout,
            direction=-problem.direction,
            taus=[],
            tableau=method,
            options=options,
            rtol=rtol,
            atol=atol,
            callback_owner=problem.func,  # torchdiffeq's callback_*_adjoint live on func
        )
        warn_uncalled(problem.func, method.name, backward_problem.fixed_grid, "_adjoint")
        self.intervals = _NodeIntervals(backward_problem, norm, n)

    def forward(self, y0_flat: torch.Tensor) -> torch.Tensor:
        self.run = self.problem.integrate(self.f, y0_flat)
        self.stats.update(self.run.stats.as_dict())
        self.stats["nfe"] = self.f.nfe
        return torch.stack(self.run.outputs)

    def backward(self, t: torch.Tensor, ys: torch.Tensor, grad_ys: torch.Tensor, need_t: bool):
        problem, intervals = self.problem, self.intervals
        n_out, n = ys.shape[0], ys.shape[1]
        f_user = problem.vector_field()
        grad_t = torch.zeros_like(t) if need_t else None
        a = grad_ys[-1]
        a_p = ys.new_zeros(intervals.n_params(n))
        # The backward solve may start with the forward's last step size (the state part of the
        # augmented system is the same dynamics) rather than a fresh, conservative initial step.
        intervals.start(self.run.h)
        for i in range(n_out - 1, 0, -1):
            if need_t:
                k = f_user(problem.direction * float(t[i]), ys[i])
                grad_t[i] = torch.dot(k, grad_ys[i]).to(t.dtype)
            end = intervals(t[i - 1 : i + 1].flip(0), torch.cat([ys[i], a, a_p]))
            a = end[n : 2 * n] + grad_ys[i - 1]
            a_p = end[2 * n :]
        if need_t:
            k0 = f_user(problem.direction * float(t[0]), ys[0])
            grad_t[0] = -torch.dot(k0, a - grad_ys[0]).to(t.dtype)
        self.stats["nfe_backward"] = intervals.f.nfe + f_user.nfe
        self.stats["n_steps_backward"] = intervals.steps
        return a, grad_t, param_gradients(a_p, self.params)


class _Intervals:
    """The backward solve, one output interval at a time: ``__call__(t_pair, aug0)`` solves the
    augmented system from ``t_pair[0]`` back to ``t_pair[1]`` and returns its end state."""

    def __init__(self, backward_problem, n: int) -> None:
        self.problem = backward_problem
        self.f = backward_problem.vector_field()
        self.n = n  # the size of the state y (the augmented state is y, a, a_p)
        self.steps = 0

    def n_params(self, n: int) -> int:
        return self.problem.layout.numel - 2 * n

    def start(self, forward_h: float) -> None:
        pass

    def _check(self, run: Integration, aug0: torch.Tensor, t_start: float) -> None:
        self.steps += run.stats.n_steps
        if run.status is not Status.SUCCESS:
            t_reached = self.problem.direction * run.tau
            step = f" with step size {run.h:.6g}" if math.isfinite(run.h) else ""
            message = (f"adjoint (backward) solve failed: {run.cause}; stopped at "
                       f"t={t_reached:.10g}{step}")
            hint = backward_failure_hint(self.problem, run, aug0, t_start, self.n,
                                         self.n)
            raise SolverError(run.status, t_reached, run.h,
                              message + ("; " + hint if hint else ""))


class _NodeIntervals(_Intervals):
    """With one of node's methods: the step size is carried across output times, and each
    interval's last step lands on its end (where ``a`` jumps)."""

    def __init__(self, backward_problem: Problem, norm, n: int) -> None:
        super().__init__(backward_problem, n)
        self.norm = norm
        self.h = None

    def start(self, forward_h: float) -> None:
        fixed = self.problem.fixed_grid
        self.h = forward_h if not fixed and forward_h > 0 else None  # nan/0: SciPy's, unknown

    def __call__(self, t_pair: torch.Tensor, aug0: torch.Tensor) -> torch.Tensor:
        bp = self.problem
        taus = [bp.direction * float(v) for v in t_pair.detach().tolist()]
        interval = replace(bp, t=t_pair, taus=taus,
                           options=landing(bp.options, float(t_pair[1])))
        run = interval.integrate(self.f, aug0, norm=self.norm,
                                 norm_homogeneous=self.norm.homogeneous, first_step=self.h,
                                 callback_suffix="_adjoint")
        self._check(run, aug0, float(t_pair[0]))
        self.h = run.h if not interval.fixed_grid else None
        return run.outputs[-1]


class _ScipyIntervals(_Intervals):
    """With ``solve_ivp`` (``adjoint_method="scipy_solver"``): a fresh SciPy solve per interval
    (SciPy's steps and step size are not exposed to carry over)."""

    def __call__(self, t_pair: torch.Tensor, aug0: torch.Tensor) -> torch.Tensor:
        run = replace(self.problem, t=t_pair).integrate(self.f, aug0)
        self._check(run, aug0, float(t_pair[0]))
        return run.outputs[-1]


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


def _method_name(method) -> str:
    return method if isinstance(method, str) else method.name


def _backward_method(problem: Problem | ScipyProblem, adjoint_method):
    """The backward solve's method: a tableau, or ``"scipy_solver"``."""
    if adjoint_method is None:
        return problem.name if isinstance(problem, ScipyProblem) else problem.tableau
    return SCIPY_METHOD if adjoint_method == SCIPY_METHOD else get_tableau(adjoint_method)


def _backward_options(method, options: dict, norm_choice, given: bool):
    """``adjoint_options`` (without ``norm``) checked for the backward method (``given``: by
    the caller, else derived from the forward's, whose ignored options were warned of)."""
    if method != SCIPY_METHOD:
        fixed = uses_fixed_grid(method.adaptive, options)
        return parse_options(options, fixed_grid=fixed, method=method)
    if norm_choice is not None:
        # As torchdiffeq, which drops the norm for this method: solve_ivp takes no norm.
        warnings.warn(f"adjoint_options['norm'] is ignored by adjoint_method={SCIPY_METHOD!r}: "
                      f"SciPy's solve_ivp measures the error with its own RMS norm over the "
                      f"whole augmented state", UserWarning, stacklevel=6)
    scipy_options(options, warn=given)
    return options


def solve_adjoint(
    problem: Problem | ScipyProblem,
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
    ``options_given``: whether the caller gave ``options``). Either solve may run SciPy
    (``method`` or ``adjoint_method`` ``"scipy_solver"``), the other one of node's methods."""
    scipy_forward = isinstance(problem, ScipyProblem)
    method = _backward_method(problem, adjoint_method)
    if isinstance(method, ImplicitTableau) and scipy_forward:
        # the interpolating adjoint reads y(t) from the forward's recorded steps, which SciPy's
        # solve_ivp does not hand out
        raise ValueError(
            f"adjoint_method={method.name!r} (implicit) needs a forward solve by node's own "
            f"methods, got method={SCIPY_METHOD!r}; use adjoint_method={SCIPY_METHOD!r} with "
            "options=dict(solver='Radau') for a stiff backward solve, or gradient='checkpoint'")
    name, forward_name = _method_name(method), problem.name if scipy_forward else (
        problem.tableau.name)
    if adjoint_options is None:
        if name != forward_name and options_given:
            raise ValueError(
                f"adjoint_options must be given when adjoint_method ({name!r}) differs "
                f"from method ({forward_name!r}) and options are given"
            )
        if name != forward_name:
            options = {}
        else:
            options = dict(problem.options) if scipy_forward else options_dict(problem.options)
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
    parsed = _backward_options(method, options, norm_choice, adjoint_options is not None)
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
    if scipy_forward:
        return finish_scipy(problem, solver.run, ys_flat, on_failure, solver.stats)
    return finish(problem, solver.run, solver.f, ys_flat, on_failure, stats=solver.stats)
