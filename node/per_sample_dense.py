"""Dense output of a per-sample solve: each sample's own steps, evaluated at any times.

The per-sample analogue of :mod:`node.dense_output`: ``solve(..., per_sample=True,
dense=True)`` keeps every iteration of the loop (:func:`node.per_sample.integrate_per_sample`
calls the recorder as its ``observer``), and ``Solution.evaluate(s)`` gives sample ``b`` at
times ``s`` (``[M]`` for all samples, or ``[B, M]`` one row per sample) from the continuous
extension of the step of *its own* that holds each time, as ``[M, B, ...]`` (time first, as
per-sample solutions are). Each sample is evaluated inside its own interval, from its ``t[0]``
to its last output time (a time outside is an error); a sample that failed is NaN after the
time it reached, as its outputs are.

Finding the step. In iteration ``i`` a sample either took a step, from ``tau0[i, b]`` to
``tau1[i, b]``, or did not (rejected, finished, failed: then ``tau1 = tau0``, its time did not
move). So ``tau1[:, b]`` is non-decreasing, and the first iteration with ``tau1 >= tau`` is the
accepted step that holds ``tau`` (one batched ``searchsorted`` over ``[B, I]`` rows); a time
equal to the sample's start falls on a step that did not move, where the interpolant is the
start state (its polynomials vanish at ``theta = 0``).

Memory: the state and the ``S x N`` stage matrix of every sample at every iteration (the
loop's iterations, not each sample's accepted steps: a sample that finished early rides along).
"""

from __future__ import annotations

import torch

from node.dense_output import keeper
from node.interpolation import dense_polynomials, weights_at


class SampleDenseTape:
    """The loop's ``observer``: records each iteration, stops no sample."""

    def __init__(self) -> None:
        self.keep = keeper()
        self.records: list[tuple[torch.Tensor, ...]] = []

    def __call__(self, tau0, tau1, h, y0, y1, K, stepped) -> torch.Tensor:
        self.records.append((tau0, tau1, self.keep(y0), self.keep(K)))
        return torch.zeros_like(stepped)


class SampleDenseOutput:
    """The recorded iterations of a per-sample solve, evaluated per sample.

    Args:
        tape: the recorded iterations.
        tableau: the method (its continuous extension).
        taus: ``[B, T]`` solver times of the outputs (``direction * t``, increasing rows).
        direction: ``+-1.0``, or ``[B]`` float64 tensor of ``+-1`` (one per sample).
        reached: ``[B]`` solver time each sample got to (its last output time, or where it
            failed: NaN after it).
        y0: ``[B, N]`` flat initial states (samples that took no step).
        sample_shape: the shape of one sample's state.
    """

    def __init__(self, tape: SampleDenseTape, tableau, taus: torch.Tensor, direction,
                 reached: torch.Tensor, y0: torch.Tensor, sample_shape) -> None:
        self._records = tape.records
        self._coeffs = torch.tensor(dense_polynomials(tableau), dtype=torch.float64)  # [S, P]
        self.batch = taus.shape[0]
        self.sign = direction if isinstance(direction, float) else direction[:, None]  # [B, 1]
        self.start, self.end = taus[:, 0], taus[:, -1]
        self.reached = reached
        self._y0 = y0
        self.sample_shape = tuple(sample_shape)
        self._stacked = None

    def _steps(self):
        if self._stacked is None:
            records = self._records
            self._stacked = (torch.cat([r[0] for r in records], 1),  # tau0 [B, I]
                             torch.cat([r[1] for r in records], 1).contiguous(),  # tau1
                             torch.stack([r[2] for r in records], 1),  # y0 [B, I, N]
                             torch.stack([r[3] for r in records], 1))  # K [B, I, S, N]
        return self._stacked

    def evaluate(self, t):
        """Each sample at the times ``t`` (``[M]`` shared, or ``[B, M]``): ``[M, B, ...]``."""
        return self._at(t, derivative=False)

    def derivative(self, t):
        """The time derivative of each sample's interpolant at ``t`` (shapes as
        :meth:`evaluate`)."""
        return self._at(t, derivative=True)

    def _at(self, t, derivative: bool) -> torch.Tensor:
        name = "derivative" if derivative else "evaluate"
        t = self._times(t, name)  # [B, M]
        batch, m = t.shape
        tau_query = self.sign * t.detach().to(self.start.device, torch.float64)
        unreached = tau_query > self.reached[:, None]  # failed samples, after their failure
        if not self._records:  # t = [t0] only
            if derivative:
                raise ValueError("derivative() needs at least one step; this solve took none")
            flat = self._y0.unsqueeze(1).expand(batch, m, -1)
            return flat.transpose(0, 1).reshape(m, batch, *self.sample_shape)
        tau0, tau1, ys, Ks = self._steps()
        dtype, device = Ks.dtype, Ks.device
        t64 = t.to(dtype=torch.float64, device=device)
        tau = self.sign * t64  # [B, M] solver times, gradients kept for theta
        idx = torch.searchsorted(tau1, tau.detach()).clamp_max(tau1.shape[1] - 1)
        start, end = tau0.gather(1, idx), tau1.gather(1, idx)
        length = end - start
        moved = length > 0
        length = torch.where(moved, length, torch.ones_like(length))  # theta = 0 where not
        theta = ((tau - start) / length).to(dtype)  # [B, M]
        weights = weights_at(self._coeffs, theta, derivative)  # [B, M, S]
        n, stages = ys.shape[2], Ks.shape[2]
        k = Ks.gather(1, idx.view(batch, m, 1, 1).expand(batch, m, stages, n))  # [B, M, S, N]
        combined = torch.einsum("bms,bmsn->bmn", weights, k)
        if derivative:
            out = combined
        else:
            y = ys.gather(1, idx.unsqueeze(-1).expand(batch, m, n))
            h = (self.sign * length * moved).to(dtype).unsqueeze(-1)  # signed user-time step
            out = y + h * combined
        out = torch.where(unreached.to(device).unsqueeze(-1), torch.nan, out)
        return out.transpose(0, 1).reshape(m, batch, *self.sample_shape)

    def _times(self, t, name: str) -> torch.Tensor:
        """``t`` as ``[B, M]`` user times, checked against each sample's interval."""
        if not isinstance(t, torch.Tensor):
            t = torch.tensor(t, dtype=torch.float64)
        if t.dim() == 0:
            t = t.view(1)
        if t.dim() == 1:
            t = t.to(self.start.device).unsqueeze(0).expand(self.batch, -1)
        elif t.dim() != 2 or t.shape[0] != self.batch:
            raise ValueError(f"{name}: t must be [M] (all samples) or [B, M] with B = "
                             f"{self.batch}, got shape {tuple(t.shape)}")
        tau = (self.sign * t.detach().to(self.start.device, torch.float64))
        lo, hi = self.start[:, None], self.end[:, None]
        slack = 8 * torch.finfo(torch.float64).eps * torch.maximum(
            torch.maximum(lo.abs(), hi.abs()), torch.ones_like(lo))
        bad = (tau < lo - slack) | (tau > hi + slack) | tau.isnan()
        if bool(bad.any()):
            b, j = (int(i) for i in bad.nonzero()[0])
            sign = float(self.sign) if isinstance(self.sign, float) else float(self.sign[b])
            ends = sorted((sign * float(lo[b]), sign * float(hi[b])))
            raise ValueError(
                f"{name}: t must lie in each sample's solved interval; sample {b}'s is "
                f"[{ends[0]:.10g}, {ends[1]:.10g}], got t={float(t[b, j]):.10g}")
        return t
