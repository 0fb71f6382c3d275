"""What a solve returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from node.errors import Status


@dataclass
class Stats:
    """Counters of one solve. ``n_steps == n_accepted + n_rejected``; ``nfe`` counts every call
    of ``func`` (stages, the automatic first step, re-evaluations after jumps)."""

    nfe: int = 0
    n_steps: int = 0
    n_accepted: int = 0
    n_rejected: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "nfe": self.nfe,
            "n_steps": self.n_steps,
            "n_accepted": self.n_accepted,
            "n_rejected": self.n_rejected,
        }


@dataclass
class Integration:
    """Internal result of a solver loop: the flat states at the output times reached."""

    outputs: list[torch.Tensor]
    stats: Stats
    status: Status = Status.SUCCESS
    cause: str = ""
    tau: float = 0.0  # solver time reached
    h: float = 0.0  # on success the proposed next step, on failure the step that failed
    y: torch.Tensor | None = None  # on failure of an adaptive solve: the state at tau


@dataclass
class Solution:
    """The result of :func:`node.solve`.

    Attributes:
        ts: the output times reached (all of ``t`` on success).
        ys: the states at ``ts``: ``[len(ts), *y0.shape]``, or a tuple of such for tuple states.
        stats: ``nfe``, ``n_steps``, ``n_accepted``, ``n_rejected`` (plus, for gradient modes
            that run a backward solve, ``nfe_backward`` after ``backward()``).
        status: how the solve ended (:class:`~node.Status`).
        message: a diagnosis when the solve failed, else ``""``.
    """

    ts: torch.Tensor
    ys: torch.Tensor | tuple[torch.Tensor, ...]
    stats: dict[str, int] = field(default_factory=dict)
    status: Status = Status.SUCCESS
    message: str = ""

    @property
    def success(self) -> bool:
        return self.status is Status.SUCCESS
