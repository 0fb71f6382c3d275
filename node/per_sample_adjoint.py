"""The continuous adjoint of per-sample solves (``solve(..., per_sample=True,
gradient="adjoint")``, ``odeint_adjoint(..., per_sample=True)``).

Every sample ``b`` solves its augmented system backwards, from its last output time to its
first, with its own step size, error test and accept/reject decision (as the forward loop of
:mod:`node.per_sample`):

    dy_b/dt = f_b(t, y_b),        da_b/dt = -a_b^T df_b/dy_b,

``a_b`` jumping by ``dL/dy_b(t_bi)`` at each of its output times, where ``y_b`` is also reset
to the forward value (as :mod:`node.adjoint` does). The error of a step is
``max(RMS(e_y / scale_y), RMS(e_a / scale_a))`` over the sample's elements.

The parameter adjoint ``dL/dp = sum_b int -a_b^T df_b/dp dt`` is shared by all samples, so it
is not part of the per-sample state: it is integrated as a quadrature with the steps' own
stages. An accepted step of sample ``b`` with user step ``hs_b`` adds
``sum_j b_j hs_b (-a_bj^T df/dp (t_bj, y_bj))``; summed over the batch, that is one
vector-Jacobian product per stage with the cotangent ``a_bj`` scaled by ``-hs_b b_j`` (zero for
a rejected or finished sample), no per-sample parameter copies. Because a step is accepted
only after its last stage, the parameter products of a step run after the decision, in one
``autograd.grad`` call over the step's retained stage graphs; the state products ``a^T df/dy``
run at each stage (the stages need them).

Design decisions:

* The parameter adjoint never enters the error test (it is no per-sample quantity): the
  default norm and ``adjoint_options=dict(norm="seminorm")`` are the same here.
* Every backward step evaluates its first stage (no first-same-as-last reuse): the parameter
  weight of the first stage depends on the step size, which is chosen after the previous step's
  last stage, and a jump resets ``y`` and ``a`` anyway.
* A step that would pass the sample's next output time is shortened to land on it; the next
  step then starts from the larger of the controller's proposal and the unshortened step.
* The first backward step is each sample's last accepted forward step (or ``first_step``).
* Finished samples are frozen by a step size of 0 and ride along (masking, not compaction).
* A sample that failed in the forward solve (``on_failure="return"``) starts from the last
  output time it reached; the outputs it never reached (NaN) take no part.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from node.adjoint import resolve_params
from node.adjoint_diagnosis import growth_hint
from node.adjoint_state import param_gradients, real_flat
from node.errors import SolverError, Status
from node.per_sample import _UNDERFLOW, SampleField, SampleRun, integrate_per_sample
from node.runge_kutta import RKCoefficients


class _LastStep:
    """A tape for :func:`integrate_per_sample` keeping only each sample's last accepted step."""

    def __init__(self) -> None:
        self.h = None

    def record(self, tau0, tau1, h, y, k0, taken) -> None:
        self.h = torch.where(taken, h, 0.0 if self.h is None else self.h)


