"""The configurable ODE solver every model takes from the ``solver`` config group.

:class:`ODESolver` turns one solver config (method, tolerances, step options, gradient mode) into
a call of the ``node`` package:

=============== ===========================================================================
``gradient``    call
=============== ===========================================================================
``direct``      ``node.odeint``: backpropagation through the solver's operations.
``adjoint``     ``node.solve(..., gradient="adjoint")`` (what ``node.odeint_adjoint`` runs, plus
                step statistics): the adjoint ODE solved backwards in time (memory independent
                of the number of steps), with its own tolerances and, optionally, the seminorm
                of Kidger et al. (2021) for the adjoint's error control.
``checkpoint``  ``node.solve(..., gradient="checkpoint")``: the forward solve keeps no graph,
                only each accepted step's state; the backward pass replays the steps with
                autograd (the exact gradient of the computed solution, like ``direct``).
=============== ===========================================================================

Outside autograd (``torch.no_grad()``, validation, prediction) every mode solves with
``node.odeint``, which computes the same forward solution without gradient bookkeeping.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

import node
from models.components.counting import (
    CountedField,
    EvaluationCounter,
    EvaluationCounts,
    FixedGridCountedField,
)

GRADIENT_MODES = ("direct", "adjoint", "checkpoint")


def _positive_float(name: str, value, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    ok = not isinstance(value, bool) and isinstance(value, int | float)
    if not ok or not (value > 0 and math.isfinite(value)):
        expected = "a finite number > 0" + (" or null" if optional else "")
        raise ValueError(f"solver.{name} must be {expected}, got {value!r}")
    return float(value)


def _positive_int(name: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"solver.{name} must be an integer >= 1 or null, got {value!r}")
    return value


class ODESolver(nn.Module):
    """Solve ``dy/dt = func(t, y)`` the way the solver config says, counting evaluations.

    Args:
        method: a method name known to ``node`` (``node.available_methods()``).
        rtol, atol: tolerances of adaptive solves (unused on a fixed grid).
        step_size: grid spacing of a fixed-grid solve. Fixed-step methods (euler, midpoint,
            rk4, ...) use it; given to an adaptive method it runs that method on a fixed grid.
            ``None`` for a fixed-step method steps from one output time to the next.
        max_num_steps: step budget of each solve, so that a diverging model fails with
            ``node.SolverError`` instead of hanging. ``None`` means no limit.
        gradient: ``"direct"``, ``"adjoint"`` or ``"checkpoint"`` (module docstring).
        adjoint_rtol, adjoint_atol: tolerances of the adjoint solve (``None``: the forward ones).
        seminorm: measure the adjoint's local error without the parameter-gradient channels
            (adaptive adjoint solves only).
        progress: ``node``'s progress bar for every solve (``true``, or a number of seconds:
            only solves still running after that long show it); for diagnosing slow solves.
        options: further ``node`` options (e.g. ``first_step``, ``max_step``) passed through.

    The counter :attr:`counter` accumulates function evaluations and steps of every solve made
    through this object, forward and backward (see :mod:`models.components.counting`).
    """

    def __init__(
        self,
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        step_size: float | None = None,
        max_num_steps: int | None = 10_000,
        gradient: str = "direct",
        adjoint_rtol: float | None = None,
        adjoint_atol: float | None = None,
        seminorm: bool = False,
        progress: bool | float = False,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        methods = node.available_methods()
        if method not in methods:
            raise ValueError(f"solver.method must be one of {methods}, got {method!r}")
        self.method = method
        self.rtol = _positive_float("rtol", rtol)
        self.atol = _positive_float("atol", atol)
        self.step_size = _positive_float("step_size", step_size, optional=True)
        self.max_num_steps = _positive_int("max_num_steps", max_num_steps)
        if gradient not in GRADIENT_MODES:
            raise ValueError(
                f"solver.gradient must be one of {list(GRADIENT_MODES)}, got {gradient!r}"
            )
        self.gradient = gradient
        self.adjoint_rtol = _positive_float("adjoint_rtol", adjoint_rtol, optional=True)
        self.adjoint_atol = _positive_float("adjoint_atol", adjoint_atol, optional=True)
        if not isinstance(seminorm, bool):
            raise ValueError(f"solver.seminorm must be true or false, got {seminorm!r}")
        self.fixed_grid = not node.get_tableau(method).adaptive or self.step_size is not None
        if seminorm and self.fixed_grid:
            raise ValueError(
                "solver.seminorm=true needs an adaptive solve (an adaptive method with "
                f"step_size=null); got method={method!r}, step_size={self.step_size!r}"
            )
        self.seminorm = seminorm
        ok = isinstance(progress, bool) or (isinstance(progress, int | float) and progress > 0
                                            and math.isfinite(progress))
        if not ok:
            raise ValueError("solver.progress must be true, false or a number of seconds > 0, "
                             f"got {progress!r}")
        self.progress = progress
        if options is not None and not isinstance(options, Mapping):
            raise ValueError(f"solver.options must be a mapping or null, got {options!r}")
        self.extra_options = dict(options or {})
        self._check_gradient_available()
        self.counter = EvaluationCounter()

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> ODESolver:
        """Build from a solver config dict, naming any key the solver does not know."""
        config = dict(config or {})
        valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        unknown = sorted(set(config) - set(valid))
        if unknown:
            raise ValueError(f"unknown solver config key(s) {unknown}; valid keys are {valid}")
        return cls(**config)

    def _check_gradient_available(self) -> None:
        if self.gradient != "direct" and "gradient" not in inspect.signature(node.solve).parameters:
            raise NotImplementedError(
                f"solver.gradient={self.gradient!r} needs node.solve(..., gradient=...), which "
                "this version of the node package does not provide"
            )

    @property
    def options(self) -> dict[str, Any]:
        """The ``options`` dict passed to ``node``."""
        opts: dict[str, Any] = dict(self.extra_options)
        if self.step_size is not None:
            opts["step_size"] = self.step_size
            if node.get_tableau(self.method).adaptive:
                opts["adaptive"] = False  # node (like torchdiffeq) ignores step_size otherwise
        if self.max_num_steps is not None:
            opts["max_num_steps"] = self.max_num_steps
        if self.progress:
            opts["progress"] = self.progress
        return opts

    def counts(self) -> EvaluationCounts:
        return self.counter.snapshot()

    def forward(
        self, func: nn.Module, y0: torch.Tensor, t: torch.Tensor, rtol=None, atol=None
    ) -> torch.Tensor:
        """The solution at times ``t``: a tensor ``[len(t), *y0.shape]`` (a tuple of such for a
        tuple state ``y0``).

        ``rtol``, ``atol``: tolerances of this forward solve instead of the configured ones, in
        any form ``node`` accepts (e.g. a tuple with one entry per tensor of a tuple state; a
        huge entry leaves that tensor out of the error test). The adjoint solve keeps
        ``adjoint_rtol``/``adjoint_atol``, or if those are null the configured ``rtol``/``atol``.
        """
        counted = (FixedGridCountedField if self.fixed_grid else CountedField)(func, self.counter)
        rtol = self.rtol if rtol is None else rtol
        atol = self.atol if atol is None else atol
        common = dict(rtol=rtol, atol=atol, method=self.method, options=self.options)
        if self.gradient == "direct" or not torch.is_grad_enabled():
            return node.odeint(counted, y0, t, **common)
        if self.gradient == "adjoint":
            adjoint_options = dict(self.options)
            if self.seminorm:
                adjoint_options["norm"] = "seminorm"
            solution = node.solve(
                counted,
                y0,
                t,
                **common,
                gradient="adjoint",
                adjoint_rtol=self.rtol if self.adjoint_rtol is None else self.adjoint_rtol,
                adjoint_atol=self.atol if self.adjoint_atol is None else self.adjoint_atol,
                adjoint_options=adjoint_options,
                adjoint_params=tuple(func.parameters()),
            )
            self.counter.track_backward(solution.stats)
            return solution.ys
        return node.solve(counted, y0, t, **common, gradient="checkpoint").ys

    def extra_repr(self) -> str:
        parts = [f"method={self.method!r}", f"gradient={self.gradient!r}"]
        if self.fixed_grid:
            parts.append(f"step_size={self.step_size}")
        else:
            parts += [f"rtol={self.rtol:g}", f"atol={self.atol:g}"]
        if self.gradient == "adjoint" and self.seminorm:
            parts.append("seminorm=True")
        return ", ".join(parts)
