"""The one explicit Runge-Kutta step that every method runs.

Design: the stage derivatives of a step live in one zero-initialised ``[S, N]`` tensor ``K`` (rows
written as the stages are evaluated), so that each stage input ``y0 + h * sum_j a_ij k_j`` and the
solution are one matrix-vector product with the full ``K^T`` and the row of ``a`` padded with
zeros, plus one add, instead of ``i`` separate multiply-adds (or a slice per stage). On small
problems, where per-operation overhead dominates, this is most of the solver's speed. Writing rows
of ``K`` in place is safe under autograd (each write is recorded), and double backward works.

The increment ``K^T a_i`` is formed first and added to ``y0`` once. A fused
``addmv(y0, K^T, a_i)`` is one kernel fewer, but CPU BLAS kernels accumulate each stage's term
straight into ``y0``, rounding at the state's scale once per stage: in float32 that is a drift of
about an ulp of ``y`` per step (measured on torchdiffeq's rk4 event test: relative error
1.01e-4 against 2.9e-5 this way), and the result depends on the BLAS kernel.
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
    # Cached across solves, so never made as inference tensors (which a later solve under
    # autograd could not save for backward) even if the first solve runs in inference mode.
    with torch.inference_mode(False):
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
    perturb_start: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step from ``(tau0, y0)`` with ``k0 = f(tau0, y0)`` to solver time ``tau1``.

    ``h_tau = tau1 - tau0 > 0`` is the step in solver time and ``h = ±h_tau`` the signed step in
    the user's time (negative when integrating backwards). With ``perturb_end`` the stages at
    ``c = 1`` are evaluated just before ``tau1`` (a discontinuity of ``f`` lies there).
    ``k0=None`` evaluates it here (just after ``tau0`` with ``perturb_start``).

    Returns ``(y1, K)`` where ``K[i]`` is the derivative of stage ``i``.
    """
    stages = co.stages
    K = y0.new_zeros((stages, y0.shape[0]))
    Kt = K.T
    K[0] = f(tau0, y0, 1 if perturb_start else 0) if k0 is None else k0
    c = co.c
    a = co.a
    yi = y0
    for i in range(1, stages):
        yi = torch.add(y0, torch.mv(Kt, a[i]), alpha=h)
        ci = c[i]
        if ci == 1.0:
            K[i] = f(tau1, yi, -1) if perturb_end else f(tau1, yi)
        else:
            K[i] = f(tau0 + ci * h_tau, yi)
    if co.fsal:
        return yi, K
    return torch.add(y0, torch.mv(K.T, co.b), alpha=h), K


def keeper(step):
    """How a loop keeps a state its step returned: as is, or a copy if the step reuses buffers."""
    if getattr(step, "reuses_buffers", False):
        return torch.clone
    return _identity


def _identity(y):
    return y


class BufferedRKStep:
    """:func:`rk_step` for solves without autograd, reusing its buffers from step to step.

    With no graph to keep, the stage matrix, the stage inputs and the end state are written in
    place: ``mv``/``add`` with ``out=`` into preallocated buffers, ``func`` called on views
    already in the state's shape, and its output copied straight into a row of ``K`` of that
    shape. That removes an allocation per step and a view and a reshape per stage. The end state
    alternates between two buffers so that the state a step starts from is never overwritten; a
    caller that keeps a returned ``y1`` (or ``K``) beyond the next step must copy it
    (``reuses_buffers``).
    Used for tensor states when gradients are disabled (inference, the adjoint's forward pass,
    event location).
    """

    reuses_buffers = True

    def __init__(self, f, y0: torch.Tensor, co: RKCoefficients) -> None:
        stages, n = co.stages, y0.shape[0]
        shape = self.shape = f.layout.shapes[0]
        self.K = y0.new_zeros((stages, n))
        self.Kt = self.K.T
        self.rows_shaped = [self.K[i].view(shape) for i in range(stages)]
        self.stage = y0.new_empty(n)
        self.increment = y0.new_empty(n)
        self.stage_shaped = self.stage.view(shape)
        self.ends = (y0.new_empty(n), y0.new_empty(n))
        self.ends_shaped = tuple(e.view(shape) for e in self.ends)
        self._k0 = None

    def __call__(self, f, tau0, y0, k0, h_tau, tau1, h, co, perturb_end=False,
                 perturb_start=False):
        K, Kt, rows, a, c = self.K, self.Kt, self.rows_shaped, co.a, co.c
        end = 1 if y0 is self.ends[0] else 0
        if k0 is None:
            start = self.ends_shaped[1 - end] if y0 is self.ends[1 - end] else y0.view(self.shape)
            rows[0].copy_(f.shaped(tau0, start, 1 if perturb_start else 0))
            self._k0 = None
        elif k0 is not self._k0:
            # A retried step gets the same k0 object, which may be a view of K's last row that
            # the rejected attempt has since overwritten; K[0] still holds its value then.
            K[0].copy_(k0)
            self._k0 = k0
        last = co.stages - 1
        for i in range(1, co.stages):
            if i == last and co.fsal:
                buf, shaped = self.ends[end], self.ends_shaped[end]
            else:
                buf, shaped = self.stage, self.stage_shaped
            torch.add(y0, torch.mv(Kt, a[i], out=self.increment), alpha=h, out=buf)
            ci = c[i]
            if ci == 1.0:
                rows[i].copy_(f.shaped(tau1, shaped, -1 if perturb_end else 0))
            else:
                rows[i].copy_(f.shaped(tau0 + ci * h_tau, shaped))
        if co.fsal:
            return self.ends[end], K
        increment = torch.mv(Kt, co.b, out=self.increment)
        return torch.add(y0, increment, alpha=h, out=self.ends[end]), K
