"""The per-sample adaptive loop: every sample of a batch with its own step size.

The state's leading dimension is a batch of ``B`` independent problems, flattened to ``[B, N]``
(a flat ``[B * N]`` vector in the stage arithmetic). Each sample has its own time ``tau_b``
(solver time, increasing), step size ``h_b``, error ratio, accept/reject decision and status.
A step of all samples is one explicit Runge-Kutta step with per-sample ``h``:

    y_i = y0 + h_b * sum_j a_ij k_j,          k_i = func(t_b + c_i h_b, y_i)     (one call)
    ratio_b = h_b * || e^T K / (atol + rtol * max(|y0|, |y1|)) ||_RMS over sample b's elements

so each stage is ONE batched ``func`` call with ``t`` of shape ``[B, 1, ..., 1]``. The
controller is torchdiffeq's integral controller applied element-wise:
``h_b <- h_b * clip(safety * ratio_b^(-1/k), lo_b, ifactor)`` with ``lo_b = 1`` after an
accepted step and ``dfactor`` after a rejected one.

Design decisions:

* Finished and failed samples are frozen by a step size of 0: every stage of theirs is
  ``func`` at their own (finite) last state, so their rows stay finite, their "step" leaves them
  where they are, and no NaN can reach a gradient through a masked ``torch.where``. They still
  ride along in the batched calls (masking, not compaction): on small problems the cost of a
  call hardly depends on the batch size, while compacting the active set would cost a gather
  and a scatter per step and a host synchronisation to size them.
* One host synchronisation per iteration: the "is any sample still running" test, which also
  carries a rare-path flag (some sample's step size underflowed). The step budget needs none:
  a running sample has made exactly as many attempts as the loop has iterations.
* Output times never shorten a step (as in :mod:`node.adaptive`); they are located and
  interpolated on the device, per chunk of iterations, by :mod:`node.per_sample_outputs`.
* Step sizes and times are float64 tensors whatever the state's dtype, and never differentiated
  (the gradient is that of the discretised solution for the steps taken, as in the joint loop).

Not yet here: ``step_t``/``jump_t``, a user ``norm``, the PID controller, step callbacks,
progress bars (rejected or warned about by :mod:`node.per_sample_solve`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from node.errors import Status
from node.options import AdaptiveOptions
from node.per_sample_outputs import DenseOutputs
from node.runge_kutta import RKCoefficients
from node.state import StateLayout, check_derivative
from node.tolerance import _exclude_infinite

# Status codes of the per-sample status tensor, in this order.
CODES = (Status.SUCCESS, Status.MAX_STEPS, Status.STEP_TOO_SMALL, Status.NON_FINITE)
_MAX_STEPS, _STEP_TOO_SMALL, _NON_FINITE = 1, 2, 3
# A step is too small when it is at most 10 ulp of the time (the joint loop's rule); with
# tensors, ulp(tau) is bounded by eps * |tau| (within a factor 2, erring towards failing early).
_UNDERFLOW = 10.0 * 2.0**-52


class SampleField:
    """``func`` seen from the per-sample loop: called with times already shaped
    ``[B, 1, ..., 1]`` (float64) and a flat ``[B * N]`` state; returns the derivative in the
    state's shape. ``func`` receives ``t`` in ``options['dtype']`` (default: the state's).

    The first call checks ``func``'s output against the state (shape, floating dtype; another
    floating dtype is cast to the state's, as in :class:`node.state.FlatVectorField`)."""

    def __init__(self, func, layout: StateLayout, time_dtype: torch.dtype | None) -> None:
        self.func = func
        self.layout = layout
        self.shape = layout.shapes[0]
        self.t_shape = (self.shape[0],) + (1,) * (len(self.shape) - 1)
        time_dtype = time_dtype if time_dtype is not None else layout.dtype
        self.time_dtype = None if time_dtype == torch.float64 else time_dtype
        self.calls = 0  # batched calls
        self._checked = False
        self._cast = None

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.time_dtype is not None:
            t = t.to(self.time_dtype)
        out = self.func(t, y.view(self.shape))
        if not self._checked:
            self._cast = check_derivative(out, self.layout)
            self._checked = True
        return out if self._cast is None else out.to(self._cast)


