r"""The variational objectives of the latent ODE.

With an approximate posterior :math:`q(z_0 \mid x) = \mathcal N(\mu, \operatorname{diag}\sigma^2)`
from the encoder, the prior :math:`p(z_0) = \mathcal N(0, I)`, and a Gaussian observation model
:math:`p(x_i \mid z_{t_i}) = \mathcal N(\mathrm{dec}(z_{t_i}), s^2 I)` with the latent path
:math:`z_t = \mathrm{ODESolve}(f, z_0, t)`, the evidence lower bound (ELBO) of a series is

.. math::

    \log p(x) \ge \mathrm{ELBO} = \mathbb E_{q(z_0 \mid x)}\Big[\sum_{i,d} m_{id}
        \log \mathcal N(x_{id}; \mathrm{dec}(z_{t_i})_d, s^2)\Big]
        - \mathrm{KL}\big(q(z_0 \mid x) \,\|\, p(z_0)\big),

where :math:`m_{id} \in \{0, 1\}` masks the values that were observed. The KL divergence of two
Gaussians is analytic:

.. math::

    \mathrm{KL}\big(\mathcal N(\mu, \sigma^2) \,\|\, \mathcal N(0, 1)\big)
        = \tfrac12 \sum_j \big(\sigma_j^2 + \mu_j^2 - 1 - \log \sigma_j^2\big).

With :math:`K` samples :math:`z_0^{(k)} = \mu + \sigma \odot \varepsilon^{(k)}` (the
reparameterisation trick), two estimators are offered:

* ``elbo``: :math:`\frac1K \sum_k \log p(x \mid z_0^{(k)}) - \beta\,\mathrm{KL}` (the analytic KL,
  lower variance than a sampled one);
* ``iwae``: the importance-weighted bound of Burda et al. (2016),
  :math:`\log \frac1K \sum_k w_k` with :math:`\log w_k = \log p(x \mid z_0^{(k)})
  + \beta\,[\log p(z_0^{(k)}) - \log q(z_0^{(k)} \mid x)]`,
  which is a lower bound of :math:`\log p(x)` for :math:`\beta = 1` that tightens as ``K`` grows.

:math:`\beta \in [0, 1]` is the KL weight: 1 gives the bound itself; KL annealing raises it
linearly from 0 to 1 over the first training steps (Bowman et al., 2016).
"""

from __future__ import annotations

import math

import torch

OBJECTIVES = ("elbo", "iwae")
_LOG_2PI = math.log(2 * math.pi)


def gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, std: float, mask: torch.Tensor
) -> torch.Tensor:
    """:math:`\\sum m \\log \\mathcal N(x; \\text{mean}, \\text{std}^2)` over the last two dims.

    ``x`` and ``mask`` are ``[B, T, D]``; ``mean`` is ``[..., B, T, D]`` (leading sample dims);
    returns ``[..., B]``.
    """
    log_density = -0.5 * (((x - mean) / std) ** 2 + _LOG_2PI) - math.log(std)
    return (log_density * mask).sum(dim=(-2, -1))


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Analytic :math:`\\mathrm{KL}(\\mathcal N(\\mu, e^{\\text{logvar}}) \\| \\mathcal N(0, I))`,
    summed over the last dim."""
    return 0.5 * (logvar.exp() + mu**2 - 1.0 - logvar).sum(dim=-1)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """:math:`\\log \\mathcal N(z; \\mu, e^{\\text{logvar}})` summed over the last dim."""
    return (-0.5 * ((z - mu) ** 2 / logvar.exp() + logvar + _LOG_2PI)).sum(dim=-1)


def kl_weight(step: int, anneal_steps: int) -> float:
    """:math:`\\beta`: 1 without annealing, else ``min(1, step / anneal_steps)``."""
    if anneal_steps <= 0:
        return 1.0
    return min(1.0, step / anneal_steps)


def variational_bound(
    objective: str,
    log_px: torch.Tensor,
    z0: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    beta: float = 1.0,
) -> torch.Tensor:
    """The per-series bound (``[B]``) of ``objective`` (``"elbo"`` or ``"iwae"``).

    ``log_px`` is ``[K, B]`` (one row per posterior sample ``z0[k]``, ``z0`` is ``[K, B, L]``),
    ``mu`` and ``logvar`` are ``[B, L]``.
    """
    if objective == "elbo":
        return log_px.mean(dim=0) - beta * kl_standard_normal(mu, logvar)
    if objective == "iwae":
        zeros = torch.zeros_like(mu)
        log_prior = log_normal(z0, zeros, zeros)
        log_post = log_normal(z0, mu, logvar)
        log_w = log_px + beta * (log_prior - log_post)
        return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])
    raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")
