"""Counting function evaluations and solver steps, from the statistics of ``node``'s solutions.

Every solve returns a :class:`node.Solution` whose ``stats`` count the forward solve (``nfe``,
``n_steps``, ``n_rejected``); a backward pass that calls ``func`` again (``gradient="adjoint"``
or ``"checkpoint"``) adds ``nfe_backward`` (and the adjoint ``n_steps_backward``) to the same
dict once ``backward()`` has run. :meth:`EvaluationCounter.track` adds a solve's forward counts
and keeps its statistics until :meth:`EvaluationCounter.snapshot` finds the backward counts
filled in. (``gradient="direct"`` differentiates the recorded operations and calls ``func`` no
more: its backward counts are zero.)

A per-sample solve (``per_sample=True``) reports its work per sample (``[B]`` tensors); what it
costs is its batched calls of ``func`` (``n_calls``, each evaluates every sample, as one
evaluation of a joint solve does) and its loop iterations (``n_iterations``, each one step
attempt of every running sample): those are counted as its ``nfe`` and steps, and its rejected
steps are those of the sample that rejected most. Its backward pass counts the same way
(``n_calls_backward``; the adjoint's ``n_iterations_backward`` as steps).

Counters only grow; a phase (a forward pass, a ``backward()``) is measured as the difference of
two :meth:`EvaluationCounter.snapshot` readings.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvaluationCounts:
    """A reading of the counters: function evaluations, steps attempted, steps rejected."""

    nfe: int = 0
    steps: int = 0
    rejected: int = 0

    def __add__(self, other: EvaluationCounts) -> EvaluationCounts:
        return EvaluationCounts(
            self.nfe + other.nfe, self.steps + other.steps, self.rejected + other.rejected
        )

    def __sub__(self, other: EvaluationCounts) -> EvaluationCounts:
        return EvaluationCounts(
            self.nfe - other.nfe, self.steps - other.steps, self.rejected - other.rejected
        )


class EvaluationCounter:
    """Mutable running totals (see the module docstring)."""

    #: solves whose backward pass has not run yet (older ones are dropped beyond this)
    MAX_PENDING = 1000

    def __init__(self) -> None:
        self.nfe = 0
        self.steps = 0
        self.rejected = 0
        self._pending: list[dict] = []

    def track(self, stats: dict, backward: bool = False) -> None:
        """Count a solve's forward statistics; with ``backward``, also its backward ones once
        ``backward()`` has filled them in."""
        if "n_calls" in stats:  # per-sample solve (module docstring)
            self.nfe += int(stats["n_calls"])
            self.steps += int(stats["n_iterations"])
            self.rejected += int(stats["n_rejected"].max())
        else:
            self.nfe += int(stats.get("nfe", 0))
            self.steps += int(stats.get("n_steps", 0))
            self.rejected += int(stats.get("n_rejected", 0))
        if backward:
            self._pending.append(stats)
            del self._pending[: -self.MAX_PENDING]

    def snapshot(self) -> EvaluationCounts:
        waiting = []
        for stats in self._pending:
            if "n_calls_backward" in stats:  # per-sample: batched calls, loop iterations
                self.nfe += int(stats["n_calls_backward"])
                self.steps += int(stats.get("n_iterations_backward", 0))
            elif "nfe_backward" in stats:
                self.nfe += int(stats["nfe_backward"])
                self.steps += int(stats.get("n_steps_backward", 0))
            else:
                waiting.append(stats)
        self._pending = waiting
        return EvaluationCounts(self.nfe, self.steps, self.rejected)
