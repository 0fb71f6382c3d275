"""One typed, validated value for every setting of a solve: :class:`SolverConfig`.

``SolverConfig(method="tsit5", rtol=1e-5).solve(func, y0, t)`` is ``node.solve(func, y0, t,
method="tsit5", rtol=1e-5)``: the config holds exactly the keyword arguments of
:func:`node.solve` (plus four conveniences that map onto ``options``), checks them once when it
is built, with node's own validators and messages, and passes them through. ``options`` and
``adjoint_options`` are handed to node as dicts, so any option node knows (now or later) is
reachable from a config without code that knows it.

Layering: this module sits on top of :mod:`node.api`; nothing below the public layer imports it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from node.api import solve
from node.gradient_modes import check_modes
from node.methods import get_tableau
from node.options import MODE_KEY, parse_options, uses_fixed_grid
from node.scipy_solver import METHOD as SCIPY_METHOD
from node.scipy_solver import scipy_options
from node.solution import Solution
from node.state import check_not_both_zero, tolerance_number
from node.tableau import ButcherTableau

# the conveniences: field name -> the option it sets
_OPTION_FIELDS = ("step_size", "max_num_steps", "progress")
_ADJOINT_ARGS = ("adjoint_rtol", "adjoint_atol", "adjoint_method", "adjoint_options")


@dataclass(frozen=True)
class SolverConfig:
    """How to solve: method, tolerances, options, gradient mode and the adjoint's settings.

    Attributes (all as in :func:`node.solve`, whose defaults they share):
        method: a registered method name (:func:`node.available_methods`, including methods
            added with :func:`node.register_method`) or a :class:`node.ButcherTableau`.
        rtol, atol: a number, or a sequence with one entry per tensor of a tuple state (each a
            number or a per-element tensor). An entry may be ``inf`` (``.inf`` in YAML): that
            tensor is left out of the error test (for a CNF's log-density, say).
        options: method options, a dict (:class:`node.AdaptiveOptions`,
            :class:`node.FixedGridOptions`).
        gradient: ``"direct"``, ``"checkpoint"`` or ``"adjoint"``.
        adjoint_rtol, adjoint_atol, adjoint_method, adjoint_options: the adjoint solve's
            settings (``gradient="adjoint"`` only; ``None``: the forward solve's).
        on_failure: ``"raise"`` or ``"return"``.

    Conveniences (each sets one option; giving both it and that option is an error):
        step_size: ``options["step_size"]``; for an adaptive method also
            ``options["adaptive"] = False``, i.e. a fixed grid of this spacing.
        max_num_steps: ``options["max_num_steps"]``, the step budget of a solve.
        progress: ``options["progress"]`` (a progress bar: ``True`` or a delay in seconds).
        seminorm: ``adjoint_options["norm"] = "seminorm"`` (Kidger et al., 2021): the adjoint's
            error test leaves out the parameter adjoint; needs an adaptive adjoint solve.
    """

    method: str | ButcherTableau = "dopri5"
    rtol: Any = 1e-7
    atol: Any = 1e-9
    options: dict[str, Any] | None = None
    gradient: str = "direct"
    adjoint_rtol: Any = None
    adjoint_atol: Any = None
    adjoint_method: str | None = None
    adjoint_options: dict[str, Any] | None = None
    on_failure: str = "raise"
    step_size: float | None = None
    max_num_steps: int | None = None
    progress: bool | float = False
    seminorm: bool = False

    def __post_init__(self) -> None:
        check_modes(self.gradient, self.on_failure)
        for name in ("rtol", "atol"):
            self._set(name, _tolerance(name, getattr(self, name)))
        try:
            check_not_both_zero(_flat(self.rtol), _flat(self.atol), self.rtol, self.atol)
        except RuntimeError:
            pass  # shapes that do not broadcast: the solve names the mismatch
        for name in ("options", "adjoint_options"):
            self._set(name, _mapping(name, getattr(self, name)))
        if self.gradient != "adjoint":
            given = [n for n in _ADJOINT_ARGS if getattr(self, n) is not None]
            given += ["seminorm"] if self.seminorm is True else []
            if given:
                raise ValueError(f"{', '.join(given)} need gradient='adjoint', got "
                                 f"gradient={self.gradient!r}")
        for name in ("adjoint_rtol", "adjoint_atol"):
            if getattr(self, name) is not None:
                self._set(name, _tolerance(name, getattr(self, name)))
        for name in _OPTION_FIELDS:
            if _set(getattr(self, name)) and name in (self.options or {}):
                raise ValueError(f"give {name} or options[{name!r}], not both")
        if not isinstance(self.seminorm, bool):
            raise TypeError(f"seminorm must be True or False, got {self.seminorm!r}")
        if self.method == SCIPY_METHOD:
            self._check_scipy()
            return
        tableau = get_tableau(self.method)
        options = self.solve_options
        parse_options(options, fixed_grid=uses_fixed_grid(tableau.adaptive, options),
                      method=tableau)
        if self.gradient == "adjoint":
            self._check_adjoint(tableau)

    def _check_scipy(self) -> None:
        """``method="scipy_solver"`` (not a tableau): its own options, gradients by the adjoint
        only, no grid."""
        if self.gradient == "checkpoint":
            raise ValueError(f"method={SCIPY_METHOD!r} gives gradients only by the adjoint, so "
                             f"gradient must be 'direct' or 'adjoint', got {self.gradient!r}")
        if self.step_size is not None or _set(self.progress):
            given = "step_size" if self.step_size is not None else "progress"
            raise ValueError(f"{given} is not an option of method={SCIPY_METHOD!r} (SciPy "
                             f"chooses its steps; options['solver'] picks the integrator)")
        scipy_options(self.solve_options)
        if self.gradient == "adjoint":
            self._check_adjoint(SCIPY_METHOD)

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)  # normalising a frozen field in __post_init__

    def _check_adjoint(self, forward: ButcherTableau | str) -> None:
        """The adjoint settings for the forward method (a tableau or ``"scipy_solver"``)."""
        method = forward if self.adjoint_method is None else _method(self.adjoint_method)
        if method == SCIPY_METHOD and self.seminorm:
            raise ValueError(f"seminorm=True needs an adaptive adjoint solve of node's; "
                             f"adjoint_method={SCIPY_METHOD!r} (SciPy's solve_ivp) takes no norm")
        options = self.adjoint_solve_options
        if options is None:
            return  # node derives them from the forward solve's, checked above
        options = {k: v for k, v in options.items() if k != "norm"}
        if method == SCIPY_METHOD:
            scipy_options(options)
            return
        fixed = uses_fixed_grid(method.adaptive, options)
        parse_options(options, fixed_grid=fixed, method=method)
        if self.seminorm and fixed:
            raise ValueError(f"seminorm=True needs an adaptive adjoint solve; method "
                             f"{method.name!r} runs on a fixed grid with these options")

    @property
    def tableau(self) -> ButcherTableau:
        return get_tableau(self.method)

    @property
    def solve_options(self) -> dict[str, Any] | None:
        """``options`` with the conveniences applied (``None`` if nothing is set, which lets an
        adjoint solve with its own ``adjoint_method`` choose its options)."""
        if self.options is None and not any(_set(getattr(self, n)) for n in _OPTION_FIELDS):
            return None
        options = dict(self.options or {})
        if self.step_size is not None:
            options["step_size"] = self.step_size
            if get_tableau(self.method).adaptive:
                options.setdefault(MODE_KEY, False)
        if self.max_num_steps is not None:
            options["max_num_steps"] = self.max_num_steps
        if _set(self.progress):
            options["progress"] = self.progress
        return options

    @property
    def fixed_grid(self) -> bool:
        """Whether the forward solve runs on a fixed grid."""
        if self.method == SCIPY_METHOD:
            return False
        return uses_fixed_grid(self.tableau.adaptive, self.solve_options)

    @property
    def adjoint_solve_options(self) -> dict[str, Any] | None:
        """``adjoint_options`` with ``seminorm`` applied (``None``: node's default)."""
        if not self.seminorm:
            return None if self.adjoint_options is None else dict(self.adjoint_options)
        if self.adjoint_options is not None:
            options = dict(self.adjoint_options)
        elif (self.adjoint_method is None
              or _name(self.adjoint_method) == _name(self.method)):
            options = dict(self.solve_options or {})  # what node would use for the adjoint
        else:
            options = {}
        options["norm"] = "seminorm"
        return options

    def solve_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`node.solve` this config stands for."""
        kwargs = dict(method=self.method, rtol=self.rtol, atol=self.atol,
                      options=self.solve_options, gradient=self.gradient,
                      on_failure=self.on_failure)
        if self.gradient == "adjoint":
            kwargs.update(adjoint_rtol=self.adjoint_rtol, adjoint_atol=self.adjoint_atol,
                          adjoint_method=self.adjoint_method,
                          adjoint_options=self.adjoint_solve_options)
        return kwargs

    def solve(self, func: Callable, y0, t: torch.Tensor, **overrides) -> Solution:
        """:func:`node.solve` with this config's arguments; ``overrides`` (any keyword argument
        of ``node.solve``, e.g. ``adjoint_params`` or per-call ``rtol``) replace them. An
        override ``gradient`` other than ``"adjoint"`` drops the config's adjoint settings."""
        kwargs = self.solve_kwargs()
        if overrides.get("gradient", self.gradient) != "adjoint":
            for name in _ADJOINT_ARGS:
                kwargs.pop(name, None)
        kwargs.update(overrides)
        return solve(func, y0, t, **kwargs)

    def odeint(self, func: Callable, y0, t: torch.Tensor, **overrides):
        """The states at ``t`` (``solve(...).ys``), like :func:`node.odeint`."""
        return self.solve(func, y0, t, **overrides).ys

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (``SolverConfig(**config.to_dict()) == config``)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _method(method: str | ButcherTableau) -> ButcherTableau | str:
    """A method's tableau, or ``"scipy_solver"`` (which has none)."""
    return SCIPY_METHOD if method == SCIPY_METHOD else get_tableau(method)


def _name(method: str | ButcherTableau) -> str:
    resolved = _method(method)
    return resolved if isinstance(resolved, str) else resolved.name


def _set(value) -> bool:
    """Whether a convenience field is set (``None``/``False`` mean unset; ``0`` is a value, which
    the option parsing then judges)."""
    return value is not None and value is not False


def _tolerance(name: str, value):
    """A tolerance, checked entry by entry with node's rule (the state's layout, e.g. the
    number of tensors of a tuple state, is checked by the solve)."""
    if isinstance(value, torch.Tensor):
        if not bool(torch.all(value >= 0)):
            raise ValueError(f"{name} must be >= 0 everywhere (inf: no error control), got "
                             f"{value}")
        return value
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(
            v if isinstance(v, torch.Tensor) and v.numel() > 1
            else tolerance_number(f"{name}[{i}]", v, allow_inf=True)
            for i, v in enumerate(value)
        )
    return tolerance_number(name, value)


def _flat(tol):
    """Numbers as a flat tensor for :func:`check_not_both_zero` (tensor entries: left out)."""
    if isinstance(tol, tuple):
        return torch.tensor([v if not isinstance(v, torch.Tensor) else math.nan for v in tol])
    return tol if isinstance(tol, torch.Tensor) else torch.tensor(tol)


def _mapping(name: str, value) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict or None, got {type(value).__name__}")
    return dict(value)
