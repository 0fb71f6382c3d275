"""torchdiffeq's ``scipy_solver`` method: the whole solve handed to SciPy's ``solve_ivp``.

``method="scipy_solver"`` with ``options=dict(solver=NAME)`` (``NAME`` one of :data:`SOLVERS`,
default ``"LSODA"`` as in torchdiffeq) integrates with :func:`scipy.integrate.solve_ivp`. The
state is flattened (:class:`~node.state.StateLayout`, so tuple states work) into a float64 NumPy
vector on the CPU; ``func`` is called without gradients on tensors of the state's dtype and device
(time in ``options['dtype']``, default the state's dtype), and the states at ``t`` come back in
``y0``'s dtype and on its device. SciPy integrates backwards natively (``t_span`` decreasing).
``rtol``/``atol`` are passed through (per-element tolerances as arrays). Options besides
``solver``: ``first_step``, ``min_step`` (used by LSODA only; SciPy warns for the others) and
``max_step``.

Gradients by the adjoint only (``odeint_adjoint`` / ``gradient="adjoint"``, as torchdiffeq):
the forward solve runs SciPy and so, per output interval, does the backward solve of the
augmented adjoint system (:mod:`node.adjoint`), unless ``adjoint_method`` names one of node's
methods; ``adjoint_method="scipy_solver"`` also serves a forward solve of node's. SciPy takes no
custom norm: ``adjoint_options['norm']`` is ignored with a warning (torchdiffeq drops it
silently). Direct and checkpoint gradients cannot work: SciPy's arithmetic is outside autograd.
Rather than refuse a direct solve (torchdiffeq returns a plain result even when ``y0``, ``t`` or
``func``'s parameters require gradients, and its tests rely on that), the result is attached to
those inputs by a node whose backward raises a clear error, so ``backward()`` through a scipy
solve says why it cannot work instead of "element 0 of tensors does not require grad".
(Parameters a plain function closes over cannot be seen; its result simply has no gradient.)

A non-finite derivative that turns SciPy's step size into NaN (its explicit solvers would retry
forever) and non-finite states LSODA returns as a success are reported as ``Status.NON_FINITE``.

SciPy is imported only when the method is used; ``node`` itself depends on torch alone.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from node.errors import SolverError, Status
from node.inputs import check_func, check_times
from node.options import AdaptiveOptions, FixedGridOptions, _dtype, _positive
from node.solution import Integration, Solution, Stats
from node.state import FlatVectorField, StateLayout, check_not_both_zero

METHOD = "scipy_solver"
SOLVERS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")
DEFAULT_SOLVER = "LSODA"  # torchdiffeq's default
_OPTIONS = ("solver", "first_step", "min_step", "max_step", "dtype")
# Keys that mean something to node's own methods (or that torchdiffeq's wrapper drops: norm,
# grid_points, eps): accepted with a warning that this method ignores them; anything else is a typo.
_IGNORED = (
    {f.name for f in AdaptiveOptions.__dataclass_fields__.values()}
    | {f.name for f in FixedGridOptions.__dataclass_fields__.values()}
    | {"adaptive", "max_iters", "max_order", "eps"}
) - set(_OPTIONS)
_CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")


def no_gradient_message(what: str) -> str:
    return (f"method={METHOD!r} cannot {what}: SciPy's solve_ivp runs outside autograd. For "
            f"gradients use odeint_adjoint (gradient='adjoint'), whose backward solve runs SciPy "
            f"too, or one of node's own methods (e.g. method='dopri5').")


def check_no_events(method) -> None:
    """Events are not supported by this method (node's event solve needs an interpolant)."""
    if method == METHOD:
        raise ValueError(f"method={METHOD!r} does not support events (event_fn); use one of "
                         f"node's own methods, e.g. method='dopri5'")


def _solve_ivp() -> Callable:
    try:
        from scipy.integrate import solve_ivp
    except ImportError as error:
        raise ImportError(
            f"method={METHOD!r} needs SciPy, which is not installed (pip install scipy); node "
            f"itself depends on torch alone"
        ) from error
    return solve_ivp


def scipy_options(options, warn: bool = True) -> tuple[str, dict, torch.dtype | None]:
    """``(solver, solve_ivp step keywords, time dtype)`` from the options dict (``warn``: of
    the options this method ignores)."""
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise TypeError(f"options must be a dict for method={METHOD!r}, got "
                        f"{type(options).__name__}")
    unknown = sorted(k for k in options if k not in _OPTIONS and k not in _IGNORED)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method={METHOD!r}; valid options are: "
                         f"{', '.join(_OPTIONS)}")
    ignored = sorted(k for k in options if k in _IGNORED)
    if ignored and warn:
        # As torchdiffeq, and as node does for options another mode uses: warn and go on.
        warnings.warn(f"option(s) {ignored} not used by method={METHOD!r} and ignored",
                      UserWarning, stacklevel=4)
    solver = options.get("solver", DEFAULT_SOLVER)
    if solver not in SOLVERS:
        raise ValueError(f"options['solver'] must be one of {', '.join(SOLVERS)} for "
                         f"method={METHOD!r}, got {solver!r}")
    steps = {}
    # Only the keys given go to SciPy, which warns about those a solver does not use.
    if options.get("first_step") is not None:
        steps["first_step"] = _positive("first_step", options["first_step"])
    if "min_step" in options:
        steps["min_step"] = _positive("min_step", options["min_step"], allow_zero=True)
    if "max_step" in options:
        steps["max_step"] = _positive("max_step", options["max_step"], allow_inf=True)
    dtype = options.get("dtype")
    return solver, steps, None if dtype is None else _dtype(dtype)


