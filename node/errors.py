"""Exceptions and the status of a solve."""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """How a solve ended. ``SUCCESS`` is the only status that reached the last output time."""

    SUCCESS = "success"
    MAX_STEPS = "max_num_steps_reached"
    STEP_TOO_SMALL = "step_size_too_small"
    NON_FINITE = "non_finite"
    # an implicit method's equations (Runge-Kutta stages by Newton, an Adams corrector by
    # fixed-point iteration) were not solved: on a fixed grid, or in an adaptive solve at the
    # smallest step allowed
    NOT_CONVERGED = "iteration_not_converged"

    def __str__(self) -> str:
        return self.value


class SolverError(RuntimeError, AssertionError):
    """A numerical failure of the solver.

    It derives from :class:`AssertionError` as well as :class:`RuntimeError`: torchdiffeq reports
    the same failures (step budget exhausted, step size underflow, non-finite state) with
    ``assert``, so code written for it that catches ``AssertionError`` keeps working.

    Attributes:
        status: the :class:`Status` describing the cause.
        t: the time reached (the start of the step that failed).
        dt: the step size in use when the solver gave up.
        solution: the partial :class:`~node.Solution` up to the last output time reached, when the
            solve was made through :func:`node.solve` (``None`` otherwise).
    """

    def __init__(self, status: Status, t: float, dt: float, cause: str, solution=None) -> None:
        self.status = status
        self.t = t
        self.dt = dt
        self.cause = cause
        self.solution = solution
        super().__init__(f"{cause} [status={status.value}]")


class TimeOrderError(ValueError, AssertionError):
    """Output times ``t`` that are neither strictly increasing nor strictly decreasing.

    A :class:`ValueError` (a bad argument) that is also an :class:`AssertionError`, the type
    torchdiffeq raises for it, so that code written for torchdiffeq catches it too.
    """


class GrowthWarning(UserWarning):
    """A fixed-grid solve whose state grew a millionfold (:mod:`node.blowup`).

    A fixed grid has no error test, so nothing tells an exact solution's growth from a blow-up
    or an unstable step. Silence it where growth is expected with
    ``warnings.filterwarnings("ignore", category=node.GrowthWarning)``.
    """
