"""The direct and checkpoint gradient modes: gradients by autograd, through the solver's
operations (direct) or through their replay in the backward pass (:mod:`node.checkpoint`).
Time gradients are attached in closed form (:mod:`node.time_gradient`)."""

from __future__ import annotations

import torch

from node.checkpoint import integrate_checkpointed
from node.dense_output import DenseOutput, DenseTape
from node.errors import Status
from node.outcome import OnFailure, finish
from node.problem import Problem
from node.solution import Solution
from node.time_gradient import outputs_with_t_gradients, start_with_t0_gradient


def solve_autograd(
    problem: Problem, *, checkpointed: bool = False, on_failure: OnFailure = "raise",
    dense: bool = False,
) -> Solution:
    """Solve ``problem`` so that ``backward()`` differentiates it by autograd (``dense``: keep
    the steps for :meth:`~node.Solution.evaluate`, :mod:`node.dense_output`)."""
    f = problem.vector_field()
    y0_flat = problem.layout.flatten(problem.y0)
    time_grad = problem.t.requires_grad and torch.is_grad_enabled()
    if time_grad:
        y0_flat = start_with_t0_gradient(f, problem.t[0], y0_flat)
    job = None
    if checkpointed:
        run, outputs, job = integrate_checkpointed(problem, f, y0_flat)
    else:
        tape = DenseTape() if dense else None
        run = problem.integrate(f, y0_flat, tape=tape)
        outputs = run.outputs
    if time_grad:
        outputs[0] = problem.layout.flatten(problem.y0)  # y(t[0]) = y0 does not depend on t[0]
        if len(outputs) > 1:
            outputs[1:] = outputs_with_t_gradients(f, problem.t[1 : len(outputs)], outputs[1:])
    dense_output = None
    if dense:
        # the interval asked for, or on failure the end of the last accepted step
        t_end = float(problem.t[-1]) if run.status is Status.SUCCESS else \
            problem.direction * run.tau
        dense_output = DenseOutput(tape, problem.tableau, problem.layout, problem.direction,
                                   float(problem.t[0]), t_end, y0_flat)
    solution = finish(problem, run, f, torch.stack(outputs), on_failure, dense=dense_output)
    if job is not None:
        job.stats = solution.stats
    return solution
