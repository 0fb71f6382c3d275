"""The choice of gradient mode for a built problem: direct, checkpoint (:mod:`node.direct`)
or the continuous adjoint (:mod:`node.adjoint`). Shared by :func:`node.solve` and the event
solve (:mod:`node.events`), which re-solves in the caller's mode."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from node.adjoint import solve_adjoint
from node.direct import solve_autograd
from node.outcome import ON_FAILURE, OnFailure
from node.problem import Problem
from node.solution import Solution

Gradient = Literal["direct", "adjoint", "checkpoint"]
GRADIENT_MODES = ("direct", "adjoint", "checkpoint")


def check_modes(gradient, on_failure) -> None:
    """Reject an unknown ``gradient`` or ``on_failure`` (before any work is done)."""
    if on_failure not in ON_FAILURE:
        raise ValueError(f"on_failure must be 'raise' or 'return', got {on_failure!r}")
    if gradient not in GRADIENT_MODES:
        raise ValueError(f"gradient must be one of {GRADIENT_MODES}, got {gradient!r}")


def check_no_adjoint_arguments(gradient, adjoint_arguments) -> None:
    """Refuse ``adjoint_*`` arguments given to a solve whose gradient mode is not the adjoint."""
    if any(a is not None for a in adjoint_arguments):
        raise ValueError(f"adjoint_* arguments need gradient='adjoint', got gradient={gradient!r}")


def solve_problem(
    problem: Problem,
    *,
    gradient: Gradient = "direct",
    on_failure: OnFailure = "raise",
    adjoint_params: Sequence[torch.Tensor] | None = None,
    adjoint_rtol=None,
    adjoint_atol=None,
    adjoint_method: str | None = None,
    adjoint_options: dict[str, Any] | None = None,
    options_given: bool = False,
    dense: bool = False,
) -> Solution:
    """Solve a real ``problem`` in the ``gradient`` mode (arguments as in :func:`node.solve`;
    ``options_given``: whether the caller gave ``options``, which the adjoint needs to know;
    ``dense``: keep the steps, direct mode only)."""
    check_modes(gradient, on_failure)
    if gradient == "adjoint":
        return solve_adjoint(
            problem,
            on_failure=on_failure,
            adjoint_params=adjoint_params,
            adjoint_rtol=adjoint_rtol,
            adjoint_atol=adjoint_atol,
            adjoint_method=adjoint_method,
            adjoint_options=adjoint_options,
            options_given=options_given,
        )
    check_no_adjoint_arguments(gradient, (adjoint_params, adjoint_rtol, adjoint_atol,
                                          adjoint_method, adjoint_options))
    checkpointed = gradient == "checkpoint" and torch.is_grad_enabled()
    return solve_autograd(problem, checkpointed=checkpointed, on_failure=on_failure,
                          dense=dense)
