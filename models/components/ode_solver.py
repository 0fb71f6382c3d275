"""The model's ODE solver: a :class:`node.SolverConfig` (built from the ``solver`` config group)
plus counters of its work.

Every solve is ``config.solve(...)``; the gradient mode (``direct``, ``checkpoint``, ``adjoint``)
and all other settings are the config's, documented in :class:`node.SolverConfig`. Two rules of
the app on top:

* outside autograd (``torch.no_grad()``, validation, prediction) every mode solves with
  ``gradient="direct"``, which computes the same forward solution without gradient bookkeeping;
* the adjoint differentiates the parameters of ``func`` (``adjoint_params``).

Function evaluations and steps are read from each solution's statistics
(:mod:`models.components.counting`), forward and, after ``backward()``, backward.

``per_sample=True`` (or ``t`` of shape ``[B, T]``: each sample's own output times) solves each
sample of the batch with its own steps (node's per-sample solving);
:meth:`ODESolver.check_per_sample` says beforehand whether the config allows it (an explicit
adaptive method; ``gradient="direct"`` until node's per-sample solves support the other modes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

import node
from models.components.counting import EvaluationCounter, EvaluationCounts

GRADIENT_MODES = ("direct", "adjoint", "checkpoint")


def solver_config(solver: node.SolverConfig | Mapping[str, Any] | None) -> node.SolverConfig:
    """The config itself, or one built from a mapping of its fields (a checkpoint's
    hyperparameters, a test's dict); ``None``: node's defaults."""
    if isinstance(solver, node.SolverConfig):
        return solver
    if solver is None:
        return node.SolverConfig()
    if not isinstance(solver, Mapping):
        raise TypeError(f"solver must be a node.SolverConfig or a mapping of its fields, got "
                        f"{type(solver).__name__}")
    fields = {k: v for k, v in solver.items() if k not in ("_target_", "_convert_")}
    return node.SolverConfig(**fields)


class ODESolver(nn.Module):
    """Solve ``dy/dt = func(t, y)`` as ``config`` says, counting evaluations.

    Args:
        config: a :class:`node.SolverConfig`, or a mapping of its fields.
        **fields: instead of ``config``, its fields (``ODESolver(method="rk4", step_size=0.1)``).

    The counter :attr:`counter` accumulates function evaluations and steps of every solve made
    through this object, forward and backward (see :mod:`models.components.counting`).
    """

    def __init__(self, config: node.SolverConfig | Mapping[str, Any] | None = None,
                 **fields: Any) -> None:
        super().__init__()
        if fields and config is not None:
            raise TypeError("give ODESolver a config or its fields, not both")
        self.config = solver_config(config if config is not None else fields)
        self.counter = EvaluationCounter()

    @classmethod
    def from_config(cls, config: node.SolverConfig | Mapping[str, Any] | None) -> ODESolver:
        return cls(config)

    # the settings the models read (e.g. the CNF's per-tensor tolerances)
    method = property(lambda self: self.config.method)
    rtol = property(lambda self: self.config.rtol)
    atol = property(lambda self: self.config.atol)
    step_size = property(lambda self: self.config.step_size)
    gradient = property(lambda self: self.config.gradient)
    fixed_grid = property(lambda self: self.config.fixed_grid)
    options = property(lambda self: self.config.solve_options or {})

    def counts(self) -> EvaluationCounts:
        return self.counter.snapshot()

    def check_per_sample(self, what: str) -> None:
        """Raise a ``ValueError`` naming ``what`` (the option that asks for per-sample solves)
        if this config cannot solve per sample.

        Design decision: rather than restating node's rules (which methods, options and
        gradient modes per-sample solves support; they grow), ask node: a tiny per-sample solve
        of ``dy/dt = -y`` with this config, in its gradient mode, and pass on node's reason."""
        y0 = torch.ones(2, 1, requires_grad=True)
        t = torch.tensor([[0.0, 0.5], [0.0, 1.0]])
        overrides: dict[str, Any] = {}
        if self.config.gradient == "adjoint":
            overrides["adjoint_params"] = ()
        try:
            with torch.enable_grad():
                self.config.solve(lambda t, y: -y, y0, t, **overrides)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{what} needs per-sample solves, which this solver config does "
                             f"not allow: {error}") from error

    def forward(
        self, func: nn.Module, y0: torch.Tensor, t: torch.Tensor, rtol=None, atol=None,
        per_sample: bool = False,
    ) -> torch.Tensor:
        """The solution at times ``t``: a tensor ``[len(t), *y0.shape]`` (a tuple of such for a
        tuple state ``y0``); with ``per_sample`` or ``t`` of shape ``[B, T]``, each sample of
        ``y0``'s leading dimension solved with its own steps, result ``[T, *y0.shape]``.

        ``rtol``, ``atol``: tolerances of this forward solve instead of the configured ones, in
        any form ``node`` accepts (e.g. a tuple with one entry per tensor of a tuple state;
        ``inf`` leaves that tensor out of the error test). The adjoint solve keeps
        ``adjoint_rtol``/``adjoint_atol``, or if those are null the configured ``rtol``/``atol``.
        """
        config = self.config
        overrides: dict[str, Any] = {}
        if rtol is not None:
            overrides["rtol"] = rtol
        if atol is not None:
            overrides["atol"] = atol
        backward = config.gradient != "direct" and torch.is_grad_enabled()
        if config.gradient != "direct" and not backward:
            overrides["gradient"] = "direct"
        elif config.gradient == "adjoint":
            if isinstance(func, nn.Module):
                overrides["adjoint_params"] = tuple(func.parameters())
            if rtol is not None and config.adjoint_rtol is None:
                overrides["adjoint_rtol"] = config.rtol
            if atol is not None and config.adjoint_atol is None:
                overrides["adjoint_atol"] = config.atol
        if per_sample:
            overrides["per_sample"] = True
        solution = config.solve(func, y0, t, **overrides)
        self.counter.track(solution.stats, backward=backward)
        return solution.ys

    def extra_repr(self) -> str:
        config = self.config
        method = config.method if isinstance(config.method, str) else config.method.name
        parts = [f"method={method!r}", f"gradient={config.gradient!r}"]
        if config.fixed_grid:
            parts.append(f"step_size={config.step_size}")
        else:
            parts += [f"rtol={config.rtol}", f"atol={config.atol}"]
        if config.seminorm:
            parts.append("seminorm=True")
        return ", ".join(parts)
