"""Dense output: the solution inside a step, so output times never shorten a step.

Every adaptive method interpolates with polynomial weights ``b_i(theta)``:

    y(t0 + theta h) = y0 + h * sum_i b_i(theta) k_i,

either its own continuous extension (``ButcherTableau.dense``: dopri5's 4th-order one, tsit5's,
dopri8's) or, for methods without one, cubic Hermite interpolation through ``y0, y1, f0, f1``.
For an FSAL tableau ``f0 = k_0`` and ``f1 = k_{S-1}`` (approximately so for a reused last
stage), and ``y1 - y0 = h sum_i b_i k_i``, so Hermite
interpolation is also of this form, with

    b_i(theta) = h01(theta) b_i + h10(theta) [i = 0] + h11(theta) [i = S-1],
    h01 = 3 theta^2 - 2 theta^3,  h10 = theta - 2 theta^2 + theta^3,  h11 = theta^3 - theta^2.

One code path therefore serves all methods: a ``[S, M]`` weight matrix for the ``M`` output times
of a step and one ``addmm``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch

from node.tableau import ButcherTableau

Polynomials = tuple[tuple[float, ...], ...]


@lru_cache(maxsize=64)
def dense_polynomials(tableau: ButcherTableau) -> Polynomials:
    """Rows of polynomial coefficients (powers theta**1, theta**2, ...) of each ``b_i(theta)``."""
    if tableau.dense is not None:
        return tableau.dense
    if not tableau.reuses_last_stage:
        raise ValueError(
            f"method {tableau.name!r} has neither dense-output coefficients nor FSAL form, so it "
            "cannot interpolate between steps; append the stage f(t0 + h, y1) to its tableau"
        )
    last = tableau.stages - 1
    rows = []
    for i, b in enumerate(tableau.b):
        row = [0.0, 3.0 * b, -2.0 * b]
        if i == 0:
            row = [row[0] + 1.0, row[1] - 2.0, row[2] + 1.0]
        if i == last:
            row = [row[0], row[1] - 1.0, row[2] + 1.0]
        rows.append(tuple(row))
    return tuple(rows)


def dense_weights(polys: Polynomials, thetas: Sequence[float]) -> list[list[float]]:
    """``b_i(theta_m)`` as an ``S x M`` nested list."""
    powers = []
    for theta in thetas:
        p, row = theta, []
        for _ in range(len(polys[0])):
            row.append(p)
            p *= theta
        powers.append(row)
    return [[sum(c * x for c, x in zip(poly, pw, strict=True)) for pw in powers] for poly in polys]


def weights_at(coeffs: torch.Tensor, theta: torch.Tensor, derivative: bool = False
               ) -> torch.Tensor:
    """``b_i(theta)`` (or ``b_i'(theta)`` with ``derivative``) for a tensor of fractions
    ``theta`` of any shape: ``[*theta.shape, S]``, in ``theta``'s dtype; ``coeffs`` is the
    ``[S, P]`` tensor of :func:`dense_polynomials` (powers ``theta**1..P``)."""
    coeffs = coeffs.to(dtype=theta.dtype, device=theta.device)
    exponents = torch.arange(1, coeffs.shape[1] + 1, dtype=theta.dtype, device=theta.device)
    theta = theta.unsqueeze(-1)
    if derivative:  # b_i'(theta) = sum_p p c_ip theta^(p-1)
        powers = exponents * theta ** (exponents - 1)
    else:
        powers = theta**exponents
    return powers @ coeffs.T


def interpolate(
    y0: torch.Tensor, K: torch.Tensor, h: float, polys: Polynomials, thetas: Sequence[float]
) -> torch.Tensor:
    """The states at fractions ``thetas`` of the step, as an ``[N, M]`` tensor."""
    weights = torch.tensor(dense_weights(polys, thetas), dtype=K.dtype, device=K.device)
    return torch.addmm(y0.unsqueeze(1), K.T, weights, alpha=h)


def hermite(
    y0: torch.Tensor, y1: torch.Tensor, f0: torch.Tensor, f1: torch.Tensor, h: float, theta: float
) -> torch.Tensor:
    """Cubic Hermite interpolation at fraction ``theta`` of a step (``interp='cubic'``)."""
    t2, t3 = theta * theta, theta * theta * theta
    h00, h10, h01, h11 = 2 * t3 - 3 * t2 + 1, t3 - 2 * t2 + theta, 3 * t2 - 2 * t3, t3 - t2
    return h00 * y0 + (h10 * h) * f0 + h01 * y1 + (h11 * h) * f1
