"""The Adams multistep loop on a fixed grid: ``explicit_adams`` and ``implicit_adams``.

Each step evaluates ``f`` once at its start (``f_n``; the step before may have done it already
for the cubic interpolant or an event) and keeps the last derivatives ``f_n, f_{n-1}, ...``:

* ``explicit_adams``, order ``p = max_order``: Adams-Bashforth,
  ``y_{n+1} = y_n + h * sum_{j<p} w_j f_{n-j}`` (one evaluation per step);
* ``implicit_adams``, order ``p``: predict with Adams-Bashforth of order ``p - 1`` (Euler for
  ``p = 1``), then correct with Adams-Moulton of order ``p`` by fixed-point iteration,
  ``y <- y_n + h * (w*_0 f(t_{n+1}, y) + sum_j w*_{j+1} f_{n-j})`` (P(EC)^m E). The iteration
  stops once a correction, scaled by ``atol + rtol * max(|y_n|, |y_predicted|)`` in the solve's
  norm, is at most 1, or after ``max_iters`` evaluations.

Weights come from :mod:`node.multistep`: the classical ones on a uniform grid, the variable-step
ones otherwise (an irregular ``t``, a ``grid_constructor``, the last step of a ``step_size``
grid), so the order holds on any grid.

Start-up. The first steps, until ``p`` past derivatives are known (``p - 1`` for the implicit
method), are Runge-Kutta steps of an order high enough not to lower the method's: Kutta's
3/8-rule (``rk4``, order 4) for ``p <= 5`` and ``dopri8`` (order 8) above. A fixed number of
start-up steps with local error ``O(h^(q+1))`` adds ``O(h^(q+1))`` to the global error, so the
global order is ``p`` up to ``p = 9`` (and 9 for ``max_order`` 10 to 12). torchdiffeq instead
starts with ``rk4`` and grows the order, and its explicit method runs order ``max_order - 1``.

Stability. Adams-Bashforth's stability interval on the negative real axis shrinks fast with the
order: ``h * |lambda| <`` 2, 1, 0.55, 0.30, 0.16, 0.088, 0.047, 0.024, 0.013, 0.0066, 0.0034, 0.0017
for orders 1 to 12. torchdiffeq's default ``max_order=12`` (order 11 explicit) is therefore
unstable on ``dy/dt = -y`` with ``step_size=0.01`` (error 4e9 at ``t = 2``); node's default order
is 4. An unstable choice still ends in a :class:`~node.SolverError` once the state overflows.

A corrector iteration that has not converged after ``max_iters`` evaluations:

* if it contracts (its last correction is smaller than its first), or ``max_iters=1`` (plain
  PECE): the last iterate is kept (a P(EC)^m step, of the same order ``p``) and the solve warns
  once at its end, with the number of such steps and the first time;
* if it does not contract (``h * |w*_0| * Lipschitz(f) >= 1``: the step is too large for
  fixed-point iteration, whose result would be garbage): the solve fails with status
  ``iteration_not_converged`` (a :class:`~node.SolverError` naming the time).

Gradients: direct (autograd through the steps, start-up included), adjoint (the backward solve
runs the same method, restarted at every output time, where the adjoint jumps), and checkpoint
(each evaluation of ``f`` recomputed in the backward pass, see :mod:`node.checkpoint`).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence

import torch

from node.errors import Status
from node.fixed_grid import exceeds_budget
from node.interpolation import hermite
from node.methods.dopri8 import TABLEAU as DOPRI8
from node.methods.rk4 import TABLEAU as RK4
from node.multistep import AdamsMethod, weights
from node.options import AdamsOptions
from node.runge_kutta import coefficients, rk_step
from node.solution import Integration, Stats
from node.state import FlatVectorField
from node.tolerance import ErrorScale

# Highest max_order that the rk4 start-up serves without lowering the global order.
_RK4_UP_TO = 5


class _Coefficients:
    """``h * w`` as tensors on the state's dtype and device, made once per distinct ``(h, w)``
    (on a uniform grid: once per solve), not copied to the device every step."""

    def __init__(self, like: torch.Tensor) -> None:
        self.dtype, self.device = like.dtype, like.device
        self.made: dict[tuple, torch.Tensor] = {}

    def __call__(self, h: float, w: tuple[float, ...]) -> torch.Tensor:
        key = (h, w)
        coeffs = self.made.get(key)
        if coeffs is None:
            if len(self.made) >= 64:  # a non-uniform grid: every step differs
                self.made.clear()
            coeffs = torch.tensor([h * wj for wj in w], dtype=self.dtype, device=self.device)
            self.made[key] = coeffs
        return coeffs

    def combine(self, y: torch.Tensor, derivatives: Sequence[torch.Tensor],
                w: tuple[float, ...], h: float) -> torch.Tensor:
        """``y + h * sum_j w_j derivatives[j]``: the increment formed first and added once."""
        return y + torch.mv(torch.stack(list(derivatives), 1), self(h, w))




class _Corrector:
    """The Adams-Moulton fixed-point iteration of one solve, with its convergence record."""

    def __init__(self, errors: ErrorScale, order: int, max_iters: int, side: int,
                 coefficients: _Coefficients) -> None:
        self.errors, self.order, self.max_iters, self.side = errors, order, max_iters, side
        self.coefficients = coefficients
        self.unconverged = 0  # steps that kept an unconverged (contracting) iterate
        self.first_tau: float | None = None

    def step(self, f, y, history, nodes, h, tau0, tau1):
        """``(y1, None)``, or ``(None, cause)`` when the iteration does not contract."""
        p = self.order
        errors, combine = self.errors, self.coefficients.combine
        y_old = combine(y, history, weights(nodes, False), h)  # the predictor
        w = weights([1.0, *nodes[: p - 1]], True)
        base = combine(y, history[: p - 1], w[1:], h) if p > 1 else y
        # One scale for the step (from y_n and the prediction), so that successive corrections
        # compare as they are: a scale that grew with a diverging iterate would hide divergence.
        with torch.no_grad():
            scale = errors.scale(torch.maximum(errors.magnitude(y), errors.magnitude(y_old)))
        first = last = None
        for _ in range(self.max_iters):
            y_new = torch.add(base, f(tau1, y_old, self.side), alpha=h * w[0])
            with torch.no_grad():
                last = float(errors.norm((y_new - y_old) / scale))
            if last <= 1.0:
                return y_new, None
            first = last if first is None else first
            y_old = y_new
        if self.max_iters > 1 and not last < first:
            if not math.isfinite(last):
                return y_new, None  # the loop's non-finite check reports it
            return None, (
                f"the Adams-Moulton corrector's fixed-point iteration does not contract (scaled "
                f"corrections {first:.3g} then, after {self.max_iters} evaluations, {last:.3g}): "
                f"the step is too large for it (it needs h * {w[0]:.3g} * Lipschitz(f) < 1); "
                f"reduce step_size or max_order")
        self.unconverged += 1
        if self.first_tau is None:
            self.first_tau = tau0
        return y_new, None

    def warn(self, f: FlatVectorField, n_steps: int) -> None:
        if self.unconverged:
            warnings.warn(
                f"implicit_adams: the corrector iteration did not reach rtol/atol within "
                f"max_iters={self.max_iters} evaluations in {self.unconverged} of {n_steps} "
                f"steps (first in the step from t={f.direction * self.first_tau:.10g}); those "
                f"steps keep the last iterate (a P(EC)^m step, of the same order). "
                f"Raise max_iters or reduce step_size to converge.", UserWarning, stacklevel=2)


def integrate_adams(
    f: FlatVectorField,
    y0: torch.Tensor,
    taus: Sequence[float],
    grid,
    method: AdamsMethod,
    options: AdamsOptions,
    errors: ErrorScale | None = None,
    callbacks=None,
    k0: torch.Tensor | None = None,
    observer=None,
    progress=None,
) -> Integration:
    """Step over ``grid`` (from :func:`node.fixed_grid.make_grid`) with ``method``.

    Arguments as for :func:`node.fixed_grid.integrate_fixed_grid`; ``errors`` is the implicit
    corrector's convergence test and ``k0`` is ``f(taus[0], y0)`` if already evaluated. The
    observer receives the step's start derivative as ``K[0]`` (``K`` has that one row)."""
    stats = Stats()
    direction = f.direction
    perturb = options.perturb
    start_side, end_side = (1, -1) if perturb else (0, 0)
    cubic = options.interp == "cubic"
    order = options.max_order
    need = method.history(order)
    starter = coefficients(RK4 if order <= _RK4_UP_TO else DOPRI8, y0.dtype, y0.device)
    made = _Coefficients(y0)
    corrector = (_Corrector(errors, order, options.max_iters, end_side, made) if method.implicit
                 else None)
    n_out = len(taus)
    y = y0
    outputs = [y0]
    result = Integration(outputs, stats, tau=taus[0])
    budget_each_step = not hasattr(grid, "__len__")  # an unending grid: an event solve
    if exceeds_budget(grid, options.max_num_steps, result):
        return result
    history: list[torch.Tensor] = []  # f_n, f_{n-1}, ... (newest first)
    times: list[float] = []  # their solver times
    f_next = k0  # f at the next step's start, when already evaluated
    i = 1
    for tau0, tau1 in itertools.pairwise(grid):
        if i == n_out:
            break
        h_tau = tau1 - tau0
        if budget_each_step and stats.n_steps >= options.max_num_steps:
            result.status, result.tau, result.h = Status.MAX_STEPS, tau0, h_tau
            result.cause = f"max_num_steps={options.max_num_steps} grid steps taken"
            break
        if progress is not None:
            progress.step(tau0, h_tau, stats)
        h = direction * h_tau
        if callbacks is not None:
            callbacks.step(tau0, y, h)
        f0 = f(tau0, y, start_side) if f_next is None else f_next
        f_next = None
        history.insert(0, f0)
        times.insert(0, tau0)
        del history[need:], times[need:]
        if len(history) < need:  # start-up
            y1, K = rk_step(f, tau0, y, f0, h_tau, tau1, h, starter, perturb_end=perturb,
                            perturb_start=perturb)
            if starter.reuse_last and not perturb:
                f_next = K[-1]
        else:
            nodes = [(s - tau0) / h_tau for s in times]
            if corrector is None:
                y1 = made.combine(y, history, weights(nodes, False), h)
            else:
                y1, cause = corrector.step(f, y, history, nodes, h, tau0, tau1)
                if y1 is None:
                    result.status, result.tau, result.h = Status.NOT_CONVERGED, tau0, h_tau
                    result.cause = cause
                    break
        stats.n_steps += 1
        stats.n_accepted += 1
        # One reduction and one sync, as in the Runge-Kutta loop.
        if not math.isfinite(y1.sum().item()) and not bool(torch.isfinite(y1).all()):
            result.status, result.tau, result.h = Status.NON_FINITE, tau0, h_tau
            result.cause = "the state became non-finite (NaN or inf) during a fixed step"
            break
        if observer is not None:
            if cubic and f_next is None:
                f_next = f(tau1, y1, start_side)
            if observer(tau0, y, tau1, y1, f0.unsqueeze(0), h, f_next if cubic else None):
                result.tau, result.h = tau1, h_tau
                break
        while i < n_out and taus[i] <= tau1:
            if taus[i] == tau1:
                outputs.append(y1)
            else:
                theta = (taus[i] - tau0) / h_tau
                if cubic:
                    if f_next is None:
                        f_next = f(tau1, y1, start_side)
                    outputs.append(hermite(y, y1, f0, f_next, h, theta))
                else:
                    outputs.append(torch.lerp(y, y1, theta))
            i += 1
        y = y1
        result.tau, result.h = tau1, h_tau
    if corrector is not None:
        corrector.warn(f, stats.n_steps)
    return result
