"""Dense output of the per-sample loop, located and evaluated on the device.

Each sample has its own output times ``taus[b]`` (solver time, increasing). The loop records
every iteration (start and end time of each sample, its step, start state and stage matrix);
every ``chunk`` iterations (and at the end) the outputs passed in those iterations are
found with ``searchsorted`` and interpolated with the tableau's polynomials
(:mod:`node.interpolation`), for all samples at once:

    m      = first iteration of the chunk whose end time is >= the output time   (accepted)
    theta  = (tau_out - tau0_m) / (tau1_m - tau0_m)
    y(out) = y0_m + h_m * sum_i b_i(theta) k_i^(m)

So no host synchronisation is spent on output times, except the size of the window of outputs
per chunk (folded into the loop's own per-iteration synchronisation) and one at the very end.
Outputs that a failed sample never reached stay NaN. Chunking bounds the memory the records
hold when no autograd graph keeps them anyway.
"""

from __future__ import annotations

import math

import torch

from node.interpolation import dense_polynomials
from node.tableau import ButcherTableau

_CHUNK_BYTES = 2**25  # the stage matrices of one chunk of records, at most (about 32 MiB)
_MAX_CHUNK = 64


def dense_values(polys_t: torch.Tensor, theta: torch.Tensor, h: torch.Tensor, ys: torch.Tensor,
                 ks: torch.Tensor) -> torch.Tensor:
    """``y + h * sum_i b_i(theta) k_i`` for ``R`` rows: ``theta`` and the user's step ``h``
    float64 ``[R]``, states ``[R, N]``, stages ``[R, S, N]``; ``polys_t``: ``[P, S]``
    coefficients of the ``b_i`` (:func:`node.interpolation.dense_polynomials`, transposed)."""
    rows, stages = ks.shape[0], ks.shape[1]
    powers = theta[:, None].expand(rows, polys_t.shape[0]).cumprod(-1)
    weights = (powers @ polys_t).view(rows, 1, stages)  # b_i(theta)
    dtype = ys.dtype
    increment = torch.bmm(weights.to(dtype), ks).view(rows, ys.shape[1])
    return torch.addcmul(ys, h.view(rows, 1).to(dtype), increment)


