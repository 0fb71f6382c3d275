"""The adaptive-step integration loop.

Steps are chosen by the error test and controller alone: output times are reached by dense
output, never by shortening a step, so the number of function evaluations does not depend on how
many outputs are requested. Only ``step_t``/``jump_t`` clip steps. All loop bookkeeping is Python
floats; the only host synchronisation per step is reading the error ratio.
"""

from __future__ import annotations

import bisect
import math
import warnings
from collections.abc import Sequence

import torch

from node.controllers import make_controller
from node.errors import Status
from node.interpolation import dense_polynomials, interpolate
from node.newton import NewtonFailure
from node.options import AdaptiveOptions
from node.runge_kutta import RKCoefficients, keeper, rk_step
from node.solution import Integration, Stats
from node.state import FlatVectorField
from node.tolerance import ErrorScale

_STRETCH = 1e-6


def _stops_after(times: Sequence[float], direction: float, tau0: float) -> list[float]:
    taus = sorted(direction * t for t in times)
    return taus[bisect.bisect_right(taus, tau0) :]


def integrate_adaptive(
    f: FlatVectorField,
    y0: torch.Tensor,
    taus: Sequence[float],
    co: RKCoefficients,
    options: AdaptiveOptions,
    errors: ErrorScale,
    callbacks=None,
    step=rk_step,
    observer=None,
    k0: torch.Tensor | None = None,
    tape=None,
    progress=None,
) -> Integration:
    """Integrate from ``taus[0]`` through every later output time (solver time, increasing).

    ``observer(tau0, y0, tau1, y1, K, h)``, if given, is called after every accepted step and
    ends the solve successfully by returning True (event location uses this). ``k0`` is
    ``f(taus[0], y0)`` if the caller has it already. ``tape``, if given, records every accepted
    step (see :class:`node.checkpoint.StepTape`); ``progress``, a
    :class:`node.progress.ProgressBar`, is told of every step.
    """
    stats = Stats()
    direction = f.direction
    polys = dense_polynomials(co.tableau)
    controller = make_controller(co.order, options)
    b_error = co.b_error
    min_step, max_step, max_num_steps = options.min_step, options.max_step, options.max_num_steps
    n_out = len(taus)
    keep = keeper(step)
    # An implicit step under autograd builds its graph (the implicit-function-theorem rebuild)
    # only once the step is accepted.
    deferred = getattr(step, "deferred", None) if torch.is_grad_enabled() else None
    finish = None

    tau = taus[0]
    y = y0
    outputs = [y0]
    result = Integration(outputs, stats, tau=tau)
    if n_out == 1:
        return result
    if k0 is None:
        k0 = f(tau, y)
    if options.first_step is not None:
        h_tau = options.first_step
    else:
        h_tau = errors.initial_step(f, tau, y, k0, co.order, direction)
    h_tau = min(max(h_tau, min_step), max_step)
    with torch.no_grad():
        y_abs = errors.magnitude(y)
    stops = sorted(
        [(s, False) for s in _stops_after(options.step_t, direction, tau)]
        + [(s, True) for s in _stops_after(options.jump_t, direction, tau)]
    )
    stop_index = 0
    i = 1
    next_out = taus[1]
    forced_warned = False
    newton_note = ""  # why the last attempt failed, when its Newton iteration did

    while True:
        if progress is not None:
            progress.step(tau, h_tau, stats)
        if stats.n_steps >= max_num_steps:
            return _fail(result, Status.MAX_STEPS, tau, h_tau,
                         f"max_num_steps={max_num_steps} steps taken before reaching the last "
                         f"output time {direction * taus[-1]:.10g}", y)
        tau1 = tau + h_tau
        on_jump = False
        landed = False
        # A stop barely past the step's end (by rounding, when the step was meant to end on it)
        # would leave a sliver of a step, possibly too short to represent: the step is stretched
        # onto it, by at most a relative _STRETCH (its error is tested as usual).
        if stop_index < len(stops) and stops[stop_index][0] < tau1 + _STRETCH * h_tau:
            tau1, on_jump = stops[stop_index]
            landed = True
        h_eff = tau1 - tau
        if not h_tau > 10.0 * math.ulp(tau) or not h_eff > 0.0:
            status = Status.NOT_CONVERGED if newton_note else Status.STEP_TOO_SMALL
            return _fail(result, status, tau, h_tau,
                         f"step size {h_tau:.3g} underflows at t={direction * tau:.10g}"
                         + newton_note, y)
        h = direction * h_eff
        if callbacks is not None:
            callbacks.step(tau, y, h)
        try:
            if deferred is not None:
                y1, K, finish = deferred(f, tau, y, k0, h_eff, tau1, h, co, perturb_end=on_jump)
            else:
                y1, K = step(f, tau, y, k0, h_eff, tau1, h, co, perturb_end=on_jump)
        except NewtonFailure as failure:
            # An implicit method's stage iteration failed: the step is rejected (never accepted,
            # whatever min_step says) and retried with a quarter of it.
            stats.n_steps += 1
            stats.n_rejected += 1
            stats.n_newton_failed += 1
            if callbacks is not None:
                callbacks.reject(tau, y, h)
            newton_note = (f"; the last step was rejected because its Newton iteration "
                           f"{failure.reason} after {failure.iterations} iteration(s)")
            if h_tau <= min_step or h_eff <= min_step:
                return _fail(result, Status.NOT_CONVERGED, tau, h_eff,
                             f"the Newton iteration of the implicit stages {failure.reason} "
                             f"after {failure.iterations} iteration(s) even at the minimum "
                             f"step min_step={min_step:.3g}")
            h_tau = min(max(h_eff / 4.0, min_step), max_step)
            continue
        newton_note = ""
        ratio, y1_abs = errors.ratio(K, b_error, h_eff, y_abs, y1)
        stats.n_steps += 1
        accepted = ratio <= 1.0  # False for NaN too
        # h_tau, the step asked for, is compared too: tau + h_tau - tau can round above it.
        at_floor = h_tau <= min_step or h_eff <= min_step
        if not accepted and at_floor and math.isfinite(ratio):
            # torchdiffeq's meaning of min_step: a step this small is accepted whatever its
            # error (a floor that forces progress). Said once per solve, since the result may
            # miss the tolerances; a non-finite error is never accepted.
            accepted = True
            if not forced_warned:
                forced_warned = True
                warnings.warn(
                    f"a step of size {h_eff:.3g} (<= min_step={min_step:.3g}) was accepted at "
                    f"t={direction * tau:.10g} with error ratio {ratio:.3g} > 1, as torchdiffeq "
                    "does; the solution may not meet rtol/atol there",
                    UserWarning, stacklevel=2)
        if accepted:
            stats.n_accepted += 1
            if finish is not None:
                y1, K = finish()
            if callbacks is not None:
                callbacks.accept(tau, y, h)
            if next_out <= tau1:
                thetas = []
                while i < n_out and taus[i] <= tau1:
                    thetas.append((taus[i] - tau) / h_eff)
                    i += 1
                exact_end = thetas[-1] == 1.0
                if exact_end:
                    thetas.pop()
                if tape is not None:
                    tape.accept(tau, y, K, h_eff, tau1, h, on_jump, False, thetas, exact_end)
                if thetas:
                    outputs.extend(interpolate(y, K, h, polys, thetas).T.unbind(0))
                if exact_end:
                    outputs.append(keep(y1))
                if i == n_out:
                    h_next = _after_accept(controller, h_eff, ratio, landed, h_tau)
                    result.tau, result.h = tau1, min(max(h_next, min_step), max_step)
                    return result
                next_out = taus[i]
            elif tape is not None:
                tape.accept(tau, y, K, h_eff, tau1, h, on_jump, False, (), False)
            if observer is not None and observer(tau, y, tau1, y1, K, h):
                result.tau, result.h = tau1, h_eff
                return result
            tau, y, y_abs = tau1, y1, y1_abs
            if on_jump:
                k0 = f(tau, y, 1)  # f is discontinuous here: take the value from after the jump
            else:
                k0 = K[-1] if co.reuse_last else f(tau, y)
            if landed:
                stop_index += 1
        else:
            stats.n_rejected += 1
            if callbacks is not None:
                callbacks.reject(tau, y, h)
            if not math.isfinite(ratio):
                cause = _non_finite_cause(k0, y)
                if not cause and at_floor:
                    cause = (f"the step produces non-finite values (overflow or NaN in func) even "
                             f"at the minimum step min_step={min_step:.3g}")
                if cause:
                    return _fail(result, Status.NON_FINITE, tau, h_eff, cause, y)
        if accepted:
            h_next = _after_accept(controller, h_eff, ratio, landed, h_tau)
        else:
            h_next = controller.next_step(h_eff, ratio, False)
        h_tau = min(max(h_next, min_step), max_step)
        if not math.isfinite(ratio) and not h_tau > 10.0 * math.ulp(tau):
            return _fail(result, Status.NON_FINITE, tau, h_tau,
                         "the step keeps producing non-finite values (overflow or NaN in func) "
                         "even as the step size underflows", y)


