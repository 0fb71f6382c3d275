"""Jacobian structures of the implicit methods: how ``J = df/dy`` is built, stored and solved with.

Every structure stores ``J`` as ``[B, D, D]`` blocks with ``B * D = N`` (the flat state size):

* ``"dense"`` (default): one block, ``B = 1, D = N``, from ``N`` vector-Jacobian products of one
  evaluation of ``f`` (vectorised with ``is_grads_batched``; a row-by-row loop if ``func`` cannot
  be vectorised). Memory ``N^2``, LU ``N^3 / 3`` flops.
* ``"batch"``: the leading dimension ``B`` of a tensor state is a batch of independent problems
  of size ``D`` (the user declares it): ``J`` is block diagonal, and its ``B`` blocks come from
  only ``D`` vector-Jacobian products (the seed ``e_d`` repeated in every block picks row ``d``
  of every block at once). Memory ``B D^2``, LU ``B D^3 / 3`` flops, factorised batched; never
  the dense ``(B D)^2`` matrix.
* a callable ``jac(t, y)`` returning ``(*y.shape, *y.shape)`` (dense) or ``[B, D, D]`` (batch,
  ``B = y.shape[0]``); it costs whatever it costs and no evaluation of ``func``.

The Newton matrices built from ``J`` are ``I - c J`` per block (diagonally implicit stages) or
``I - h (A kron J)`` per block (fully implicit methods: the ``S`` stages of one block coupled,
``[B, S D, S D]``), both LU-factorised once (:class:`BlockLU`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from node.state import FlatVectorField, StateLayout

JACOBIAN_CHOICES = ("dense", "batch")


def check_jacobian_option(value) -> str | Callable:
    """Validate ``options['jacobian']``."""
    if callable(value) or value in JACOBIAN_CHOICES:
        return value
    raise ValueError(f"options['jacobian'] must be 'dense', 'batch' or a callable jac(t, y), got "
                     f"{value!r}")


class BlockLU:
    """An LU factorisation of ``[B, M, M]`` blocks; solves right-hand sides given as ``[B, M]``."""

    def __init__(self, matrices: torch.Tensor, stages: int | None = None) -> None:
        self.stages = stages
        self.blocks = matrices.shape[0]
        # Many tiny blocks (a batch of small systems): the explicit inverse, so that each Newton
        # iteration's solve is one batched matmul (CPU lu_solve runs a LAPACK call per block,
        # about twice as slow at B = 20000, D = 3); the factorisation is the same O(B D^3).
        self.inverse = None
        if self.blocks > 1 and matrices.shape[-1] <= 4:
            self.inverse = torch.linalg.inv(matrices)
        else:
            self.lu, self.pivots = torch.linalg.lu_factor(matrices)

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        if self.inverse is not None:
            return (self.inverse @ rhs.unsqueeze(-1)).squeeze(-1)
        return torch.linalg.lu_solve(self.lu, self.pivots, rhs.unsqueeze(-1)).squeeze(-1)

    def solve_flat(self, rhs: torch.Tensor) -> torch.Tensor:
        """For a flat ``[N]`` (or stage-matrix ``[S, N]``) right-hand side."""
        blocks = self.blocks
        return from_blocks(self.solve(to_blocks(rhs, blocks)), self.stages)


class JacobianStructure:
    """Builds ``J`` as ``[B, D, D]`` blocks of the flat vector field and the Newton matrices."""

    def __init__(self, option, layout: StateLayout) -> None:
        self.option = option
        self.layout = layout
        n = layout.numel
        if option == "dense":
            self.blocks, self.size = 1, n
        else:
            if layout.is_tuple or len(layout.shapes[0]) == 0:
                what = "a tuple state" if layout.is_tuple else "a 0-d state"
                if option == "batch":
                    raise ValueError(
                        f"options['jacobian']='batch' needs a tensor state whose first dimension "
                        f"is the batch of independent problems, got {what}; use 'dense'")
                self.blocks, self.size = None, n  # a callable: decided by its output's shape
            else:
                self.blocks = layout.shapes[0][0]
                self.size = n // self.blocks if self.blocks else 0
        self.n_jacobians = 0

    def evaluate(self, f: FlatVectorField, tau: float, y: torch.Tensor,
                 perturb: int = 0) -> torch.Tensor:
        """``df/dy`` at ``(tau, y)`` as ``[B, D, D]`` blocks (no graph)."""
        self.n_jacobians += 1
        if callable(self.option):
            return self._user(f, tau, y, perturb)
        # Autograd also under torch.inference_mode() (Lightning's validation), where
        # enable_grad() alone records nothing: the state is copied out of inference mode.
        with torch.inference_mode(False), torch.enable_grad():
            x = (y.clone() if y.is_inference() else y.detach()).requires_grad_(True)
            out = f(tau, x, perturb)
            n = out.shape[0]
            if not out.requires_grad:  # func does not depend on y
                return y.new_zeros((self.blocks, self.size, self.size))
            if self.option == "dense":
                seeds = torch.eye(n, dtype=out.dtype, device=out.device)
            else:
                seeds = torch.eye(self.size, dtype=out.dtype, device=out.device)
                seeds = seeds.repeat(1, self.blocks)
            rows = _batched_vjp(out, x, seeds)
        if self.option == "dense":
            return rows.unsqueeze(0)
        # rows[d, b*D + e] = d f_{b,d} / d y_{b,e}
        return rows.view(self.size, self.blocks, self.size).transpose(0, 1).contiguous()

    def _user(self, f: FlatVectorField, tau: float, y: torch.Tensor, perturb: int) -> torch.Tensor:
        layout = self.layout
        with torch.no_grad():
            jac = self.option(f._time(tau, perturb), layout.unflatten(y))
        shape = layout.shapes[0] if not layout.is_tuple else (layout.numel,)
        dense = (*shape, *shape) if not layout.is_tuple else (layout.numel, layout.numel)
        got = tuple(jac.shape) if isinstance(jac, torch.Tensor) else type(jac).__name__
        if isinstance(jac, torch.Tensor) and tuple(jac.shape) == dense:
            self.blocks, self.size = 1, layout.numel
            return jac.to(y.dtype).reshape(1, layout.numel, layout.numel)
        batch = None
        if self.blocks:
            batch = (self.blocks, self.size, self.size)
            if isinstance(jac, torch.Tensor) and tuple(jac.shape) == batch:
                return jac.to(y.dtype)
        expected = f"{dense} (dense)" + (f" or {batch} (batch)" if batch else "")
        raise ValueError(f"options['jacobian'] returned shape {got}, expected {expected} for a "
                         f"state of shape {tuple(shape)}")

    @staticmethod
    def diagonal_lu(J: torch.Tensor, c: float) -> BlockLU:
        """LU of ``I - c J`` per block."""
        eye = torch.eye(J.shape[-1], dtype=J.dtype, device=J.device)
        return BlockLU(eye - c * J)

    @staticmethod
    def coupled_lu(J: torch.Tensor, a: torch.Tensor, h: float) -> BlockLU:
        """LU of ``I - h (A kron J_b)`` per block ``b`` (stage-major within a block)."""
        return BlockLU(coupled_matrix(J.unsqueeze(1).expand(-1, a.shape[0], -1, -1), a, h),
                       stages=a.shape[0])


def coupled_matrix(Js: torch.Tensor, a: torch.Tensor, h: float) -> torch.Tensor:
    """``I - h [a_ij J_i]_ij`` per block, from per-stage blocks ``Js`` of shape ``[B, S, D, D]``:
    ``[B, S D, S D]``. (With every ``J_i = J`` this is ``I - h A kron J``.)"""
    B, S, D, _ = Js.shape
    m = -h * a.view(1, S, 1, S, 1) * Js.unsqueeze(3)  # [B, S(i), D, S(j), D]
    m = m.reshape(B, S * D, S * D)
    return m + torch.eye(S * D, dtype=Js.dtype, device=Js.device)


def to_blocks(x: torch.Tensor, blocks: int) -> torch.Tensor:
    """A flat ``[N]`` vector as ``[B, D]``; stage matrices ``[S, N]`` as ``[B, S D]``."""
    if x.dim() == 1:
        return x.view(blocks, -1)
    S = x.shape[0]
    return x.view(S, blocks, -1).transpose(0, 1).reshape(blocks, -1)


def from_blocks(x: torch.Tensor, stages: int | None = None) -> torch.Tensor:
    """Inverse of :func:`to_blocks`."""
    if stages is None:
        return x.reshape(-1)
    B = x.shape[0]
    return x.view(B, stages, -1).transpose(0, 1).reshape(stages, -1)


def _batched_vjp(out: torch.Tensor, x: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """``seeds @ d out / d x`` (one row per seed), vectorised when ``func`` allows it."""
    try:
        (rows,) = torch.autograd.grad(out, x, seeds, is_grads_batched=True, retain_graph=True,
                                      allow_unused=True)
    except RuntimeError:
        rows = None  # func has an operation vmap cannot batch: one product per row
    if rows is None:
        grads = []
        for seed in seeds:
            (g,) = torch.autograd.grad(out, x, seed, retain_graph=True, allow_unused=True)
            grads.append(torch.zeros_like(x) if g is None else g)
        rows = torch.stack(grads)
    return rows.detach()