class SampleErrorScale:
    """The error test of every sample: ``atol + rtol * max(|y0|, |y1|)`` scaling (rtol, atol:
    numbers or tensors broadcasting against ``[B, N]``; an infinite entry is left out of the
    test as in :mod:`node.tolerance`) and the RMS over each sample's ``N`` elements."""

    def __init__(self, rtol, atol, batch: int, numel: int, dtype, device) -> None:
        rtol, atol = _exclude_infinite(rtol, atol)
        self.batch, self.numel = batch, numel

        def flat(tol):  # flat [B * N] tensors: no broadcasting in the elementwise ops
            if not isinstance(tol, torch.Tensor):
                return tol
            return tol.to(dtype).expand(batch, numel).reshape(-1)

        self.rtol = flat(rtol)
        self.atol = torch.as_tensor(flat(atol), dtype=dtype, device=device)
        self._tensor_rtol = isinstance(rtol, torch.Tensor)

    def scale(self, magnitude: torch.Tensor) -> torch.Tensor:
        """``atol + rtol * magnitude`` for a flat ``[B * N]`` magnitude."""
        if self._tensor_rtol:
            return torch.addcmul(self.atol, magnitude, self.rtol)
        return torch.add(self.atol, magnitude, alpha=self.rtol)

    def rms(self, x: torch.Tensor) -> torch.Tensor:
        """RMS of each sample of a ``[B, N]`` tensor, as float64 ``[B]``."""
        return (torch.linalg.vector_norm(x, dim=1) / math.sqrt(self.numel)).double()

    def ratio(self, K, b_error, h, y0, y1):
        """Error ratios ``[B]`` of a step from flat ``y0`` to flat ``y1`` (``b_error`` already
        divided by ``sqrt(N)``, ``h`` the float64 ``[B]`` step sizes)."""
        err = torch.mv(K.T, b_error)
        err.div_(self.scale(torch.maximum(y0.abs(), y1.abs())))
        return torch.linalg.vector_norm(err.view(self.batch, self.numel), dim=1).mul_(h)

    def initial_step(self, field, tau0, user, y0, f0, order: int, direction) -> torch.Tensor:
        """Hairer's automatic first step (Solving ODEs I, sec. II.4) of every sample, as
        :meth:`node.tolerance.ErrorScale.initial_step` computes it for one. One ``func`` call."""
        shape = (self.batch, self.numel)
        scale = self.scale(y0.abs()).view(shape)
        y0, f0 = y0.view(shape), f0.reshape(shape)
        d0, d1 = self.rms(y0 / scale), self.rms(f0 / scale)
        finite = torch.isfinite(d0) & torch.isfinite(d1)
        small = ~finite | (d0 < 1e-5) | (d1 < 1e-5)
        h0 = torch.where(small, 1e-6, 0.01 * d0 / d1)
        step = (h0 * direction).to(y0.dtype)[:, None]
        f1 = field(user(tau0 + h0).view(field.t_shape), (y0 + step * f0).reshape(-1))
        f1 = f1.reshape(shape)
        d2 = self.rms((f1 - f0) / scale) / h0
        flat = (d1 <= 1e-15) & (d2 <= 1e-15)
        h1 = torch.where(flat, torch.clamp_min(h0 * 1e-3, 1e-6),
                         (0.01 / torch.maximum(d1, d2)) ** (1.0 / order))
        return torch.where(finite & torch.isfinite(d2), torch.minimum(100 * h0, h1), h0)


