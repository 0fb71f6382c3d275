"""The end of every solve: a run packaged as a :class:`~node.Solution`, or a
:class:`~node.SolverError` when the run failed and the caller asked for errors."""

from __future__ import annotations

from typing import Literal

import torch

from node.blowup import blowup_hint, warn_fixed_grid_growth
from node.errors import SolverError, Status
from node.problem import Problem
from node.solution import Integration, Solution
from node.state import FlatVectorField
from node.stiffness import stiffness_hint

OnFailure = Literal["raise", "return"]
ON_FAILURE = ("raise", "return")


def finish(
    problem: Problem,
    run: Integration,
    f: FlatVectorField,
    ys_flat: torch.Tensor,
    on_failure: OnFailure,
    stats: dict | None = None,
    dense=None,
) -> Solution:
    """Package a run as a Solution (``dense``: its :class:`~node.dense_output.DenseOutput`),
    raising :class:`SolverError` on failure if asked to."""
    n = ys_flat.shape[0]
    if stats is None:
        stats = run.stats.as_dict()
    stats["nfe"] = f.nfe
    t = problem.t
    ys = problem.layout.unflatten_trajectory(ys_flat)
    solution = Solution(ts=t[:n], ys=ys, stats=stats, status=run.status, dense=dense)
    if problem.fixed_grid and run.status is Status.SUCCESS:
        warn_fixed_grid_growth(ys_flat[0], ys_flat, t[:n])
    if run.status is not Status.SUCCESS:
        t_reached = problem.direction * run.tau
        solution.message = (
            f"{run.cause}; solve stopped at t={t_reached:.10g} with step size {run.h:.6g} "
            f"after {run.stats.n_steps} steps ({n} of {t.numel()} output times reached)"
        )
        hint = failure_hint(problem, run, f, ys_flat[0])
        if hint:
            solution.message += "; " + hint
        if on_failure == "raise":
            raise SolverError(run.status, t_reached, run.h, solution.message, solution)
    return solution


def failure_hint(problem: Problem, run: Integration, f: FlatVectorField,
                 y0: torch.Tensor | None = None) -> str:
    """Why an adaptive solve failed, when the cause can be seen: a solution that blows up (its
    state grew by orders of magnitude since ``y0``, :mod:`node.blowup`), or a stiff problem on
    an explicit method that ran out of steps (:mod:`node.stiffness`; evaluates ``func`` a few
    dozen times, after ``f.nfe`` was read into the statistics); "" otherwise."""
    if problem.fixed_grid or run.y is None:
        return ""
    t0 = problem.direction * float(problem.taus[0]) if len(problem.taus) else float("nan")
    blowup = blowup_hint(y0, run.y, t0, problem.direction * run.tau)
    if blowup or run.status not in (Status.MAX_STEPS, Status.STEP_TOO_SMALL):
        return blowup
    errors = problem.error_scale()
    scale = errors.scale(errors.magnitude(run.y.detach()))
    return stiffness_hint(f, problem.tableau, run.tau, run.y, run.h, scale)