def _numpy(x: torch.Tensor):
    """A float64 CPU copy as a NumPy array (a copy: SciPy may keep it, ``func`` may reuse it)."""
    return x.detach().to("cpu", torch.float64, copy=True).numpy()


def _tolerance(tol):
    return _numpy(tol) if isinstance(tol, torch.Tensor) else tol


def _failure_status(message: str, last_f: torch.Tensor | None) -> Status:
    if last_f is not None and not bool(torch.isfinite(last_f).all()):
        return Status.NON_FINITE
    if "excess work" in message.lower():  # LSODA's step budget (mxstep)
        return Status.MAX_STEPS
    return Status.STEP_TOO_SMALL


class _NonFiniteTime(Exception):
    """Raised inside SciPy's loop to stop it (see ``fun`` in :meth:`ScipyProblem.integrate`)."""


class _NoGradient(torch.autograd.Function):
    """Identity on the result, tied to the inputs that require gradients; backward raises."""

    @staticmethod
    def forward(ctx, ys: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        return ys.clone()

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(no_gradient_message("differentiate its solution"))


def _grad_inputs(func, y0, t) -> list[torch.Tensor]:
    if not torch.is_grad_enabled():
        return []
    tensors = [*(y0 if isinstance(y0, tuple | list) else (y0,)), t]
    if isinstance(func, torch.nn.Module):
        tensors.extend(func.parameters())
    return [x for x in tensors if x.requires_grad]


@dataclass
class ScipyStats(Stats):
    """SciPy's counters: it reports accepted steps only (``n_steps == n_accepted``), plus the
    Jacobian evaluations and LU decompositions of its implicit solvers."""

    njev: int = 0
    nlu: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"nfe": self.nfe, "n_steps": self.n_steps, "n_accepted": self.n_accepted,
                "njev": self.njev, "nlu": self.nlu}


