"""What a solve returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from node.errors import Status


@dataclass
class Stats:
    """Counters of one solve. ``n_steps == n_accepted + n_rejected``; ``nfe`` counts every call
    of ``func`` (stages, the automatic first step, re-evaluations after jumps, Newton iterations
    and the one evaluation each autograd Jacobian is built from).

    Implicit methods add ``n_jacobians`` (Jacobians ``df/dy`` built: their vector-Jacobian
    products are not in ``nfe``), ``n_lu`` (LU factorisations of Newton matrices),
    ``n_newton`` (Newton iterations, each one evaluation per stage solved) and
    ``n_newton_failed`` (steps rejected because the stage iteration did not converge; they are
    counted in ``n_rejected`` too); ``implicit`` says whether to report them."""

    nfe: int = 0
    n_steps: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    implicit: bool = False
    n_jacobians: int = 0
    n_lu: int = 0
    n_newton: int = 0
    n_newton_failed: int = 0

    def as_dict(self) -> dict[str, int]:
        out = {
            "nfe": self.nfe,
            "n_steps": self.n_steps,
            "n_accepted": self.n_accepted,
            "n_rejected": self.n_rejected,
        }
        if self.implicit:
            out.update(n_jacobians=self.n_jacobians, n_lu=self.n_lu, n_newton=self.n_newton,
                       n_newton_failed=self.n_newton_failed)
        return out


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
        dense: with ``solve(..., dense=True)``, the recorded steps
            (:class:`node.dense_output.DenseOutput`) behind :meth:`evaluate` and
            :meth:`derivative`; else ``None``.
    """

    ts: torch.Tensor
    ys: torch.Tensor | tuple[torch.Tensor, ...]
    stats: dict[str, int] = field(default_factory=dict)
    status: Status = Status.SUCCESS
    message: str = ""
    dense: Any = None

    def evaluate(self, t):
        """The solution at the times ``t`` (a number or a tensor of any shape) inside the
        interval solved: ``[*t.shape, *y0.shape]`` (a tuple of such for a tuple state), from the
        method's dense output. Needs ``solve(..., dense=True)``; see :mod:`node.dense_output`."""
        return self._dense("evaluate").evaluate(t)

    def derivative(self, t):
        """The time derivative of :meth:`evaluate`'s interpolant at ``t`` (same shapes)."""
        return self._dense("derivative").derivative(t)

    def _dense(self, name: str):
        if self.dense is None:
            raise ValueError(f"Solution.{name}() needs the steps of the solve: pass dense=True "
                             "to node.solve")
        return self.dense

    @property
    def success(self) -> bool:
        return self.status is Status.SUCCESS