class SampleAdjoint:
    """One per-sample adjoint solve: the forward solve (without a graph) and the backward one.

    ``forward``: the forward field, coefficients, options and error scale; ``backward``: the
    backward method's coefficients, its options, and its error scale (adjoint tolerances)."""

    def __init__(self, func, field: SampleField, inputs, forward, backward, params) -> None:
        self.func, self.field, self.inputs = func, field, inputs
        self.co, self.options, self.errors = forward
        self.back_co, self.back_options, self.back_errors = backward
        self.params = params
        self.run: SampleRun | None = None
        self.last_h = None
        self.stats: dict | None = None

    def forward(self, y0: torch.Tensor) -> torch.Tensor:
        tape = _LastStep()
        self.run = integrate_per_sample(self.field, y0, self.inputs.taus, self.inputs.direction,
                                        self.co, self.options, self.errors, tape=tape)
        self.last_h = tape.h
        return self.run.ys

    def backward(self, ys: torch.Tensor, g_ys: torch.Tensor):
        """``(dL/dy0 [B, N], [dL/dp])`` from the outputs ``[T, B * N]`` and their gradients."""
        run = self.run
        batch, numel = run.y.shape
        n_out = ys.shape[0]
        ys3, g3 = ys.view(n_out, batch, numel), g_ys.view(n_out, batch, numel)
        a_p = ys.new_zeros(sum(real_flat(p).numel() for p in self.params))
        if n_out == 1:
            return g3[0], param_gradients(a_p, self.params)
        loop = _BackwardLoop(self, ys3, g3, a_p)
        a = loop.run()
        if self.stats is not None:
            self.stats["n_calls_backward"] = loop.field.calls
            self.stats["n_steps_backward"] = loop.n_steps
            self.stats["n_iterations_backward"] = loop.iterations
        return a, param_gradients(loop.a_p, self.params)


