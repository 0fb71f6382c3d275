"""The per-sample adaptive loop: every sample of a batch with its own step size.

The state's leading dimension is a batch of ``B`` independent problems, flattened to ``[B, N]``
(a flat ``[B * N]`` vector in the stage arithmetic). Each sample has its own time ``tau_b``
(solver time, increasing), step size ``h_b``, error ratio, accept/reject decision and status.
A step of all samples is one explicit Runge-Kutta step with per-sample ``h``:

    y_i = y0 + h_b * sum_j a_ij k_j,          k_i = func(t_b + c_i h_b, y_i)     (one call)
    ratio_b = h_b * || e^T K / (atol + rtol * max(|y0|, |y1|)) ||_RMS over sample b's elements

so each stage is ONE batched ``func`` call with ``t`` of shape ``[B, 1, ..., 1]``. The
controller (:mod:`node.per_sample_controllers`) is the joint loop's applied element-wise, by
default torchdiffeq's integral controller
``h_b <- h_b * clip(safety * ratio_b^(-1/k), lo_b, ifactor)`` with ``lo_b = 1`` after an
accepted step and ``dfactor`` after a rejected one; ``controller="pid"`` the PID controller.

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

``step_t``/``jump_t`` cut each sample's steps onto its own stops (:mod:`node.per_sample_stops`;
the direct gradient mode only, so far). Not yet here: step callbacks, progress bars (rejected or
warned about by :mod:`node.per_sample_solve`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass

import torch

from node.errors import Status
from node.options import AdaptiveOptions
from node.per_sample_controllers import make_sample_controller
from node.per_sample_outputs import DenseOutputs
from node.per_sample_stops import SampleStops, after_cut
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
    ``[B, 1, ..., 1]`` (float64) and the state already in its shape; returns the derivative in
    the state's shape. ``func`` receives ``t`` in ``options['dtype']`` (default: the state's).

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

    def __call__(self, t: torch.Tensor, y: torch.Tensor, perturb=None, toward=None
                 ) -> torch.Tensor:
        """``perturb`` (``[B, 1]`` bool, optional): the samples whose time is moved to the next
        representable one (in ``func``'s time dtype) towards ``toward`` (``+-inf``: a number,
        or ``[B, 1]``), just before or after a discontinuity (``jump_t``)."""
        self.calls += 1
        if self.time_dtype is not None:
            t = t.to(self.time_dtype)
        if perturb is not None:
            toward = toward.view(self.t_shape) if isinstance(toward, torch.Tensor) else toward
            t = torch.nextafter(t, torch.where(perturb.view(self.t_shape), toward, t))
        out = self.func(t, y)
        if not self._checked:
            self._cast = check_derivative(out, self.layout)
            self._checked = True
        return out if self._cast is None else out.to(self._cast)


class SampleErrorScale:
    """The error test of every sample: ``atol + rtol * max(|y0|, |y1|)`` scaling (rtol, atol:
    numbers or tensors broadcasting against ``[B, N]``; an infinite entry is left out of the
    test as in :mod:`node.tolerance`) and the RMS over each sample's ``N`` elements, or the
    user's ``norm``: called on the scaled errors of all samples at once, in the state's shape
    ``shape`` (``[B, ...]``), it returns each sample's norm, ``[B]``."""

    def __init__(self, rtol, atol, batch: int, numel: int, dtype, device, norm=None,
                 shape=None) -> None:
        rtol, atol = _exclude_infinite(rtol, atol)
        self.batch, self.numel = batch, numel
        self.user_norm, self.shape = norm, shape

        def full(tol):  # contiguous [B, N] tensors: no broadcasting in the elementwise ops
            if not isinstance(tol, torch.Tensor):
                return tol
            return tol.to(dtype).expand(batch, numel).contiguous()

        self.rtol = full(rtol)
        self.atol = torch.as_tensor(full(atol), dtype=dtype, device=device)
        self._tensor_rtol = isinstance(rtol, torch.Tensor)

    def scale(self, magnitude: torch.Tensor, out=None) -> torch.Tensor:
        """``atol + rtol * magnitude`` for a ``[B, N]`` magnitude."""
        if self._tensor_rtol:
            return torch.addcmul(self.atol, magnitude, self.rtol, out=out)
        return torch.add(self.atol, magnitude, alpha=self.rtol, out=out)

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        """The norm (RMS or the user's) of each sample of a ``[B, N]`` tensor, float64 ``[B]``."""
        if self.user_norm is not None:
            return self._user(x)
        return (torch.linalg.vector_norm(x, dim=1) / math.sqrt(self.numel)).double()

    def ratio(self, err: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """With a user norm: each sample's error ratio ``norm(h_b * err_b)`` (``err``: the
        scaled ``[B, N]`` error estimate without the step, overwritten), float64 ``[B, 1]``; as
        the joint loop, which calls a user norm on the error including the step."""
        return self._user(err.mul_(h)).view(self.batch, 1)

    def _user(self, x: torch.Tensor) -> torch.Tensor:
        out = self.user_norm(x.reshape(self.shape))
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (self.batch,):
            got = (f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor)
                   else type(out).__name__)
            raise ValueError(f"options['norm'] with per_sample=True must return one norm per "
                             f"sample, a tensor of shape ({self.batch},) (it receives the "
                             f"scaled errors of all samples, shaped like y0), got {got}")
        return out.double()

    def initial_step(self, field, tau0, user, y0, f0, order: int, direction) -> torch.Tensor:
        """Hairer's automatic first step (Solving ODEs I, sec. II.4) of every sample (``[B]``
        from ``[B, N]`` states), as :meth:`node.tolerance.ErrorScale.initial_step` computes it
        for one. One ``func`` call."""
        scale = self.scale(y0.abs())
        d0, d1 = self.norm(y0 / scale), self.norm(f0 / scale)
        finite = torch.isfinite(d0) & torch.isfinite(d1)
        small = ~finite | (d0 < 1e-5) | (d1 < 1e-5)
        h0 = torch.where(small, 1e-6, 0.01 * d0 / d1)
        step = (h0 * direction).to(y0.dtype)[:, None]
        f1 = field(user(tau0 + h0).view(field.t_shape), (y0 + step * f0).view(field.shape))
        f1 = f1.reshape(y0.shape)
        d2 = self.norm((f1 - f0) / scale) / h0
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


