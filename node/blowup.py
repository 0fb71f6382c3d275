"""Blow-up diagnosis: why a solve failed when its solution grows without bound.

Some vector fields have solutions that leave every bounded set in finite time (``y' = y^2`` from
``y(0) = 1`` reaches infinity at ``t = 1``); a neural ODE's learned field can do the same after a
bad update. An adaptive solver then shrinks its steps as the solution steepens until the step
size underflows, the step budget runs out, or the state overflows, and its failure message names
only that symptom ("step size underflows at t=0.9999"). No method or tolerance helps: the
solution does not exist past the blow-up time.

The diagnosis runs once, after a solve has failed, on what the solve kept: the first state
``y0`` and the last accepted state ``y`` (at time ``t``). The failure is called a blow-up when the
largest magnitude of the state has grown by at least :data:`GROWTH` since ``t0``, measured
against ``max(max|y0|, 1)`` so that a state starting at zero does not count as a blow-up by
growing to order one. It costs no ``func`` call. A solution that grows
exponentially over a long horizon grows as much, but does not make a solve fail: the hint is only
given for failed solves, and it states the numbers it rests on. A blow-up of the numerical
solution alone (an explicit method gone unstable on a stiff problem at a loose tolerance) looks
the same from these two states, so the message names both causes.
"""

from __future__ import annotations

import torch

GROWTH = 1e6  # growth of max|y| (relative to max(max|y0|, 1)) that counts as a blow-up


def blowup_growth(y0: torch.Tensor | None, y: torch.Tensor | None
                  ) -> tuple[float, float] | None:
    """``(max|y0|, max|y|)`` (non-finite entries of ``y`` left out) when the state has grown by
    :data:`GROWTH`, else ``None``."""
    if y0 is None or y is None or y0.numel() == 0 or y.numel() == 0:
        return None
    with torch.no_grad():
        start = float(y0.detach().abs().max())
        finite = y.detach()[torch.isfinite(y.detach())]
        if finite.numel() == 0:
            return None
        end = float(finite.abs().max())
    return (start, end) if end >= GROWTH * max(start, 1.0) else None


def blowup_hint(y0: torch.Tensor | None, y: torch.Tensor | None, t0: float, t: float) -> str:
    """The diagnosis appended to a failed solve's message ("" when the state has not grown
    by :data:`GROWTH`): ``y0``, ``y`` flat states at the start time ``t0`` and at the failure
    time ``t``."""
    grown = blowup_growth(y0, y)
    if grown is None:
        return ""
    start, end = grown
    return (
        f"the numerical solution blew up: max|y| grew from {start:.3g} at t={t0:.6g} to "
        f"{end:.3g} at t={t:.10g}. Either the exact solution does (no method or tolerance can "
        "follow it past its blow-up time: check func for a wrong sign or a term growing faster "
        "than linearly; a learned field is kept tame in training by a smaller learning rate, "
        "gradient clipping, weight decay or a kinetic-energy regulariser), or the method went "
        "unstable (a stiff problem at a loose tolerance: a tighter rtol, or a stiff method such "
        'as method="kvaerno5", would show)'
    )
