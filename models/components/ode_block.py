r"""The ODE block of an ODE-Net: a continuous-depth replacement for a stack of residual blocks.

Given features :math:`x` (``[B, C, ...]``), the block returns :math:`h(T)` where

.. math::

    h(0) = [\,x;\ \mathbf 0_{a}\,], \qquad \frac{dh}{dt} = f_\theta(t, h(t)), \quad t \in [0, T],

solved by the model's :class:`~models.components.ODESolver` (any method, any gradient mode).
:math:`\mathbf 0_a` are ``augment_dim`` zero channels appended along dimension 1: the augmented
neural ODE of Dupont et al. (2019), which lets the flow move points around each other in the
extra dimensions (a plain neural ODE is a homeomorphism of the feature space and cannot).
"""

from __future__ import annotations

import torch
from torch import nn

from models.components.ode_solver import ODESolver


class ODEBlock(nn.Module):
    """``x -> h(T)`` (module docstring).

    Args:
        func: the dynamics ``f(t, h)``, acting on states with ``channels + augment_dim``
            channels (features).
        solver: the ODE solver.
        augment_dim: zero channels appended to the input (0: a plain neural ODE).
        t_end: the end time :math:`T` (the start is 0).
    """

    def __init__(
        self, func: nn.Module, solver: ODESolver, augment_dim: int = 0, t_end: float = 1.0
    ) -> None:
        super().__init__()
        if isinstance(augment_dim, bool) or not isinstance(augment_dim, int) or augment_dim < 0:
            raise ValueError(f"model.augment_dim must be an integer >= 0, got {augment_dim!r}")
        if isinstance(t_end, bool) or not isinstance(t_end, int | float) or not t_end > 0:
            raise ValueError(f"model.t_end must be a number > 0, got {t_end!r}")
        self.func = func
        self.solver = solver
        self.augment_dim = augment_dim
        self.t_end = float(t_end)

    def initial_state(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`h(0) = [x; 0]`: ``augment_dim`` zero channels appended along dimension 1."""
        if self.augment_dim == 0:
            return x
        zeros = x.new_zeros(x.shape[0], self.augment_dim, *x.shape[2:])
        return torch.cat([x, zeros], dim=1)

    def times(self, n_times: int = 2, like: torch.Tensor | None = None) -> torch.Tensor:
        """``n_times`` equally spaced times from 0 to :math:`T`."""
        if isinstance(n_times, bool) or not isinstance(n_times, int) or n_times < 2:
            raise ValueError(f"n_times must be an integer >= 2, got {n_times!r}")
        t = torch.linspace(0.0, self.t_end, n_times)
        return t if like is None else t.to(device=like.device, dtype=like.dtype)

    def trajectory(self, x: torch.Tensor, n_times: int = 2) -> torch.Tensor:
        """The states at ``n_times`` equally spaced times in :math:`[0, T]`:
        ``[n_times, B, C + augment_dim, ...]``."""
        h0 = self.initial_state(x)
        return self.solver(self.func, h0, self.times(n_times, like=h0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`h(T)`, of shape ``[B, C + augment_dim, ...]``."""
        return self.trajectory(x, 2)[-1]

    def extra_repr(self) -> str:
        return f"augment_dim={self.augment_dim}, t_end={self.t_end:g}"
