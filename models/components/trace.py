r"""The Jacobian terms of a continuous normalizing flow: trace, and squared Frobenius norm.

For a field :math:`f(x)` with Jacobian :math:`J = \partial f / \partial x` (per sample of a batch
``x`` of shape ``[B, D]``):

* **Exact** (:func:`exact_jacobian_terms`): the rows :math:`\partial f_i / \partial x` from
  :math:`D` vector-Jacobian products give :math:`\operatorname{tr} J = \sum_i J_{ii}` and
  :math:`\lVert J \rVert_F^2 = \sum_{ij} J_{ij}^2`. Cost grows with :math:`D`: for low
  dimensions (the 2-D toy data).
* **Hutchinson** (:func:`hutchinson_terms`): for noise :math:`\varepsilon` with
  :math:`\mathbb E[\varepsilon] = 0`, :math:`\mathbb E[\varepsilon \varepsilon^\top] = I`
  (standard Gaussian, or Rademacher :math:`\pm 1`),

  .. math::

      \operatorname{tr} J = \mathbb E\big[\varepsilon^\top J \varepsilon\big], \qquad
      \lVert J \rVert_F^2 = \mathbb E\big[\lVert \varepsilon^\top J \rVert^2\big],

  both from the single vector-Jacobian product :math:`v = \varepsilon^\top J` (Hutchinson 1990;
  FFJORD for the trace, RNODE, Finlay et al. 2020, for the Frobenius norm). Unbiased, one
  backward pass whatever :math:`D`. With :math:`S = (J + J^\top)/2`, the trace estimate has
  variance :math:`2\lVert S \rVert_F^2` for Gaussian noise and the smaller
  :math:`2(\lVert S \rVert_F^2 - \sum_i S_{ii}^2)` for Rademacher noise.

``create_graph=True`` keeps the result differentiable (training); with ``False`` the results
are detached values (evaluation).
"""

from __future__ import annotations

import torch

NOISE_KINDS = ("gaussian", "rademacher")


def sample_noise(
    like: torch.Tensor, kind: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Noise shaped like ``like`` with zero mean and identity covariance: ``gaussian`` (standard
    normal) or ``rademacher`` (+1 or -1 with probability 1/2 each)."""
    if kind == "gaussian":
        return torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device)
    if kind == "rademacher":
        bits = torch.randint(0, 2, like.shape, generator=generator).to(like.device)
        return (2 * bits - 1).to(like.dtype)
    raise ValueError(f"noise must be one of {list(NOISE_KINDS)}, got {kind!r}")


def _vjp(f: torch.Tensor, x: torch.Tensor, v: torch.Tensor, create_graph: bool) -> torch.Tensor:
    (g,) = torch.autograd.grad(
        f, x, v, create_graph=create_graph, retain_graph=True, allow_unused=True
    )
    return torch.zeros_like(x) if g is None else g


def _check(f: torch.Tensor, x: torch.Tensor) -> None:
    if x.dim() != 2 or f.shape != x.shape:
        raise ValueError(
            "Jacobian terms need f and x of the same shape [batch, dim], got f "
            f"{tuple(f.shape)} and x {tuple(x.shape)}"
        )
    if not x.requires_grad:
        raise ValueError("x must require grad (f must be computed from it under autograd)")


def exact_jacobian_terms(
    f: torch.Tensor, x: torch.Tensor, *, frobenius: bool = False, create_graph: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(tr J, ||J||_F^2 or None)`` per sample, exactly, from ``D`` vector-Jacobian products."""
    _check(f, x)
    trace = x.new_zeros(x.shape[0])
    frob = x.new_zeros(x.shape[0]) if frobenius else None
    for i in range(x.shape[1]):
        v = torch.zeros_like(f)
        v[:, i] = 1.0
        row = _vjp(f, x, v, create_graph)  # row i of J: df_i/dx
        trace = trace + row[:, i]
        if frobenius:
            frob = frob + row.pow(2).sum(dim=1)
    return trace, frob


def hutchinson_terms(
    f: torch.Tensor,
    x: torch.Tensor,
    noise: torch.Tensor,
    *,
    frobenius: bool = False,
    create_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(eps^T J eps, ||eps^T J||^2 or None)`` per sample for the given noise ``eps``: unbiased
    estimates of ``tr J`` and ``||J||_F^2`` from one vector-Jacobian product."""
    _check(f, x)
    if noise.shape != x.shape:
        raise ValueError(
            f"noise must have the shape of x {tuple(x.shape)}, got {tuple(noise.shape)}"
        )
    v = _vjp(f, x, noise, create_graph)  # eps^T J
    trace = (v * noise).sum(dim=1)
    frob = v.pow(2).sum(dim=1) if frobenius else None
    return trace, frob
