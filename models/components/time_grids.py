r"""Time grids of the latent ODE's solves: the batch's shared grid, or each series' own times.

A batch shares one grid ``t`` (``[T]``, the union of its series' observation times) and marks
what each series observed with a mask. The likelihood needs a series' latent path only at its
own observed times, so a per-sample solve (``node.solve(..., per_sample=True)`` with ``t`` of
shape ``[B, n]``) can give each series its own output times, its own step sizes and its own end.

:func:`sample_grid` picks, for every series, the grid indices it needs: index 0 (where
:math:`z_0` lives) and its observed times. Rows of a ``[B, n]`` tensor need equal lengths and
strictly increasing times, so a row with fewer than ``n`` needed times is padded with other
times of the shared grid (a series' likelihood masks them out, as it masks every unobserved
time): first unobserved times before its last needed one (free: output times never shorten an
adaptive step, they are interpolated), then the nearest ones after it (these lengthen its
solve, as little as possible). Repeating the last time instead would break the strict order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

TIME_GRIDS = ("union", "per_sample")


def check_time_grid(time_grid) -> str:
    if time_grid not in TIME_GRIDS:
        raise ValueError(f"model.time_grid must be one of {list(TIME_GRIDS)}, got {time_grid!r}")
    return time_grid


@dataclass(frozen=True)
class SampleGrid:
    """Each series' output times as indices into the shared grid.

    Attributes:
        index: ``[B, n]`` grid indices, strictly increasing in each row, starting at 0.
        times: ``[B, n]`` the times at those indices.
    """

    index: torch.Tensor
    times: torch.Tensor

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (``[B, T, D]``, on the shared grid) at each series' own times: ``[B, n, D]``."""
        return x.gather(1, self.index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

    def batch(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's ``values`` and ``mask`` at each series' own times."""
        return self.gather(batch["values"]), self.gather(batch["mask"])


def sample_grid(t: torch.Tensor, mask: torch.Tensor) -> SampleGrid:
    """The per-series grids (module docstring) of a batch with shared times ``t`` (``[T]``) and
    observation mask ``mask`` (``[B, T, D]``)."""
    needed = mask.amax(dim=-1) > 0
    needed[:, 0] = True
    return grid_of(t, needed)


def grid_of(t: torch.Tensor, needed: torch.Tensor) -> SampleGrid:
    """Each row's ``needed`` grid indices (``[B, T]`` booleans) padded to the longest row's
    count with unneeded ones: first those before the row's last needed index, then the nearest
    after it (module docstring)."""
    steps = t.shape[0]
    position = torch.arange(steps, device=needed.device)
    last = torch.where(needed, position, 0).amax(dim=1, keepdim=True)
    # sort key: needed times first, then the unneeded ones up to the last needed time, then those
    # after it, each class in time order; the n smallest keys of a row are its grid
    group = torch.where(needed, 0, torch.where(position < last, 1, 2))
    order = (group * steps + position).argsort(dim=1)
    n = int(needed.sum(dim=1).max())
    index = order[:, :n].sort(dim=1).values
    return SampleGrid(index=index, times=t[index])
