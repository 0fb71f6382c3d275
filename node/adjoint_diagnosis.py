"""Why an adjoint's backward solve failed.

The backward solve of :mod:`node.adjoint` integrates ``(y, a, a_p)`` from the last output time
to the first. Its failures have causes of their own, which the symptom ("step budget exhausted at
t=2.1") does not show:

* **The re-solved state blows up.** ``y`` is solved *backwards*. Where the forward dynamics
  contract (a strongly dissipative or stiff field: ``y' = -k (y - g(t))`` with large ``k``), the
  backward dynamics expand, and every local error grows like ``exp(k |dt|)``: the numerical ``y``
  leaves the forward trajectory although that trajectory is smooth. ``y`` is reset to the
  forward's stored value at each output time, so more output times shorten the stretch; the
  sure remedies avoid re-solving ``y``: ``gradient="checkpoint"`` (replays the forward's own
  steps) or an implicit ``adjoint_method`` (:mod:`node.stiff_adjoint`: solves ``a`` alone along
  the forward's recorded solution).
* **The adjoint blows up.** ``a = dL/dy(t)`` grows exponentially backwards when the forward
  field expands (a chaotic system over a long horizon): the gradient itself is then huge, and a
  shorter horizon (or multiple shooting) is the remedy, not a solver setting.

Both tests reuse :func:`node.blowup.blowup_growth` (a millionfold growth of ``max|.|`` since the
interval's start, against ``max(max|start|, 1)``) and cost no ``func`` call. A stiffness test as
:mod:`node.stiffness` runs for forward solves would not help here: in the backward solver time
the re-solved ``y`` has the eigenvalues ``-lambda`` of the forward Jacobian and ``a`` has
``lambda``, so a fast decaying forward mode shows as a pair ``+-|lambda|`` that the power
iteration cannot call decaying; its symptom is the first bullet's blow-up.
"""

from __future__ import annotations

import torch

from node.blowup import blowup_growth
from node.problem import Problem
from node.solution import Integration

_AVOID_RESOLVE = (
    'gradient="checkpoint" (replays the forward steps, no backward re-solve) or an implicit '
    'adjoint_method such as "kvaerno5" (solves the adjoint alone along the forward\'s recorded '
    "solution) avoids it; more output times shorten the stretch (y is reset to the forward's "
    "value at each)"
)


def backward_failure_hint(problem: Problem, run: Integration, start: torch.Tensor,
                          t_start: float, y_size: int, a_size: int) -> str:
    """The diagnosis of a failed backward run ("" when no cause can be seen). ``problem``: the
    backward problem (its solver time runs backwards); ``start``: the augmented state at the
    interval's start, time ``t_start``, laid out as ``y`` (``y_size`` entries; none for an
    implicit adjoint, which does not re-solve it), then ``a`` (``a_size``), then the parameter
    adjoints."""
    if run.y is None:
        return ""
    return growth_hint(start, run.y, t_start, problem.direction * run.tau, y_size, a_size)


def growth_hint(start: torch.Tensor, end: torch.Tensor, t_start: float, t_end: float,
                y_size: int, a_size: int) -> str:
    """The blow-up part of the diagnosis: ``start`` and ``end`` the flat (augmented) states at
    ``t_start`` and ``t_end``, laid out as in :func:`backward_failure_hint` (``end`` may stop
    after ``a``)."""
    parts = ((slice(0, y_size), _resolved_state),
             (slice(y_size, y_size + a_size), _adjoint_state))
    for part, what in parts:
        if part.stop == part.start:
            continue
        grown = blowup_growth(start[part], end[part])
        if grown is not None:
            return what(*grown, t_start, t_end)
    return ""


def _resolved_state(start: float, end: float, t_start: float, t_end: float) -> str:
    return (
        f"the state y re-solved backwards blew up (max|y| from {start:.3g} at t={t_start:.6g} "
        f"to {end:.3g} at t={t_end:.10g}): the forward dynamics contract there, so solving them "
        f"backwards amplifies every error; " + _AVOID_RESOLVE
    )


def _adjoint_state(start: float, end: float, t_start: float, t_end: float) -> str:
    return (
        f"the adjoint a = dL/dy blew up (max|a| from {start:.3g} at t={t_start:.6g} to "
        f"{end:.3g} at t={t_end:.10g}): either the loss's sensitivity to the state grows "
        "exponentially backwards (an expanding or chaotic field over a long horizon: shorten "
        "the horizon), or the backward method went unstable (a stiff field: an implicit "
        'adjoint_method such as "kvaerno5")'
    )
