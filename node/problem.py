"""A validated initial-value problem: everything a solver loop needs, built once per solve."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from node.adams import integrate_adams
from node.adaptive import integrate_adaptive
from node.callbacks import StepCallbacks, warn_uncalled
from node.complex_state import ComplexView, complex_view_of
from node.fixed_grid import integrate_fixed_grid, make_grid
from node.implicit_runge_kutta import ImplicitRKStep, implicit_coefficients
from node.implicit_tableau import ImplicitTableau
from node.inputs import check_func, check_times
from node.jacobian import JacobianStructure
from node.methods import Method, get_tableau
from node.multistep import AdamsMethod
from node.newton import ChordNewton, NewtonSettings
from node.norms import FlatNorm, mixed_rms_norm, rms_norm
from node.options import AdaptiveOptions, FixedGridOptions, parse_options, uses_fixed_grid
from node.progress import ProgressBar
from node.runge_kutta import BufferedRKStep, RKCoefficients, coefficients, rk_step
from node.solution import Integration
from node.state import FlatVectorField, StateLayout, check_not_both_zero
from node.tolerance import ErrorScale


@dataclass
class Problem:
    func: Callable
    y0: object
    t: torch.Tensor
    layout: StateLayout
    direction: float
    taus: list[float]
    # an explicit or implicit Runge-Kutta tableau, or an Adams method (no tableau, its own loop)
    tableau: Method
    options: AdaptiveOptions | FixedGridOptions
    rtol: object
    atol: object
    callback_owner: object = None  # whose step callbacks to call (default: func)
    complex_view: ComplexView | None = None  # a complex state solved as its real view
    # how an implicit method builds its Newton matrices (None: from options['jacobian']; the
    # adjoint's backward solve sets its own for the augmented system)
    jacobian: object = None

    @property
    def fixed_grid(self) -> bool:
        return isinstance(self.options, FixedGridOptions)

    def vector_field(self) -> FlatVectorField:
        return FlatVectorField(self.func, self.layout, self.options.dtype, self.direction)

    @property
    def implicit(self) -> bool:
        return isinstance(self.tableau, ImplicitTableau)

    def coefficients(self) -> RKCoefficients:
        if self.implicit:
            return implicit_coefficients(self.tableau, self.layout.dtype, self.layout.device)
        return coefficients(self.tableau, self.layout.dtype, self.layout.device)

    def new_step(self, f: FlatVectorField, y0_flat: torch.Tensor):
        """The step function of one solve: the implicit step (with its own Newton state and
        counters) for an implicit method; for an explicit one :func:`rk_step`, or the buffered
        step when no graph is recorded."""
        if self.implicit:
            return self._implicit_step()
        if not torch.is_grad_enabled() and not self.layout.is_tuple:
            return BufferedRKStep(f, y0_flat, self.coefficients())
        return rk_step

    def _implicit_step(self) -> ImplicitRKStep:
        options = self.options
        structure = self.jacobian
        if structure is None:
            structure = JacobianStructure(options.jacobian, self.layout)
        rtol = self.rtol
        min_rtol = float(rtol.min()) if isinstance(rtol, torch.Tensor) else float(rtol)
        eps = torch.finfo(self.layout.dtype).eps
        settings = NewtonSettings(
            max_iters=options.max_iters, kappa=options.newton_tol,
            early_exit=not self.fixed_grid, carry_rate=not self.fixed_grid,
            floor=10.0 * eps / min_rtol if min_rtol > 0 else 0.0)
        # The Newton norm: RMS scaled by the error test's atol + rtol |y0| (never the user's
        # norm, which may not weigh every entry).
        errors = ErrorScale(self.rtol, self.atol, rms_norm, True,
                            torch.abs if self.complex_view is None else self.complex_view.magnitude)
        return ImplicitRKStep(structure, ChordNewton(settings),
                              lambda y: errors.scale(errors.magnitude(y)),
                              reuse=options.jacobian_reuse)

    def error_scale(self, norm: FlatNorm | None = None, homogeneous: bool = True) -> ErrorScale:
        """The error test; ``norm`` (flat; ``homogeneous`` as in :class:`ErrorScale`) overrides
        the options' and the default norm."""
        if norm is not None:
            return ErrorScale(self.rtol, self.atol, norm, homogeneous=homogeneous)
        view = self.complex_view
        magnitude = torch.abs if view is None else view.magnitude
        user_norm = getattr(self.options, "norm", None)  # fixed-grid options have none
        if user_norm is not None:
            layout = self.layout

            def unflattened(x: torch.Tensor) -> torch.Tensor:
                err = layout.unflatten(x)
                return torch.as_tensor(user_norm(err if view is None else view.complex(err)))

            return ErrorScale(self.rtol, self.atol, unflattened, False, magnitude)
        if self.layout.is_tuple and len(self.layout.numels) > 1:
            flat_norm = mixed_rms_norm(self.layout.numels)
        else:
            flat_norm = rms_norm
        if view is not None:
            flat_norm = view.entry_norm(flat_norm)
        return ErrorScale(self.rtol, self.atol, flat_norm, True, magnitude)

    def integrate(
        self,
        f: FlatVectorField,
        y0_flat: torch.Tensor,
        *,
        step=None,
        norm: FlatNorm | None = None,
        norm_homogeneous: bool = True,
        first_step: float | None = None,
        callback_suffix: str = "",
        observer=None,
        k0: torch.Tensor | None = None,
        tape=None,
    ) -> Integration:
        """Run the solver loop for this problem's mode from ``y0_flat`` (``k0``: the first
        stage if already evaluated; ``tape``: records the accepted steps), with a progress bar
        if the options ask for one."""
        kw = dict(step=step, norm=norm, norm_homogeneous=norm_homogeneous, first_step=first_step,
                  callback_suffix=callback_suffix, observer=observer, k0=k0, tape=tape)
        progress = self.options.progress
        if not progress or len(self.taus) < 2:
            return self._integrate(f, y0_flat, **kw)
        label = self.tableau.name + (" (backward)" if callback_suffix == "_adjoint" else "")
        bar = ProgressBar(f, self.taus[0], self.taus[-1], label,
                          delay=0.0 if progress is True else progress,
                          rejections=not self.fixed_grid)
        run = None
        try:
            run = self._integrate(f, y0_flat, progress=bar, **kw)
        finally:
            bar.close(run)
        return run

    def _integrate(self, f, y0_flat, *, step, norm, norm_homogeneous, first_step,
                   callback_suffix, observer, k0, tape, progress=None) -> Integration:
        if isinstance(self.tableau, AdamsMethod):
            return self._integrate_adams(f, y0_flat, norm, norm_homogeneous, callback_suffix,
                                         observer, k0, progress)
        co = self.coefficients()
        owner = self.func if self.callback_owner is None else self.callback_owner
        callbacks = StepCallbacks.of(owner, f, callback_suffix)
        if step is None:
            step = self.new_step(f, y0_flat)
        if self.fixed_grid:
            grid = make_grid(self.taus, self.options, self.direction, self._constructor_args)
            run = integrate_fixed_grid(f, y0_flat, self.taus, grid, co, self.options, callbacks,
                                       step=step, k0=k0, tape=tape, observer=observer,
                                       progress=progress)
        else:
            options = self.options
            if first_step is not None:
                options = replace(options, first_step=first_step)
            errors = self.error_scale(norm, norm_homogeneous)
            run = integrate_adaptive(f, y0_flat, self.taus, co, options, errors, callbacks,
                                     step=step, observer=observer, k0=k0, tape=tape,
                                     progress=progress)
        implicit_step = getattr(step, "inner", step)
        if isinstance(implicit_step, ImplicitRKStep):
            run.stats.implicit = True
            for name, value in implicit_step.counts().items():
                setattr(run.stats, name, value)
        return run

    def _integrate_adams(self, f, y0_flat, norm, norm_homogeneous, callback_suffix, observer,
                         k0, progress) -> Integration:
        """The multistep loop (no tape: the checkpoint mode checkpoints ``f`` instead)."""
        owner = self.func if self.callback_owner is None else self.callback_owner
        callbacks = StepCallbacks.of(owner, f, callback_suffix)
        grid = make_grid(self.taus, self.options, self.direction, self._constructor_args)
        # the implicit corrector's convergence test uses the solve's tolerances and norm
        errors = self.error_scale(norm, norm_homogeneous) if self.tableau.implicit else None
        return integrate_adams(f, y0_flat, self.taus, grid, self.tableau, self.options, errors,
                               callbacks, k0=k0, observer=observer, progress=progress)

    def _constructor_args(self) -> tuple:
        return (self.func, self.y0, self.t)


def make_problem(func, y0, t, *, method, rtol, atol, options) -> Problem:
    """Validate the arguments of a solve (every check names the argument at fault).

    A complex state arrives here already as its real view, with ``func`` wrapped by
    :meth:`node.complex_state.ComplexView.func`; the wrapper says so (for the error test).
    """
    check_func(func)
    layout = StateLayout(y0)
    direction = check_times(t)
    rtol_flat = layout.flat_tolerance("rtol", rtol)
    atol_flat = layout.flat_tolerance("atol", atol)
    check_not_both_zero(rtol_flat, atol_flat, rtol, atol)
    tableau = get_tableau(method)
    fixed = uses_fixed_grid(tableau.adaptive, options)
    opts = parse_options(options, fixed_grid=fixed, method=tableau)
    warn_uncalled(func, tableau.name, fixed)
    taus = [direction * float(v) for v in t.detach().tolist()]
    return Problem(func, y0, t, layout, direction, taus, tableau, opts, rtol_flat, atol_flat,
                   complex_view=complex_view_of(func))
