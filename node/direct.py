"""The direct and checkpoint gradient modes: gradients by autograd, through the solver's
operations (direct) or through their replay in the backward pass (:mod:`node.checkpoint`).
Time gradients are attached in closed form (:mod:`node.time_gradient`)."""

from __future__ import annotations

import torch

from node.checkpoint import integrate_checkpointed
from node.outcome import OnFailure, finish
from node.problem import Problem
from node.solution import Solution
from node.time_gradient import outputs_with_t_gradients, start_with_t0_gradient


def solve_autograd(
    problem: Problem, *, checkpointed: bool = False, on_failure: OnFailure = "raise"
) -> Solution:
    """Solve ``problem`` so that ``backward()`` differentiates it by autograd."""
    f = problem.vector_field()
    y0_flat = problem.layout.flatten(problem.y0)
    time_grad = problem.t.requires_grad and torch.is_grad_enabled()
    if time_grad:
        y0_flat = start_with_t0_gradient(f, problem.t[0], y0_flat)
    job = None
    if checkpointed:
        run, outputs, job = integrate_checkpointed(problem, f, y0_flat)
    else:
        run = problem.integrate(f, y0_flat)
        outputs = run.outputs
    if time_grad:
        outputs[0] = problem.layout.flatten(problem.y0)  # y(t[0]) = y0 does not depend on t[0]
        if len(outputs) > 1:
            outputs[1:] = outputs_with_t_gradients(f, problem.t[1 : len(outputs)], outputs[1:])
    solution = finish(problem, run, f, torch.stack(outputs), on_failure)
    if job is not None:
        job.stats = solution.stats
    return solution
