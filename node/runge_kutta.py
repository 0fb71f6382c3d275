"""The one explicit Runge-Kutta step that every method runs.

Design: the stage derivatives of a step live in one zero-initialised ``[S, N]`` tensor ``K`` (rows
written as the stages are evaluated), so that each stage input ``y0 + h * sum_j a_ij k_j`` and the
solution are a single fused matrix-vector product (``addmv``) with the full ``K^T`` and the row of
``a`` padded with zeros, instead of ``i`` separate multiply-adds (or a slice per stage). On small
problems, where per-operation overhead dominates, this is most of the solver's speed. Writing rows
of ``K`` in place is safe under autograd (each write is recorded), and double backward works.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch

from node.tableau import ButcherTableau

VectorField = Callable[..., torch.Tensor]


class RKCoefficients:
    """A tableau's coefficients as tensors of one dtype on one device."""

    def __init__(self, tableau: ButcherTableau, dtype: torch.dtype, device: torch.device) -> None:
        def tensor(values):
            return torch.tensor(values, dtype=dtype, device=device)

        self.tableau = tableau
        self.stages = tableau.stages
        self.c = tableau.c
        self.fsal = tableau.fsal  # y1 is the last stage's input
        self.reuse_last = tableau.reuses_last_stage  # k_{S-1} is the next step's k_0
        self.order = tableau.order
        stages = tableau.stages
        # Rows of a padded to S entries: K^T @ a_i then needs no slicing of K.
        self.a = [None] + [tensor(row + (0.0,) * (stages - i)) for i, row in
                           enumerate(tableau.a) if i > 0]
        self.b = tensor(tableau.b)
        self.b_error = None if tableau.b_error is None else tensor(tableau.b_error)


@lru_cache(maxsize=64)
def coefficients(tableau: ButcherTableau, dtype: torch.dtype, device: torch.device):
    return RKCoefficients(tableau, dtype, device)


def rk_step(
    f: VectorField,
    tau0: float,
    y0: torch.Tensor,
    k0: torch.Tensor,
    h_tau: float,
    tau1: float,
    h: float,
    co: RKCoefficients,
    perturb_end: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step from ``(tau0, y0)`` with ``k0 = f(tau0, y0)`` to solver time ``tau1``.

    ``h_tau = tau1 - tau0 > 0`` is the step in solver time and ``h = ±h_tau`` the signed step in
    the user's time (negative when integrating backwards). With ``perturb_end`` the stages at
    ``c = 1`` are evaluated just before ``tau1`` (a discontinuity of ``f`` lies there).

    Returns ``(y1, K)`` where ``K[i]`` is the derivative of stage ``i``.
    """
    stages = co.stages
    K = y0.new_zeros((stages, y0.shape[0]))
    Kt = K.T
    K[0] = k0
    c = co.c
    a = co.a
    yi = y0
    for i in range(1, stages):
        yi = torch.addmv(y0, Kt, a[i], alpha=h)
        ci = c[i]
        if ci == 1.0:
            K[i] = f(tau1, yi, -1) if perturb_end else f(tau1, yi)
        else:
            K[i] = f(tau0 + ci * h_tau, yi)
    if co.fsal:
        return yi, K
    return torch.addmv(y0, K.T, co.b, alpha=h), K
