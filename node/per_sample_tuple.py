"""Tuple states in per-sample solves: the leading dimension of every tensor is the batch.

The tuple ``(x_1, ..., x_m)`` of ``[B, ...]`` tensors is solved as one ``[B, N]`` state, each
sample's row the concatenation of its rows of ``x_1, ..., x_m`` (``N = sum_i n_i``), so every
sample keeps its own steps and error test over all its elements (the RMS over the ``N``
elements: unlike a joint solve of a tuple, which takes the largest of the tensors' RMS norms,
torchdiffeq's mixed norm). ``func`` receives the tuple of views and ``t`` of shape
``[B, 1, ..., 1]`` with the dimensions of the first tensor (reshape it for tensors with other
dimensions); it returns a tuple of derivatives of the tensors' shapes. Tolerances are numbers,
``[B]`` tensors, or tuples of one per tensor (a number or a tensor broadcasting to that tensor).
"""

from __future__ import annotations

import torch

from node.errors import SolverError
from node.inputs import check_func
from node.wrapped_func import wrap_func


def solve_tuple_per_sample(solve, func, y0, t, rtol, atol):
    """``solve(flat_func, flat_y0, t, rtol, atol, unflatten)`` (a per-sample solve of a tensor
    state; ``unflatten`` splits a ``[..., B, N]`` tensor into the tuple) for a tuple ``y0``;
    the solution's ``ys`` split back into a tuple of ``[T, *x_i.shape]``."""
    check_func(func)
    tensors = tuple(y0)
    if not tensors or not all(isinstance(x, torch.Tensor) for x in tensors):
        raise TypeError("y0 of a per-sample solve must be a tensor or a non-empty tuple of "
                        f"tensors, got {[type(x).__name__ for x in tensors]}")
    shapes = [tuple(x.shape) for x in tensors]
    if any(len(s) == 0 for s in shapes) or len({s[0] for s in shapes}) != 1:
        raise ValueError("per_sample=True with a tuple y0 needs every tensor to have the same "
                         f"leading batch dimension, got shapes {shapes}")
    if len({x.dtype for x in tensors}) != 1 or len({x.device for x in tensors}) != 1:
        raise ValueError("the tensors of a tuple y0 must share one dtype and device, got "
                         f"{[(str(x.dtype), str(x.device)) for x in tensors]}")
    batch = shapes[0][0]
    if batch == 0:
        raise ValueError(f"per_sample=True needs at least one sample, got shapes {shapes}")
    sizes = [x.numel() // batch for x in tensors]
    flat = torch.cat([x.reshape(batch, -1) for x in tensors], dim=1)
    t_shape = (batch,) + (1,) * (len(shapes[0]) - 1)

    def unflatten(y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        parts = torch.split(y, sizes, dim=-1)
        lead = y.shape[:-2]  # [T] for the solution, none for a state
        return tuple(p.reshape(*lead, *s) for p, s in zip(parts, shapes, strict=True))

    def flat_func(t, y):
        out = func(t.reshape(t_shape), unflatten(y))
        if not isinstance(out, tuple | list) or len(out) != len(shapes):
            raise ValueError(f"func must return a tuple of {len(shapes)} tensors (one per tensor "
                             f"of y0), got {type(out).__name__}")
        for i, (o, s) in enumerate(zip(out, shapes, strict=True)):
            if not isinstance(o, torch.Tensor) or tuple(o.shape) != s:
                got = tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__
                raise ValueError(f"func's output {i} must have the shape of y0[{i}] {s}, got "
                                 f"{got}")
        return torch.cat([o.reshape(batch, -1) for o in out], dim=1)

    if isinstance(func, torch.nn.Module):
        # A module stays one, so that every gradient mode sees func's parameters (the adjoint's
        # default adjoint_params, the checkpoint mode's taped replay), as with complex states.
        flat_func = wrap_func(func, lambda module, t, y, flat=flat_func: flat(t, y))
    rtol_f = _tolerance("rtol", rtol, tensors, batch)
    atol_f = _tolerance("atol", atol, tensors, batch)
    try:
        solution = solve(flat_func, flat, t, rtol_f, atol_f, unflatten)
    except SolverError as error:
        if error.solution is not None:
            error.solution.ys = unflatten(error.solution.ys)
        raise
    solution.ys = unflatten(solution.ys)
    return solution


def _tolerance(name: str, tol, tensors, batch: int):
    """A number or a ``[B]`` tensor as it is; a tuple (one per tensor) as a ``[B, N]`` tensor."""
    if not isinstance(tol, tuple | list):
        return tol
    if len(tol) != len(tensors):
        raise ValueError(f"{name} as a tuple must hold one tolerance per tensor of y0 "
                         f"({len(tensors)}), got {len(tol)}")
    parts = []
    for i, (tol_i, x) in enumerate(zip(tol, tensors, strict=True)):
        value = torch.as_tensor(tol_i, dtype=x.dtype, device=x.device)
        try:
            value = torch.broadcast_to(value, x.shape)
        except RuntimeError:
            raise ValueError(f"{name}[{i}] of shape {tuple(value.shape)} does not broadcast to "
                             f"y0[{i}]'s shape {tuple(x.shape)}") from None
        parts.append(value.reshape(batch, -1))
    return torch.cat(parts, dim=1)
