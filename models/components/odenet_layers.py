r"""Layers of the ODE-Net classifier (Chen et al., 2018): time-conditioned convolutions and linear
maps, the dynamics networks built from them, and the convolutional stem and head.

Time enters a layer as one extra input channel (or feature) filled with the current time
:math:`t`:

.. math::

    \mathrm{ConcatConv}(t, h) = W \star [\,t\mathbf 1;\ h\,] + b, \qquad
    \mathrm{ConcatLinear}(t, h) = W [\,t;\ h\,] + b,

so the vector field can vary along the solve. The convolutional dynamics are

.. math::

    f(t, h) = N_3\Big(\mathrm{ConcatConv}_2\big(t,\ \sigma(N_2(\mathrm{ConcatConv}_1(t,\
    \sigma(N_1(h)))))\big)\Big)

with group normalisations :math:`N_i` and :math:`\sigma = \mathrm{ReLU}`; the MLP dynamics are
:math:`f(t, h) = \mathrm{ConcatLinear}_2(t, \sigma(\mathrm{ConcatLinear}_1(t, h)))`.
"""

from __future__ import annotations

import torch
from torch import nn

from models.components.mlp import ACTIVATIONS


def norm_groups(channels: int, max_groups: int = 32) -> int:
    """The largest group count ``<= max_groups`` that divides ``channels`` (``min(32, C)`` for
    the usual powers of two; still valid for augmented channel counts such as 65)."""
    for groups in range(min(max_groups, channels), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    return nn.GroupNorm(norm_groups(channels, max_groups), channels)


class ConcatConv2d(nn.Module):
    """``Conv2d`` over ``[t * ones, h]``: a convolution that sees the time as an extra channel."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels + 1, out_channels, kernel_size, padding=padding)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        tt = torch.ones_like(h[:, :1]) * t
        return self.conv(torch.cat([tt, h], dim=1))


class ConcatLinear(nn.Module):
    """``Linear`` over ``[t, h]``: a linear map that sees the time as an extra feature."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features + 1, out_features)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        tt = torch.ones_like(h[:, :1]) * t
        return self.linear(torch.cat([tt, h], dim=1))


class ConvODEFunc(nn.Module):
    """Convolutional dynamics :math:`f(t, h)` on ``[B, C, H, W]`` states (module docstring)."""

    def __init__(self, channels: int, max_groups: int = 32) -> None:
        super().__init__()
        self.norm1 = group_norm(channels, max_groups)
        self.conv1 = ConcatConv2d(channels, channels)
        self.norm2 = group_norm(channels, max_groups)
        self.conv2 = ConcatConv2d(channels, channels)
        self.norm3 = group_norm(channels, max_groups)
        self.act = nn.ReLU()

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        out = self.conv1(t, self.act(self.norm1(h)))
        out = self.conv2(t, self.act(self.norm2(out)))
        return self.norm3(out)


class MLPODEFunc(nn.Module):
    """MLP dynamics :math:`f(t, h)` on ``[B, D]`` states (module docstring)."""

    def __init__(self, dim: int, hidden: int, activation: str = "softplus") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"model.activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        self.layer1 = ConcatLinear(dim, hidden)
        self.layer2 = ConcatLinear(hidden, dim)
        self.act = ACTIVATIONS[activation]()

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.layer2(t, self.act(self.layer1(t, h)))


def conv_stem(in_channels: int, channels: int, n_downsample: int, max_groups: int = 32):
    """Chen et al.'s downsampling: a 3x3 convolution to ``channels``, then ``n_downsample`` times
    (GroupNorm, ReLU, 4x4 convolution with stride 2), each halving height and width."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1)]
    for _ in range(n_downsample):
        layers += [
            group_norm(channels, max_groups),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 4, stride=2, padding=1),
        ]
    return nn.Sequential(*layers)


def conv_head(
    channels: int, n_classes: int, max_groups: int = 32, pool_size: int = 1
) -> nn.Sequential:
    """GroupNorm, ReLU, average pooling to ``pool_size x pool_size`` (1: global average pooling,
    Chen et al.) and a linear map of the ``channels * pool_size**2`` features to the logits."""
    return nn.Sequential(
        group_norm(channels, max_groups),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(pool_size),
        nn.Flatten(),
        nn.Linear(channels * pool_size**2, n_classes),
    )
