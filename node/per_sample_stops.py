"""``step_t`` and ``jump_t`` in per-sample solves: each sample steps onto its own stop times.

The stop times are shared (``[K]``, the options' 1-D times) or per sample (``[B, K]`` tensors).
Each sample's stops, in solver time, are sorted into one ``[B, K + 1]`` row (padded with
``inf``) with a flag per stop telling a jump. A sample's step, as in :mod:`node.adaptive`:

    next = its first stop > tau;     land = next < tau + h + 1e-6 h
    landed: the step ends exactly on ``next`` (h_eff = next - tau); on a jump, its stages at
    c = 1 see the time just before ``next``, and after the step is accepted ``func`` is
    evaluated again just after it (the derivative from before the jump is not reused).

After an accepted step cut short to land, the controller's proposal is capped at the step the
sample wanted before the cut, and raised to at least the cut step's own prediction (the joint
loop's ``_after_accept``). A stop is passed once the sample's time reaches it (``stop <= tau``),
which also skips a time listed twice.
"""

from __future__ import annotations

import math

import torch

from node.controllers import _TINY

_STRETCH = 1e-6  # as node.adaptive: a stop barely past a step's end stretches the step onto it


def sample_times(name: str, value, batch: int, device) -> torch.Tensor | None:
    """A per-sample ``[B, K]`` tensor of ``options[name]`` as float64, or ``None`` for 1-D
    (shared) times, which :func:`node.options.parse_options` parses."""
    if not isinstance(value, torch.Tensor) or value.dim() < 2:
        return None
    if value.dim() != 2 or value.shape[0] != batch:
        raise ValueError(f"options[{name!r}] with per_sample=True must be 1-D (times shared by "
                         f"all samples) or of shape [B, K] = ({batch}, K) (each sample's own), "
                         f"got shape {tuple(value.shape)}")
    if value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"options[{name!r}] must hold real times, got dtype {value.dtype}")
    return value.detach().to(dtype=torch.float64, device=device)


class SampleStops:
    """The stops of every sample (solver time) and the cut of each step onto them."""

    def __init__(self, step_t, jump_t, batch: int, direction, device) -> None:
        f64 = dict(dtype=torch.float64, device=device)

        def rows(times) -> torch.Tensor:
            if isinstance(times, torch.Tensor):
                return times
            return torch.tensor(tuple(times), **f64).view(1, -1).expand(batch, -1)

        step, jump = rows(step_t), rows(jump_t)
        user = torch.cat([step, jump], 1)
        jumps = torch.cat([torch.zeros_like(step, dtype=torch.bool),
                           torch.ones_like(jump, dtype=torch.bool)], 1)
        sign = direction if isinstance(direction, float) else direction[:, None]
        solver, order = torch.sort(user * sign, dim=1, stable=True)
        pad = torch.full((batch, 1), math.inf, **f64)
        self.times = torch.cat([solver, pad], 1)  # [B, K + 1]
        self.jumps = torch.cat([jumps.gather(1, order), torch.zeros_like(pad, dtype=torch.bool)], 1)
        self.any_jump = bool(jumps.any())

    def cut(self, tau: torch.Tensor, h: torch.Tensor, t1: torch.Tensor):
        """The step of every sample (``tau``, ``h``, ``t1 = tau + h``: ``[B, 1]``):
        ``(h_eff, next, land, jump)``, the step to take, the next stop, and the samples whose
        step lands on it, on a jump."""
        index = (self.times <= tau).sum(1, keepdim=True)
        nxt = self.times.gather(1, index)
        land = nxt < torch.add(t1, h, alpha=_STRETCH)
        h_eff = torch.where(land, nxt - tau, h)
        jump = land & self.jumps.gather(1, index) if self.any_jump else None
        return h_eff, nxt, land, jump


def after_cut(h_next: torch.Tensor, h_eff: torch.Tensor, h_wanted: torch.Tensor,
              rp: torch.Tensor, pre: float, exponent: float, cut: torch.Tensor) -> torch.Tensor:
    """The joint loop's ``_after_accept`` for the samples ``cut`` (accepted, landed, shorter
    than wanted): ``min(max(h_next, predict), h_wanted)`` with the cut step's prediction
    ``predict = h_eff * safety * max(r, 1e-10)^(-1/k) = h_eff * max(rp, 1e-10 pre)^(-1/k)``."""
    predict = h_eff * rp.clamp_min(_TINY * pre).pow(exponent)
    return torch.where(cut, torch.minimum(torch.maximum(h_next, predict), h_wanted), h_next)
