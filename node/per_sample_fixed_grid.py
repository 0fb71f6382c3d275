"""Fixed-grid methods (``euler``, ``midpoint``, ``rk4``, ...) in per-sample solves.

Each sample steps on its own grid, as :mod:`node.fixed_grid` would step it alone: its output
times ``taus[b]`` (no ``step_size``), or ``start_b, start_b + h_b, ..., end_b`` with
``options['step_size']`` a number or one per sample (a ``[B]`` tensor); the last step closes on
the sample's end, and a span that is a multiple of ``h_b`` in rounding takes no extra, nearly
empty step (the rule of :func:`node.fixed_grid.make_grid`). Samples are batched: iteration ``k``
takes step ``k`` of every sample (one ``func`` call per stage, ``t`` of shape
``[B, 1, ..., 1]``); a sample whose grid has fewer steps is padded with steps of size 0 at its
end (masking: it rides along at its frozen state), so the loop runs ``max_b n_b`` iterations
and needs no host synchronisation.

Outputs between grid points are interpolated linearly or with cubic Hermite polynomials
(``interp``) in the step that contains them, an output on a grid point is the step's end state.
Which step holds each output is known before the loop (``searchsorted`` on the grids), so every
iteration evaluates at most ``W`` outputs per sample (``W``: the most outputs one step holds).

A sample whose state becomes non-finite is frozen at its last finite state and fails
(``NON_FINITE``); a grid of more steps than ``max_num_steps`` fails before its first step
(``MAX_STEPS``); the other samples go on (see :mod:`node.per_sample_solve`).
"""

from __future__ import annotations

import math
import warnings

import torch

from node.callbacks import CALLBACK_NAMES
from node.interpolation import hermite
from node.options import parse_options
from node.per_sample import SampleField, SampleRun
from node.per_sample_inputs import SampleInputs
from node.runge_kutta import RKCoefficients, coefficients
from node.tableau import ButcherTableau

_NON_FINITE, _MAX_STEPS = 3, 1  # codes of node.per_sample.CODES


def solve_fixed_grid_per_sample(func, y0, inputs: SampleInputs, tableau: ButcherTableau,
                                options):
    """The run of a per-sample fixed-grid solve and its options (``inputs`` checked by
    :func:`node.per_sample_inputs.check_sample_inputs`)."""
    layout = inputs.layout
    opts, steps = fixed_grid_options(options, inputs.batch, tableau.name, layout.device)
    hooks = [n for n in CALLBACK_NAMES if getattr(func, n, None) is not None]
    if hooks:
        warnings.warn(f"func's {', '.join(hooks)} are not called by per-sample solves",
                      UserWarning, stacklevel=4)
    co = coefficients(tableau, layout.dtype, layout.device)
    field = SampleField(func, layout, opts.dtype)
    return integrate_fixed_grid_per_sample(field, y0, inputs, co, opts, steps), opts


def fixed_grid_options(options, batch: int, method: str, device):
    """The parsed :class:`~node.options.FixedGridOptions` and the step sizes: ``None``, or a
    float64 ``[B]`` tensor (``options['step_size']`` a number or a ``[B]`` tensor > 0)."""
    raw = dict(options or {})
    step = raw.pop("step_size", None)
    opts = parse_options(raw, fixed_grid=True, method=method)
    unsupported = [n for n, bad in (("grid_constructor", opts.grid_constructor is not None),
                                    ("perturb", opts.perturb)) if bad]
    if unsupported:
        raise ValueError(f"option(s) {unsupported} are not supported with per_sample=True (yet); "
                         "give options['step_size'] (a number or one per sample) or output "
                         "times t of shape [B, T] as each sample's grid")
    if step is None:
        return opts, None
    if isinstance(step, torch.Tensor) and step.numel() != 1:
        if step.shape != (batch,):
            raise ValueError(f"options['step_size'] with per_sample=True: a number or a tensor "
                             f"of one step size per sample (shape [{batch}]), got shape "
                             f"{tuple(step.shape)}")
        if step.is_complex() or not step.is_floating_point():
            raise TypeError(f"options['step_size'] must be a floating tensor, got {step.dtype}")
        steps = step.detach().to(device, torch.float64)
        if not bool(((steps > 0) & torch.isfinite(steps)).all()):
            raise ValueError(f"options['step_size'] must be > 0 and finite, got "
                             f"{steps.tolist()[:10]}")
        return opts, steps
    h = parse_options({"step_size": step}, fixed_grid=True, method=method).step_size
    return opts, torch.full((batch,), h, dtype=torch.float64, device=device)


