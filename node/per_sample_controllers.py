"""Step-size controllers of the per-sample loop: :mod:`node.controllers` applied element-wise.

Each returns the factor ``h_next / h`` of every sample (``[B, 1]`` float64) from the loop's
scaled ratio ``rp = r * safety^-k`` (``r``: the error ratio, accepted when ``r <= 1``; ``k``: the
method's order), so that a sample gets the step sizes it would get solved alone by the joint loop
with the same controller. The integral controller (the default):

    factor = clip(safety * r^(-1/k), lo, ifactor) = clip(rp^(-1/k), lo, ifactor),
    lo = 1 after an accepted step, dfactor after a rejected one (and for a NaN or inf ratio).

The PID controller keeps each sample's ratios of its two previous accepted steps (``[B, 1]``
tensors, 1 at the start) and after an accepted step proposes

    factor = clip(safety * r0^b1 * r1^b2 * r2^b3, dfactor, ifactor),   r0 = max(r, 1e-10),

with the gains ``b`` of :class:`node.controllers.PIDController`; after a rejection the integral
rule. The samples a controller holds state for are never differentiated (no graph).
"""

from __future__ import annotations

import torch

from node.controllers import _TINY, PIDController
from node.options import AdaptiveOptions


class SampleIntegralController:
    def __init__(self, order: int, options: AdaptiveOptions, pre: float, batch: int,
                 device) -> None:
        self.exponent = -1.0 / order
        self.pre = pre  # safety^-k, folded into the loop's rp
        self.ifactor, self.dfactor = options.ifactor, options.dfactor
        self.x = torch.empty((batch, 1), dtype=torch.float64, device=device)

    def factor(self, rp: torch.Tensor, accepted: torch.Tensor, grow: torch.Tensor
               ) -> torch.Tensor:
        """``[B, 1]`` factors from ``rp``, ``accepted`` (the steps taken) and ``grow`` (those
        whose next step may not shrink: accepted on their error test). A NaN or inf ratio gives
        dfactor (fmax drops the NaN), a zero ratio ifactor. (torchdiffeq's lo is 1 only for
        ratio < 1; ratio == 1 exactly, a measure-zero case, grows by 1 here instead of 0.9.)
        The result is a buffer, overwritten by the next call."""
        factor = torch.pow(rp, self.exponent, out=self.x)
        return torch.fmax(factor, grow, out=self.x).clamp_(self.dfactor, self.ifactor)


class SamplePIDController(SampleIntegralController):
    def __init__(self, order: int, options: AdaptiveOptions, pre: float, batch: int,
                 device) -> None:
        super().__init__(order, options, pre, batch, device)
        self.safety = options.safety
        self.beta = PIDController(order, options).beta  # the joint loop's gains
        self.r1 = torch.ones((batch, 1), dtype=torch.float64, device=device)
        self.r2 = torch.ones_like(self.r1)

    def factor(self, rp: torch.Tensor, accepted: torch.Tensor, grow: torch.Tensor
               ) -> torch.Tensor:
        """As the integral controller's; the accepted steps get the PID factor and push their
        ratio into their history."""
        integral = super().factor(rp, accepted, grow)
        b1, b2, b3 = self.beta
        r0 = torch.div(rp, self.pre).clamp_min_(_TINY)  # NaN stays NaN: never accepted
        # The joint loop's order of operations, ((safety * r0^b1) * r1^b2) * r2^b3, for the
        # same rounding; a zero gain (b3 with dcoeff = 0) multiplies by exactly 1: skipped.
        pid = torch.pow(r0, b1).mul_(self.safety)
        if b2 != 0.0:
            pid.mul_(self.r1.pow(b2))
        if b3 != 0.0:
            pid.mul_(self.r2.pow(b3))
        pid.clamp_(self.dfactor, self.ifactor)
        self.r2 = torch.where(accepted, self.r1, self.r2)
        self.r1 = torch.where(accepted, r0, self.r1)
        return torch.where(accepted, pid, integral)


def make_sample_controller(order: int, options: AdaptiveOptions, pre: float, batch: int,
                           device) -> SampleIntegralController:
    cls = SamplePIDController if options.controller == "pid" else SampleIntegralController
    return cls(order, options, pre, batch, device)
