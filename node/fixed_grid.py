"""The fixed-grid integration loop.

The grid is ``t`` itself, or ``t[0], t[0] + step_size, ...`` closed by ``t[-1]``, or what the
user's ``grid_constructor`` returns. Output times between grid points are interpolated linearly or
with cubic Hermite polynomials (``interp``); the derivative at a grid point needed by the latter is
the next step's first stage, so it costs nothing except after the last step.

A grid of more steps than ``max_num_steps`` fails before its first step: its length is known in
advance, so stepping up to the budget first (possibly 2**31 - 1 steps) would only waste time. A
``step_size`` grid is generated lazily (:class:`UniformGrid`), never stored, so that counting
its steps costs nothing whatever its length.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from node.errors import Status
from node.interpolation import hermite
from node.newton import NewtonFailure
from node.options import FixedGridOptions
from node.runge_kutta import RKCoefficients, keeper, rk_step
from node.solution import Integration, Stats
from node.state import FlatVectorField


@dataclass(frozen=True)
class UniformGrid:
    """``start, start + step, ..., start + (n - 1) * step, end``: ``n`` steps, made on the fly."""

    start: float
    step: float
    n: int
    end: float

    def __len__(self) -> int:
        return self.n + 1

    def __iter__(self) -> Iterator[float]:
        start, step = self.start, self.step
        for k in range(self.n):
            yield start + k * step
        yield self.end


def make_grid(
    taus: Sequence[float],
    options: FixedGridOptions,
    direction: float,
    constructor_args: Callable[[], tuple] | None = None,
) -> Sequence[float] | UniformGrid | Iterator[float]:
    """The grid in solver time (increasing), from ``taus[0]`` to ``taus[-1]``; with
    ``taus[-1] = inf`` (event solves, which need ``step_size``) an unending generator."""
    start, end = taus[0], taus[-1]
    if options.grid_constructor is not None:
        grid = options.grid_constructor(*constructor_args())
        if not isinstance(grid, torch.Tensor) or grid.dim() != 1 or grid.numel() < 2:
            raise ValueError("grid_constructor must return a 1-D tensor with at least 2 times")
        grid = [direction * float(g) for g in grid.tolist()]
        if grid[0] != start or grid[-1] != end:
            raise ValueError(
                f"grid_constructor must return a grid from t[0]={direction * start} to "
                f"t[-1]={direction * end}, got one from {direction * grid[0]} to "
                f"{direction * grid[-1]}"
            )
        if any(b <= a for a, b in zip(grid, grid[1:], strict=False)):
            raise ValueError("grid_constructor must return a strictly monotonic grid")
        return grid
    if options.step_size is None:
        return list(taus)
    step = options.step_size
    if math.isinf(end):  # an event solve: steps until the observer stops it
        return (start + k * step for k in itertools.count())
    # The tiny relative slack keeps a span that is a multiple of step_size in rounding from
    # producing an extra, nearly empty last step; it is capped at 1e-6 steps so that on a very
    # long grid it cannot swallow a step (which would make the last step twice as long).
    # (min(..., float max) only keeps a span/step_size that overflows to inf countable.)
    ratio = min((end - start) / step, sys.float_info.max)
    n = max(1, math.ceil(ratio - min(1e-12 * ratio, 1e-6)))
    return UniformGrid(start, step, n, end)


def exceeds_budget(grid, max_num_steps: int, result: Integration) -> bool:
    """Whether a grid of known length needs more steps than ``max_num_steps``; if so, ``result``
    fails with that diagnosis before the first step (an unending grid is never judged here)."""
    if not hasattr(grid, "__len__") or len(grid) - 1 <= max_num_steps:
        return False
    first, second = itertools.islice(grid, 2)
    result.status, result.h = Status.MAX_STEPS, second - first
    result.cause = (f"the grid needs {len(grid) - 1} steps, more than max_num_steps="
                    f"{max_num_steps} (raise max_num_steps or use a coarser grid)")
    return True


def integrate_fixed_grid(
    f: FlatVectorField,
    y0: torch.Tensor,
    taus: Sequence[float],
    grid: Sequence[float] | UniformGrid,
    co: RKCoefficients,
    options: FixedGridOptions,
    callbacks=None,
    step=rk_step,
    k0: torch.Tensor | None = None,
    tape=None,
    observer=None,
    progress=None,
) -> Integration:
    """Step over ``grid``; ``k0`` is the first step's first stage if the caller has it already,
    ``tape``, if given, records every step (see :class:`node.checkpoint.StepTape`) and
    ``progress`` (a :class:`node.progress.ProgressBar`) is told of every step.
    ``observer(tau0, y0, tau1, y1, K, h, f1, f0)`` as in
    :func:`node.adaptive.integrate_adaptive`, with ``f0``, ``f1`` the derivatives at the step's
    ends of the cubic interpolant (``None`` for linear; ``f0`` is not ``K[0]`` when the first
    stage is implicit)."""
    stats = Stats()
    direction = f.direction
    perturb = options.perturb
    cubic = options.interp == "cubic"
    n_out = len(taus)
    keep = keeper(step)
    explicit_first = getattr(co, "explicit_first", True)
    y = y0
    outputs = [y0]
    result = Integration(outputs, stats, tau=taus[0])
    # An unending grid (an event solve) has no length: its budget is checked step by step.
    budget_each_step = not hasattr(grid, "__len__")
    if exceeds_budget(grid, options.max_num_steps, result):
        return result
    i = 1
    for tau0, tau1 in itertools.pairwise(grid):
        if i == n_out:
            break
        h_tau = tau1 - tau0
        if budget_each_step and stats.n_steps >= options.max_num_steps:
            result.status, result.tau, result.h = Status.MAX_STEPS, tau0, h_tau
            result.cause = f"max_num_steps={options.max_num_steps} grid steps taken"
            return result
        if progress is not None:
            progress.step(tau0, h_tau, stats)
        h = direction * h_tau
        if callbacks is not None:
            callbacks.step(tau0, y, h)
        # With k0=None the step evaluates f(tau0, y) itself (into its stage matrix, no copy).
        try:
            y1, K = step(f, tau0, y, k0, h_tau, tau1, h, co, perturb_end=perturb,
                         perturb_start=perturb)
        except NewtonFailure as failure:
            result.status, result.tau, result.h = Status.NOT_CONVERGED, tau0, h_tau
            result.cause = (f"the Newton iteration of the implicit stages {failure.reason} "
                            f"after {failure.iterations} iteration(s) in the fixed step from "
                            f"t={direction * tau0:.10g} to t={direction * tau1:.10g} (use a "
                            "smaller step_size, raise max_iters or use an adaptive method)")
            return result
        # K[0] is f(t0, y0) unless the first stage is implicit (implicit_euler, gl4, ...): then
        # k0 stays what it was, f(t0, y0) carried from the previous step's end or None (and is
        # evaluated if the cubic interpolant needs it).
        if explicit_first:
            k0 = K[0]
        stats.n_steps += 1
        stats.n_accepted += 1
        # One reduction and one sync; the exact check only runs if the sum is not finite
        # (which a huge but finite state can also cause).
        if not math.isfinite(y1.sum().item()) and not bool(torch.isfinite(y1).all()):
            result.status, result.tau, result.h = Status.NON_FINITE, tau0, h_tau
            result.cause = "the state became non-finite (NaN or inf) during a fixed step"
            return result
        k1 = None
        if co.reuse_last and not perturb:
            # Cubic interpolation needs it after the next step has rewritten K.
            k1 = keep(K[-1]) if cubic else K[-1]
        if observer is not None:
            if cubic and k1 is None:
                k1 = f(tau1, y1, 1) if perturb else f(tau1, y1)
            if cubic and k0 is None:
                k0 = f(tau0, y, 1) if perturb else f(tau0, y)
            if observer(tau0, y, tau1, y1, K, h, k1 if cubic else None, k0 if cubic else None):
                result.tau, result.h = tau1, h_tau
                return result
        if tape is not None:
            j = i
            while j < n_out and taus[j] < tau1:
                j += 1
            thetas = [(taus[k] - tau0) / h_tau for k in range(i, j)]
            exact_end = j < n_out and taus[j] == tau1
            tape.accept(tau0, y, K, h_tau, tau1, h, perturb, perturb, thetas, exact_end)
        while i < n_out and taus[i] <= tau1:
            if taus[i] == tau1:
                outputs.append(keep(y1))
            else:
                theta = (taus[i] - tau0) / h_tau
                if cubic:
                    if k1 is None:
                        k1 = f(tau1, y1, 1) if perturb else f(tau1, y1)
                    if k0 is None:
                        k0 = f(tau0, y, 1) if perturb else f(tau0, y)
                    outputs.append(hermite(y, y1, k0, k1, h, theta))
                else:
                    outputs.append(torch.lerp(y, y1, theta))
            i += 1
        y, k0 = y1, k1
        result.tau, result.h = tau1, h_tau
    return result
