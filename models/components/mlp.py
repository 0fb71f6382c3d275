"""Multilayer perceptrons and the autonomous vector field built from one."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {
    "tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus, "gelu": nn.GELU,
}


class MLP(nn.Sequential):
    """``in_dim -> hidden_dim (x n_hidden_layers, with activation) -> out_dim``."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        n_hidden_layers: int = 1,
        activation: str = "tanh",
    ) -> None:
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MLP {name} must be an integer >= 1, got {value!r}")
        if isinstance(n_hidden_layers, bool) or not isinstance(n_hidden_layers, int):
            raise ValueError(f"MLP n_hidden_layers must be an integer, got {n_hidden_layers!r}")
        if n_hidden_layers < 1:
            raise ValueError(f"MLP n_hidden_layers must be >= 1, got {n_hidden_layers!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"MLP activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), ACTIVATIONS[activation]()]
        for _ in range(n_hidden_layers - 1):
            layers += [nn.Linear(hidden_dim, hidden_dim), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(hidden_dim, out_dim))
        super().__init__(*layers)


class LinearField(nn.Linear):
    r"""``y -> A y``: a linear vector field (no bias), ``A`` initialised at zero.

    A latent ODE with this field and an affine decoder decodes sums of the modes of ``A``
    (exponentials, sinusoids and, for repeated eigenvalues, their products with powers of
    ``t``), and extrapolates them exactly. An Archimedean spiral ``r = a + b theta``,
    ``theta = omega t``, is ``(r_0 + b omega t)(cos, sin)(theta_0 + omega t)``: a combination
    of ``cos, sin, t cos, t sin`` of ``omega t``, the solutions of a 4-D system with a double
    pair of eigenvalues ``+-i omega``. Both turning directions need 8 dimensions.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim, dim, bias=False)
        nn.init.zeros_(self.weight)


class LinearPlusMLP(nn.Module):
    r"""``y -> A y + mlp(y)``: a learned linear map (no bias) plus an MLP.

    As a vector field this splits the dynamics into a linear part, which extrapolates exactly
    (rotations, growth and decay at every scale), and a nonlinear correction. With a bounded
    activation (``tanh``) the correction tends to a function of the direction of ``y`` alone
    far from the data, so the field far out is ``A y`` plus a bounded term, instead of whatever
    piecewise-linear continuation an ELU or ReLU network happens to take. ``A`` starts at zero,
    so at initialisation the field is the MLP's.
    """

    def __init__(self, mlp: MLP) -> None:
        super().__init__()
        dim, out_dim = mlp[0].in_features, mlp[-1].out_features
        if dim != out_dim:
            raise ValueError(f"LinearPlusMLP needs a vector field's MLP (out_dim == in_dim), "
                             f"got in_dim {dim} and out_dim {out_dim}")
        self.linear = LinearField(dim)
        self.mlp = mlp

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.linear(y) + self.mlp(y)


class AutonomousField(nn.Module):
    """The time-invariant vector field ``f(t, y) = net(y)``, in the solver's calling convention."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)
