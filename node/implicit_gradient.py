"""Gradients of an implicit step by the implicit function theorem, never through Newton.

The converged implicit stages ``K*`` solve ``K_I = F(K_I; y0, k_0, p)`` with
``F_i = f(t_i, y0 + h sum_j a_ij K_j)``. Differentiating that identity,

    dK_I = (I - dF/dK_I)^{-1} (dF/dy0 dy0 + dF/dk_0 dk_0 + dF/dp dp),
    (dF/dK_I)_ij = h a_ij J_i,   J_i = df/dy at stage i's point,

so a vector-Jacobian product with ``v`` (the gradient arriving at ``K_I``) is one with
``u = (I - dF/dK_I)^{-T} v`` through a single evaluation of ``F`` at the detached ``K*``. The
step therefore evaluates ``F(K*)`` once with autograd (its graph reaches ``y0``, ``k_0`` and
the parameters of ``func``, not ``K*``), returns ``K* + (F - F.detach())`` (the value ``K*``
exactly, the graph of ``F``) and registers a hook on ``F`` that replaces ``v`` by ``u``.

The transposed system, in the backward pass only, with the exact ``J_i`` at the stage points
(so that the gradient is that of the computed solution to round-off):

* diagonally implicit: back substitution from the last stage,
  ``(I - h a_jj J_j^T) u_j = v_j + h sum_{i > j} a_ij J_i^T u_i``;
* fully implicit: one coupled solve with ``I - h [a_ij J_i]`` per Jacobian block.

Cost per step in the backward pass: one Jacobian and one LU per implicit stage (of the chosen
structure). Gradients of gradients (``create_graph=True``) are not supported through an
implicit step and raise.
"""

from __future__ import annotations

import torch

from node.jacobian import BlockLU, coupled_matrix, from_blocks, to_blocks


def attach_stage_gradients(f, co, structure, times, y0, K_star, k0, h) -> torch.Tensor:
    """``K*`` with the implicit-function-theorem graph attached (see the module docstring);
    ``k0``: the explicit first stage (with its graph), if the tableau has one."""
    implicit = co.implicit
    K_in = K_star.detach()
    if co.explicit_first:
        K_in = torch.cat([k0.unsqueeze(0), K_in[1:]])
    F = torch.stack([f(times[i][0], torch.add(y0, torch.mv(K_in.T, co.rows[i]), alpha=h),
                       times[i][1]) for i in implicit])
    if not F.requires_grad:
        return K_in
    with torch.no_grad():
        y0d, Kd = y0.detach(), K_star.detach()
        points = [torch.add(y0d, torch.mv(Kd.T, co.rows[i]), alpha=h) for i in implicit]
    F.register_hook(_TransposedStageSolve(f, co, structure, times, points, h))
    K_implicit = K_star[implicit].detach() + (F - F.detach())
    rows = list(K_in.unbind(0))
    for r, i in enumerate(implicit):
        rows[i] = K_implicit[r]
    return torch.stack(rows)


class _TransposedStageSolve:
    """The hook: ``v -> (I - dF/dK_I)^{-T} v``."""

    def __init__(self, f, co, structure, times, points, h) -> None:
        self.f, self.co, self.structure = f, co, structure
        self.times, self.points, self.h = times, points, h

    def __call__(self, v: torch.Tensor | None) -> torch.Tensor | None:
        if v is None:  # an undefined gradient stays undefined
            return None
        if torch.is_grad_enabled():
            raise RuntimeError("gradients of gradients (create_graph=True) through an implicit "
                               "method's step are not supported")
        co, h, implicit = self.co, self.h, self.co.implicit
        Js = [self.structure.evaluate(self.f, self.times[i][0], p, self.times[i][1])
              for i, p in zip(implicit, self.points, strict=True)]
        blocks = Js[0].shape[0]
        m = len(implicit)
        if not co.diagonal:
            M = coupled_matrix(torch.stack(Js, dim=1), co.a_implicit, h)
            u = torch.linalg.solve(M.mT, to_blocks(v, blocks).unsqueeze(-1)).squeeze(-1)
            return from_blocks(u, m)
        a = co.tableau.a
        u: list[torch.Tensor | None] = [None] * m
        Jt_u: list[torch.Tensor | None] = [None] * m  # J_i^T u_i as [B, D]
        for r in range(m - 1, -1, -1):
            j = implicit[r]
            rhs = to_blocks(v[r], blocks)
            for q in range(r + 1, m):
                if a[implicit[q]][j] != 0.0:
                    rhs = rhs + (h * a[implicit[q]][j]) * Jt_u[q]
            J = Js[r]
            eye = torch.eye(J.shape[-1], dtype=J.dtype, device=J.device)
            ur = BlockLU(eye - (h * a[j][j]) * J.mT).solve(rhs)
            u[r] = ur
            Jt_u[r] = (J.mT @ ur.unsqueeze(-1)).squeeze(-1)
        return torch.stack([from_blocks(x) for x in u])
