"""Counting function evaluations and solver steps.

The dynamics handed to the solver are wrapped in :class:`CountedField`, which increments an
:class:`EvaluationCounter` on every call (forward solves, adjoint solves and checkpoint
recomputations alike: every evaluation goes through the wrapper) and on the solver's step
callbacks of forward solves (torchdiffeq's ``callback_step`` / ``callback_reject_step``).

Steps of an adjoint's backward solve are read from the statistics ``node.solve`` attaches to its
solution after ``backward()`` (``n_steps_backward``): :meth:`EvaluationCounter.track_backward`
registers them and :meth:`EvaluationCounter.snapshot` folds them in once they are filled.

Counters only grow; a phase (a forward pass, a ``backward()``) is measured as the difference of
two :meth:`EvaluationCounter.snapshot` readings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


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

    #: adjoint solves whose backward pass has not run yet (older ones are dropped beyond this)
    MAX_PENDING = 1000

    def __init__(self) -> None:
        self.nfe = 0
        self.steps = 0
        self.rejected = 0
        self._pending: list[dict] = []

    def track_backward(self, stats: dict) -> None:
        """Count ``stats["n_steps_backward"]`` as steps once the backward pass has filled it."""
        self._pending.append(stats)
        del self._pending[: -self.MAX_PENDING]

    def snapshot(self) -> EvaluationCounts:
        waiting = []
        for stats in self._pending:
            if "n_steps_backward" in stats:
                self.steps += int(stats["n_steps_backward"])
            else:
                waiting.append(stats)
        self._pending = waiting
        return EvaluationCounts(self.nfe, self.steps, self.rejected)


class CountedField(nn.Module):
    """``func(t, y)`` that counts its calls and the forward solver's steps into ``counter``.

    Step callbacks that ``func`` itself defines are still called (``_adjoint`` ones too, without
    counting: backward steps come from the solve's statistics, see the module docstring).
    """

    def __init__(self, func: nn.Module, counter: EvaluationCounter) -> None:
        super().__init__()
        self.func = func
        self.counter = counter

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.counter.nfe += 1
        return self.func(t, y)

    def _forward_hook(self, name: str, t0, y0, dt) -> None:
        hook = getattr(self.func, name, None)
        if hook is not None:
            hook(t0, y0, dt)

    def callback_step(self, t0, y0, dt) -> None:
        self.counter.steps += 1
        self._forward_hook("callback_step", t0, y0, dt)

    def callback_reject_step(self, t0, y0, dt) -> None:
        self.counter.rejected += 1
        self._forward_hook("callback_reject_step", t0, y0, dt)

    def callback_step_adjoint(self, t0, y0, dt) -> None:
        self._forward_hook("callback_step_adjoint", t0, y0, dt)

    def callback_reject_step_adjoint(self, t0, y0, dt) -> None:
        self._forward_hook("callback_reject_step_adjoint", t0, y0, dt)


class FixedGridCountedField(CountedField):
    """:class:`CountedField` for fixed-grid solves, which reject no step: without the rejection
    callbacks, which ``node`` would warn are never called."""

    callback_reject_step = None
    callback_reject_step_adjoint = None