class _Work:
    """Where one iteration's intermediate results go when no autograd graph is recorded: fixed
    buffers, written with ``out=``, and every view of them made once per solve (a view costs a
    dispatch too). The stage matrix ``K`` is one of them: the loop records a copy of it. Its
    stage inputs use ``K[:i]^T a_i[:i]``, not the zero-padded ``a_i``: rows ``>= i`` still hold
    the previous attempt's stages, possibly NaN for a sample whose step overflowed, and
    ``0 * NaN`` would leak it into the retried step.

    With a graph, every attribute is ``None`` (``out=None``: allocate new; autograd saves some of
    these tensors, which an in-place write would invalidate) except the coefficients."""

    def __init__(self, buffered: bool, co: RKCoefficients, batch: int, numel: int, shape,
                 t_shape, forward: bool, dtype, device) -> None:
        stages = co.stages
        self.buffered = buffered
        names = ("K", "Kt", "K_bsn", "rows", "shaped", "kt", "T", "Tu", "times", "t1", "inc",
                 "inc_bn", "stage", "stage_shaped", "err", "err_bn", "abs0", "abs1", "norm", "rp",
                 "thr")
        for name in names:
            setattr(self, name, None)
        self.a = co.a
        self.shapes = ((batch, numel), shape, stages, batch * numel)
        if not buffered:
            return
        f64 = dict(dtype=torch.float64, device=device)
        self._stages(torch.zeros((stages, batch * numel), dtype=dtype, device=device))
        self.kt = [None] + [self.K[:i].T for i in range(1, stages)]
        self.K_bsn = self.K.view(stages, batch, numel).transpose(0, 1)
        self.a = [None] + [co.a[i][:i] for i in range(1, stages)]
        self.T = torch.empty((stages + 1, batch, 1), **f64)
        self.Tu = self.T if forward else torch.empty_like(self.T)
        self.times = [r.view(t_shape) for r in self.Tu.unbind(0)]
        self.t1 = self.T[stages]
        self.inc = torch.empty(batch * numel, dtype=dtype, device=device)
        self.inc_bn = self.inc.view(batch, numel)
        self.stage = torch.empty((batch, numel), dtype=dtype, device=device)
        self.stage_shaped = self.stage.view(shape)
        self.err = torch.empty_like(self.inc)
        self.err_bn = self.err.view(batch, numel)
        self.abs0, self.abs1 = torch.empty_like(self.stage), torch.empty_like(self.stage)
        self.norm = torch.empty((batch, 1), dtype=dtype, device=device)
        self.rp, self.thr = (torch.empty((batch, 1), **f64) for _ in range(2))

    def _stages(self, K: torch.Tensor) -> None:
        bn, shape, stages, _ = self.shapes
        self.K, self.Kt = K, K.T
        rows = [K[i] for i in range(stages)]
        self.rows = [r.view(bn) for r in rows]
        self.shaped = [r.view(shape) for r in rows]

    def new_stages(self, k0: torch.Tensor) -> None:
        """With a graph: a new zero stage matrix with row 0 = ``k0`` (rows written in place are
        recorded by autograd; the zero rows make ``K^T a_i`` with the padded ``a_i`` exact)."""
        bn, shape, stages, n = self.shapes
        K = k0.new_zeros((stages, n))
        K[0] = k0.reshape(n)
        self.K, self.Kt = K, K.T
        self.kt = [self.Kt] * stages


