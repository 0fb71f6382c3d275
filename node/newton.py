"""The simplified (chord) Newton iteration of the implicit stages and its convergence test.

For a stage system ``G(z) = 0`` with a fixed approximate Jacobian ``M ~ dG/dz`` (factorised
once), iterate ``z <- z + dz`` with ``M dz = -G(z)``. The test is Hairer and Wanner's (*Solving
ODEs II*, sec. IV.8): with the scaled norm

    ||x|| = RMS( x / (atol + rtol * |y0|) )          (the error test's scale at the step start)

and the contraction rate ``theta_k = ||dz_k|| / ||dz_{k-1}||``, the distance to the solution is
estimated by ``eta * ||dz_k||`` with ``eta = theta / (1 - theta)``; the iteration has converged
when that is at most ``kappa`` (``options['newton_tol']``, default 1e-2: the Newton error is a
hundredth of what the error test allows). On the first iteration ``eta`` is carried over from the
previous stage as ``max(eta_old, eps) ** 0.8``, so that a (nearly) linear problem converges in one
iteration (not on fixed grids, which have no error test to catch a stale rate: there the first
iterate is accepted only if its update is itself below ``kappa``). An update below
``10 eps / rtol`` in this norm is round-off and counts as converged.

It fails (:class:`NewtonFailure`) when ``theta >= 1`` (divergence), on non-finite values, after
``max_iters`` iterations, or, in adaptive solves (``early_exit``), as soon as the rate predicts
that ``max_iters`` will not suffice (``theta^(max_iters - k) / (1 - theta) ||dz|| > kappa``): a
too-large step is then rejected without spending the remaining iterations on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

# options['jacobian_reuse'] by default: off (a fresh Jacobian every step). Kept Jacobians halve
# the Jacobians on ROBER and Van der Pol for ~15% more evaluations, but on OREGO they triple the
# steps: with a stale matrix the Newton error gets closer to its bound, and an ESDIRK's embedded
# error estimate (unlike Radau's, filtered by (I - h g J)^-1) passes it on unfiltered, so the
# controller shrinks the steps. Worth it when J is costly (a large dense state).
JACOBIAN_REUSE = 0.0


class NewtonFailure(Exception):
    """The stage iteration of a step did not converge (internal: the loops turn it into a
    rejected step or a :class:`~node.SolverError`)."""

    def __init__(self, iterations: int, reason: str) -> None:
        self.iterations = iterations
        self.reason = reason
        super().__init__(f"Newton iteration {reason} after {iterations} iteration(s)")


@dataclass
class NewtonSettings:
    max_iters: int = 10
    kappa: float = 1e-2
    early_exit: bool = True
    floor: float = 0.0  # updates below this (scaled) are round-off
    # Accept the first iterate on the rate carried over from the previous stage. Fixed grids do
    # not: there no error test would catch a first iterate accepted on a stale rate (the rate
    # of a nearly linear stretch, then a predictor far out on a nonlinear one: implicit Euler
    # on torchdiffeq's ConstantODE kept a 7e-5 error per step that way).
    carry_rate: bool = True


class ChordNewton:
    """Runs chord iterations; keeps ``eta`` between stages and steps and counts iterations."""

    def __init__(self, settings: NewtonSettings) -> None:
        self.settings = settings
        self.eta = 1.0
        self.iterations = 0
        self.worst_rate = 0.0  # the largest contraction rate seen since the caller reset it

    def solve(
        self,
        residual: Callable[[torch.Tensor], torch.Tensor],
        z: torch.Tensor,
        lin_solve: Callable[[torch.Tensor], torch.Tensor],
        scale: torch.Tensor,
    ) -> torch.Tensor:
        """Solve ``residual(z) = 0`` from the guess ``z`` (modified in place and returned).

        ``lin_solve(r)`` returns ``M^{-1} r``; ``scale`` is ``atol + rtol |y0|`` (broadcast
        against ``z``)."""
        s = self.settings
        eta = max(self.eta, 2.2e-16) ** 0.8
        previous = math.inf
        size = math.sqrt(max(z.numel(), 1))
        for k in range(1, s.max_iters + 1):
            self.iterations += 1
            dz = lin_solve(residual(z).neg_())
            norm = torch.linalg.vector_norm(dz / scale).item() / size
            if not math.isfinite(norm):
                raise NewtonFailure(k, "produced non-finite values")
            z.add_(dz)
            if k > 1:
                theta = norm / previous if previous > 0.0 else 0.0
                if theta > self.worst_rate:
                    self.worst_rate = theta
                if norm <= s.floor:  # round-off: converged
                    self.eta = min(theta, 0.5) / (1.0 - min(theta, 0.5))
                    return z
                if theta >= 1.0:
                    raise NewtonFailure(k, f"diverged (contraction rate {theta:.3g} >= 1)")
                eta = theta / (1.0 - theta)
                if (s.early_exit and k < s.max_iters
                        and theta ** (s.max_iters - k) / (1.0 - theta) * norm > s.kappa):
                    raise NewtonFailure(k, f"converges too slowly (rate {theta:.3g})")
            if (eta * norm <= s.kappa and (k > 1 or s.carry_rate or norm <= s.kappa)
                    or norm <= s.floor):
                self.eta = eta
                return z
            previous = norm
        raise NewtonFailure(s.max_iters, f"did not converge within max_iters={s.max_iters}")
