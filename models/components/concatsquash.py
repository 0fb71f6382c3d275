r"""Time-gated ("concatsquash") layers and the FFJORD dynamics network built from them.

A concatsquash layer (Grathwohl et al. 2019, FFJORD's ``ConcatSquashLinear``) conditions a linear
map on the time :math:`t` through a gate and a bias, both functions of :math:`t`:

.. math::

    \mathrm{CS}(t, h) = (W h + b) \odot \sigma(g_1 t + g_0) + c\, t ,

with :math:`\sigma` the logistic sigmoid and :math:`W, b, g_1, g_0, c` learned. Stacking such
layers with ``tanh`` between them gives :class:`ConcatSquashMLP`, the vector field
:math:`f_\theta(t, x)` of a continuous normalizing flow.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.components.mlp import ACTIVATIONS


class ConcatSquashLinear(nn.Module):
    """``(W h + b) * sigmoid(g1 t + g0) + c t`` (module docstring); ``h`` of shape ``[..., in]``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.layer = nn.Linear(in_dim, out_dim)
        self.hyper_gate = nn.Linear(1, out_dim)
        self.hyper_bias = nn.Linear(1, out_dim, bias=False)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        tt = t.reshape(1, 1).to(h.dtype)
        return self.layer(h) * torch.sigmoid(self.hyper_gate(tt)) + self.hyper_bias(tt)


class ConcatSquashMLP(nn.Module):
    """``f(t, x)``: concatsquash layers ``dim -> hidden_dims... -> dim`` with an activation
    between them (none after the last).

    Args:
        dim: dimension of the state ``x`` (input and output).
        hidden_dims: widths of the hidden layers (FFJORD's toy experiments: 64, 64, 64).
        activation: one of ``tanh`` (FFJORD's choice), ``softplus``, ``elu``, ``relu``. A
            continuous normalizing flow needs a differentiable field, and the trace of its
            Jacobian is itself differentiated in training: smooth activations are the sound
            choice.
    """

    def __init__(
        self, dim: int, hidden_dims: Sequence[int] = (64, 64, 64), activation: str = "tanh"
    ) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"ConcatSquashMLP dim must be an integer >= 1, got {dim!r}")
        hidden = list(hidden_dims)
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(
                f"model.hidden_dims must be a list of integers >= 1, got {hidden_dims!r}"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"model.activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        self.dim = dim
        widths = [dim, *hidden, dim]
        self.layers = nn.ModuleList(
            ConcatSquashLinear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.activation = ACTIVATIONS[activation]()

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = x
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = layer(t, h)
            if i < last:
                h = self.activation(h)
        return h