@dataclass
class ScipyProblem:
    """A validated solve for ``solve_ivp``: the counterpart of :class:`node.problem.Problem`
    with the interface the adjoint needs (:meth:`vector_field`, :meth:`integrate`)."""

    func: Callable
    y0: object
    t: torch.Tensor
    layout: StateLayout
    direction: float
    rtol: object  # flat, as StateLayout.flat_tolerance gives them
    atol: object
    options: dict  # as given (checked), the adjoint's default adjoint_options
    name: str = METHOD

    def vector_field(self) -> FlatVectorField:
        _, _, time_dtype = scipy_options(self.options, warn=False)
        return FlatVectorField(self.func, self.layout, time_dtype, self.direction)

    def integrate(self, f: FlatVectorField, y0_flat: torch.Tensor) -> Integration:
        """Solve from ``y0_flat`` over ``t`` (SciPy integrates backwards natively); ``f`` is
        :meth:`vector_field` (or one on the same layout), called without gradients."""
        layout = self.layout
        times = self.t.detach().to("cpu", torch.float64).tolist()
        y0_flat = y0_flat.detach()
        if len(times) < 2:
            return Integration([y0_flat], ScipyStats(), tau=self.direction * times[0])
        solver, steps, _ = scipy_options(self.options, warn=False)
        last = {"t": times[0], "f": None}

        def fun(tn, yn):
            if not math.isfinite(tn):
                # A non-finite derivative made SciPy's step size NaN (its explicit solvers then
                # retry forever): stop, reporting the last time func was called at.
                raise _NonFiniteTime
            y = torch.tensor(yn, dtype=layout.dtype, device=layout.device)
            out = f(f.direction * float(tn), y)  # FlatVectorField takes the solver time
            last["t"], last["f"] = float(tn), out
            return _numpy(out)

        n_events = [0]

        def count_steps(tn, yn) -> float:
            # SciPy evaluates events once at t0 and once after every accepted step; this one
            # never changes sign, so it only counts the steps.
            n_events[0] += 1
            return 1.0

        nfe0 = f.nfe
        try:
            with torch.no_grad():
                sol = _solve_ivp()(fun, (times[0], times[-1]), _numpy(y0_flat), method=solver,
                                   t_eval=times, rtol=_tolerance(self.rtol),
                                   atol=_tolerance(self.atol), events=count_steps, **steps)
        except _NonFiniteTime:
            stats = ScipyStats(nfe=f.nfe - nfe0)
            return Integration([y0_flat], stats, Status.NON_FINITE,
                               f"SciPy's {solver} failed: func returned non-finite values and "
                               f"the step size became NaN", self.direction * last["t"], math.nan)
        ys_flat = torch.from_numpy(sol.y.T.copy()).to(layout.dtype).to(layout.device)
        outputs = list(ys_flat)
        if outputs:
            outputs[0] = y0_flat  # exactly y0, whatever SciPy's interpolant returns at t0
        accepted = max(n_events[0] - 1, 0)
        stats = ScipyStats(nfe=f.nfe - nfe0, n_steps=accepted, n_accepted=accepted,
                           njev=int(sol.njev), nlu=int(sol.nlu))
        run = Integration(outputs, stats, tau=self.direction * times[-1], h=math.nan)
        if sol.status < 0:
            run.status = _failure_status(sol.message, last["f"])
            run.cause = f"SciPy's {solver} failed: {sol.message}"
            run.tau = self.direction * last["t"]
        finite = [bool(torch.isfinite(y).all()) for y in outputs]
        if not all(finite):  # LSODA can report success on NaN states: never return them silently
            k = finite.index(False)
            run.outputs, run.status = outputs[:k], Status.NON_FINITE
            run.tau = self.direction * times[max(k - 1, 0)]
            run.cause = f"SciPy's {solver} returned non-finite states from t={times[k]:.10g} on"
        return run


def make_scipy_problem(func: Callable, y0, t: torch.Tensor, *, rtol, atol,
                       options) -> ScipyProblem:
    """Validate the arguments of a scipy solve (as :func:`node.problem.make_problem`)."""
    check_func(func)
    layout = StateLayout(y0)
    direction = check_times(t)
    rtol_flat = layout.flat_tolerance("rtol", rtol)
    atol_flat = layout.flat_tolerance("atol", atol)
    check_not_both_zero(rtol_flat, atol_flat, rtol, atol)
    scipy_options(options)
    warn_uncalled_callbacks(func)
    return ScipyProblem(func, y0, t, layout, direction, rtol_flat, atol_flat, dict(options or {}))


def warn_uncalled_callbacks(owner, suffix: str = "") -> None:
    """Warn of the step callbacks ``owner`` defines: SciPy's steps are not exposed."""
    defined = [name + suffix for name in _CALLBACKS
               if getattr(owner, name + suffix, None) is not None]
    if defined:
        warnings.warn(f"func's {' and '.join(defined)} will never be called: method={METHOD!r} "
                      f"does not expose SciPy's steps", UserWarning, stacklevel=4)


def finish_scipy(problem: ScipyProblem, run: Integration, ys_flat: torch.Tensor, on_failure: str,
                 stats: dict) -> Solution:
    """Package a run as a Solution, raising :class:`SolverError` on failure if asked to."""
    n = ys_flat.shape[0]
    t = problem.t
    solution = Solution(ts=t[:n], ys=problem.layout.unflatten_trajectory(ys_flat), stats=stats,
                        status=run.status)
    if run.status is not Status.SUCCESS:
        t_reached = problem.direction * run.tau
        solution.message = (f"{run.cause}; solve stopped near t={t_reached:.10g} ({n} of "
                            f"{t.numel()} output times reached)")
        if on_failure == "raise":
            raise SolverError(run.status, t_reached, math.nan, solution.message, solution)
    return solution


def solve_scipy(func: Callable, y0, t: torch.Tensor, *, rtol, atol, options,
                on_failure: str = "raise") -> Solution:
    """Solve with ``solve_ivp`` (arguments as :func:`node.solve`'s); see the module docstring."""
    problem = make_scipy_problem(func, y0, t, rtol=rtol, atol=atol, options=options)
    f = problem.vector_field()
    run = problem.integrate(f, problem.layout.flatten(y0))
    ys_flat = torch.stack(run.outputs)
    inputs = _grad_inputs(func, y0, t)
    if inputs:
        ys_flat = _NoGradient.apply(ys_flat, *inputs)
    return finish_scipy(problem, run, ys_flat, on_failure, run.stats.as_dict())