class DenseOutputs:
    def __init__(self, taus: torch.Tensor, y0: torch.Tensor, tableau: ButcherTableau,
                 stages: int, sign, buffered: bool) -> None:
        self.taus = taus.contiguous()
        self.batch, self.n_out = taus.shape
        self.numel = y0.shape[1]
        self.sign = sign  # the direction (a number or [B, 1]): user step = sign * solver step
        device = y0.device
        polys = dense_polynomials(tableau) if self.n_out > 1 else ((0.0,),) * stages
        self.polys_t = torch.tensor(polys, dtype=torch.float64, device=device).T  # [P, S]
        self.stages = stages
        self.samples = torch.arange(self.batch, device=device)[:, None]
        self.lo = torch.ones(self.batch, dtype=torch.long, device=device)  # next output index
        self.rows = [self.samples.reshape(-1)]  # output 0 is y0 (row j * B + b of [T * B, N])
        self.vals = [y0]
        self.n_steps = torch.zeros(self.batch, dtype=torch.long, device=device)
        self.n_accepted = torch.zeros_like(self.n_steps)
        row_bytes = stages * y0.numel() * y0.element_size()
        self.chunk = max(1, min(_MAX_CHUNK, _CHUNK_BYTES // max(row_bytes, 1)))
        self._records: list[tuple] = []
        self._hi = None
        # Without a graph, the stage matrices go straight into one chunk buffer (stacking 64
        # records at every flush costs more than the loop's copies), laid out [M, S, B * N] as
        # the loop's stage matrix is: a contiguous copy per iteration (a [B, S, N] layout
        # costs a strided copy, 5x slower on small states); the flush gathers the (m, s, b)
        # rows of the outputs with one index_select on its [M * S * B, N] view.
        self.kbuf = None
        if buffered:
            self.kbuf = y0.new_empty((self.chunk, stages, self.batch * self.numel))
            self.kflat = self.kbuf.view(-1, self.numel)
            self.stage_rows = torch.arange(stages, device=device) * self.batch  # [S]

    def stages_view(self, K: torch.Tensor) -> torch.Tensor:
        """The ``[B, S, N]`` view of a ``[S, B * N]`` stage matrix that :meth:`record`
        takes (make it once for a reused buffer)."""
        return K.view(self.stages, self.batch, self.numel).transpose(0, 1)

    def record(self, tau0, tau1, h, y, K, flags, accepted, K_flat=None) -> None:
        """One iteration: start and end solver times ``[B, 1]`` (end = start if not accepted),
        the step ``h`` in solver time ``[B, 1]``, the start state ``[B, N]``, the stage matrix
        ``[B, S, N]`` as :meth:`stages_view` gives it, the flags ``[2, B, 1]`` (row 0: active),
        accepted ``[B, 1]``. Without a graph, ``K_flat`` (the ``[S, B * N]`` stage matrix that
        ``K`` views) is copied instead: the caller may reuse it."""
        if self.kbuf is not None:
            self.kbuf[len(self._records)].copy_(K_flat)
        self._records.append((tau0, tau1, h, y, K, flags, accepted))

    def due(self) -> bool:
        return len(self._records) >= self.chunk

    def window(self) -> torch.Tensor:
        """The largest number of outputs any sample passed in the recorded iterations (a 0-d
        device tensor, to read with the loop's synchronisation); then :meth:`flush`."""
        self._hi = torch.searchsorted(self.taus, self._records[-1][1], right=True).view(-1)
        return (self._hi - self.lo).max()

    def flush(self, width: int) -> None:
        """Evaluate the outputs of the recorded iterations (``width`` from :meth:`window`)."""
        records, hi = self._records, self._hi
        active = torch.stack([r[5][0] for r in records])  # [M, B, 1]
        accepted = torch.stack([r[6] for r in records])
        self.n_steps += active.sum(0).view(-1)
        self.n_accepted += (active & accepted).sum(0).view(-1)
        if width > 0:
            self._interpolate(records, hi, width)
        self.lo = hi
        self._records, self._hi = [], None

    def _interpolate(self, records, hi, width: int) -> None:
        B, N, S, M = self.batch, self.numel, self.stages, len(records)
        j = self.lo[:, None] + torch.arange(width, device=hi.device)
        valid = j < hi[:, None]
        j = j.clamp_max(self.n_out - 1)
        tq = self.taus.gather(1, j)  # [B, W]
        ends = torch.cat([r[1] for r in records], 1)  # [B, M]
        m = torch.searchsorted(ends, tq).clamp_max(M - 1)
        starts = torch.cat([r[0] for r in records], 1)
        tau0, tau1 = starts.gather(1, m), ends.gather(1, m)
        # Invalid entries (past a sample's outputs in this chunk) get theta 0: finite weights,
        # so that no NaN reaches a gradient through them; they are dropped in finish().
        theta = torch.where(valid, (tq - tau0) / (tau1 - tau0), 0.0)
        h = torch.cat([r[2] for r in records], 1).gather(1, m) * self.sign  # the user's step
        # The record (m, b) of every output: its state [B * W, N] and stages [B * W, S, N].
        rows = (m * B + self.samples).view(-1)
        ys = torch.stack([r[3] for r in records]).view(M * B, N).index_select(0, rows)
        if self.kbuf is not None:  # row (m * S + s) * B + b of kflat: stage s of record (m, b)
            k_rows = ((m * (S * B) + self.samples).view(-1, 1) + self.stage_rows).view(-1)
            ks = self.kflat.index_select(0, k_rows).view(-1, S, N)
        else:
            ks = torch.stack([r[4] for r in records]).reshape(M * B, S, N).index_select(0, rows)
        vals = dense_values(self.polys_t, theta.view(-1), h.view(-1), ys, ks)
        # An invalid entry goes to a scratch row past the outputs (dropped in finish()): no
        # compaction (a nonzero and two index ops) for them.
        self.rows.append(torch.where(valid, j * B + self.samples, self.n_out * B).reshape(-1))
        self.vals.append(vals)

    def finish(self) -> torch.Tensor:
        """All outputs as ``[T, B * N]`` (NaN where a sample never got); flushes what is left."""
        if self._records:
            self.flush(int(self.window()))
        rows, vals = torch.cat(self.rows), torch.cat(self.vals)
        size = self.n_out * self.batch
        out = vals.new_full((size + 1, self.numel), math.nan)  # + the scratch row
        return out.index_copy(0, rows, vals)[:size].view(self.n_out, self.batch * self.numel)

    def counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Attempts and accepted steps of each sample (after :meth:`finish`)."""
        return self.n_steps, self.n_accepted
