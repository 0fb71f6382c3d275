"""Norms used by the step-size controller on the scaled error ``err / (atol + rtol * |y|)``.

The solver works on the state flattened into one vector; a *flat norm* is a callable on that
vector. Tensor states use the root mean square (as torchdiffeq). Tuple states use the maximum over
the tensors of each tensor's RMS, so a small tensor is not drowned out by a large one.
A user-supplied ``norm`` receives the error in the shape of the state (a tensor or a tuple), as in
torchdiffeq.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

FlatNorm = Callable[[torch.Tensor], torch.Tensor]


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Root mean square ``sqrt(mean(x**2))`` over all elements."""
    if x.numel() == 0:
        return x.new_zeros(())
    return torch.linalg.vector_norm(x) / math.sqrt(x.numel())


def max_norm(x: torch.Tensor) -> torch.Tensor:
    """Largest absolute value."""
    if x.numel() == 0:
        return x.new_zeros(())
    return torch.linalg.vector_norm(x, ord=float("inf"))


def mixed_rms_norm(numels: Sequence[int]) -> FlatNorm:
    """Max over the pieces of a flattened tuple of each piece's RMS."""
    numels = tuple(numels)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([rms_norm(piece) for piece in x.split(numels)]).max()

    return norm


def seminorm(numels: Sequence[int], n_ignored: int) -> FlatNorm:
    """Mixed RMS norm over all tuple pieces but the last ``n_ignored`` (Kidger et al., 2021).

    Used by the adjoint solve to leave the parameter adjoint out of step-size control.
    """
    kept = tuple(numels)[: len(numels) - n_ignored]
    dropped = sum(numels) - sum(kept)
    inner = mixed_rms_norm(kept)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return inner(x[: x.numel() - dropped])

    return norm
