"""The parameter part of an adjoint's backward state, shared by the adjoint that re-solves ``y``
(:mod:`node.adjoint`) and the interpolating one (:mod:`node.stiff_adjoint`).

The parameter adjoints ``a_p`` ride in the flat real backward state (a complex parameter's
adjoint as its real view, :func:`node.adjoint_norms.real_numel` entries); their tolerance is the
loosest finite one of the state; each backward interval lands on the next output time.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from node.adjoint_norms import real_numel
from node.options import AdaptiveOptions


def real_flat(g: torch.Tensor) -> torch.Tensor:
    """A parameter gradient as a flat real vector (a complex one as its real view)."""
    return torch.view_as_real(g.resolve_conj()).reshape(-1) if g.is_complex() else g.reshape(-1)


def param_gradients(a_p: torch.Tensor, params) -> list[torch.Tensor]:
    """The flat parameter adjoint split into one gradient per parameter (complex ones from
    their real views)."""
    grads, offset = [], 0
    for p in params:
        piece = a_p[offset : offset + real_numel(p)]
        grads.append(torch.view_as_complex(piece.view(*p.shape, 2)) if p.is_complex()
                     else piece.view_as(p))
        offset += real_numel(p)
    return grads


def parameter_tolerance(tol, n_params: int):
    """The tolerance of ``n_params`` parameter-adjoint entries for a state tolerance ``tol`` (a
    float, kept, or a flat tensor): the loosest finite entry (an infinite one, of a channel left
    out of the forward error test, must not leave the parameters out too)."""
    if not isinstance(tol, torch.Tensor):
        return tol
    finite = tol[torch.isfinite(tol)]
    loosest = finite.max() if finite.numel() else tol.max()
    return loosest.expand(n_params)


def augmented_tolerance(tol, n_params: int, copies: int = 2):
    """The tolerance of ``[y, a, a_p]`` (``copies=2``) or ``[a, a_p]`` (``copies=1``)."""
    if not isinstance(tol, torch.Tensor):
        return tol
    return torch.cat([tol] * copies + [parameter_tolerance(tol, n_params)])


def landing(options, t_end: float):
    """Options whose last step lands exactly on the interval's end: ``a`` jumps there, so
    a step past it would be thrown away (interpolated back) anyway."""
    if not isinstance(options, AdaptiveOptions) or t_end in options.jump_t:
        return options
    return replace(options, step_t=(*options.step_t, t_end))