def integrate_per_sample(
    field: SampleField,
    y0: torch.Tensor,
    taus: torch.Tensor,
    direction,
    co: RKCoefficients,
    options: AdaptiveOptions,
    errors: SampleErrorScale,
    observer=None,
    tape=None,
    stops: SampleStops | None = None,
) -> SampleRun:
    """Integrate every sample from ``taus[:, 0]`` through its output times ``taus[b]``
    (``[B, T]`` float64 solver times, increasing rows; ``direction``: ``+-1.0`` or ``[B]``).

    ``observer(tau0, tau1, h, y0, y1, K, stepped)``, if given, sees every iteration (solver
    times and steps ``[B, 1]``, states ``[B, N]``, stages ``[B, S, N]``; ``stepped``: ``[B, 1]``
    the samples that took an accepted step) and returns ``[B, 1]`` the samples to stop there
    (successfully: a terminal event, :mod:`node.per_sample_events`).
    ``tape``: an object whose ``record(tau0, tau1, h, y, k0, taken)`` gets every iteration
    (:class:`node.per_sample_checkpoint.SampleTape`).
    ``stops``: each sample's ``step_t``/``jump_t`` (:mod:`node.per_sample_stops`)."""
    batch, n_out = taus.shape
    numel = y0.numel() // batch
    device, dtype = y0.device, y0.dtype
    f64 = dict(dtype=torch.float64, device=device)
    y = y0.reshape(batch, numel)
    forward = isinstance(direction, float) and direction == 1.0
    sign = direction if isinstance(direction, float) else direction[:, None]  # on [B, 1] times
    buffered = not torch.is_grad_enabled()
    outputs = DenseOutputs(taus, y, co.tableau, co.stages, sign, buffered)
    status = torch.zeros(batch, dtype=torch.int8, device=device)
    zeros = torch.zeros(batch, dtype=torch.long, device=device)
    automatic_first = options.first_step is None
    if n_out == 1:
        return SampleRun(outputs.finish(), status, taus[:, 0], torch.zeros(batch, **f64),
                         y, torch.full_like(y, math.nan), zeros, zeros, zeros, 0, 0)

    def user(solver_time: torch.Tensor) -> torch.Tensor:  # [B] times
        return solver_time if forward else solver_time * direction

    shape, t_shape = field.shape, field.t_shape
    tau = taus[:, :1]
    k0 = field(user(tau[:, 0]).view(t_shape), y.view(shape)).reshape(batch, numel)
    if automatic_first:
        with torch.no_grad():
            h = errors.initial_step(field, tau[:, 0], user, y, k0, co.order, direction)
    else:
        h = torch.full((batch,), options.first_step, **f64)
    h = h[:, None]
    min_step, max_step = options.min_step, options.max_step
    clamped = min_step > 0.0 or max_step < math.inf
    if clamped:
        h = h.clamp(min_step, max_step)
    t_stop = taus[:, -1:].clone()  # -inf for a failed sample: then `tau < t_stop` is False
    stages, fsal, reuse = co.stages, co.fsal, co.reuse_last
    last = stages - 1
    # Controller: safety * r^(-1/k) = (r * safety^-k)^(-1/k). The loop works with
    # rp = r * safety^-k (accepted: rp <= safety^-k), that factor and the RMS's 1/sqrt(N)
    # folded into b_error.
    pre = options.safety ** (-co.order)
    custom = errors.user_norm is not None  # then b_error as it is (the user's norm has its own)
    b_error = co.b_error if custom else co.b_error * (pre / math.sqrt(numel))
    controller = make_sample_controller(co.order, options, pre, batch, device)
    # The times of all stages and tau + h, of every sample, in one op: T = tau + c h.
    c_col = torch.tensor(tuple(co.c) + (1.0,), **f64).view(-1, 1, 1)
    nonneg = bool((tau >= 0).all())  # solver times then stay >= 0: |tau| = tau
    w = _Work(buffered, co, batch, numel, shape, t_shape, forward, dtype, device)
    if buffered:
        w.rows[0].copy_(k0)
    flags = torch.ones((2, batch, 1), dtype=torch.bool, device=device)  # [active, underflow]
    h_fail = torch.zeros_like(h)
    forced = torch.zeros((), dtype=torch.bool, device=device) if min_step > 0 else None
    a = w.a
    # Stops: the rows of T at the step's end (c = 1, and t1) are set exactly onto a stop landed
    # on; with jumps, those stages see the time just before it (in the solve's direction).
    ends = [i for i, c in enumerate(co.c) if c == 1.0] + [stages]
    jumps = stops is not None and stops.any_jump
    before, after = (-math.inf * sign, math.inf * sign) if jumps else (None, None)
    jump = None
    n_jumps = torch.zeros((batch, 1), dtype=torch.long, device=device) if jumps else None
    # Without a graph, the loop's no-autograd sections need no context switch.
    quiet = torch.no_grad() if not buffered else contextlib.nullcontext()
    iteration = 0

    while True:
        if iteration >= options.max_num_steps:
            # A running sample has made one attempt per iteration: all of them are out of budget.
            status = torch.where(flags[0].view(batch), _MAX_STEPS, status).to(torch.int8)
            h_fail = torch.where(flags[0], h, h_fail)
            break
        with quiet:
            if stops is None:
                h_eff = h
                T = torch.addcmul(tau, c_col, h, out=w.T)
            else:
                h_eff, nxt, land, jump = stops.cut(tau, h, tau + h)
                T = torch.addcmul(tau, c_col, h_eff, out=w.T)
                for r in ends:
                    torch.where(land, nxt, T[r], out=T[r])
            Tu = T if forward else torch.mul(T, sign, out=w.Tu)
            times = w.times if buffered else Tu.view(stages + 1, *t_shape).unbind(0)
            t1 = w.t1 if buffered else T[stages]
        hs = h_eff if forward else h_eff * sign
        if hs.dtype != dtype:
            hs = hs.to(dtype)
        if not buffered:
            w.new_stages(k0)
        K, kt, rows = w.K, w.kt, w.rows
        yi = y
        for i in range(1, stages):
            inc = torch.mv(kt[i], a[i], out=w.inc)
            yi = torch.addcmul(y, hs, w.inc_bn if buffered else inc.view(batch, numel),
                               out=w.stage)
            if jump is not None and i in ends:
                out = field(times[i], w.stage_shaped if buffered else yi.view(shape), jump,
                            before)
            else:
                out = field(times[i], w.stage_shaped if buffered else yi.view(shape))
            if buffered:
                w.shaped[i].copy_(out)
            else:
                K[i] = out.reshape(-1)
        if fsal:
            y1 = yi
        else:
            inc = torch.mv(w.Kt, co.b, out=w.inc)
            y1 = torch.addcmul(y, hs, w.inc_bn if buffered else inc.view(batch, numel),
                               out=w.stage)
        with quiet:
            err = torch.mv(w.Kt, b_error, out=w.err)
            err = w.err_bn if buffered else err.view(batch, numel)
            mag = torch.maximum(torch.abs(y, out=w.abs0), torch.abs(y1, out=w.abs1), out=w.abs0)
            err.div_(errors.scale(mag, out=w.abs1))
            if custom:
                rp = torch.mul(errors.ratio(err, h_eff), pre, out=w.rp)
            else:
                rp = torch.linalg.vector_norm(err, dim=1, keepdim=True, out=w.norm)
                rp = torch.mul(rp if rp.dtype == torch.float64 else rp.double(), h_eff,
                               out=w.rp)
            accepted = rp <= pre  # False for NaN too
            grow = accepted
            if forced is not None:
                # torchdiffeq's min_step: a step at the floor is accepted whatever its (finite)
                # error; the next one is then chosen as after a rejection (as the joint loop).
                at_floor = (torch.minimum(h, h_eff) <= min_step) & torch.isfinite(rp) \
                    & ~accepted & flags[0]
                forced = forced | at_floor.any()
                grow = rp < pre
                accepted = accepted | at_floor
            tau_next = torch.where(accepted, t1, tau)
        K_bsn = w.K_bsn if buffered else outputs.stages_view(K)
        if tape is not None:
            tape.record(tau, tau_next, h_eff, y, k0, flags[0] & accepted)
        outputs.record(tau, tau_next, h_eff, y, K_bsn, flags, accepted, K)
        y_start = y
        y = torch.where(accepted, y1, y)
        if observer is not None:
            stop = observer(tau, tau_next, h_eff, y_start, y, K_bsn, accepted & flags[0])
            t_stop = torch.where(stop, tau_next, t_stop)
        if reuse:
            if buffered:
                k0 = torch.where(accepted, rows[last], rows[0], out=rows[0])
            else:
                k0 = torch.where(accepted, K[last].view(batch, numel), k0)
        with quiet:
            active = tau_next < t_stop
            factor = controller.factor(rp, accepted, grow)
            h_try = h
            h = h_eff * factor
            if stops is not None:  # after a step cut short to land: the joint loop's cap
                h = after_cut(h, h_eff, h_try, rp, pre, -1.0 / co.order,
                              land & accepted & (h_eff < h_try))
            if clamped:
                h.clamp_(min_step, max_step)
            h.mul_(active)  # frozen: finished or failed samples step by 0
            # A step of at most 10 ulp of the time underflows. Inactive samples (h = 0) count
            # too, so trouble is: more such samples than inactive ones.
            small = h <= torch.mul(tau_next if nonneg else tau_next.abs(), _UNDERFLOW, out=w.thr)
            if forced is not None:
                small |= ~torch.isfinite(rp) & (h_try <= min_step) & active
            if jumps:  # landed on a jump: func again just after it (row 2, summed for the sync)
                jumped = jump & accepted & flags[0]
                flags = torch.stack((active, small, jumped))
            else:
                flags = torch.stack((active, small))
            counts = flags.sum((1, 2))
            flush = outputs.due()
            if flush:
                counts = torch.cat([counts, outputs.window().view(1)])
            counts = counts.tolist()
        tau = tau_next
        if not reuse:
            k0 = field((tau if forward else tau * sign).view(t_shape), y.view(shape),
                       jumped if jumps else None, after).reshape(batch, numel)
            if buffered:
                rows[0].copy_(k0)
        elif jumps and counts[2]:
            k_after = field((tau if forward else tau * sign).view(t_shape), y.view(shape),
                            jumped, after).reshape(batch, numel)
            k0 = torch.where(jumped, k_after, k0, out=rows[0] if buffered else None)
            n_jumps += jumped
        iteration += 1
        if flush:
            outputs.flush(counts[-1])
        if counts[1] > batch - counts[0]:
            # Rare path: samples whose step size underflowed fail (NON_FINITE if their last
            # error was not finite: the step keeps producing NaN or inf), and are frozen.
            with quiet:
                trouble = small & active
                code = torch.where(torch.isfinite(rp), _STEP_TOO_SMALL, _NON_FINITE)
                status = torch.where(trouble, code, status[:, None]).view(batch).to(torch.int8)
                h_fail = torch.where(trouble, h_eff * factor, h_fail)
                t_stop = torch.where(trouble, -math.inf, t_stop)
                flags = torch.stack((active & ~trouble, small))
                counts[0] = int(flags[0].sum())
        if not counts[0]:
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
    if n_jumps is not None and reuse:
        nfe = nfe + n_jumps.view(batch)
    h = h.view(batch)
    h_final = torch.where(status == 0, h, h_fail.view(batch))
    k0 = k0.clone() if buffered else k0
    return SampleRun(ys, status, tau.reshape(batch), h_final, y, k0, n_steps, n_accepted, nfe,
                     field.calls, iteration)