def _after_accept(controller, h_eff: float, ratio: float, landed: bool, h_wanted: float) -> float:
    """The step after an accepted one. A step cut short to land on a stop time (``step_t``,
    ``jump_t``, the adjoint's output times) has a small error because it is short, not because
    larger steps would pass: growing from it (up to ``ifactor`` times) would propose steps
    beyond what the controller wanted before the cut, and the next attempt would be rejected.
    So after a cut the proposal is capped at the step size wanted before it."""
    h_next = controller.next_step(h_eff, ratio, True)
    if landed and h_eff < h_wanted:
        # The controller grows a step by at most ifactor: after a very short cut step that
        # would make the next step (the first of the adjoint's next interval) needlessly small.
        # Up to h_wanted, the cut step's own error prediction applies without that limit.
        h_next = min(max(h_next, controller.predict(h_eff, ratio)), h_wanted)
    return h_next


def _non_finite_cause(k0: torch.Tensor, y: torch.Tensor) -> str:
    """Diagnose a non-finite error ratio: is the current state or its derivative the culprit?"""
    if not bool(torch.isfinite(y).all()):
        return "the state became non-finite"
    if not bool(torch.isfinite(k0).all()):
        return "func returned non-finite values (NaN or inf) at the current state"
    return ""


def _fail(result: Integration, status: Status, tau: float, h: float, cause: str,
          y: torch.Tensor | None = None) -> Integration:
    result.status, result.tau, result.h, result.cause, result.y = status, tau, h, cause, y
    return result
