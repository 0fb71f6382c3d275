"""The error test: the scaled norm of a step's local error estimate.

A step is accepted when

    ratio = || err / (atol + rtol * max(|y0|, |y1|)) ||  <=  1,

with ``err = h * sum_i e_i k_i`` the difference of the embedded pair (torchdiffeq's test).

An element whose ``rtol`` or ``atol`` is ``inf`` is left out of the test: its scale is made
``inf`` (``rtol`` 0, ``atol`` inf), so its scaled error is 0 for any finite error (and NaN for a
non-finite one, which still fails the step). For a tuple state, whose norm is the largest of the
tensors' RMS norms, an excluded tensor drops out entirely; excluded elements inside one tensor
count as zero error in that tensor's RMS. The
ratio is computed without autograd: step sizes are not differentiated (the gradient is that of the
discretised solution for the steps that were taken, as in diffrax).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from node.norms import FlatNorm, rms_norm


def _exclude_infinite(rtol, atol):
    """Tolerances with every element that has an infinite ``rtol`` or ``atol`` rewritten to
    ``rtol = 0, atol = inf`` (module docstring): ``inf * 0`` would otherwise make the scale NaN
    where the state is 0."""
    if not (isinstance(rtol, torch.Tensor) or isinstance(atol, torch.Tensor)):
        return (0.0, math.inf) if math.isinf(rtol) or math.isinf(atol) else (rtol, atol)
    like = rtol if isinstance(rtol, torch.Tensor) else atol
    r = torch.as_tensor(rtol, dtype=like.dtype, device=like.device)
    a = torch.as_tensor(atol, dtype=like.dtype, device=like.device)
    excluded = torch.isinf(r) | torch.isinf(a)
    if not bool(excluded.any()):
        return rtol, atol
    return torch.where(excluded, 0.0, r), torch.where(excluded, math.inf, a)


class ErrorScale:
    """Computes error ratios for one solve's tolerances and norm.

    Args:
        rtol, atol: Python floats, or flat per-element tensors.
        norm: a flat norm.
        homogeneous: whether ``norm(c * x) == |c| * norm(x)``; then the step size is factored out
            of the norm instead of multiplied into the error vector (one tensor operation less).
        magnitude: the size of each state element in ``max(|y0|, |y1|)`` (default ``abs``; a
            complex state's real view uses each entry's modulus, see :mod:`node.complex_state`).
    """

    def __init__(self, rtol, atol, norm: FlatNorm, homogeneous: bool,
                 magnitude: Callable[[torch.Tensor], torch.Tensor] = torch.abs) -> None:
        self.magnitude = magnitude
        rtol, atol = _exclude_infinite(rtol, atol)
        self.rtol = rtol
        self.atol = atol
        self.norm = norm
        self.homogeneous = homogeneous
        self._tensor_rtol = isinstance(rtol, torch.Tensor)
        # RMS is applied as a 2-norm, with the 1/sqrt(n) folded into the Python float.
        self._rms = norm is rms_norm
        self._atol_tensors: dict = {}

    def _atol(self, like: torch.Tensor) -> torch.Tensor:
        """``atol`` as a tensor on ``like``'s dtype and device (cached), for one fused op."""
        key = (like.dtype, like.device)
        atol = self._atol_tensors.get(key)
        if atol is None:
            atol = torch.as_tensor(self.atol, dtype=like.dtype, device=like.device)
            self._atol_tensors[key] = atol
        return atol

    def scale(self, magnitude: torch.Tensor) -> torch.Tensor:
        """``atol + rtol * magnitude`` in one tensor operation."""
        if self._tensor_rtol:
            return torch.addcmul(self._atol(magnitude), magnitude, self.rtol)
        return torch.add(self._atol(magnitude), magnitude, alpha=self.rtol)

    def ratio(
        self,
        K: torch.Tensor,
        b_error: torch.Tensor,
        h_abs: float,
        y0_abs: torch.Tensor,
        y1: torch.Tensor,
    ) -> tuple[float, torch.Tensor]:
        """The step's error ratio and ``|y1|`` (reused as ``|y0|`` by the next step)."""
        with torch.no_grad():
            err = torch.mv(K.T, b_error)
            y1_abs = self.magnitude(y1)
            err.div_(self.scale(torch.maximum(y0_abs, y1_abs)))
            if self._rms and err.numel():
                return torch.linalg.vector_norm(err).item() * h_abs / math.sqrt(err.numel()), y1_abs
            if self.homogeneous:
                return self.norm(err).item() * h_abs, y1_abs
            return self.norm(err.mul_(h_abs)).item(), y1_abs

    def initial_step(
        self,
        f: Callable[[float, torch.Tensor], torch.Tensor],
        tau0: float,
        y0: torch.Tensor,
        f0: torch.Tensor,
        order: int,
        direction: float,
    ) -> float:
        """Hairer's automatic first step (Solving ODEs I, sec. II.4), as torchdiffeq computes it.

        Costs one evaluation of ``f``. ``order`` is the method's order.
        """
        with torch.no_grad():
            scale = self.scale(self.magnitude(y0))
            d0 = self.norm(y0 / scale).item()
            d1 = self.norm(f0 / scale).item()
            finite = math.isfinite(d0) and math.isfinite(d1)
            h0 = 1e-6 if not finite or d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
            f1 = f(tau0 + h0, y0 + (direction * h0) * f0)
            d2 = self.norm((f1 - f0) / scale).item() / h0
        if not (finite and math.isfinite(d2)):
            return h0
        if d1 <= 1e-15 and d2 <= 1e-15:
            h1 = max(1e-6, h0 * 1e-3)
        else:
            h1 = (0.01 / max(d1, d2)) ** (1.0 / order)
        return min(100 * h0, h1)
