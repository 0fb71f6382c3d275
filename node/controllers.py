"""Step-size controllers: the next step size from the error ratio of the last one.

With ``r`` the error ratio of the step just tried (accepted when ``r <= 1``) and ``k`` the order of
the method, the integral controller (torchdiffeq's, the default) proposes

    h_next = h * clip(safety * r^(-1/k), lo, ifactor),   lo = 1 if r < 1 else dfactor,

so an accepted step never shrinks the next one. The PID controller (Soederlind, "Digital filters
in adaptive time-stepping", ACM TOMS 2003) also uses the ratios of the two previous accepted steps:

    h_next = h * clip(safety * r_n^(-b1/k) * r_{n-1}^(-b2/k) * r_{n-2}^(-b3/k), dfactor, ifactor),
    b1 = p + i + d,  b2 = -(p + 2d),  b3 = d

which damps the oscillating step sequences of the integral controller. After a rejection only the
integral term is used (the history belongs to accepted steps).
"""

from __future__ import annotations

import math

from node.options import AdaptiveOptions

_TINY = 1e-10  # error ratios are floored here before taking negative powers


class IntegralController:
    def __init__(self, order: int, options: AdaptiveOptions) -> None:
        self.exponent = -1.0 / order
        self.safety = options.safety
        self.ifactor = options.ifactor
        self.dfactor = options.dfactor

    def predict(self, h: float, ratio: float) -> float:
        """The step the last step's error predicts, ``h * safety * ratio^(-1/k)``, unclipped."""
        if not math.isfinite(ratio):
            return h * self.dfactor
        return h * self.safety * max(ratio, _TINY) ** self.exponent

    def next_step(self, h: float, ratio: float, accepted: bool) -> float:
        if not math.isfinite(ratio):
            return h * self.dfactor
        if ratio == 0.0:
            return h * self.ifactor
        lo = 1.0 if ratio < 1.0 else self.dfactor
        return h * min(self.ifactor, max(lo, self.safety * ratio**self.exponent))


class PIDController(IntegralController):
    def __init__(self, order: int, options: AdaptiveOptions) -> None:
        super().__init__(order, options)
        p, i, d = options.pcoeff, options.icoeff, options.dcoeff
        k = float(order)
        self.beta = (-(p + i + d) / k, (p + 2 * d) / k, -d / k)
        self.history = [1.0, 1.0]  # ratios of the two previous accepted steps

    def next_step(self, h: float, ratio: float, accepted: bool) -> float:
        if not accepted:
            return super().next_step(h, ratio, accepted)
        r0 = max(ratio, _TINY)
        r1, r2 = self.history
        self.history = [r0, r1]
        b1, b2, b3 = self.beta
        factor = self.safety * r0**b1 * r1**b2 * r2**b3
        return h * min(self.ifactor, max(self.dfactor, factor))


def make_controller(order: int, options: AdaptiveOptions) -> IntegralController:
    if options.controller == "pid":
        return PIDController(order, options)
    return IntegralController(order, options)
