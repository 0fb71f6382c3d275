"""Stiffness diagnosis: why an explicit method ran out of steps.

An explicit Runge-Kutta method is stable on ``y' = lambda y`` only while ``z = h * lambda`` stays
inside its stability region, which meets the negative real axis at ``-B`` (``B`` about 3.3 for
dopri5, 3.5 for tsit5, 2.5 for bosh3). On a stiff problem the Jacobian ``J = df/dy`` has an
eigenvalue ``lambda`` with a large negative real part whose mode has long decayed: the solution is
smooth, yet every step longer than about ``B / |lambda|`` makes that mode grow, fails the error
test and is cut back. The step size then hovers at the stability limit, ``h |lambda| ~ B``, however
loose the tolerance, and the step budget runs out on a time span the solution would cross in a
few steps of an implicit method.

The diagnosis runs once, when an adaptive explicit solve has failed (step budget exhausted or step
size underflow), and costs nothing while the solve runs. At the failure point ``(t, y)`` it
estimates the dominant eigenvalue of ``J`` by power iteration, each product ``J v`` a forward
difference ``(f(y + d v) - f(y)) / d`` (one call of ``func``; no autograd, so any ``func`` works;
about 26 calls in all). The problem is called stiff when

* ``h * rho >= 0.5 * B``: the step in use is at (or near) the stability limit set by the
  spectral radius estimate ``rho`` (a step chosen for accuracy is far inside it, ``h rho`` well
  under 1 at ordinary tolerances), and
* the Rayleigh quotient ``<v, J v>`` of the converged vector is ``<= -0.5 * rho``: the dominant
  mode decays (a real negative eigenvalue, or a complex pair of large negative real part). A
  fast *oscillation* (eigenvalues near the imaginary axis) is not stiffness: an implicit method
  would have to resolve it too, so no stiff method is suggested for it; and
* the solution is slow next to that mode: ``rho * ||y/s|| / ||f(y)/s|| >= 10`` with ``s = atol +
  rtol |y|`` (the stiffness ratio, measured at the failure point in the error test's units).

No test alone would do: a long horizon or an oscillatory problem exhausts the budget with a step
far inside the stability region (first test) or an imaginary dominant eigenvalue (second); a
loose-tolerance solve of a non-stiff problem can reach the boundary with a real eigenvalue while
the solution moves at that eigenvalue's pace (third). A collapse of the step at a blow-up has
``q > 0``. Together they are a strong signal; the estimate is an estimate, so the message says
"appears stiff" and states the numbers it rests on. Known limits: a loose-tolerance solve that
has blown up (ROBER at rtol 1e-3 with dopri5: the state goes negative and explodes, the step
underflows) is not diagnosed; a numerical solution that has settled on an equilibrium with a
real dominant eigenvalue at a loose tolerance (Lorenz at rtol 1e-2 near C+) can be.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from node.tableau import ButcherTableau

# Thresholds of the three tests (module docstring).
STEP_FRACTION = 0.5
DECAY_FRACTION = 0.5
STIFFNESS_RATIO = 10.0
POWER_ITERATIONS = 24

SUGGESTION = (
    'use a stiff method: method="kvaerno5" (method="kvaerno3" at loose tolerances, rtol >= 1e-4), '
    'or, when no gradient is needed, method="scipy_solver" with '
    'options=dict(solver="Radau") or "BDF"'
)


@lru_cache(maxsize=64)
def real_stability_boundary(tableau: ButcherTableau) -> float:
    """``B``: where the stability region of an explicit tableau leaves the negative real axis.

    The stability function is ``R(z) = 1 + z b^T g`` with stage values ``g_i = 1 + z sum_j a_ij
    g_j`` (the method applied to ``y' = lambda y``, ``z = h lambda``); ``B`` is the smallest
    ``x > 0`` with ``|R(-x)| > 1``, found on a grid of 0.01 and refined by bisection.
    """

    def amplification(x: float) -> float:
        z = -x
        g: list[float] = []
        for row in tableau.a:
            g.append(1.0 + z * sum(a * gj for a, gj in zip(row, g, strict=False)))
        return abs(1.0 + z * sum(b * gi for b, gi in zip(tableau.b, g, strict=True)))

    lo, x = 0.0, 0.01
    while amplification(x) <= 1.0:
        lo, x = x, x + 0.01
        if x > 100.0:  # not an explicit method's region; never claim stiffness from it
            return math.inf
    hi = x
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if amplification(mid) <= 1.0 else (lo, mid)
    return lo


def dominant_eigenvalue(f, tau: float, y: torch.Tensor, size: torch.Tensor | None = None,
                        iterations: int = POWER_ITERATIONS) -> tuple[float, float] | None:
    """``(rho, q)``: the spectral radius of ``J = df/dy`` at ``(tau, y)`` estimated by power
    iteration, and the Rayleigh quotient ``q = <v, M v>`` of the final unit vector ``v`` (``q``
    is ``lambda`` for a real dominant eigenvalue, its real part for a complex pair of a normal
    ``J``). ``None`` if ``func`` gives non-finite values near ``y``.

    The iteration runs on ``M = D^-1 J D`` (the same eigenvalues), ``D = diag(size)`` with
    ``size`` the size of each state entry (default ``|y|``, floored at the largest entry times
    eps): each product ``M v = D^-1 (f(y + d D v) - f(y)) / d`` perturbs every entry by
    ``sqrt(eps)`` relative to its own size, so a tiny but stiff component (ROBER's ``y2 ~ 1e-5``)
    is not swamped by a perturbation sized for the large ones, even in float32.
    ``f`` is the flat vector field in solver time (the dynamics the method actually integrates).
    The start vector is fixed (seeded), so the diagnosis is reproducible.
    """
    with torch.no_grad():
        y = y.detach()
        eps = torch.finfo(y.dtype).eps
        if size is None:
            size = y.abs()
        size = size.clamp_min(eps * max(float(size.max()), eps))
        f0 = f(tau, y)
        if not bool(torch.isfinite(f0).all()) or not bool(torch.isfinite(size).all()):
            return None
        generator = torch.Generator().manual_seed(0)
        v = torch.rand(y.shape, generator=generator, dtype=torch.float64) - 0.5
        v = v.to(dtype=y.dtype, device=y.device)
        # The difference step: sqrt(eps) of each entry's size (the usual balance of truncation
        # against rounding for a forward difference).
        d = math.sqrt(eps)
        rho = q = 0.0
        for _ in range(iterations):
            norm = float(torch.linalg.vector_norm(v))
            if not norm > 0.0 or not math.isfinite(norm):
                return None
            v = v / norm
            w = (f(tau, y + (d * size) * v) - f0) / (d * size)
            rho = float(torch.linalg.vector_norm(w))
            if not math.isfinite(rho):
                return None
            q = float(torch.dot(v, w))
            if rho == 0.0:
                return 0.0, 0.0
            v = w
        return rho, q


def slowness(f, tau: float, y: torch.Tensor, scale: torch.Tensor) -> float:
    """``||y / s|| / ||f(y) / s||`` with ``s = atol + rtol |y|``: the time the solution takes to
    change by its own size, measured in the error test's units (``inf`` when it stands still)."""
    with torch.no_grad():
        speed = float(torch.linalg.vector_norm(f(tau, y) / scale))
        size = float(torch.linalg.vector_norm(y / scale))
    if not math.isfinite(speed) or not math.isfinite(size):
        return 0.0
    return math.inf if speed == 0.0 else size / speed


def stiffness_hint(f, tableau, tau: float, y: torch.Tensor | None, h: float,
                   scale: torch.Tensor) -> str:
    """The diagnosis appended to a failed explicit solve's message ("" when the problem does not
    look stiff, or for a method this test does not apply to). ``h`` is the step size in use at the
    failure, in solver time; ``f`` the flat vector field; ``scale`` the error test's
    ``atol + rtol |y|`` at ``y``."""
    if y is None or not isinstance(tableau, ButcherTableau) or not tableau.adaptive:
        return ""
    if not (h > 0.0 and math.isfinite(h)):
        return ""
    boundary = real_stability_boundary(tableau)
    estimate = dominant_eigenvalue(f, tau, y, y.detach().abs() + scale)
    if estimate is None or not math.isfinite(boundary):
        return ""
    rho, q = estimate
    if h * rho < STEP_FRACTION * boundary or q > -DECAY_FRACTION * rho:
        return ""
    if rho * slowness(f, tau, y, scale) < STIFFNESS_RATIO:
        return ""
    return (
        f"the problem appears stiff: the Jacobian of func has an eigenvalue of about {q:.3g} "
        f"(spectral radius {rho:.3g}), and the step size {h:.3g} in use is held at the "
        f"stability limit of {tableau.name} (h*|lambda| = {h * rho:.3g}, the method is stable "
        f"up to {boundary:.3g} on the negative real axis); " + SUGGESTION
    )
