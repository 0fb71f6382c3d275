"""The interpolating adjoint: ``gradient="adjoint"`` with an implicit ``adjoint_method``.

:mod:`node.adjoint` solves ``y`` backwards together with its adjoint. On a stiff problem that is
exponentially unstable whatever the method: a mode that decays forward (eigenvalue ``-1e4``)
grows backward. Here ``y`` is never solved backwards. The forward pass records its accepted steps
(:class:`node.trajectory.Trajectory`, interpolating ``y(t)`` anywhere), and the backward pass
solves only, from ``t_N`` down to ``t_0``,

    da/dt = -J(t)^T a,        J(t) = df/dy (t, y(t)),
    da_p/dt = -(df/dp)^T a,   (a_p: the parameter adjoint, a pure quadrature)

with ``a`` jumping by ``dL/dy(t_i)`` at each output time, as :mod:`node.adjoint` does. The
``a``-equation is as stiff as the forward one (a decaying mode forward is a decaying mode of the
backward ``a``-equation) and is solved with the implicit method:

* its Newton matrix is ``I + h gamma J^T`` (the Jacobian of ``-J^T a``) from the forward field's
  ``J`` in the forward's structure (``options['jacobian']``: one dense block, or ``[B, D, D]``
  blocks transposed block by block, or the user's ``jac``) at the step's start;
* ``a_p`` never enters the Newton system: once a step's stages ``a_i`` have converged, its stage
  derivatives are ``-(df/dp)^T a_i`` at ``(t_i, y(t_i))`` (one vector-Jacobian product each) and
  it is advanced with the method's weights like any other component, so it enters the error test
  exactly as in :mod:`node.adjoint` (left out by ``norm="seminorm"``; a callable norm receives
  zeros for ``y``, which is not integrated);
* ``func`` is evaluated once per stage time (with its graph, kept for that time's Newton
  iterations and the quadrature).

This is the approach of CVODES' adjoint module (Hindmarsh et al., ACM TOMS 31, 2005: forward
checkpoints and interpolation of ``y`` during the backward solve) and the one Kim et al. 2021
("Stiff neural ordinary differential equations") use for stiff neural ODEs; the code is our own.
The gradient is accurate to the tolerances, as the explicit adjoint's is: ``y(t)`` between steps
is the forward's dense output (error ~ the forward tolerance), and the backward solve has its
own error control (``adjoint_rtol/atol``). Memory grows with the forward's number of steps
(``2 N`` per step, as the checkpoint mode's), unlike the explicit adjoint's.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from node.adjoint_diagnosis import backward_failure_hint
from node.adjoint_norms import AdjointNorm, adjoint_norm, real_numel
from node.adjoint_state import augmented_tolerance, landing, param_gradients, real_flat
from node.callbacks import warn_uncalled
from node.errors import SolverError, Status
from node.implicit_runge_kutta import stage_times
from node.jacobian import JacobianStructure
from node.multistep import AdamsMethod
from node.options import AdaptiveOptions
from node.problem import Problem
from node.state import FlatVectorField, StateLayout
from node.trajectory import Trajectory


class AdjointField(FlatVectorField):
    """``x = [a, a_p] -> [-J^T a, -(df/dp)^T a]`` along the recorded ``y(t)``, called like a
    :class:`~node.state.FlatVectorField` in the backward solve's solver time (``-`` the
    forward's). ``nfe`` counts its calls; ``func``'s own evaluations are ``f_user.nfe``."""

    def __init__(self, f_user: FlatVectorField, trajectory: Trajectory, params, layout):
        super().__init__(None, layout, f_user.time_dtype, -f_user.direction)
        self.f_user, self.trajectory, self.params = f_user, trajectory, params
        self.n = f_user.layout.numel
        self.pinned: int | None = None  # the forward step whose polynomial y(t) is (if set)
        self._key = None
        self._graph = None

    def _forward(self, tau: float, perturb: int):
        """``(y, f(t, y))`` with its graph at backward solver time ``tau`` (cached for the
        latest time: the Newton iterations and the quadrature of a stage share it)."""
        key = (tau, perturb, self.pinned)
        if self._key != key:
            # forward solver time -tau; just after tau backwards is just before it forwards
            y = self.trajectory(-tau, -perturb, self.pinned)
            with torch.enable_grad():
                y = y.detach().requires_grad_(True)
                out = self.f_user(-tau, y, -perturb)
            self._key, self._graph = key, (y, out)
        return self._graph

    def _vjp(self, tau, a, perturb, inputs_of):
        y, out = self._forward(tau, perturb)
        inputs = inputs_of(y)
        if not out.requires_grad:
            return [None] * len(inputs)
        return list(torch.autograd.grad(out, inputs, a, retain_graph=True, allow_unused=True))

    def state_part(self, tau: float, a: torch.Tensor, perturb: int = 0) -> torch.Tensor:
        """``-J^T a`` (the Newton iterations' field)."""
        self.nfe += 1
        (g,) = self._vjp(tau, a, perturb, lambda y: (y,))
        return torch.zeros_like(a) if g is None else g.neg()

    def params_part(self, tau: float, a: torch.Tensor, perturb: int = 0) -> torch.Tensor:
        """``-(df/dp)^T a``, flat (the quadrature's integrand)."""
        grads = self._vjp(tau, a, perturb, lambda y: self.params)
        return self._flat_params(grads, a)

    def _flat_params(self, grads, like) -> torch.Tensor:
        parts = [torch.zeros(real_numel(p), dtype=like.dtype, device=like.device) if g is None
                 else real_flat(g).neg() for g, p in zip(grads, self.params, strict=True)]
        return torch.cat(parts) if parts else like.new_zeros(0)

    def __call__(self, tau: float, x: torch.Tensor, perturb: int = 0) -> torch.Tensor:
        self.nfe += 1
        n = self.n
        a = x[:n]
        g_y, *g_p = self._vjp(tau, a, perturb, lambda y: (y, *self.params))
        return torch.cat([torch.zeros_like(a) if g_y is None else g_y.neg(),
                          self._flat_params(g_p, x)])


class AdjointJacobian:
    """The Jacobian structure of ``-J^T a`` for the implicit step's Newton: the forward
    field's ``J`` (in the forward's structure) at ``(t, y(t))``, transposed per block and
    negated. (The a-equation is linear: its Jacobian depends on the time alone.)"""

    diagonal_lu = staticmethod(JacobianStructure.diagonal_lu)
    coupled_lu = staticmethod(JacobianStructure.coupled_lu)

    def __init__(self, forward: JacobianStructure, field: AdjointField) -> None:
        self.forward, self.field = forward, field

    @property
    def n_jacobians(self) -> int:
        return self.forward.n_jacobians

    def evaluate(self, f, tau: float, a: torch.Tensor, perturb: int = 0) -> torch.Tensor:
        field = self.field
        y = field.trajectory(-tau, -perturb, field.pinned)
        J = self.forward.evaluate(field.f_user, -tau, y, -perturb)
        return J.mT.neg()


class AdjointStep:
    """The backward solve's step on ``[a, a_p]`` (the signature of
    :func:`node.runge_kutta.rk_step`): the implicit stages of ``a`` by ``inner`` (an
    :class:`~node.implicit_runge_kutta.ImplicitRKStep` on ``a`` alone), then ``a_p``'s stage
    derivatives at the converged stage values."""

    def __init__(self, field: AdjointField, inner) -> None:
        self.field, self.inner = field, inner

    def __call__(self, f, tau0, x0, k0, h_tau, tau1, h, co, perturb_end=False,
                 perturb_start=False):
        field = self.field
        # Every stage on the polynomial of the forward step this step lies in (it lands on the
        # forward's step boundaries: see InterpolatingAdjoint.backward), also a stage past
        # its end (kvaerno5's c = 1.23): y(t) is then smooth within the step.
        field.pinned = field.trajectory.index(-(tau0 + 0.5 * h_tau))
        try:
            return self._step(f, tau0, x0, k0, h_tau, tau1, h, co, perturb_end, perturb_start)
        finally:
            field.pinned = None

    def _step(self, f, tau0, x0, k0, h_tau, tau1, h, co, perturb_end, perturb_start):
        field, n = self.field, self.field.n
        a0 = x0[:n]
        Ka = self.inner.solve_stages(field.state_part, tau0, a0, None if k0 is None else k0[:n],
                                     h_tau, tau1, h, co, perturb_end, perturb_start)
        rows = []
        if x0.shape[0] > n:
            Z = torch.addmm(a0.unsqueeze(0), co.a, Ka, alpha=h)  # the stage values a_i
            times = stage_times(co, tau0, h_tau, tau1, perturb_end)
            for i, (t_i, side) in enumerate(times):
                if i == 0 and co.explicit_first:
                    if k0 is not None:
                        rows.append(k0[n:])
                        continue
                    side = 1 if perturb_start else 0
                rows.append(field.params_part(t_i, Z[i], side))
            K = torch.cat([Ka, torch.stack(rows)], dim=1)
        else:
            K = Ka
        return torch.add(x0, torch.mv(K.T, co.b), alpha=h), K


class InterpolatingAdjoint:
    """One adjoint solve with an implicit ``method`` (the interface of
    :class:`node.adjoint.AdjointSolver`, used by the same autograd function)."""

    def __init__(self, problem: Problem, params, rtol, atol, method, options, norm_choice):
        if isinstance(problem.tableau, AdamsMethod):
            raise ValueError(
                f"adjoint_method={method.name!r} (implicit) needs a Runge-Kutta forward method, "
                f"got method={problem.tableau.name!r}: its backward pass interpolates the "
                "forward's steps; use another method or an explicit adjoint_method")
        self.problem, self.params = problem, params
        self.f = problem.vector_field()
        self.stats: dict[str, int] = {}
        self.run = None
        n = problem.layout.numel
        n_params = sum(real_numel(p) for p in params)
        full = adjoint_norm(problem.layout, getattr(problem.options, "norm", None), params,
                            norm_choice)

        def norm(x: torch.Tensor) -> torch.Tensor:  # y is not integrated: its error is zero
            return full(torch.cat([x.new_zeros(n), x]))

        self.norm = AdjointNorm(norm, full.homogeneous)
        self.trajectory = Trajectory(self.f, problem.coefficients(),
                                     nodal=problem.fixed_grid and problem.implicit)
        aug_layout = StateLayout(torch.empty(n + n_params, dtype=problem.layout.dtype,
                                             device=problem.layout.device))
        self.f_back = problem.vector_field()  # func's evaluations in the backward pass
        self.field = AdjointField(self.f_back, self.trajectory, params, aug_layout)
        # The a-equation alone: its Newton settings (the options of the adjoint method, the
        # adjoint tolerances on a, the Jacobian structure above) come from Problem.
        a_problem = replace(
            problem, direction=-problem.direction, tableau=method, options=options,
            rtol=rtol, atol=atol,
            jacobian=AdjointJacobian(JacobianStructure(options.jacobian, problem.layout),
                                     self.field))
        self.step = AdjointStep(self.field, a_problem._implicit_step())
        self.backward_problem = replace(
            a_problem, func=self.field, callback_owner=problem.func, y0=None, layout=aug_layout,
            rtol=augmented_tolerance(rtol, n_params, copies=1),
            atol=augmented_tolerance(atol, n_params, copies=1))
        warn_uncalled(problem.func, method.name, self.backward_problem.fixed_grid, "_adjoint")

    def forward(self, y0_flat: torch.Tensor) -> torch.Tensor:
        self.run = self.problem.integrate(self.f, y0_flat, tape=self.trajectory)
        self.stats.update(self.run.stats.as_dict())
        self.stats["nfe"] = self.f.nfe
        return torch.stack(self.run.outputs)

    def backward(self, t: torch.Tensor, ys: torch.Tensor, grad_ys: torch.Tensor, need_t: bool):
        problem, bp, field = self.problem, self.backward_problem, self.field
        n_out, n = ys.shape[0], ys.shape[1]
        f_user = self.f_back
        taus_back = [bp.direction * float(v) for v in t.detach().tolist()]
        grad_t = torch.zeros_like(t) if need_t else None
        x = torch.cat([grad_ys[-1], ys.new_zeros(bp.layout.numel - n)])
        h = self.run.h if not bp.fixed_grid and self.run.h > 0 else None
        steps = rejected = 0
        for i in range(n_out - 1, 0, -1):
            if need_t:
                k = f_user(problem.direction * float(t[i]), ys[i])
                grad_t[i] = torch.dot(k, grad_ys[i]).to(t.dtype)
            interval = replace(bp, t=t[i - 1 : i + 1].flip(0),
                               taus=[taus_back[i], taus_back[i - 1]],
                               options=self._interval_options(float(t[i - 1]), float(t[i])))
            run = interval.integrate(field, x, step=self.step, norm=self.norm,
                                     norm_homogeneous=self.norm.homogeneous, first_step=h,
                                     callback_suffix="_adjoint")
            steps += run.stats.n_steps
            rejected += run.stats.n_rejected
            if run.status is not Status.SUCCESS:
                t_reached = bp.direction * run.tau
                hint = backward_failure_hint(interval, run, x, float(t[i]), 0, n)
                raise SolverError(run.status, t_reached, run.h,
                                  f"adjoint (backward) solve failed: {run.cause}; stopped at "
                                  f"t={t_reached:.10g} with step size {run.h:.6g}"
                                  + ("; " + hint if hint else ""))
            x = run.outputs[-1].clone()
            x[:n] += grad_ys[i - 1]
            h = run.h if not interval.fixed_grid else None
        a = x[:n]
        if need_t:
            k0 = f_user(problem.direction * float(t[0]), ys[0])
            grad_t[0] = -torch.dot(k0, a - grad_ys[0]).to(t.dtype)
        counts = self.step.inner.counts()
        self.stats.update(nfe_backward=f_user.nfe, n_steps_backward=steps,
                          n_rejected_backward=rejected,
                          n_jacobians_backward=counts["n_jacobians"],
                          n_lu_backward=counts["n_lu"], n_newton_backward=counts["n_newton"])
        return a, grad_t, param_gradients(x[n:], self.params)

    def _interval_options(self, t_low: float, t_high: float):
        """The backward options from ``t_high`` to ``t_low``: land on ``t_low`` (``a`` jumps
        there) and on every forward step boundary in between. ``y(t)`` is a polynomial per
        forward step whose second derivative jumps at the boundaries: a step across one would
        see a kink in ``-J(t)^T a``, and the error control would shrink the steps around every
        boundary (measured: 9x the forward's steps on ROBER, against about 1x when landing)."""
        options = self.backward_problem.options
        if not isinstance(options, AdaptiveOptions):
            return options
        d = self.problem.direction
        inside = self.trajectory.boundaries(*sorted((d * t_low, d * t_high)))
        return landing(
            replace(options, step_t=(*options.step_t, *(d * tau for tau in inside))), t_low)
