"""Solver failures under data parallelism: every rank stops together.

With several processes (Lightning's DDP), an adaptive solver takes a different number of steps on
each rank, and a ``node.SolverError`` (step budget exhausted, non-finite state, ...) may hit one
rank only. If that rank simply raised, the others would wait for it in their next collective
(the gradient all-reduce, a metric's reduction) until the process group's timeout, half an hour
by default. :func:`run_on_every_rank` runs a phase that may fail (a forward pass, a backward pass,
an evaluation step), then shares one flag among the ranks with a single scalar all-reduce: if any
rank failed, every rank raises :class:`SolverErrorOnRank` carrying the first failing rank's
diagnosis, at the same point of the run. In one process it only runs the phase.

The flag is exchanged *before* anything else that communicates (metric logging with
``sync_dist``, the gradient reduction), so the ranks' collectives stay matched even when one of
them skipped the rest of its phase.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

import node

T = TypeVar("T")


class SolverErrorOnRank(node.SolverError):
    """The solver failed on rank ``rank`` of ``world_size``; raised on every rank alike.

    ``status``, ``t``, ``dt`` and ``cause`` are those of the failing rank's error."""

    def __init__(self, rank: int, world_size: int, status, t: float, dt: float, cause: str):
        self.rank = rank
        self.world_size = world_size
        super().__init__(status, t, dt, f"rank {rank} of {world_size}: {cause}")


def world_size() -> int:
    """Processes in the default process group (1 without one)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def run_on_every_rank(phase: Callable[[], T], device: torch.device | str) -> T:
    """``phase()``; with several ranks, a ``node.SolverError`` on any of them is raised as
    :class:`SolverErrorOnRank` on all (``device``: where the process group's tensors live)."""
    if world_size() == 1:
        return phase()
    failure: node.SolverError | None = None
    result = None
    try:
        result = phase()
    except node.SolverError as err:
        failure = err
    raise_if_any_rank_failed(failure, device)
    return result


def raise_if_any_rank_failed(failure: node.SolverError | None, device: torch.device | str) -> None:
    """A collective: every rank calls it, with its own error or ``None``. Costs one scalar
    all-reduce when no rank failed; otherwise the diagnoses are gathered and the lowest failing
    rank's is raised everywhere."""
    flag = torch.tensor([0.0 if failure is None else 1.0], device=device)
    dist.all_reduce(flag)
    if flag.item() == 0:
        return
    report = None if failure is None else (failure.status, failure.t, failure.dt, failure.cause)
    reports: list = [None] * dist.get_world_size()
    dist.all_gather_object(reports, report)
    rank = next(i for i, r in enumerate(reports) if r is not None)
    raise SolverErrorOnRank(rank, len(reports), *reports[rank]) from failure
