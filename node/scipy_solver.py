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

No gradients: SciPy's arithmetic is outside autograd. Rather than refuse the call (torchdiffeq
returns a plain result even when ``y0``, ``t`` or ``func``'s parameters require gradients, and
its tests rely on that), the result is attached to those inputs by a node whose backward raises
a clear error, so ``backward()`` through a scipy solve says why it cannot work instead of
"element 0 of tensors does not require grad". (Parameters a plain function closes over cannot
be seen; its result simply has no gradient.)

SciPy is imported only when the method is used; ``node`` itself depends on torch alone.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping

import torch

from node.errors import SolverError, Status
from node.inputs import check_func, check_times
from node.options import AdaptiveOptions, FixedGridOptions, _dtype, _positive
from node.solution import Solution
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
    return (f"method={METHOD!r} cannot {what}: SciPy's solve_ivp runs outside autograd. "
            f"Use one of node's own methods (e.g. method='dopri5') for gradients.")


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


def scipy_options(options) -> tuple[str, dict, torch.dtype | None]:
    """``(solver, solve_ivp step keywords, time dtype)`` from the options dict."""
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
    if ignored:
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


def solve_scipy(func: Callable, y0, t: torch.Tensor, *, rtol, atol, options,
                on_failure: str = "raise") -> Solution:
    """Solve with ``solve_ivp`` (arguments as :func:`node.solve`'s); see the module docstring."""
    check_func(func)
    layout = StateLayout(y0)
    check_times(t)
    rtol_flat = layout.flat_tolerance("rtol", rtol)
    atol_flat = layout.flat_tolerance("atol", atol)
    check_not_both_zero(rtol_flat, atol_flat, rtol, atol)
    solver, steps, time_dtype = scipy_options(options)
    defined = [name for name in _CALLBACKS if getattr(func, name, None) is not None]
    if defined:
        warnings.warn(f"func's {' and '.join(defined)} will never be called: method={METHOD!r} "
                      f"does not expose SciPy's steps", UserWarning, stacklevel=3)

    y0_flat = layout.flatten(y0).detach()
    times = t.detach().to("cpu", torch.float64).tolist()
    f = FlatVectorField(func, layout, time_dtype, 1.0)
    last = {"t": times[0], "f": None}

    def fun(tn, yn):
        y = torch.tensor(yn, dtype=layout.dtype, device=layout.device)
        out = f(float(tn), y)
        last["t"], last["f"] = float(tn), out
        return _numpy(out)

    n_events = [0]

    def count_steps(tn, yn) -> float:
        # SciPy evaluates events once at t0 and once after every accepted step; this one never
        # changes sign, so it only counts the steps.
        n_events[0] += 1
        return 1.0

    status, message = Status.SUCCESS, ""
    stats = {"nfe": 0, "n_steps": 0, "n_accepted": 0}
    if len(times) == 1:
        ys_flat = y0_flat[None]
    else:
        solve_ivp = _solve_ivp()
        with torch.no_grad():
            sol = solve_ivp(fun, (times[0], times[-1]), _numpy(y0_flat), method=solver,
                            t_eval=times, rtol=_tolerance(rtol_flat), atol=_tolerance(atol_flat),
                            events=count_steps, **steps)
        ys_flat = torch.from_numpy(sol.y.T.copy()).to(layout.dtype).to(layout.device)
        if ys_flat.shape[0] > 0:
            ys_flat[0] = y0_flat  # exactly y0, whatever SciPy's interpolant returns at t0
        accepted = max(n_events[0] - 1, 0)
        stats = {"nfe": f.nfe, "n_steps": accepted, "n_accepted": accepted,
                 "njev": int(sol.njev), "nlu": int(sol.nlu)}
        if sol.status < 0:
            status = _failure_status(sol.message, last["f"])
            message = (f"SciPy's {solver} failed: {sol.message}; solve stopped near "
                       f"t={last['t']:.10g} ({ys_flat.shape[0]} of {len(times)} output times "
                       f"reached)")
    inputs = _grad_inputs(func, y0, t)
    if inputs:
        ys_flat = _NoGradient.apply(ys_flat, *inputs)
    n = ys_flat.shape[0]
    solution = Solution(ts=t[:n], ys=layout.unflatten_trajectory(ys_flat), stats=stats,
                        status=status, message=message)
    if status is not Status.SUCCESS and on_failure == "raise":
        raise SolverError(status, last["t"], math.nan, message, solution)
    return solution