def sample_grids(taus: torch.Tensor, steps) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample's grid as ``[B, G + 1]`` solver times (padded with its end) and its number
    of steps ``[B]``."""
    batch, n_out = taus.shape
    if steps is None:
        return taus, torch.full((batch,), n_out - 1, dtype=torch.long, device=taus.device)
    start, end = taus[:, 0], taus[:, -1]
    ratio = ((end - start) / steps).clamp_max(torch.finfo(torch.float64).max)
    slack = torch.clamp_max(1e-12 * ratio, 1e-6)
    n = torch.ceil(ratio - slack).clamp_min(1).long()
    k = torch.arange(int(n.max()) + 1, device=taus.device, dtype=torch.float64)
    grid = start[:, None] + k[None, :] * steps[:, None]
    grid = torch.where(k[None, :] < n[:, None], grid, end[:, None])
    return grid, n


def integrate_fixed_grid_per_sample(field: SampleField, y0: torch.Tensor, inputs: SampleInputs,
                                    co: RKCoefficients, opts, steps, observer=None) -> SampleRun:
    """Step every sample over its grid (see the module docstring).

    With ``observer`` (an event solve: ``inputs.taus[:, 1]`` infinite, ``steps`` given) the
    grids ``start_b + k h_b`` have no end: the loop runs until the observer has stopped every
    sample or the step budget is spent. ``observer(tau0, tau1, h, y0, y1, None, stepped, f0,
    f1)`` as :func:`node.per_sample.integrate_per_sample`'s, with the step's end slopes."""
    taus, direction = inputs.taus, inputs.direction
    batch, n_out = taus.shape
    numel = inputs.numel
    device, dtype = y0.device, y0.dtype
    sign = direction if isinstance(direction, float) else direction[:, None]
    if observer is not None:
        return _event_loop(field, y0, inputs, co, opts, steps, observer, sign)
    grid, n = sample_grids(taus, steps)
    over = n > opts.max_num_steps
    status = torch.where(over, _MAX_STEPS, 0).to(torch.int8)
    if bool(over.any()):  # those fail before their first step: a grid of steps of size 0
        grid = torch.where(over[:, None], taus[:, :1], grid)
    n_iter = grid.shape[1] - 1
    # The step holding each output j >= 1 (the first grid point at or after it closes it).
    holder = torch.searchsorted(grid.contiguous(), taus[:, 1:].contiguous()) - 1  # [B, T - 1]
    counts = torch.zeros((batch, max(n_iter, 1)), dtype=torch.long, device=device)
    counts.scatter_add_(1, holder.clamp(0, max(n_iter - 1, 0)), torch.ones_like(holder))
    width = int(counts.max()) if n_out > 1 else 0
    first = torch.searchsorted(holder.contiguous(),
                               torch.arange(n_iter, device=device).expand(batch, -1).contiguous())
    samples = torch.arange(batch, device=device)
    rows, vals, valid = [samples], [y0.reshape(batch, numel)], [torch.ones_like(samples,
                                                                                 dtype=torch.bool)]
    cubic = opts.interp == "cubic"
    stages, reuse = co.stages, co.reuse_last
    shape, t_shape = field.shape, field.t_shape

    def call(tau: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return field((tau * sign).view(t_shape), y.view(shape)).reshape(batch, numel)

    y = y0.reshape(batch, numel)
    alive = ~over[:, None]
    y_report = y
    taken = torch.zeros(batch, dtype=torch.long, device=device)
    tau_fail = taus[:, :1].clone()  # where a sample failed (its start for a too long grid)
    h_fail = torch.zeros_like(tau_fail)
    k0 = call(grid[:, :1], y) if n_iter else torch.full_like(y, math.nan)
    for k in range(n_iter):
        tau0, tau1 = grid[:, k:k + 1], grid[:, k + 1:k + 2]
        h_tau = tau1 - tau0
        hu = (h_tau * sign).to(dtype)
        y1, K = _step(call, co, y, k0, tau0, tau1, h_tau, hu)
        bad = alive & ~torch.isfinite(y1).all(dim=1, keepdim=True)
        ok = alive & ~bad
        taken += (alive & (h_tau > 0)).view(-1)
        tau_fail = torch.where(bad, tau0, tau_fail)
        h_fail = torch.where(bad | (alive & (h_tau > 0)), h_tau, h_fail)
        y_report = torch.where(bad, y1, y_report)
        status = torch.where(bad.view(-1), _NON_FINITE, status).to(torch.int8)
        last = k == n_iter - 1
        k1 = None
        if reuse:
            k1 = K[stages - 1].view(batch, numel)
        elif cubic or not last:
            k1 = call(tau1, y1)  # the next step's first stage (and the cubic's end slope)
        for w in range(width):
            j = first[:, k] + w + 1  # output index (1..T-1)
            jj = j.clamp_max(n_out - 1)
            here = ok.view(-1) & (j < n_out) & (holder.gather(1, (jj - 1)[:, None]).view(-1) == k)
            tq = taus.gather(1, jj[:, None])
            theta = torch.where(h_tau > 0, (tq - tau0) / torch.where(h_tau > 0, h_tau, 1.0), 1.0)
            th = theta.to(dtype)
            if cubic:
                value = hermite(y, y1, k0, k1, hu, th)
            else:
                value = torch.lerp(y, y1, th)
            rows.append(jj * batch + samples)
            vals.append(torch.where(theta == 1.0, y1, value))
            valid.append(here)
        alive = ok
        y = torch.where(alive, y1, y)
        if k1 is not None:
            # A failed sample rides along at its frozen state with zero slopes (finite stages).
            k0 = torch.where(alive, k1, 0.0)
    keep = torch.cat(valid).nonzero().squeeze(1)
    out = y0.new_full((n_out * batch, numel), math.nan)
    ys = out.index_copy(0, torch.cat(rows)[keep], torch.cat(vals)[keep])
    # The work of each sample as if solved alone (node.fixed_grid's count of func calls).
    n_steps = taken
    nfe = torch.where(n_steps > 0, 1 + (stages - 1) * n_steps + (n_steps - 1) * (1 - reuse)
                      + int(cubic and not reuse), 0)
    tau_reached = torch.where(status == 0, taus[:, -1], tau_fail.view(-1))
    y_final = torch.where(status.view(-1, 1) == _NON_FINITE, y_report, y)
    return SampleRun(ys.view(n_out, batch * numel), status, tau_reached, h_fail.view(-1),
                     y_final, k0, n_steps, n_steps.clone(), nfe, field.calls, n_iter)


def _step(call, co: RKCoefficients, y, k0, tau0, tau1, h_tau, hu):
    """One explicit Runge-Kutta step of every sample: ``(y1, K)``, ``K`` as ``[S, B * N]``."""
    batch, numel = y.shape
    K = y.new_zeros((co.stages, batch * numel))
    K[0] = k0.reshape(-1)
    yi = y
    for i in range(1, co.stages):
        yi = torch.addcmul(y, hu, torch.mv(K.T, co.a[i]).view(batch, numel))
        t_i = tau1 if co.c[i] == 1.0 else tau0 + co.c[i] * h_tau
        K[i] = call(t_i, yi).reshape(-1)
    y1 = yi if co.fsal else torch.addcmul(y, hu, torch.mv(K.T, co.b).view(batch, numel))
    return y1, K


def _event_loop(field, y0, inputs, co, opts, steps, observer, sign) -> SampleRun:
    """The unending grids of an event solve (see :func:`integrate_fixed_grid_per_sample`): one
    host synchronisation per step, the "any sample still running" test."""
    batch, numel = inputs.batch, inputs.numel
    start = inputs.taus[:, :1]
    h = steps[:, None]
    shape, t_shape = field.shape, field.t_shape

    def call(tau, y):
        return field((tau * sign).view(t_shape), y.view(shape)).reshape(batch, numel)

    y = y0.reshape(batch, numel)
    status = torch.zeros(batch, dtype=torch.int8, device=y.device)
    alive = torch.ones((batch, 1), dtype=torch.bool, device=y.device)
    taken = torch.zeros(batch, dtype=torch.long, device=y.device)
    tau_fail, h_fail = start.clone(), h.clone()
    y_report = y
    k0 = call(start, y)
    steps_done = 0
    for k in range(opts.max_num_steps):
        tau0, tau1 = start + k * h, start + (k + 1) * h  # node.fixed_grid's grid points
        h_tau = h * alive  # stopped samples take steps of size 0
        hu = (h_tau * sign).to(y.dtype)
        y1, K = _step(call, co, y, k0, tau0, tau1, h_tau, hu)
        k1 = K[co.stages - 1].view(batch, numel) if co.reuse_last else call(tau1, y1)
        bad = alive & ~torch.isfinite(y1).all(dim=1, keepdim=True)
        ok = alive & ~bad
        taken += alive.view(-1)
        tau_fail = torch.where(bad, tau0, tau_fail)
        y_report = torch.where(bad, y1, y_report)
        status = torch.where(bad.view(-1), _NON_FINITE, status).to(torch.int8)
        fired = observer(tau0, torch.where(alive, tau1, tau0), h_tau, y, y1, None, ok, f0=k0,
                         f1=k1)
        y = torch.where(ok, y1, y)
        k0 = torch.where(ok, k1, 0.0)
        alive = ok & ~fired
        steps_done = k + 1
        if not bool(alive.any()):
            break
    else:
        status = torch.where(alive.view(-1), _MAX_STEPS, status).to(torch.int8)
        tau_fail = torch.where(alive, start + steps_done * h, tau_fail)
    y_final = torch.where(status.view(-1, 1) == _NON_FINITE, y_report, y)
    ys = torch.cat([y0.reshape(1, -1), torch.full_like(y0.reshape(1, -1), math.nan)])
    return SampleRun(ys, status, torch.where(status == 0, math.inf, tau_fail.view(-1)),
                     h_fail.view(-1), y_final, k0, taken, taken.clone(), taken * co.stages,
                     field.calls, steps_done)
