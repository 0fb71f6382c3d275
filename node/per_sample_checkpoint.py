"""Checkpoint gradient mode of per-sample solves (``solve(..., per_sample=True,
gradient="checkpoint")``): the exact gradient of the computed solution, recomputing the steps.

The forward solve runs without a graph (the buffered loop of :mod:`node.per_sample`) while a
:class:`SampleTape` keeps every iteration's start time, end time, step, start state and (for
methods reusing their last stage) first stage, with a mask of the samples whose step was
accepted. Afterwards the tape is compacted: step ``m`` of sample ``b`` is its ``m``-th accepted
step, so the replay runs ``M = max_b (accepted steps of b)`` batched steps, all samples
together, a sample past its last step frozen by a step size of 0 (as in the forward loop).

The backward pass replays the steps in reverse, one graph at a time, and chains the
vector-Jacobian products (as :mod:`node.checkpoint` does for one sample):

    (g_{y_m}, g_{k_m}, g_theta) += VJP of step m at (g_{y_{m+1}}, g_{k_{m+1}}, g_outputs in m)

where the outputs inside step ``m`` (sample ``b``'s output times in ``(tau0, tau1]``) are
interpolated again as the forward pass did (:func:`node.per_sample_outputs.dense_values`).
The first step evaluates its first stage itself, so that its dependence on ``y0`` is
differentiated. Parameters are those of ``func`` when it is an ``nn.Module`` and ``func``'s
graph reaches no other leaf (rebound by name in the replay under
``torch.func.functional_call``, as in :mod:`node.checkpoint`); otherwise (a closure over a
tensor), and for gradients of gradients, the replay runs forward through all steps in one
graph (each step under :func:`torch.utils.checkpoint.checkpoint` in the first case).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from node.checkpoint import (
    _CompensatedSum,
    _module_parameters,
    _reaches_other_leaves,
    parameters_bound,
)
from node.interpolation import dense_polynomials
from node.per_sample import SampleErrorScale, SampleField, SampleRun, integrate_per_sample
from node.per_sample_outputs import dense_values
from node.runge_kutta import RKCoefficients


class SampleTape:
    """Every iteration of the forward loop (the loop calls :meth:`record`)."""

    def __init__(self, reuse_last: bool) -> None:
        self.reuse_last = reuse_last
        self.rows: list[tuple] = []

    def record(self, tau0, tau1, h, y, k0, taken) -> None:
        # y and the times are fresh tensors each iteration; k0 may be a reused buffer.
        self.rows.append((tau0, tau1, h, y, k0.clone() if self.reuse_last else None, taken))

    def compact(self, run: SampleRun) -> TapedSteps:
        """Each sample's accepted steps, padded with frozen steps at its final state."""
        rows, self.rows = self.rows, []
        batch, numel = run.y.shape
        if not rows:
            return TapedSteps(0, *(None,) * 6)
        taken = torch.stack([r[5] for r in rows]).view(len(rows), batch)
        counts = taken.sum(0)
        steps = int(counts.max())
        # The iterations of each sample's accepted steps, in order (a stable sort puts them
        # first); entries past a sample's count are padding.
        order = torch.sort((~taken).to(torch.uint8), dim=0, stable=True).indices[:steps]
        real = (torch.arange(steps, device=counts.device)[:, None] < counts)[..., None]
        cols = torch.arange(batch, device=counts.device)

        def pick(i: int, pad: torch.Tensor) -> torch.Tensor:
            stacked = torch.stack([r[i].view(batch, -1) for r in rows])
            return torch.where(real, stacked[order, cols], pad.view(batch, -1))

        tau = run.tau.view(batch, 1)
        k0 = None
        if self.reuse_last:
            # A padding step never uses its k0 (h = 0); keep it finite for the VJP's sake.
            k0 = pick(4, torch.nan_to_num(run.k0, 0.0, 0.0, 0.0))
        return TapedSteps(steps, real, pick(0, tau), pick(1, tau), pick(2, torch.zeros_like(tau)),
                          pick(3, run.y), k0)


@dataclass
class TapedSteps:
    """``M`` compacted steps: ``real``: ``[M, B, 1]`` (False: padding), times and steps
    ``[M, B, 1]`` float64 solver times, states and first stages ``[M, B, N]``."""

    count: int
    real: torch.Tensor | None
    tau0: torch.Tensor | None
    tau1: torch.Tensor | None
    h: torch.Tensor | None
    y: torch.Tensor | None
    k0: torch.Tensor | None  # None: the method evaluates its first stage in every step