@dataclass
class SampleRun:
    """What the per-sample loop returns (all per-sample tensors are ``[B]``)."""

    ys: torch.Tensor  # [T, B * N] flat outputs; NaN where a failed sample never got
    status: torch.Tensor  # int8 codes into CODES
    tau: torch.Tensor  # solver time reached
    h: torch.Tensor  # the step size proposed (on failure: the step that failed)
    y: torch.Tensor  # the last state, [B, N]
    k0: torch.Tensor  # func at it, [B, N]
    n_steps: torch.Tensor
    n_accepted: torch.Tensor
    nfe: torch.Tensor
    calls: int  # batched func calls
    iterations: int


def integrate_per_sample(
    field: SampleField,
    y0: torch.Tensor,
    taus: torch.Tensor,
    direction,
    co: RKCoefficients,
    options: AdaptiveOptions,
    errors: SampleErrorScale,
) -> SampleRun:
    """Integrate every sample from ``taus[:, 0]`` through its output times ``taus[b]``
    (``[B, T]`` float64 solver times, increasing rows; ``direction``: ``+-1.0`` or ``[B]``)."""
    batch, n_out = taus.shape
    numel = y0.numel() // batch
    device = y0.device
    y = y0.reshape(-1)
    tau = taus[:, 0]
    outputs = DenseOutputs(taus, y.view(batch, numel), co.tableau, co.stages)
    status = torch.zeros(batch, dtype=torch.int8, device=device)
    zeros = torch.zeros(batch, dtype=torch.long, device=device)
    automatic_first = options.first_step is None
    if n_out == 1:
        return SampleRun(outputs.finish(), status, tau, torch.zeros_like(tau), y.view(batch, -1),
                         torch.full_like(y, math.nan).view(batch, -1), zeros, zeros, zeros, 0, 0)

    forward = isinstance(direction, float) and direction == 1.0

    def user(solver_time: torch.Tensor) -> torch.Tensor:
        return solver_time if forward else solver_time * direction

    t_shape = field.t_shape
    k0 = field(user(tau).view(t_shape), y).reshape(-1)
    if automatic_first:
        with torch.no_grad():
            h = errors.initial_step(field, tau, user, y, k0, co.order, direction)
    else:
        h = torch.full_like(tau, options.first_step)
    min_step, max_step = options.min_step, options.max_step
    clamped = min_step > 0.0 or max_step < math.inf
    if clamped:
        h = h.clamp(min_step, max_step)
    t_stop = taus[:, -1].clone()  # -inf for a failed sample: then `tau < t_stop` is False
    stages, a, c, fsal, reuse = co.stages, co.a, co.c, co.fsal, co.reuse_last
    b_error = co.b_error / math.sqrt(numel)
    dtype = y.dtype
    # Each sample's scalars spread over its N elements by one index_select (cheaper than
    # broadcasting a [B, 1] tensor in every elementwise op).
    spread = torch.arange(batch, device=device).repeat_interleave(numel)
    # Controller: safety * r^(-1/k) = (r * safety^-k)^(-1/k).
    exponent = -1.0 / co.order
    pre = options.safety ** (-co.order)
    ifactor, dfactor = options.ifactor, options.dfactor
    active = torch.ones(batch, dtype=torch.bool, device=device)
    h_fail = torch.zeros_like(h)
    forced = torch.zeros((), dtype=torch.bool, device=device) if min_step > 0 else None
    shape = field.shape
    iteration = 0

    while True:
        if iteration >= options.max_num_steps:
            # A running sample has made one attempt per iteration: all of them are out of budget.
            status = torch.where(active, _MAX_STEPS, status).to(torch.int8)
            h_fail = torch.where(active, h, h_fail)
            break
        t1 = tau + h
        h_user = h if forward else h * direction
        hs = h_user.to(dtype)
        if numel > 1:
            hs = hs.index_select(0, spread)
        t0_user = user(tau).view(t_shape)
        t1_user = user(t1).view(t_shape)
        ht = h_user.view(t_shape)
        K = y.new_zeros((stages, y.shape[0]))
        Kt = K.T
        K_shaped = K.view(stages, *shape)
        K[0] = k0
        yi = y
        for i in range(1, stages):
            yi = torch.addcmul(y, hs, torch.mv(Kt, a[i]))
            ti = t1_user if c[i] == 1.0 else torch.add(t0_user, ht, alpha=c[i])
            K_shaped[i] = field(ti, yi)
        y1 = yi if fsal else torch.addcmul(y, hs, torch.mv(Kt, co.b))
        with torch.no_grad():
            ratio = errors.ratio(K, b_error, h, y, y1)
            accepted = ratio <= 1.0  # False for NaN too
            grow = accepted  # lo = 1 after an accepted step (ratio == 1 exactly: see below)
            if forced is not None:
                # torchdiffeq's min_step: a step at the floor is accepted whatever its (finite)
                # error; the next one is then chosen as after a rejection (as the joint loop).
                at_floor = (h <= min_step) & torch.isfinite(ratio) & ~accepted & active
                forced = forced | at_floor.any()
                grow = ratio < 1.0
                accepted = accepted | at_floor
            tau_new = torch.where(accepted, t1, tau)
        outputs.record(tau, tau_new, h_user, y, K, active, accepted)
        acc = accepted.index_select(0, spread) if numel > 1 else accepted
        y = torch.where(acc, y1, y)
        if reuse:
            k0 = torch.where(acc, K[-1], k0)
        with torch.no_grad():
            tau = tau_new
            active = tau < t_stop
            # The integral controller, element-wise: a NaN or inf ratio gives dfactor (fmax
            # drops the NaN), a zero ratio ifactor. (torchdiffeq's lo is 1 only for ratio < 1;
            # ratio == 1 exactly, a measure-zero case, grows by 1 here instead of 0.9.)
            factor = torch.fmax((ratio * pre).pow_(exponent), grow).clamp_(dfactor, ifactor)
            h_try = h
            h = h * factor
            if clamped:
                h = h.clamp_(min_step, max_step)
            h = h.mul_(active)  # frozen: finished or failed samples step by 0
            # A step of at most 10 ulp of the time underflows. Inactive samples (h = 0) count
            # too, so trouble is: more such samples than inactive ones.
            small = h <= tau.abs().mul_(_UNDERFLOW)
            if forced is not None:
                small = small | (~torch.isfinite(ratio) & (h_try <= min_step) & active)
            flush = outputs.due()
            checks = [active, small]
            if flush:
                checks.append(outputs.window())
            counts = torch.stack(checks).sum(1) if not flush else torch.cat(
                [torch.stack(checks[:2]).sum(1), checks[2].view(1)])
            flags = counts.tolist()
        if not reuse:
            k0 = field(user(tau).view(t_shape), y).reshape(-1)
        iteration += 1
        if flush:
            outputs.flush(flags[2])
        if flags[1] > batch - flags[0]:
            # Rare path: samples whose step size underflowed fail (NON_FINITE if their last
            # error was not finite: the step keeps producing NaN or inf), and are frozen.
            with torch.no_grad():
                trouble = small & active
                code = torch.where(torch.isfinite(ratio), _STEP_TOO_SMALL, _NON_FINITE)
                status = torch.where(trouble, code, status).to(torch.int8)
                h_fail = torch.where(trouble, h_try * factor, h_fail)
                t_stop = torch.where(trouble, -math.inf, t_stop)
                active = active & ~trouble
                flags[0] = int(active.sum())
        if not flags[0]:
            break

    if forced is not None and bool(forced):
        warnings.warn(
            f"a step of size <= min_step={min_step:.3g} was accepted with an error ratio > 1 "
            "for some sample, as torchdiffeq does; the solution may not meet rtol/atol there",
            UserWarning, stacklevel=3)
    ys = outputs.finish()
    n_steps, n_accepted = outputs.counts()
    per_attempt = stages - 1
    nfe = 1 + int(automatic_first) + per_attempt * n_steps + (0 if reuse else n_accepted)
    h_final = torch.where(status == 0, h, h_fail)
    return SampleRun(ys, status, tau, h_final, y.view(batch, -1),
                     k0.view(batch, -1), n_steps, n_accepted, nfe, field.calls, iteration)