class _Stages:
    """The stage matrix of the augmented state, ``[S, B, 2N]``, written in place, with every
    view the stages use made once (a view costs a dispatch too)."""

    def __init__(self, z: torch.Tensor, co: RKCoefficients, params: bool) -> None:
        stages, (batch, n2) = co.stages, z.shape
        self.K = z.new_zeros((stages, batch, n2))
        Kt = self.K.view(stages, -1).T
        self.kt = [Kt[:, :i] for i in range(stages)] + [Kt]  # kt[-1]: all stages
        self.a = [None] + [co.a[i][:i] for i in range(1, stages)]
        self.ky = [self.K[i, :, : n2 // 2] for i in range(stages)]
        self.ka = [self.K[i, :, n2 // 2 :] for i in range(stages)]
        self.owed = [params and b != 0.0 for b in co.b.tolist()]


class _BackwardLoop:
    def __init__(self, solver: SampleAdjoint, ys3, g3, a_p) -> None:
        self.solver = solver
        self.ys3, self.g3, self.a_p = ys3, g3, a_p
        inputs = solver.inputs
        self.field = SampleField(solver.func, inputs.layout, solver.options.dtype)
        self.iterations = 0
        self.n_steps = torch.zeros(ys3.shape[1], dtype=torch.long, device=ys3.device)

    def run(self) -> torch.Tensor:
        solver = self.solver
        inputs, co, opts, errors = solver.inputs, solver.back_co, solver.back_options, \
            solver.back_errors
        ys3, g3 = self.ys3, self.g3
        n_out, batch, numel = ys3.shape
        device, dtype = ys3.device, ys3.dtype
        cols = torch.arange(batch, device=device)
        ys_rows, g_rows = ys3.reshape(-1, numel), g3.reshape(-1, numel)  # row j * B + b
        # Backward solver time sigma = -tau increases; the user's time is t = back * sigma.
        sigmas = -inputs.taus  # [B, T]
        back = -inputs.direction if isinstance(inputs.direction, float) else \
            -inputs.direction[:, None]
        # Each sample starts at the last output it reached: its last one, or for a failed
        # sample the last before the time it got to (later ones are NaN, never differentiated).
        last = torch.searchsorted(inputs.taus.contiguous(), solver.run.tau.view(batch, 1),
                                  right=True) - 1
        j = (last.view(-1) - 1).clamp_min(0)  # the next output
        active = last > 0
        sigma = sigmas.gather(1, last)
        target = sigmas.gather(1, j[:, None])
        # The augmented state z = [y, a], [B, 2N].
        rows = last.view(-1) * batch + cols
        z = torch.cat([ys_rows.index_select(0, rows), g_rows.index_select(0, rows)], 1)
        h = solver.last_h if opts.first_step is None else torch.full_like(sigma, opts.first_step)
        h = torch.where(h > 0, h, target - sigma)
        h = h.clamp(opts.min_step, opts.max_step) * active
        if not bool(active.any()):
            return z[:, numel:]
        c_col = torch.tensor(co.c, dtype=torch.float64, device=device).view(-1, 1, 1)
        b_weights = co.b.tolist()
        exponent, safety = -1.0 / co.order, opts.safety
        forced = opts.min_step > 0
        K = _Stages(z, co, bool(solver.params))
        rms = 1.0 / math.sqrt(numel)
        while True:
            if self.iterations >= opts.max_num_steps:
                self._fail(Status.MAX_STEPS, active, sigma, h, back,
                           f"max_num_steps={opts.max_num_steps} steps taken",
                           (z, j, ys_rows, sigmas))
            distance = target - sigma
            land = h >= distance
            step = torch.where(land, distance, h)
            times = torch.addcmul(sigma, c_col, step) * back  # [S, B, 1] user times
            hs = (step * back).to(dtype)
            z1, graphs = self._stages(times, hs, z, K, co)
            # max(RMS(e_y / scale_y), RMS(e_a / scale_a)) of every sample
            err = hs * torch.mv(K.kt[-1], co.b_error).view(batch, -1)
            err /= errors.scale(torch.maximum(z.abs(), z1.abs()))
            ratio = torch.linalg.vector_norm(err.view(batch, 2, numel), dim=2).amax(1,
                                                                                    keepdim=True)
            ratio = ratio.double() * rms
            accepted = ratio <= 1.0
            if forced:
                accepted |= (step <= opts.min_step) & torch.isfinite(ratio)
            taken = accepted & active
            self.n_steps += active.view(-1)
            if graphs:
                self._parameter_products(graphs, hs * taken, b_weights)
            landed = taken & land
            z = torch.where(taken, z1, z)
            sigma = torch.where(landed, target, torch.where(taken, sigma + step, sigma))
            # At an output time: y back to the forward value, a jumps by dL/dy there.
            rows = j * batch + cols
            jump = torch.cat([ys_rows.index_select(0, rows),
                              z[:, numel:] + g_rows.index_select(0, rows)], 1)
            z = torch.where(landed, jump, z)
            j = j - landed.view(-1).long()
            active = active & (j >= 0)[:, None]
            j = j.clamp_min(0)
            target = sigmas.gather(1, j[:, None])
            factor = (safety * ratio.pow(exponent)).nan_to_num(0.0, math.inf, 0.0)
            factor = torch.where(accepted, factor.clamp_min(1.0), factor)
            factor = factor.clamp(opts.dfactor, opts.ifactor)
            proposal = step * factor
            h = torch.where(landed, torch.maximum(proposal, h), proposal)
            h = h.clamp(opts.min_step, opts.max_step) * active
            self.iterations += 1
            small = active & (h <= sigma.abs() * _UNDERFLOW)
            if forced:
                small = small & ~torch.isfinite(ratio)
            counts = torch.stack((active.sum(), small.sum())).tolist()
            if counts[1]:
                code = Status.NON_FINITE if not bool(torch.isfinite(ratio[small]).all()) \
                    else Status.STEP_TOO_SMALL
                self._fail(code, small, sigma, h, back, "the step size underflows",
                           (z, j, ys_rows, sigmas))
            if not counts[0]:
                return z[:, numel:]

    def _stages(self, times, hs, z, K: _Stages, co: RKCoefficients):
        """One step of the augmented system ``z = [y, a]`` for all samples: its end (the
        stages in ``K``), and the stage graphs whose parameter products the step still owes
        (``(j, f_j, a_j)`` for stages with ``b_j != 0``)."""
        field = self.field
        shape, t_shape = field.shape, field.t_shape
        batch, n2 = z.shape
        numel = n2 // 2
        times = times.view(co.stages, *t_shape).unbind(0)
        graphs = []
        zi = z
        for i in range(co.stages):
            if i:
                zi = torch.addcmul(z, hs, torch.mv(K.kt[i], K.a[i]).view(batch, n2))
            ai = zi[:, numel:]
            owed = K.owed[i]
            with torch.enable_grad():
                yv = zi[:, :numel].contiguous().requires_grad_(True)
                fy = field(times[i], yv.view(shape)).reshape(batch, numel)
                grad = None
                if fy.requires_grad:
                    (grad,) = torch.autograd.grad(fy, yv, ai, retain_graph=owed,
                                                  allow_unused=True)
            K.ky[i].copy_(fy.detach())
            if grad is None:
                K.ka[i].zero_()
            else:
                torch.neg(grad, out=K.ka[i])
            if owed and fy.requires_grad:
                graphs.append((i, fy, ai))
        if co.fsal:
            return zi, graphs
        return torch.addcmul(z, hs, torch.mv(K.kt[-1], co.b).view(batch, n2)), graphs

    def _parameter_products(self, graphs, hs_taken, b) -> None:
        """``a_p += sum_j sum_b -hs_b b_j a_bj^T df/dp`` over the accepted samples' stages."""
        params = self.solver.params
        outs = [fy for _, fy, _ in graphs]
        seeds = [ai * (hs_taken * -b[i]) for i, _, ai in graphs]
        grads = torch.autograd.grad(outs, params, seeds, allow_unused=True)
        self.a_p += torch.cat([torch.zeros(real_flat(p).numel(), dtype=self.a_p.dtype,
                                           device=self.a_p.device) if g is None
                               else real_flat(g).to(self.a_p.dtype)
                               for g, p in zip(grads, params, strict=True)])

    def _fail(self, code: Status, where, sigma, h, back, what: str, states):
        """Raise for the samples ``where``; ``states`` = ``(z, j, ys_rows, sigmas)`` of the loop,
        from which the first failing sample's re-solved ``y`` is compared with the forward's
        value where its interval started (:func:`node.adjoint_diagnosis.growth_hint`)."""
        samples = where.view(-1).nonzero().flatten().tolist()
        first = samples[0]
        t_b = float((sigma * back).view(-1)[first]) if isinstance(back, torch.Tensor) else \
            float(sigma[first, 0] * back)
        h_b = float(h[first, 0])
        z, j, ys_rows, sigmas = states
        batch, numel = z.shape[0], z.shape[1] // 2
        start = int(j[first]) + 1  # the output the interval started at
        sign = float(back.view(-1)[first]) if isinstance(back, torch.Tensor) else back
        hint = growth_hint(ys_rows[start * batch + first], z[first, :numel],
                           float(sigmas[first, start]) * sign, t_b, numel, 0)
        raise SolverError(code, t_b, h_b,
                          f"adjoint (backward) solve of samples {samples[:10]} failed: {what}; "
                          f"sample {first} stopped at t={t_b:.10g}" + ("; " + hint if hint
                                                                       else ""))


class _SampleAdjointFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, solver: SampleAdjoint, y0: torch.Tensor, *params):
        ys = solver.forward(y0)
        ctx.solver = solver
        ctx.y0_shape = y0.shape
        ctx.save_for_backward(ys)
        return ys

    @staticmethod
    @once_differentiable
    def backward(ctx, g_ys):
        (ys,) = ctx.saved_tensors
        g_y0, g_params = ctx.solver.backward(ys, g_ys)
        return (None, g_y0.reshape(ctx.y0_shape), *g_params)


def integrate_adjoint(func, field, y0, inputs, forward, backward, adjoint_params):
    """The forward solve of the adjoint mode: ``(run, solver)`` with ``run.ys`` attached to
    the graph (set ``solver.stats`` to collect the backward statistics)."""
    params = resolve_params(func, adjoint_params)
    solver = SampleAdjoint(func, field, inputs, forward, backward, params)
    ys = _SampleAdjointFunction.apply(solver, y0, *params)
    solver.run.ys = ys
    return solver.run, solver