class SampleReplay:
    """Recomputes compacted steps, and the outputs inside them, with autograd."""

    def __init__(self, field: SampleField, co: RKCoefficients, taus: torch.Tensor,
                 direction) -> None:
        self.field, self.co, self.taus = field, co, taus.contiguous()
        self.batch, self.n_out = taus.shape
        self.forward = isinstance(direction, float) and direction == 1.0
        self.sign = direction if isinstance(direction, float) else direction[:, None]
        device = taus.device
        self.c_col = torch.tensor(co.c, dtype=torch.float64, device=device).view(-1, 1, 1)
        polys = dense_polynomials(co.tableau)
        self.polys_t = torch.tensor(polys, dtype=torch.float64, device=device).T
        self.cols = torch.arange(self.batch, device=device)[:, None]

    def step(self, tau0, h, real, y, k0):
        """``(y1, K)`` (``[B, N]``, ``[B, S, N]``) of one batched step from ``y`` (``k0=None``:
        evaluate the first stage); padding samples (``real`` False) keep ``y``."""
        field, co = self.field, self.co
        batch, numel = y.shape
        times = torch.addcmul(tau0, self.c_col, h)  # [S, B, 1] stage times
        if not self.forward:
            times = times * self.sign
        hs = (h if self.forward else h * self.sign).to(y.dtype)
        shape, t_shape = field.shape, field.t_shape
        if k0 is None:
            k0 = field(times[0].view(t_shape), y.view(shape))
        # As the forward loop with a graph: a zero stage matrix whose rows are written in
        # place (recorded by autograd), so each stage input is one mv with the padded a_i.
        K = y.new_zeros((co.stages, batch * numel))
        K[0] = k0.reshape(-1)
        Kt = K.T
        yi = y
        for i in range(1, co.stages):
            yi = torch.addcmul(y, hs, torch.mv(Kt, co.a[i]).view(batch, numel))
            K[i] = field(times[i].view(t_shape), yi.view(shape)).reshape(-1)
        y1 = yi if co.fsal else torch.addcmul(y, hs, torch.mv(Kt, co.b).view(batch, numel))
        K = K.view(co.stages, batch, numel).transpose(0, 1)  # [B, S, N]
        # A padding step has h = 0 and so returns y, unless func is not finite there (a failed
        # sample's last state): where() keeps that out of the values and the gradients.
        return torch.where(real, y1, y), K

    def windows(self, steps: TapedSteps) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """The output indices ``[lo, hi)`` of every step and sample (``[B, M]``: the output
        times in ``(tau0, tau1]``, as the forward pass located them) and each step's width."""
        tau0 = steps.tau0.view(steps.count, self.batch).T.contiguous()
        tau1 = steps.tau1.view(steps.count, self.batch).T.contiguous()
        lo = torch.searchsorted(self.taus, tau0, right=True)
        hi = torch.searchsorted(self.taus, tau1, right=True)
        return lo, hi, (hi - lo).amax(0).tolist()

    def outputs(self, tau0, tau1, h, y, K, lo, hi, width: int):
        """The outputs inside one step: values ``[B, W, N]``, their output indices ``[B, W]``
        (clamped) and validity."""
        batch, numel = y.shape
        j = lo[:, None] + torch.arange(width, device=lo.device)
        valid = j < hi[:, None]
        j = j.clamp_max(self.n_out - 1)
        tq = self.taus.gather(1, j)
        theta = torch.where(valid, (tq - tau0) / (tau1 - tau0), 0.0)
        hu = (h * self.sign).expand(batch, width)
        rows = batch * width
        vals = dense_values(self.polys_t, theta.reshape(-1), hu.reshape(-1),
                            y[:, None].expand(batch, width, numel).reshape(rows, numel),
                            K[:, None].expand(batch, width, *K.shape[1:]).reshape(rows,
                                                                                  *K.shape[1:]))
        return vals.view(batch, width, numel), j, valid

    def whole(self, steps: TapedSteps, y0: torch.Tensor, checkpointed: bool) -> torch.Tensor:
        """All outputs ``[T, B * N]`` recomputed in one graph from ``y0`` (``[B, N]``); NaN
        where a sample never got (a failed one)."""
        batch, numel = y0.shape
        rows, vals = [self.cols.view(-1)], [y0]
        y, last = y0, None
        step = self.step
        if checkpointed:
            def step(*args):
                return checkpoint(self.step, *args, use_reentrant=False, preserve_rng_state=False)
        if steps.count:
            lo, hi, widths = self.windows(steps)
        for m in range(steps.count):
            k0 = last if m > 0 and steps.k0 is not None else None
            tau0, tau1, h = steps.tau0[m], steps.tau1[m], steps.h[m]
            y1, K = step(tau0, h, steps.real[m], y, k0)
            if widths[m]:
                out, j, valid = self.outputs(tau0, tau1, h, y, K, lo[:, m], hi[:, m], widths[m])
                keep = valid.view(-1).nonzero().squeeze(1)
                rows.append((j * batch + self.cols).view(-1)[keep])
                vals.append(out.view(-1, numel)[keep])
            y, last = y1, K[:, -1]
        full = y0.new_full((self.n_out * batch, numel), math.nan)
        return full.index_copy(0, torch.cat(rows), torch.cat(vals)).view(self.n_out, -1)


