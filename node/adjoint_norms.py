"""Error norms of the adjoint's backward solve.

The backward solve's flat state is ``[y, a, a_p1, ..., a_pk]``: the re-solved state, its adjoint
and one parameter adjoint per tensor of ``adjoint_params``. Its scaled error is measured as in
torchdiffeq (so that the two libraries control the same quantity at equal tolerances):

    default:   max(N(y), N(a), max_j RMS(a_pj))
    seminorm:  max(N(y), N(a))

where ``N`` is the forward solve's norm of a state: ``options['norm']`` if given (called with the
state's shape), else the RMS, or for tuple states the max over the tensors of each one's RMS.
The seminorm (Kidger, Chen and Lyons, ICML 2021) leaves out the parameter adjoints: they never
feed back into the dynamics. There is no time adjoint to leave in or out: the gradients with
respect to ``t`` are computed in closed form, not integrated (see :mod:`node.adjoint`).

A callable ``adjoint_options['norm']`` receives torchdiffeq's layout, the tuple

    (t, *y, *a, *a_params)

with ``t`` a 0-d tensor (always zero here: it stands for torchdiffeq's time adjoint, which is
zero there too unless ``t`` requires gradients), ``y`` and ``a`` in the state's shape (unpacked
into their tensors for tuple states) and each parameter adjoint in its parameter's shape.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from node.norms import FlatNorm, mixed_rms_norm, seminorm
from node.state import StateLayout


class AdjointNorm:
    """A flat norm on ``[y, a, a_params]`` plus whether it is homogeneous (``|c| * norm(x) ==
    norm(c * x)``, which lets the error test factor the step size out)."""

    def __init__(self, norm: FlatNorm, homogeneous: bool) -> None:
        self.norm = norm
        self.homogeneous = homogeneous

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


def real_numel(x: torch.Tensor) -> int:
    """Entries of ``x`` as real numbers (a complex entry is two: the backward solve holds the
    adjoint of a complex parameter as its real view)."""
    return x.numel() * (2 if x.is_complex() else 1)


def _state_parts(layout: StateLayout) -> tuple[int, ...]:
    return layout.numels if layout.is_tuple else (layout.numel,)


def adjoint_norm(layout: StateLayout, state_norm: Callable | None,
                 params: tuple[torch.Tensor, ...], choice) -> AdjointNorm:
    """The backward solve's norm for ``adjoint_options['norm'] = choice`` (``None``,
    ``"seminorm"`` or a callable); ``state_norm`` is the forward's ``options['norm']``."""
    n = layout.numel
    param_numels = tuple(real_numel(p) for p in params)
    if callable(choice):
        return AdjointNorm(_user_norm(layout, params, choice), homogeneous=False)
    semi = choice == "seminorm"
    if state_norm is None:
        parts = _state_parts(layout) * 2
        if semi:
            return AdjointNorm(seminorm((*parts, sum(param_numels)), 1), homogeneous=True)
        return AdjointNorm(mixed_rms_norm((*parts, *param_numels)), homogeneous=True)
    params_norm = mixed_rms_norm(param_numels)

    def norm(x: torch.Tensor) -> torch.Tensor:
        values = [torch.as_tensor(state_norm(layout.unflatten(x[:n]))),
                  torch.as_tensor(state_norm(layout.unflatten(x[n : 2 * n])))]
        if not semi and param_numels:
            values.append(params_norm(x[2 * n :]))
        return torch.stack([v.to(x.dtype).reshape(()) for v in values]).max()

    return AdjointNorm(norm, homogeneous=False)


def _user_norm(layout: StateLayout, params, user: Callable) -> FlatNorm:
    n = layout.numel
    numels = tuple(real_numel(p) for p in params)

    def as_parts(flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = layout.unflatten(flat)
        return y if layout.is_tuple else (y,)

    def norm(x: torch.Tensor) -> torch.Tensor:
        a_params = () if not numels else tuple(
            _shaped_like(piece, p) for piece, p in zip(x[2 * n :].split(numels), params,
                                                        strict=True))
        t = x.new_zeros(())
        return torch.as_tensor(user((t, *as_parts(x[:n]), *as_parts(x[n : 2 * n]), *a_params)))

    return norm


def _shaped_like(piece: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """A parameter adjoint in its parameter's shape (and complex for a complex parameter)."""
    if param.is_complex():
        return torch.view_as_complex(piece.view(*param.shape, 2))
    return piece.view(param.shape)
