"""Argument checks of per-sample solves (``solve(..., per_sample=True)``, or ``t`` of shape
``[B, T]``): the state's leading dimension is a batch of ``B`` independent problems.

Every check names the argument at fault, the expected and the received value. The checked
arguments come back as a :class:`SampleInputs`: the times as a ``[B, T]`` float64 tensor of
*solver times* ``tau = direction * t`` (increasing in every row), the directions, and the
tolerances shaped to broadcast against the ``[B, N]`` flat state (``N`` elements per sample).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from node.errors import TimeOrderError
from node.inputs import check_times
from node.state import (
    StateLayout,
    _tolerance_tensor,
    check_not_both_zero,
    tolerance_number,
)

Tolerance = float | torch.Tensor  # a number, or a [B, 1] / [B, N] tensor


@dataclass
class SampleInputs:
    layout: StateLayout  # of the whole batched state
    batch: int
    numel: int  # N, elements per sample
    t: torch.Tensor  # the times as given: [T] or [B, T]
    taus: torch.Tensor  # [B, T] float64 solver times (increasing rows), on the state's device
    direction: float | torch.Tensor  # +-1.0 for all samples, or a [B] float64 tensor of +-1
    rtol: Tolerance
    atol: Tolerance


def wants_per_sample(per_sample, t) -> bool:
    """Whether a solve is per-sample: asked for, or implied by a ``[B, T]`` ``t``."""
    if not isinstance(per_sample, bool):
        raise TypeError(f"per_sample must be True or False, got {per_sample!r}")
    return per_sample or (isinstance(t, torch.Tensor) and t.dim() == 2)


def check_sample_inputs(y0, t, rtol, atol) -> SampleInputs:
    """Validate the state, times and tolerances of a per-sample solve."""
    if not isinstance(y0, torch.Tensor):
        if isinstance(y0, tuple | list):
            raise ValueError("per_sample=True supports a tensor state only (not yet a tuple "
                             f"state); got y0 as a {type(y0).__name__} of {len(y0)} tensors")
        raise TypeError(f"y0 must be a torch.Tensor, got {type(y0).__name__}")
    if y0.is_complex():
        raise ValueError("per_sample=True does not support complex states yet; got y0 of dtype "
                         f"{y0.dtype} (solve its real view torch.view_as_real(y0) instead)")
    layout = StateLayout(y0)
    if y0.dim() == 0:
        raise ValueError("per_sample=True needs y0 with a leading batch dimension (shape "
                         "[B, ...]), got a 0-d state")
    batch = y0.shape[0]
    if batch == 0 or y0.numel() == 0:
        raise ValueError(f"per_sample=True needs at least one sample with at least one element, "
                         f"got y0 of shape {tuple(y0.shape)}")
    taus, direction = _sample_times(t, batch, y0.device)
    rtol_s = _sample_tolerance("rtol", rtol, y0, layout)
    atol_s = _sample_tolerance("atol", atol, y0, layout)
    check_not_both_zero(rtol_s, atol_s, rtol, atol)
    return SampleInputs(layout, batch, y0.numel() // batch, t, taus, direction, rtol_s, atol_s)


def _sample_times(t, batch: int, device) -> tuple[torch.Tensor, float | torch.Tensor]:
    """``t`` as ``[B, T]`` solver times, and the direction of each row."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be a torch.Tensor of times ([T] or [B, T]), got "
                        f"{type(t).__name__}")
    if t.dim() == 1:
        direction = check_times(t)
        return (direction * t.detach().to(device, torch.float64)).expand(batch, -1), direction
    if t.dim() != 2:
        raise ValueError(f"t must be 1-D ([T], shared by all samples) or 2-D ([B, T], one row "
                         f"of output times per sample), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"t must have a floating dtype, got {t.dtype}")
    if t.shape[0] != batch:
        raise ValueError(f"t of shape {tuple(t.shape)} has {t.shape[0]} rows, expected 1-D times "
                         f"([T], shared by all samples) or one row of output times per sample "
                         f"of y0 ([B, T] with B = y0.shape[0] = {batch})")
    if t.shape[1] < 1:
        raise ValueError(f"t must hold at least one time per sample, got shape {tuple(t.shape)}")
    times = t.detach().to(device, torch.float64)
    if not bool(torch.isfinite(times).all()):
        raise ValueError("t must hold finite times")
    if times.shape[1] < 2:
        return times, 1.0
    diffs = times[:, 1:] - times[:, :-1]
    increasing = (diffs > 0).all(1)
    decreasing = (diffs < 0).all(1)
    bad = ~(increasing | decreasing)
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        raise TimeOrderError(f"every row of t must be strictly increasing or strictly "
                             f"decreasing; rows {rows[:10]}{' ...' if len(rows) > 10 else ''} "
                             "are not")
    if bool(increasing.all()):
        return times, 1.0
    if bool(decreasing.all()):
        return -times, -1.0
    direction = torch.where(increasing, 1.0, -1.0).to(torch.float64)
    return times * direction[:, None], direction


def _sample_tolerance(name: str, tol, y0: torch.Tensor, layout: StateLayout) -> Tolerance:
    """A number, or a tensor broadcasting against the flat ``[B, N]`` state.

    A 1-D tensor of ``B`` entries is one tolerance per sample; any other tensor is per element
    and must broadcast to ``y0``'s shape with as many dimensions as ``y0`` (so a per-feature
    tolerance of a ``[B, F]`` state is given as ``[1, F]``: a 1-D ``[F]`` tensor would be
    ambiguous when ``F == B``).
    """
    if not isinstance(tol, torch.Tensor) or tol.dim() == 0:
        return tolerance_number(name, tol)
    batch = y0.shape[0]
    if tol.dim() == 1 and y0.dim() > 1:
        if tol.shape[0] != batch:
            raise ValueError(
                f"{name} with per_sample=True: a 1-D tensor holds one tolerance per sample and "
                f"must have length {batch} (y0.shape[0]), got length {tol.shape[0]}; give a "
                f"per-element tolerance with y0's {y0.dim()} dimensions (e.g. shape "
                f"[1, {', '.join(str(d) for d in y0.shape[1:])}])")
        per_sample = _tolerance_tensor(name, tol, (batch,), layout.dtype, layout.device)
        return per_sample.reshape(batch, 1)
    if tol.dim() != y0.dim():
        raise ValueError(f"{name} of shape {tuple(tol.shape)} with per_sample=True: expected a "
                         f"number, a [{batch}] tensor (one per sample) or a tensor of y0's "
                         f"{y0.dim()} dimensions broadcasting to {tuple(y0.shape)}")
    full = _tolerance_tensor(name, tol, tuple(y0.shape), layout.dtype, layout.device)
    return full.reshape(batch, -1)