@dataclass
class _Job:
    field: SampleField
    y0: torch.Tensor
    taus: torch.Tensor
    direction: float | torch.Tensor
    co: RKCoefficients
    options: object
    errors: SampleErrorScale
    replay: SampleReplay
    module: torch.nn.Module | None = None
    param_names: list[str] | None = None
    run: SampleRun | None = None
    steps: TapedSteps | None = None
    stats: dict | None = None  # the solution's statistics, for ``n_calls_backward``

    def solve(self) -> torch.Tensor:
        """The forward solve without a graph; keeps the compacted tape."""
        tape = SampleTape(self.co.reuse_last)
        with torch.no_grad():
            self.run = integrate_per_sample(self.field, self.y0, self.taus, self.direction,
                                            self.co, self.options, self.errors, tape=tape)
            self.steps = tape.compact(self.run)
        return self.run.ys

    def record_backward(self, calls: int) -> None:
        if self.stats is not None:
            self.stats["n_calls_backward"] = self.stats.get("n_calls_backward", 0) + calls


class _TapedSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, job: _Job, y0: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        ys = job.solve()
        ctx.job = job
        ctx.save_for_backward(y0, *params)
        return ys

    @staticmethod
    def backward(ctx, g_ys: torch.Tensor):
        job: _Job = ctx.job
        y0, *params = ctx.saved_tensors
        before = job.field.calls
        with parameters_bound(job.module, job.param_names, params, job.field):
            if torch.is_grad_enabled():  # gradients of gradients: one differentiable graph
                with torch.enable_grad():
                    ys = job.replay.whole(job.steps, y0.reshape(job.run.y.shape), False)
                    inputs = [y0, *params]
                    wanted = [x for x in inputs if x.requires_grad]
                    got = iter(torch.autograd.grad(ys, wanted, g_ys, create_graph=True,
                                                   allow_unused=True))
                grads = [next(got) if x.requires_grad else None for x in inputs]
            else:
                grads = _backward_by_step(job, g_ys, y0, params)
        job.record_backward(job.field.calls - before)
        return (None, *grads)


def _backward_by_step(job: _Job, g_ys: torch.Tensor, y0: torch.Tensor, params) -> list:
    steps, replay = job.steps, job.replay
    batch, numel = job.run.y.shape
    g3 = g_ys.view(g_ys.shape[0], batch, numel)
    g_y = g3.new_zeros(batch, numel)
    g_k = None
    sums = [_CompensatedSum() for _ in params]
    if steps.count:
        lo, hi, widths = replay.windows(steps)
    for m in reversed(range(steps.count)):
        tau0, tau1, h = steps.tau0[m], steps.tau1[m], steps.h[m]
        with torch.enable_grad():
            y = steps.y[m].detach().requires_grad_(True)
            k0 = None if m == 0 or steps.k0 is None else steps.k0[m].detach().requires_grad_(True)
            y1, K = replay.step(tau0, h, steps.real[m], y, k0)
            roots, seeds = [y1], [g_y]
            if g_k is not None:
                roots.append(K[:, -1])
                seeds.append(g_k)
            if widths[m]:
                out, j, valid = replay.outputs(tau0, tau1, h, y, K, lo[:, m], hi[:, m],
                                               widths[m])
                roots.append(out)
                seeds.append(g3[j, replay.cols] * valid[..., None])
        inputs = [y] + ([k0] if k0 is not None else []) + list(params)
        pairs = [(r, g) for r, g in zip(roots, seeds, strict=True) if r.requires_grad]
        grads = (torch.autograd.grad([r for r, _ in pairs], inputs, [g for _, g in pairs],
                                     allow_unused=True, retain_graph=True)
                 if pairs else (None,) * len(inputs))
        g_y = grads[0] if grads[0] is not None else torch.zeros_like(g_y)
        g_k = None
        if k0 is not None:
            g_k = grads[1] if grads[1] is not None else torch.zeros_like(g_y)
        for total, g in zip(sums, grads[len(inputs) - len(params):], strict=True):
            total.add(g)
    g_y0 = (g_y + g3[0]).view_as(y0)
    return [g_y0 if y0.requires_grad else None,
            *(total.value if p.requires_grad else None
              for total, p in zip(sums, params, strict=True))]


def integrate_checkpointed(func, field: SampleField, y0: torch.Tensor, taus, direction,
                           co: RKCoefficients, options, errors) -> tuple[SampleRun, dict | None]:
    """The forward solve of the checkpoint mode: the run, its ``ys`` attached to the graph,
    and the job (whose ``stats`` the caller sets to collect ``n_calls_backward``)."""
    replay = SampleReplay(field, co, taus, direction)
    job = _Job(field, y0, taus, direction, co, options, errors, replay)
    named = _module_parameters(func)
    if named is not None:
        params = named[1]
        probe = y0 if y0.requires_grad else y0.detach().requires_grad_(True)
        t0 = taus[:, 0] if replay.forward else taus[:, 0] * direction
        k0 = field(t0.view(field.t_shape), probe)
        if not _reaches_other_leaves(k0, probe, params):
            job.module, job.param_names = func, named[0]
            ys = _TapedSolve.apply(job, y0, *params)
            job.run.ys = ys
            return job.run, job
    # func reaches tensors other than its parameters (or is no module): run the replay in the
    # forward pass too, each step checkpointed, so that autograd finds every input itself.
    ys = job.solve()
    calls = field.calls
    job.run.ys = replay.whole(job.steps, y0.reshape(job.run.y.shape), True)
    field.calls = calls
    return job.run, None
