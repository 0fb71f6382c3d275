"""The implicit Runge-Kutta step: :class:`ImplicitRKStep`, with the signature and result of
:func:`node.runge_kutta.rk_step`, so that the adaptive and fixed-grid loops, the error test,
dense output, the checkpoint tape and event location run it unchanged.

Stage equations (``I``: the implicit stages; an explicit first stage is ``k_0 = f(t0, y0)``):

    z_i = y0 + h sum_j a_ij k_j,   k_i = f(t0 + c_i h, z_i),   y1 = y0 + h sum_i b_i k_i.

* Diagonally implicit tableaus are solved stage by stage: ``z_i = base_i + h a_ii f(t_i, z_i)``
  with ``base_i = y0 + h sum_{j<i} a_ij k_j``, by chord Newton with the matrix ``I - h a_ii J``
  (one LU per distinct diagonal entry per step: one for SDIRK/ESDIRK). Predictor: the previous
  stage's value ``z_{i-1}`` (``y0`` for the first), which stays bounded however stiff the
  problem is (an explicit extrapolation from derivatives does not).
* Fully implicit tableaus solve the increments ``Z_I = z_I - base_I`` of all implicit stages as
  one coupled system ``Z = h A_II F(base + Z)`` with the matrix ``I - h A_II kron J`` (per
  Jacobian block), from ``Z = 0``.

``J = df/dy`` is evaluated once per step at ``(t0, y0)`` (and reused when a rejected step is
retried from the same state); it is only a Newton matrix, so its error slows the iteration but
never changes the converged stages. With ``options['jacobian_reuse'] = r > 0`` it is kept for
the next steps while the iteration contracts with rate at most ``r`` (RADAU5's rule), and so are
its LUs while ``h a_ii`` stays the same (a fixed grid); a Newton failure with a kept ``J`` is
retried once with a fresh one before the step is rejected.

The stage derivatives are recovered from the converged values,
``k_i = (z_i - base_i) / (h a_ii)`` (or ``A_II^{-1} Z / h``), not by evaluating ``f(z_i)``: that
would amplify the Newton error by the stiff ``J`` (Hairer and Wanner, *Solving ODEs II*, sec.
IV.8). Newton runs without autograd; gradients come from the implicit function
theorem (:mod:`node.implicit_gradient`).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from node.implicit_gradient import attach_stage_gradients
from node.implicit_tableau import ImplicitTableau
from node.jacobian import JacobianStructure
from node.newton import ChordNewton, NewtonFailure

# How far (relative) a step's h a_ii may be from the one a kept LU was factorised for.
LU_BAND = 1e-6


class ImplicitCoefficients:
    """An implicit tableau's coefficients as tensors (the explicit family's interface plus the
    full matrix ``a`` and the structure)."""

    def __init__(self, tableau: ImplicitTableau, dtype: torch.dtype, device: torch.device):
        def tensor(values):
            return torch.tensor(values, dtype=dtype, device=device)

        self.tableau = tableau
        self.stages = tableau.stages
        self.c = tableau.c
        self.order = tableau.order
        self.fsal = tableau.fsal
        self.reuse_last = tableau.reuses_last_stage
        self.a = tensor(tableau.a)
        self.rows = list(self.a.unbind(0))
        self.b = tensor(tableau.b)
        self.b_error = None if tableau.b_error is None else tensor(tableau.b_error)
        self.explicit_first = tableau.explicit_first_stage
        self.diagonal = tableau.diagonally_implicit
        self.implicit = list(tableau.implicit_stages)
        idx = torch.tensor(self.implicit, device=device)
        self.a_implicit = self.a[idx][:, idx]  # A_II
        self.a_implicit_inv = None
        if not self.diagonal:
            a64 = torch.tensor(tableau.a, dtype=torch.float64)[idx.cpu()][:, idx.cpu()]
            if torch.linalg.matrix_rank(a64) == len(self.implicit):
                self.a_implicit_inv = torch.linalg.inv(a64).to(dtype=dtype, device=device)


@lru_cache(maxsize=64)
def implicit_coefficients(tableau: ImplicitTableau, dtype: torch.dtype, device: torch.device):
    with torch.inference_mode(False):  # cached across solves: never inference tensors
        return ImplicitCoefficients(tableau, dtype, device)


class ImplicitRKStep:
    """The step of one solve: holds the Jacobian structure, the Newton state and the counters.

    Args:
        structure: how ``J`` is built (:class:`node.jacobian.JacobianStructure`).
        newton: the chord iteration (carries its rate estimate from stage to stage).
        scale: ``y0 -> atol + rtol |y0|``, the Newton norm's weights.
    """

    def __init__(self, structure: JacobianStructure, newton: ChordNewton, scale,
                 reuse: float = 0.0) -> None:
        self.structure = structure
        self.newton = newton
        self.scale = scale
        self.reuse = reuse
        self.n_lu = 0
        self._jac = None
        self._jac_key = None  # the state the kept Jacobian was evaluated at
        self._keep = False  # whether the last stage solve allows keeping it for the next step
        self._lus: dict[float, object] = {}  # LUs of the kept Jacobian, by their coefficient

    def counts(self) -> dict[str, int]:
        return {"n_jacobians": self.structure.n_jacobians, "n_lu": self.n_lu,
                "n_newton": self.newton.iterations}

    def __call__(self, f, tau0, y0, k0, h_tau, tau1, h, co: ImplicitCoefficients,
                 perturb_end=False, perturb_start=False):
        grad = torch.is_grad_enabled()
        if grad and co.explicit_first and k0 is None:
            # evaluated once, with its graph (the first stage is then no unknown)
            k0 = f(tau0, y0, 1 if perturb_start else 0)
        K = self.solve_stages(f, tau0, y0, k0, h_tau, tau1, h, co, perturb_end, perturb_start)
        if grad:
            return self.differentiate(f, tau0, y0, k0, K, h_tau, tau1, h, co, perturb_end,
                                      perturb_start)
        return torch.add(y0, torch.mv(K.T, co.b), alpha=h), K

    def deferred(self, f, tau0, y0, k0, h_tau, tau1, h, co: ImplicitCoefficients,
                 perturb_end=False, perturb_start=False):
        """``(y1, K, finish)``: the step's values without a graph, and ``finish()`` returning
        ``(y1, K)`` with it. The adaptive loop calls ``finish`` for accepted steps only, so that
        a rejected step under autograd costs no rebuild (one ``func`` evaluation per implicit
        stage, :mod:`node.implicit_gradient`)."""
        if co.explicit_first and k0 is None:
            k0 = f(tau0, y0, 1 if perturb_start else 0)  # once, with its graph
        K = self.solve_stages(f, tau0, y0, k0, h_tau, tau1, h, co, perturb_end, perturb_start)
        with torch.no_grad():
            y1 = torch.add(y0, torch.mv(K.T, co.b), alpha=h)

        def finish():
            return self.differentiate(f, tau0, y0, k0, K, h_tau, tau1, h, co, perturb_end,
                                      perturb_start)

        return y1, K, finish

    def solve_stages(self, f, tau0, y0, k0, h_tau, tau1, h, co, perturb_end=False,
                     perturb_start=False) -> torch.Tensor:
        """The converged stage derivatives ``K*`` (``[S, N]``, no graph)."""
        times = stage_times(co, tau0, h_tau, tau1, perturb_end, perturb_start)
        with torch.no_grad():
            if co.explicit_first and k0 is None:
                k0 = f(tau0, y0, 1 if perturb_start else 0)
            return self._stages(f, tau0, y0.detach(), None if k0 is None else k0.detach(), h,
                                co, times, 1 if perturb_start else 0)

    def differentiate(self, f, tau0, y0, k0, K_star, h_tau, tau1, h, co, perturb_end=False,
                      perturb_start=False):
        """``(y1, K)`` with the value ``K*`` and the implicit-function-theorem graph
        (:mod:`node.implicit_gradient`); evaluates an explicit first stage if ``k0`` is None."""
        if co.explicit_first and k0 is None:
            k0 = f(tau0, y0, 1 if perturb_start else 0)
        times = stage_times(co, tau0, h_tau, tau1, perturb_end, perturb_start)
        K = attach_stage_gradients(f, co, self.structure, times, y0, K_star, k0, h)
        return torch.add(y0, torch.mv(K.T, co.b), alpha=h), K

    def _stages(self, f, tau0, y0, k0, h, co, times, side: int = 0) -> torch.Tensor:
        # Jacobian reuse (as RADAU5 and SciPy's Radau): J is evaluated at a step's start unless
        # the last stage solve contracted fast (rate <= reuse), in which case the kept J, from
        # an earlier state, is good enough for the chord iteration (it only changes how fast
        # Newton converges, never what it converges to). A step retried from the same state
        # (after a rejection) reuses the J evaluated there. A Newton failure with a J from an
        # earlier state is retried once with a fresh one before the failure is reported (and
        # the step rejected and shrunk).
        # (inference tensors, as in Lightning's validation, keep no version counter; the loops
        # never write into a state they step from)
        version = -1 if y0.is_inference() else y0._version
        # ``side``: J just after tau0 when the grid perturbs its evaluations (func may jump at
        # grid points and must not be called on them)
        key = (tau0, side, y0.data_ptr(), version, y0.shape)
        fresh = self._jac_key == key
        if self._jac is None or not (fresh or self._keep):
            self._new_jacobian(f, tau0, y0, key, side)
            fresh = True
        self.newton.worst_rate = 0.0
        try:
            K = self._solve(f, y0, k0, h, co, times)
        except NewtonFailure:
            self._keep = False
            if fresh:
                raise
            self._new_jacobian(f, tau0, y0, key, side)
            self.newton.worst_rate = 0.0
            K = self._solve(f, y0, k0, h, co, times)
        self._keep = self.reuse > 0.0 and self.newton.worst_rate <= self.reuse
        return K

    def _new_jacobian(self, f, tau0, y0, key, side: int = 0) -> None:
        self._jac = self.structure.evaluate(f, tau0, y0, side)
        self._jac_key = key
        self._lus = {}

    def _lu(self, coefficient: float, make, used: dict):
        """The LU for ``coefficient`` (``h a_ii``, or ``h`` for a fully implicit tableau) of the
        kept ``J``: reused while ``J`` is kept and the coefficient is within a relative
        ``LU_BAND`` of the one it was factorised for (a fixed grid's constant step, whose rounded
        ``h`` varies in the last bits; the Newton matrix is then off by ``O(LU_BAND)``, which
        only slows the iteration), else factorised by ``make()``."""
        for cache in (used, self._lus):
            for c, lu in cache.items():
                if abs(coefficient - c) <= LU_BAND * abs(c):
                    used[c] = lu
                    return lu
        lu = used[coefficient] = make()
        self.n_lu += 1
        return lu

    def _solve(self, f, y0, k0, h, co, times) -> torch.Tensor:
        S, n = co.stages, y0.shape[0]
        K = y0.new_zeros((S, n))
        if co.explicit_first:
            K[0] = k0
        J = self._jac
        scale = self.scale(y0)
        used: dict[float, object] = {}
        if co.diagonal:
            z_prev = y0
            for i in co.implicit:
                base = torch.add(y0, torch.mv(K.T, co.rows[i]), alpha=h)  # K_j = 0 for j >= i
                g = h * co.tableau.a[i][i]
                t_i, side = times[i]
                if g == 0.0:  # an explicit stage inside a DIRK tableau
                    K[i] = f(t_i, base, side)
                    z_prev = base
                    continue
                lu = self._lu(g, lambda g=g: self.structure.diagonal_lu(J, g), used)

                def residual(z, base=base, g=g, t_i=t_i, side=side):
                    return z - base - g * f(t_i, z, side)

                z = self.newton.solve(residual, z_prev.clone(), lu.solve_flat, scale)
                K[i] = (z - base) / g
                z_prev = z
            self._lus = used
            return K
        # Fully implicit: the implicit stages' increments as one coupled system.
        implicit = co.implicit
        bases = torch.stack([torch.add(y0, torch.mv(K.T, co.rows[i]), alpha=h) for i in implicit])
        a_ii = co.a_implicit
        lu = self._lu(h, lambda: self.structure.coupled_lu(J, a_ii, h), used)
        self._lus = used

        def residual(Z):
            F = torch.stack([f(times[i][0], bases[r] + Z[r], times[i][1])
                             for r, i in enumerate(implicit)])
            return Z - h * (a_ii @ F)

        Z = self.newton.solve(residual, torch.zeros_like(bases), lu.solve_flat, scale)
        if co.a_implicit_inv is not None:
            K_implicit = (co.a_implicit_inv @ Z) / h
        else:
            K_implicit = torch.stack([f(times[i][0], bases[r] + Z[r], times[i][1])
                                      for r, i in enumerate(implicit)])
        K[implicit] = K_implicit
        return K


def stage_times(co, tau0: float, h_tau: float, tau1: float, perturb_end: bool,
                 perturb_start: bool = False):
    """``(solver time, perturb side)`` of every stage (as :func:`rk_step` evaluates them).

    A node past the step's end (kvaerno5's ``c_2 = 1.23``) on an adaptive step that lands on a
    ``jump_t`` time (``perturb_end`` alone) would evaluate ``func`` after the discontinuity, and
    the step would see the jump: rejections until the step before the jump is tiny. That stage
    is evaluated at the step's end instead, from before the jump: exact for an autonomous
    ``func``, otherwise an ``O(h^2 df/dt)`` local error in that one step, which the error test
    controls. (Measured on ``y' = s(t) + cos 3t - y/2``, ``s`` jumping from 1 to -1 at
    ``jump_t = 1``, rtol = atol = 1e-6: 47 steps, 15 rejected, error 4.3e-5 at its node; 18
    steps, 2 rejected, error 2.6e-5 clipped; 1.2e-5 without the jump.) The fixed grid's
    ``perturb`` (``perturb_end`` and ``perturb_start`` on every step) keeps the node: clipping
    every step would cost the order; a jump on a grid point is then seen by that stage."""
    if not perturb_end or perturb_start:
        return [(tau1, -1 if perturb_end else 0) if c == 1.0 else (tau0 + c * h_tau, 0)
                for c in co.c]
    return [(tau1, -1) if c >= 1.0 else (tau0 + c * h_tau, 0) for c in co.c]
