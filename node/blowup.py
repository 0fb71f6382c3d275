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

A fixed-grid solve never fails this way: it has no error test, and it keeps stepping through a
blow-up (``y' = y^2`` from 1 with ``rk4`` at ``step_size=0.3`` returns 1.3e72 at ``t = 1.5``, as
torchdiffeq does). Its outputs get the same growth test after the solve (one reduction over
the outputs), and a growth of :data:`GROWTH` gives a :class:`~node.GrowthWarning` that names
the growth, the time and the two causes, since nothing else would tell. An exact solution that
grows that much (``y' = y`` past ``t = 14``) warns too; the warning says so and how to silence
it.
"""

from __future__ import annotations

import sys
import warnings

import torch

from node.errors import GrowthWarning

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


def warn_fixed_grid_growth(y0: torch.Tensor, ys: torch.Tensor, ts: torch.Tensor,
                           samples: bool = False) -> None:
    """Warn (:class:`~node.GrowthWarning`) when a fixed-grid solve's outputs ``ys`` (``[T,
    ...]`` flat states at the times ``ts``, ``[T]``) grew by :data:`GROWTH` from ``y0``. With
    ``samples``, ``ys`` is ``[T, B, N]``, ``ts`` ``[B, T]``, ``y0`` ``[B, N]``, and each sample
    is tested on its own; the warning names the samples that grew."""
    with torch.no_grad():
        size = ys.detach().abs().nan_to_num(0.0, 0.0, 0.0)
        if size.numel() == 0:
            return
        start = y0.detach().abs()
        if samples:
            start = start.flatten(1).amax(1).clamp_min(1.0)  # [B]
            peak = size.flatten(2).amax(2)  # [T, B]
            grown = (peak.amax(0) >= GROWTH * start).nonzero().flatten().tolist()
            if not grown:
                return
            b = grown[0]
            at = int(peak[:, b].argmax())
            where = (f"samples {grown[:10]}{' ...' if len(grown) > 10 else ''} (sample {b}: "
                     f"max|y| from {float(y0[b].abs().max()):.3g} at t={float(ts[b, 0]):.6g} "
                     f"to {float(peak[at, b]):.3g} at t={float(ts[b, at]):.6g})")
        else:
            peak = size.reshape(size.shape[0], -1).amax(1)  # [T]
            # one host synchronisation per solve on the common path (no growth)
            if not bool(peak.max() >= GROWTH * start.max().clamp_min(1.0)):
                return
            at = int(peak.argmax())
            where = (f"max|y| from {float(start.max()):.3g} at t={float(ts[0]):.6g} to "
                     f"{float(peak[at]):.3g} at t={float(ts[at]):.6g}")
    warnings.warn(
        f"the fixed-grid solution grew a millionfold: {where}. A fixed grid has no error "
        "test, so nothing checked it: either the exact solution grows this much (then ignore "
        "this: warnings.filterwarnings('ignore', category=node.GrowthWarning)), or it blows up "
        "(no grid can follow it past its blow-up time), or the step is beyond the method's "
        "stability limit on a stiff problem. An adaptive method (dopri5; kvaerno5 if stiff) "
        "would fail with a diagnosis instead of returning such values",
        GrowthWarning, stacklevel=_caller_outside_node())


def _caller_outside_node() -> int:
    """The ``stacklevel`` of the first frame outside ``node`` and ``torch`` (the user's call)
    seen from the function that calls this one, which calls ``warnings.warn``."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in (
            "node", "torch"):
        frame, level = frame.f_back, level + 1
    return level
