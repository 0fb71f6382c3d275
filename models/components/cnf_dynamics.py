r"""The augmented dynamics of one continuous normalizing flow (FFJORD, with RNODE's states).

A flow moves a point :math:`x(0)` (data) along :math:`dx/dt = f_\theta(t, x)` to :math:`x(T)`
(base space). By the *instantaneous change of variables* (Chen et al. 2018, Theorem 1) the
log-density of the moving point changes as

.. math::

    \frac{d \log p(x(t))}{dt} = -\operatorname{tr}\Big(\frac{\partial f}{\partial x}(t, x(t))\Big),

so, integrating :math:`\Delta(t) = -\int_0^t \operatorname{tr} \partial f/\partial x \, dt'`
alongside :math:`x` (FFJORD's ``delta_logp``, starting at 0), the change of variables
:math:`\log p_x(x(0)) = \log p_z(x(T)) + \log\lvert\det \partial x(T)/\partial x(0)\rvert`
becomes

.. math::

    \log p_x(x(0)) = \log p_z(x(T)) - \Delta(T).

RNODE (Finlay et al. 2020) adds two more states, integrated along the same solve:

.. math::

    E_K(T) = \int_0^T \lVert f(t, x) \rVert^2 dt \quad\text{(kinetic energy)},\qquad
    E_J(T) = \int_0^T \lVert \varepsilon^\top \partial f/\partial x \rVert^2 dt
    \quad\text{(Jacobian Frobenius norm)},

the latter an unbiased estimate of :math:`\int \lVert \partial f/\partial x\rVert_F^2 dt` from the
same vector-Jacobian product as the Hutchinson trace (exact, :math:`\lVert J\rVert_F^2`, when the
trace is exact).

Time is rescaled to :math:`s = t/T \in [0, 1]` so that the end time :math:`T` can be a
parameter (``train_end_time``) in every gradient mode, the adjoint included: the solver sees
:math:`dx/ds = T f(sT, x)`, :math:`d\Delta/ds = -T \operatorname{tr} J`,
:math:`dE_K/ds = T \lVert f\rVert^2`, :math:`dE_J/ds = T \lVert\varepsilon^\top J\rVert^2`.
:math:`T = \sqrt{T}^2` with :math:`\sqrt{T}` the stored parameter (FFJORD's parametrisation), so
it stays positive. Fixed-step solvers' ``step_size`` is therefore in units of :math:`s`.

The Hutchinson noise :math:`\varepsilon` is drawn by :meth:`CNFDynamics.prepare` before a solve
and kept fixed for all of it (the trace estimate is then the trace of one fixed quadratic form,
a smooth function of :math:`x`, which the adaptive solver can integrate), the backward solve of
the adjoint and the recomputation of the ``checkpoint`` mode included.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.components.trace import (
    NOISE_KINDS,
    exact_jacobian_terms,
    hutchinson_terms,
    sample_noise,
)

TRACE_KINDS = ("exact", "hutchinson")


class CNFDynamics(nn.Module):
    """``(s, (x, delta_logp, *regs)) -> d/ds`` of the module docstring.

    Args:
        net: the vector field, ``net(t, x) -> f`` with ``x`` and ``f`` of shape ``[B, D]``
            (e.g. :class:`~models.components.concatsquash.ConcatSquashMLP`).
        trace: ``"exact"`` (``D`` vector-Jacobian products) or ``"hutchinson"`` (one).
        noise: Hutchinson noise, ``"gaussian"`` or ``"rademacher"``.
        kinetic, jacobian: integrate RNODE's kinetic-energy / Jacobian-Frobenius states.
        end_time: :math:`T` (initial value if trainable).
        train_end_time: learn :math:`T`.

    The state is a tuple ``(x [B, D], delta_logp [B], *regs)`` with one ``[B]`` tensor per
    enabled regulariser, in the order of :attr:`reg_names`.
    """

    def __init__(
        self,
        net: nn.Module,
        trace: str = "exact",
        noise: str = "gaussian",
        kinetic: bool = False,
        jacobian: bool = False,
        end_time: float = 1.0,
        train_end_time: bool = False,
    ) -> None:
        super().__init__()
        if trace not in TRACE_KINDS:
            raise ValueError(f"model.trace must be one of {list(TRACE_KINDS)}, got {trace!r}")
        if noise not in NOISE_KINDS:
            raise ValueError(f"model.noise must be one of {list(NOISE_KINDS)}, got {noise!r}")
        ok = not isinstance(end_time, bool) and isinstance(end_time, int | float)
        if not ok or not (end_time > 0 and math.isfinite(end_time)):
            raise ValueError(f"model.end_time must be a finite number > 0, got {end_time!r}")
        self.net = net
        self.trace = trace
        self.noise_kind = noise
        self.reg_names = tuple(
            name for name, on in (("kinetic", kinetic), ("jacobian", jacobian)) if on
        )
        sqrt_t = torch.tensor(math.sqrt(float(end_time)))
        if train_end_time:
            self.sqrt_end_time = nn.Parameter(sqrt_t)
        else:
            self.register_buffer("sqrt_end_time", sqrt_t)
        self.noise: torch.Tensor | None = None

    @property
    def end_time(self) -> torch.Tensor:
        """:math:`T`, a 0-d tensor (differentiable if trainable)."""
        return self.sqrt_end_time.pow(2)

    def initial_state(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(x, 0, *zeros)``: the state at ``s = 0`` for data ``x`` of shape ``[B, D]``."""
        zeros = x.new_zeros(x.shape[0])
        return (x, zeros, *(x.new_zeros(x.shape[0]) for _ in self.reg_names))

    def prepare(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Draw the Hutchinson noise for the next solve of a batch shaped like ``x`` (nothing to
        do for the exact trace)."""
        self.noise = sample_noise(x, self.noise_kind, generator) if self.hutchinson else None

    @property
    def hutchinson(self) -> bool:
        return self.trace == "hutchinson"

    def velocity(self, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``dx/ds = T f(sT, x)`` alone (no log-density), for sampling and trajectories."""
        end = self.end_time
        return end * self.net(s * end, x)

    def _jacobian_terms(self, f, x, create_graph):
        need_frob = "jacobian" in self.reg_names
        if not self.hutchinson:
            return exact_jacobian_terms(f, x, frobenius=need_frob, create_graph=create_graph)
        if self.noise is None or self.noise.shape != x.shape:
            got = None if self.noise is None else tuple(self.noise.shape)
            raise RuntimeError(
                "CNFDynamics.prepare(x) must draw the Hutchinson noise before a solve: noise "
                f"of shape {tuple(x.shape)} expected, found {got}"
            )
        return hutchinson_terms(f, x, self.noise, frobenius=need_frob, create_graph=create_graph)

    def forward(self, s: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = state[0]
        # training (grad mode on): keep the graph of the trace so that it can be differentiated;
        # evaluation: the Jacobian needs autograd all the same, but only for values
        create_graph = torch.is_grad_enabled()
        end = self.end_time
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            f = self.net(s * end, x)
            trace, frob = self._jacobian_terms(f, x, create_graph)
        out = [end * f, -end * trace]
        for name in self.reg_names:
            out.append(end * (f.pow(2).sum(dim=1) if name == "kinetic" else frob))
        if not create_graph:
            out = [o.detach() for o in out]
        return tuple(out)

    def extra_repr(self) -> str:
        regs = ", ".join(self.reg_names) or "none"
        trainable = isinstance(self.sqrt_end_time, nn.Parameter)
        return (
            f"trace={self.trace!r}, noise={self.noise_kind!r}, regularisers={regs}, "
            f"end_time={float(self.end_time.detach()):.4g}, train_end_time={trainable}"
        )
