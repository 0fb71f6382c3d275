"""Typed solver options.

``odeint(..., options={...})`` takes a plain dict for torchdiffeq compatibility; it is parsed here
into one of two dataclasses, so every value has one documented type and default.

A method runs in one of two modes:

* **adaptive** (an embedded pair): :class:`AdaptiveOptions`;
* **fixed grid** (a fixed-step method, or an embedded pair given ``adaptive=False``):
  :class:`FixedGridOptions`. Running an adaptive pair on a fixed grid is allowed (the error
  estimate is then simply not computed), as diffrax's ``ConstantStepSize``.

Keys are treated as torchdiffeq treats them, so that the same call gives the same answer: a key
that only the other mode uses (``step_size`` for ``dopri5``, ``first_step`` for ``rk4``, ...) is
ignored with a :class:`UserWarning` naming it; in particular ``step_size`` never turns an adaptive
method into a fixed-grid one (``adaptive=False`` does). A key that no method knows (a typo)
raises a :class:`ValueError`.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch

from node.implicit_tableau import ImplicitTableau
from node.jacobian import check_jacobian_option
from node.multistep import MAX_ORDER, AdamsMethod
from node.newton import JACOBIAN_REUSE

_CONTROLLERS = ("integral", "pid")
_INTERPS = ("linear", "cubic")


@dataclass(frozen=True)
class AdaptiveOptions:
    """Options of adaptive-step solves (torchdiffeq's names and defaults, plus the controller).

    Attributes:
        first_step: size of the first step; ``None`` selects it automatically (Hairer, Norsett
            and Wanner, *Solving ODEs I*, sec. II.4), at the cost of one function evaluation.
        safety, ifactor, dfactor: the new step is ``dt * clip(safety * ratio**(-1/order),
            dfactor, ifactor)``, where ``ratio`` is the scaled error norm; after an accepted step
            the factor is at least 1 (torchdiffeq's rule).
        min_step: smallest step allowed. As in torchdiffeq, a step of at most this size is
            accepted even if it fails the error test (a floor that forces progress); the
            solve then warns once that the tolerances may be missed. A non-finite step at
            this size raises :class:`~node.SolverError`.
        max_step: largest step allowed.
        max_num_steps: budget of steps (accepted plus rejected) for the whole solve.
        step_t: times the solver must step onto (for example known kinks in ``func``).
        jump_t: times of discontinuities of ``func``: stepped onto, and ``func`` is re-evaluated
            just after them instead of reusing the derivative from before. (kvaerno5 has a
            stage node past the step's end, ``c = 1.23``: on a step landing on a jump it is
            evaluated at the step's end, from before the jump.)
        norm: norm of the scaled error, called with a tensor (or tuple) shaped like the state.
        dtype: dtype of the time tensors passed to ``func``; ``None`` (default) means the
            state's dtype, which is what torchdiffeq's stages pass (so ``torch.cat([y, t...])``
            works). The solver itself keeps time in float64 Python floats whatever this is, so
            float32 (Apple MPS) loses no step-size precision.
        controller: ``"integral"`` (default) or ``"pid"``.
        pcoeff, icoeff, dcoeff: gains of the PID controller (Soederlind, 2003); the defaults
            0.3/0.3/0 are one of the pairs listed in diffrax's ``PIDController`` documentation.
            With ``pcoeff=dcoeff=0, icoeff=1`` it uses the integral controller's exponent, but
            unlike it lets an accepted step shrink the next one.
        progress: draw a progress bar on stderr (needs ``tqdm``): ``True``, or a number of
            seconds to show it only for solves still running after that long.
    """

    first_step: float | None = None
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    min_step: float = 0.0
    max_step: float = math.inf
    max_num_steps: int = 2**31 - 1
    step_t: tuple[float, ...] = ()
    jump_t: tuple[float, ...] = ()
    norm: Callable[[Any], torch.Tensor] | None = None
    dtype: torch.dtype | None = None
    controller: str = "integral"
    pcoeff: float = 0.3
    icoeff: float = 0.3
    dcoeff: float = 0.0
    progress: bool | float = False


@dataclass(frozen=True)
class FixedGridOptions:
    """Options of fixed-grid solves (torchdiffeq's names and defaults).

    Fixed-step methods (``euler``, ``rk4``, ...) always run in this mode. An adaptive method (an
    embedded pair such as ``dopri5``) runs in it only when the option dict says
    ``adaptive=False``, e.g. ``options=dict(adaptive=False, step_size=0.1)``: its higher-order
    solution is then taken on the grid and the error estimate is not computed. (Without
    ``adaptive=False`` an adaptive method ignores ``step_size``, with a warning, as torchdiffeq
    does.)

    Attributes:
        step_size: grid spacing; ``None`` steps exactly from one output time to the next.
        grid_constructor: ``grid_constructor(func, y0, t) -> 1-D tensor`` builds the grid
            (its first and last entries must be ``t[0]`` and ``t[-1]``).
        perturb: evaluate ``func`` just after a step's start and just before its end (the next
            floating-point number), so that discontinuities on grid points are seen from the
            correct side.
        interp: ``"linear"`` or ``"cubic"`` (Hermite) interpolation between grid points.
        dtype: dtype of the time tensors passed to ``func`` (``None``: the state's dtype).
        max_num_steps: budget of steps for the whole solve; a longer grid fails at once.
        progress: as in :class:`AdaptiveOptions`.
    """

    step_size: float | None = None
    grid_constructor: Callable | None = None
    perturb: bool = False
    interp: str = "linear"
    dtype: torch.dtype | None = None
    max_num_steps: int = 2**31 - 1
    progress: bool | float = False


@dataclass(frozen=True)
class StageSolverOptions:
    """The stage solver's options of an implicit Runge-Kutta method (mixed into
    :class:`ImplicitAdaptiveOptions` and :class:`ImplicitFixedGridOptions`).

    Attributes:
        jacobian: how ``J = df/dy`` of the Newton iteration is built: ``"dense"`` (default; an
            ``N x N`` matrix by autograd), ``"batch"`` (the first dimension of a tensor state
            is a batch of independent problems: ``[B, D, D]`` blocks), or a callable
            ``jac(t, y)`` returning ``(*y.shape, *y.shape)`` or ``[B, D, D]`` (see
            :mod:`node.jacobian`).
        max_iters: Newton iterations allowed per stage system (torchdiffeq's name); a step
            whose iteration does not converge is rejected and retried with a quarter of the
            step (adaptive) or raises :class:`~node.SolverError` (fixed grid).
        newton_tol: ``kappa`` of the convergence test: the estimated Newton error, in the error
            test's scaled RMS norm, must be at most this (see :mod:`node.newton`).
        jacobian_reuse: the Jacobian of a step is kept for the next steps while the Newton
            iteration contracts at least this fast (its largest rate ``||dz_k|| / ||dz_{k-1}||``
            over the step's stages at most this), as RADAU5 and SciPy's Radau do; a Newton
            failure with a kept Jacobian first recomputes it at the step's start. ``0``
            recomputes it every step (see :mod:`node.implicit_runge_kutta`).
    """

    jacobian: str | Callable = "dense"
    max_iters: int = 10
    newton_tol: float = 1e-2
    jacobian_reuse: float = JACOBIAN_REUSE


@dataclass(frozen=True)
class ImplicitAdaptiveOptions(AdaptiveOptions, StageSolverOptions):
    """:class:`AdaptiveOptions` of an implicit method (``kvaerno3``, ``kvaerno5``), plus its
    stage solver's (:class:`StageSolverOptions`)."""


@dataclass(frozen=True)
class ImplicitFixedGridOptions(FixedGridOptions, StageSolverOptions):
    """:class:`FixedGridOptions` of an implicit method, plus its stage solver's
    (:class:`StageSolverOptions`; the Newton norm uses the solve's ``rtol``/``atol``; a stage
    iteration that does not converge raises :class:`~node.SolverError` with status
    ``iteration_not_converged``)."""


@dataclass(frozen=True)
class AdamsOptions(FixedGridOptions):
    """Options of the Adams multistep methods (``explicit_adams``, ``implicit_adams``): those of
    :class:`FixedGridOptions` and torchdiffeq's two multistep keys.

    Attributes:
        max_order: order of the method once it has enough past steps (1 to 12): Adams-Bashforth
            of this order, or for ``implicit_adams`` an Adams-Moulton corrector of this order
            with a predictor one order lower. torchdiffeq's default is 12 (its explicit method
            then runs order 11), whose stability region is too small for common steps (see
            :mod:`node.adams`); node's default is 4.
        max_iters: most corrector evaluations per step of ``implicit_adams`` (its fixed-point
            iteration stops once a correction, scaled by ``atol + rtol * |y|``, is at most 1).
    """

    max_order: int = 4
    max_iters: int = 4

    def __post_init__(self) -> None:
        for name, high in (("max_order", MAX_ORDER), ("max_iters", None)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"options[{name!r}] must be an int, got "
                                f"{type(value).__name__}: {value!r}")
            if value < 1 or (high is not None and value > high):
                bound = f"between 1 and {high}" if high is not None else ">= 1"
                raise ValueError(f"options[{name!r}] must be {bound}, got {value}")


@functools.cache
def _field_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


# The option-dict key that selects the mode of an adaptive method (it is no dataclass field: a
# dataclass instance says its mode by its type).
MODE_KEY = "adaptive"
# Keys that only some methods use (the iteration limit and order of the implicit and multistep
# methods, the implicit stage solver's Jacobian and tolerance): accepted by the others with the
# warning torchdiffeq gives to any key a method does not use (torchdiffeq's own are max_iters
# and max_order).
_FOREIGN_KEYS = ("max_iters", "max_order", "jacobian", "newton_tol", "jacobian_reuse")


def uses_fixed_grid(adaptive_method: bool, options: Mapping[str, Any] | None) -> bool:
    """Whether a method runs on a fixed grid with these options."""
    if not adaptive_method:
        return True
    if isinstance(options, AdaptiveOptions | FixedGridOptions):
        return isinstance(options, FixedGridOptions)
    if not isinstance(options, Mapping):
        return False  # parse_options raises the TypeError
    return options.get(MODE_KEY, True) is False


def options_dict(options: AdaptiveOptions | FixedGridOptions) -> dict[str, Any]:
    """Typed options back as a dict that :func:`parse_options` maps to the same mode."""
    out = {name: getattr(options, name) for name in _field_names(type(options))}
    if isinstance(options, FixedGridOptions):
        out[MODE_KEY] = False
    return out


def _drop_unused(options: Mapping[str, Any], valid: tuple[str, ...], fixed_grid: bool,
                 method: str) -> dict[str, Any]:
    """The options this mode uses; warn about those only another mode uses, raise on typos."""
    other = _field_names(AdaptiveOptions if fixed_grid else FixedGridOptions)
    known = set(valid) | set(other) | set(_FOREIGN_KEYS) | {MODE_KEY}
    unknown = sorted(k for k in options if k not in known)
    mode = "fixed-grid" if fixed_grid else "adaptive"
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for method {method!r} ({mode} mode); "
            f"valid options are: {', '.join(valid)}"
        )
    unused = sorted(k for k in options if k not in valid and k != MODE_KEY)
    if unused:
        hint = ""
        if not fixed_grid and {"step_size", "grid_constructor"} & set(unused):
            hint = (f"; to run {method!r} on a fixed grid, pass "
                    f"options=dict({MODE_KEY}=False, step_size=...)")
        # torchdiffeq warns about such keys and goes on; doing the same keeps its results.
        warnings.warn(f"option(s) {unused} not used by method {method!r} ({mode} mode) and "
                      f"ignored{hint}", UserWarning, stacklevel=4)
    return {k: v for k, v in options.items() if k in valid}


def _times(name: str, value) -> tuple[float, ...]:
    if value is None:
        return ()
    if isinstance(value, torch.Tensor):
        if value.dim() > 1:
            raise ValueError(f"options[{name!r}] must be 1-D, got shape {tuple(value.shape)}")
        return tuple(float(v) for v in value.detach().reshape(-1).tolist())
    try:
        return tuple(float(v) for v in value)
    except TypeError:
        raise TypeError(
            f"options[{name!r}] must be a 1-D tensor or sequence of times, got "
            f"{type(value).__name__}"
        ) from None


def _positive(name: str, value, *, allow_zero: bool = False, allow_inf: bool = False) -> float:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"options[{name!r}] must be a number, got {type(value).__name__}")
    value = float(value)
    ok = (value >= 0 if allow_zero else value > 0) and (allow_inf or math.isfinite(value))
    if not ok or math.isnan(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"options[{name!r}] must be {bound} and finite, got {value!r}")
    return value


def progress_option(value) -> bool | float:
    """``progress``: a bool, or a number of seconds > 0 (the bar's delay)."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, int | float):
        raise TypeError(f"progress must be True, False or a number of seconds, got "
                        f"{type(value).__name__}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"progress must be True, False or a number of seconds > 0, got {value!r}")
    return float(value)


def _dtype(value) -> torch.dtype:
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise TypeError(f"options['dtype'] must be a floating torch.dtype, got {value!r}")
    return value


def parse_options(
    options: Mapping[str, Any] | None, *, fixed_grid: bool, method
) -> AdaptiveOptions | FixedGridOptions:
    """Validate an option dict and return the typed options for the solve's mode.

    ``method``: the method (registry entry) or its name. The option class follows the method's
    family: an implicit Runge-Kutta tableau adds its stage solver's options
    (:class:`ImplicitAdaptiveOptions`, :class:`ImplicitFixedGridOptions`), an Adams method has
    :class:`AdamsOptions`."""
    if isinstance(method, AdamsMethod):
        grid_cls, adaptive_cls = AdamsOptions, AdaptiveOptions
    elif isinstance(method, ImplicitTableau):
        grid_cls, adaptive_cls = ImplicitFixedGridOptions, ImplicitAdaptiveOptions
    else:
        grid_cls, adaptive_cls = FixedGridOptions, AdaptiveOptions
    method = getattr(method, "name", method)
    if options is None:
        options = {}
    if isinstance(options, AdaptiveOptions | FixedGridOptions):
        options = {name: getattr(options, name) for name in _field_names(type(options))}
    if not isinstance(options, Mapping):
        raise TypeError(f"options must be a dict or None, got {type(options).__name__}")
    cls = grid_cls if fixed_grid else adaptive_cls
    valid = _field_names(cls)
    mode_value = options.get(MODE_KEY, not fixed_grid)
    if not isinstance(mode_value, bool):
        raise TypeError(f"options[{MODE_KEY!r}] must be True or False, got {mode_value!r}")
    if mode_value and fixed_grid:
        raise ValueError(f"options[{MODE_KEY!r}]=True needs an adaptive method (an embedded "
                         f"pair); method {method!r} has no error estimate")
    options = _drop_unused(options, valid, fixed_grid, method)
    kw = {k: v for k, v in options.items() if v is not None or k in ("first_step", "norm")}
    if "dtype" in kw:
        kw["dtype"] = _dtype(kw["dtype"])
    if "progress" in kw:
        kw["progress"] = progress_option(kw["progress"])
    if "max_num_steps" in kw:
        n = kw["max_num_steps"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"options['max_num_steps'] must be a positive int, got {n!r}")
    if issubclass(cls, StageSolverOptions):
        _implicit_options(kw)
    if fixed_grid:
        if kw.get("step_size") is not None:
            kw["step_size"] = _positive("step_size", kw["step_size"])
        if kw.get("grid_constructor") is not None and not callable(kw["grid_constructor"]):
            raise TypeError("options['grid_constructor'] must be callable")
        if kw.get("interp", "linear") not in _INTERPS:
            raise ValueError(f"options['interp'] must be one of {_INTERPS}, got {kw['interp']!r}")
        return cls(**kw)

    if kw.get("first_step") is not None:
        kw["first_step"] = _positive("first_step", kw["first_step"])
    for name in ("safety", "ifactor", "dfactor"):
        if name in kw:
            kw[name] = _positive(name, kw[name])
    if "min_step" in kw:
        kw["min_step"] = _positive("min_step", kw["min_step"], allow_zero=True)
    if "max_step" in kw:
        kw["max_step"] = _positive("max_step", kw["max_step"], allow_inf=True)
    for name in ("pcoeff", "icoeff", "dcoeff"):
        if name in kw:
            kw[name] = float(kw[name])
    if kw.get("min_step", 0.0) > kw.get("max_step", math.inf):
        raise ValueError(
            f"options['min_step'] ({kw['min_step']}) must not exceed options['max_step'] "
            f"({kw['max_step']})"
        )
    if kw.get("controller", "integral") not in _CONTROLLERS:
        raise ValueError(
            f"options['controller'] must be one of {_CONTROLLERS}, got {kw['controller']!r}"
        )
    if kw.get("norm") is not None and not callable(kw["norm"]):
        raise TypeError(f"options['norm'] must be callable, got {type(kw['norm']).__name__}")
    kw["step_t"] = _times("step_t", kw.get("step_t"))
    kw["jump_t"] = _times("jump_t", kw.get("jump_t"))
    if set(kw["step_t"]) & set(kw["jump_t"]):
        raise ValueError("options['step_t'] and options['jump_t'] must not share any time")
    return cls(**kw)


def _implicit_options(kw: dict[str, Any]) -> None:
    """Validate the stage solver's options in place."""
    if "jacobian" in kw:
        kw["jacobian"] = check_jacobian_option(kw["jacobian"])
    if "max_iters" in kw:
        n = kw["max_iters"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"options['max_iters'] must be a positive int, got {n!r}")
    if "newton_tol" in kw:
        kw["newton_tol"] = _positive("newton_tol", kw["newton_tol"])
    if "jacobian_reuse" in kw:
        r = kw["jacobian_reuse"]
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= r < 1.0:
            raise ValueError(f"options['jacobian_reuse'] must be a float in [0, 1), got {r!r}")
        kw["jacobian_reuse"] = float(r)
