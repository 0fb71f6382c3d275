r"""Several continuous normalizing flows in sequence, solved with the configured ODE solver.

Blocks :math:`1..K` (each a :class:`~models.components.cnf_dynamics.CNFDynamics`) map data
:math:`x` to base space one after the other, :math:`x \to z_1 \to \dots \to z_K = z`, each over
its own :math:`s \in [0, 1]`. Their log-density changes add up:

.. math::

    \log p_x(x) = \log \mathcal N(z; 0, I) - \sum_k \Delta_k ,
    \qquad \log \mathcal N(z; 0, I) = -\tfrac12 \lVert z\rVert^2 - \tfrac D2 \log 2\pi .

Sampling runs the blocks backwards: :math:`z \sim \mathcal N(0, I)`, each block's
:math:`dx/ds` solved from :math:`s = 1` to :math:`s = 0`, last block first (no log-density needed).

RNODE's regulariser states, when present, are integrated by the same solve but by default left
out of its error test (``reg_error_control=False``, as in Finlay et al.'s code): they only
regularise, so their accuracy must not cost steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from models.components.cnf_dynamics import CNFDynamics
from models.components.ode_solver import ODESolver

#: tolerance of states left out of the error test (node: an infinite entry excludes that tensor)
UNCONTROLLED_TOL = math.inf


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` per sample of ``z`` (``[B, D]``)."""
    return -0.5 * z.pow(2).sum(dim=1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


@dataclass
class FlowOutput:
    """Result of :meth:`ContinuousFlow.forward`: base point ``z`` ``[B, D]``, the summed
    ``delta_logp`` ``[B]`` and the summed regulariser integrals by name (each ``[B]``)."""

    z: torch.Tensor
    delta_logp: torch.Tensor
    regs: dict[str, torch.Tensor]

    @property
    def log_prob(self) -> torch.Tensor:
        """``log p_x(x) = log N(z) - delta_logp`` per sample."""
        return standard_normal_log_prob(self.z) - self.delta_logp


class _Velocity(nn.Module):
    """A block's ``dx/ds`` alone, as a module (the solver's ``func``; its parameters are the
    block's, for the adjoint)."""

    def __init__(self, block: CNFDynamics) -> None:
        super().__init__()
        self.block = block

    def forward(self, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.block.velocity(s, x)


class ContinuousFlow(nn.Module):
    """``blocks`` in sequence (module docstring), solved by ``solver``.

    Args:
        blocks: the flows, data side first.
        solver: the configured :class:`~models.components.ODESolver` (shared by the blocks;
            it counts evaluations for the whole flow).
        reg_error_control: include RNODE's regulariser states in the solver's error test.
    """

    def __init__(
        self, blocks: Sequence[CNFDynamics], solver: ODESolver, reg_error_control: bool = False
    ) -> None:
        super().__init__()
        if not blocks:
            raise ValueError("ContinuousFlow needs at least one block, got none")
        self.blocks = nn.ModuleList(blocks)
        self.solver = solver
        self.reg_error_control = bool(reg_error_control)

    def _tolerances(self, block: CNFDynamics) -> tuple:
        if not block.reg_names or self.reg_error_control:
            return None, None
        n = len(block.reg_names)
        solver = self.solver
        rtol = (solver.rtol, solver.rtol, *(UNCONTROLLED_TOL,) * n)
        atol = (solver.atol, solver.atol, *(UNCONTROLLED_TOL,) * n)
        return rtol, atol

    def _span(self, x: torch.Tensor, start: float, end: float, n: int = 2) -> torch.Tensor:
        return torch.linspace(start, end, n, dtype=x.dtype, device=x.device)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> FlowOutput:
        """Data ``x`` (``[B, D]``) to base space, with log-density change and regularisers.

        ``generator`` draws the Hutchinson noise (the global generator if ``None``)."""
        if x.dim() != 2:
            raise ValueError(f"x must have shape [batch, dim], got {tuple(x.shape)}")
        delta = x.new_zeros(x.shape[0])
        regs: dict[str, torch.Tensor] = {}
        span = self._span(x, 0.0, 1.0)
        for block in self.blocks:
            block.prepare(x, generator)
            rtol, atol = self._tolerances(block)
            ys = self.solver(block, block.initial_state(x), span, rtol=rtol, atol=atol)
            x = ys[0][-1]
            delta = delta + ys[1][-1]
            for name, path in zip(block.reg_names, ys[2:], strict=True):
                regs[name] = regs.get(name, 0.0) + path[-1]
        return FlowOutput(x, delta, regs)

    def log_prob(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``log p_x(x)`` per sample (an unbiased estimate with the Hutchinson trace)."""
        return self.forward(x, generator).log_prob

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Base points ``z`` to data space (the blocks backwards)."""
        span = self._span(z, 1.0, 0.0)
        for block in reversed(self.blocks):
            z = self.solver(_Velocity(block), z, span)[-1]
        return z

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples: ``z ~ N(0, I)`` pushed to data space by :meth:`inverse`."""
        dim = self._dim()
        param = next(self.parameters())
        z = torch.randn(n, dim, generator=generator, dtype=param.dtype).to(param.device)
        return self.inverse(z)

    def trajectory(self, x: torch.Tensor, n_times: int, reverse: bool = False) -> torch.Tensor:
        """Positions along the flow: ``[K * (n_times - 1) + 1, B, D]`` for ``K`` blocks, each
        block's ``s`` grid of ``n_times`` points (the shared end points counted once).
        ``reverse=False`` starts from data ``x``; ``reverse=True`` from base points."""
        if n_times < 2:
            raise ValueError(f"n_times must be >= 2, got {n_times!r}")
        span = self._span(x, 1.0, 0.0, n_times) if reverse else self._span(x, 0.0, 1.0, n_times)
        blocks = list(reversed(self.blocks)) if reverse else list(self.blocks)
        paths = [x.unsqueeze(0)]
        for block in blocks:
            path = self.solver(_Velocity(block), x, span)
            paths.append(path[1:])
            x = path[-1]
        return torch.cat(paths)

    def end_times(self) -> list[float]:
        return [float(b.end_time.detach()) for b in self.blocks]

    def _dim(self) -> int:
        net = self.blocks[0].net
        dim = getattr(net, "dim", None)
        if dim is None:
            raise AttributeError("the blocks' net has no 'dim' attribute: pass z to inverse()")
        return int(dim)
