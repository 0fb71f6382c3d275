"""``solve(..., per_sample=True)``: checks, the per-sample loop, and the per-sample result.

Gradient modes: ``"direct"`` (autograd through the loop), ``"checkpoint"``
(:mod:`node.per_sample_checkpoint`) and ``"adjoint"`` (:mod:`node.per_sample_adjoint`).

A failing sample is frozen and the others go on (:mod:`node.per_sample`); at the end
``on_failure="raise"`` raises one :class:`~node.SolverError` naming every failing sample, its
time and cause, and ``"return"`` returns the :class:`PerSampleSolution` with NaN at the output
times a failed sample never reached.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from node.blowup import blowup_growth, warn_fixed_grid_growth
from node.callbacks import CALLBACK_NAMES
from node.errors import SolverError, Status
from node.gradient_modes import check_no_adjoint_arguments
from node.inputs import check_func
from node.methods import get_tableau
from node.options import parse_options, uses_fixed_grid
from node.per_sample import CODES, SampleErrorScale, SampleField, integrate_per_sample
from node.per_sample_adjoint import integrate_adjoint
from node.per_sample_checkpoint import integrate_checkpointed
from node.per_sample_dense import SampleDenseOutput, SampleDenseTape
from node.per_sample_fixed_grid import solve_fixed_grid_per_sample
from node.per_sample_inputs import _sample_tolerance, check_sample_inputs
from node.per_sample_stops import SampleStops, sample_times
from node.per_sample_tuple import solve_tuple_per_sample
from node.runge_kutta import coefficients
from node.solution import Solution
from node.state import check_not_both_zero
from node.tableau import ButcherTableau

LISTED = 10  # failing samples named in a message


@dataclass
class PerSampleSolution(Solution):
    """The result of a per-sample solve.

    Attributes (besides :class:`~node.Solution`'s):
        ys: ``[T, B, ...]`` (time first); NaN at the output times a failed sample never reached.
        ts: ``t`` as given (``[T]`` or ``[B, T]``).
        stats: ``nfe``, ``n_steps``, ``n_accepted``, ``n_rejected`` as ``[B]`` tensors (the
            work each sample took part in, as if solved alone), plus ``n_calls`` (batched
            ``func`` calls) and ``n_iterations`` (loop iterations) as ints. After a backward
            pass in the checkpoint or adjoint mode: ``n_calls_backward`` (batched ``func``
            calls, each with its vector-Jacobian product), and for the adjoint
            ``n_steps_backward`` (``[B]``, each sample's attempts) and
            ``n_iterations_backward``.
        status: ``SUCCESS`` if every sample succeeded, else the status of the first that failed.
        sample_status: one :class:`~node.Status` per sample.
        sample_t: ``[B]`` the time each sample reached (its last output time on success).
        failed: indices of the samples that failed.
    """

    sample_status: list[Status] = field(default_factory=list)
    sample_t: torch.Tensor | None = None
    failed: list[int] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.failed


def solve_per_sample(func, y0, t, *, method, rtol, atol, options, gradient, on_failure,
                     progress, adjoint_args, dense: bool = False) -> PerSampleSolution:
    """:func:`node.solve` with ``per_sample=True`` (arguments as there, already checked for
    ``gradient``/``on_failure`` names and, with ``dense``, for the gradient mode)."""
    if isinstance(y0, tuple | list):  # solved as one [B, N] state (node.per_sample_tuple)
        if dense:
            raise ValueError("dense=True with per_sample=True needs a tensor state, got a tuple")
        return solve_tuple_per_sample(
            lambda f, y, t_, r, a, unflatten: solve_per_sample(
                f, y, t_, method=method, rtol=r, atol=a,
                options=_tuple_norm(options, unflatten), gradient=gradient,
                on_failure=on_failure, progress=progress, adjoint_args=adjoint_args),
            func, y0, t, rtol, atol)
    check_func(func)
    if gradient != "adjoint":
        check_no_adjoint_arguments(gradient, adjoint_args)
    if progress:
        raise ValueError("progress is not supported with per_sample=True (yet)")
    inputs = check_sample_inputs(y0, t, rtol, atol)
    if isinstance(t, torch.Tensor) and t.requires_grad and torch.is_grad_enabled():
        raise ValueError("per_sample=True does not differentiate with respect to t (yet); got t "
                         "with requires_grad=True (pass t.detach())")
    tableau = get_tableau(method)
    if not isinstance(tableau, ButcherTableau):
        raise ValueError(f"per_sample=True needs an explicit Runge-Kutta method, got "
                         f"method={getattr(tableau, 'name', method)!r}")
    if uses_fixed_grid(tableau.adaptive, options):  # each sample on its own grid
        if dense:
            raise ValueError(f"dense=True needs an adaptive Runge-Kutta method, got "
                             f"method={tableau.name!r} on a fixed grid; a fixed-grid solve has "
                             "its grid points as steps: ask for the times you need in t")
        if gradient != "direct":
            raise ValueError(f"per-sample solves on fixed grids (method={tableau.name!r}) "
                             f"support gradient='direct' only (so far), got "
                             f"gradient={gradient!r}")
        run, opts = solve_fixed_grid_per_sample(func, y0, inputs, tableau, options)
        solution = _finish(run, inputs, opts, on_failure)
        ys = run.ys.view(run.ys.shape[0], inputs.batch, -1)
        ok = (run.status == 0).view(1, -1, 1)  # a failed sample has its own diagnosis
        direction = inputs.direction if isinstance(inputs.direction, float) else \
            inputs.direction[:, None]
        warn_fixed_grid_growth(ys[0], torch.where(ok, ys, 0.0), inputs.taus * direction,
                               samples=True)
        return solution
    layout = inputs.layout
    options, per_sample_stops = _sample_stop_options(options, inputs.batch, layout.device)
    opts = parse_options(options, fixed_grid=False, method=tableau.name)
    check_options(opts, stops=True)
    stops = None
    if opts.step_t or opts.jump_t or per_sample_stops:
        if gradient != "direct":
            raise ValueError(f"options step_t/jump_t with per_sample=True support "
                             f"gradient='direct' only (so far), got gradient={gradient!r}")
        stops = SampleStops(per_sample_stops.get("step_t", opts.step_t),
                            per_sample_stops.get("jump_t", opts.jump_t), inputs.batch,
                            inputs.direction, layout.device)
    hooks = [n for n in CALLBACK_NAMES if getattr(func, n, None) is not None]
    if hooks:
        warnings.warn(f"func's {', '.join(hooks)} are not called by per-sample solves",
                      UserWarning, stacklevel=3)
    co = coefficients(tableau, layout.dtype, layout.device)
    errors = SampleErrorScale(inputs.rtol, inputs.atol, inputs.batch, inputs.numel,
                              layout.dtype, layout.device, opts.norm, layout.shapes[0])
    f = SampleField(func, layout, opts.dtype)
    job = None
    if gradient == "adjoint":
        backward = _backward_solve(tableau, options, inputs, adjoint_args)
        run, job = integrate_adjoint(func, f, y0, inputs, (co, opts, errors), backward,
                                     adjoint_args[0])
    elif gradient == "checkpoint" and torch.is_grad_enabled():
        run, job = integrate_checkpointed(func, f, y0, inputs.taus, inputs.direction, co, opts,
                                          errors)
    else:
        tape = SampleDenseTape() if dense else None
        run = integrate_per_sample(f, y0, inputs.taus, inputs.direction, co, opts, errors,
                                   stops=stops, observer=tape)
    dense_output = None
    if dense:
        reached = torch.where(run.status == 0, inputs.taus[:, -1], run.tau)
        dense_output = SampleDenseOutput(tape, tableau, inputs.taus, inputs.direction, reached,
                                         y0.reshape(inputs.batch, -1), layout.shapes[0][1:])
    solution = _finish(run, inputs, opts, on_failure, dense_output)
    if job is not None:
        job.stats = solution.stats  # the backward pass adds its statistics there
    return solution


def _tuple_norm(options, unflatten):
    """The options of a tuple state's flat solve: a user ``norm`` gets the tuple of
    ``[B, ...]`` errors, not the flat ``[B, N]`` one."""
    norm = options.get("norm") if isinstance(options, dict) else None
    if norm is None or not callable(norm):
        return options
    return dict(options, norm=lambda x: norm(unflatten(x)))


def _explicit_adaptive(tableau, options, argument: str, name) -> None:
    if not isinstance(tableau, ButcherTableau):
        raise ValueError(f"per_sample=True needs an explicit Runge-Kutta method, got "
                         f"{argument}={getattr(tableau, 'name', name)!r}")
    if uses_fixed_grid(tableau.adaptive, options):
        raise ValueError(f"per_sample=True needs an adaptive method (an embedded pair such as "
                         f"'dopri5'); {argument}={tableau.name!r} runs on a fixed grid here, "
                         "which per-sample solves do not support yet")


def _backward_solve(tableau, options, inputs, adjoint_args):
    """The backward solve's coefficients, options and error scale of a per-sample adjoint:
    ``adjoint_method``/``adjoint_options``/``adjoint_rtol``/``adjoint_atol`` default to the
    forward's (``adjoint_options`` to ``{}`` when the method differs)."""
    _, rtol, atol, method, back_options = adjoint_args
    if method is not None:
        back_tableau = get_tableau(method)
        _explicit_adaptive(back_tableau, back_options or {}, "adjoint_method", method)
    else:
        back_tableau = tableau
    if back_options is None:
        if back_tableau.name != tableau.name and options is not None:
            raise ValueError(f"adjoint_options must be given when adjoint_method "
                             f"({back_tableau.name!r}) differs from method ({tableau.name!r}) "
                             "and options are given")
        back_options = dict(options or {}) if back_tableau.name == tableau.name else {}
        # A user norm is one of the state's: the backward solve of [y, a] tests the RMS.
        back_options.pop("norm", None)
    elif not isinstance(back_options, dict):
        raise TypeError(f"adjoint_options must be a dict or None, got "
                        f"{type(back_options).__name__}")
    back_options = dict(back_options)
    norm = back_options.pop("norm", None)
    if norm not in (None, "seminorm"):
        raise ValueError(f"adjoint_options['norm'] with per_sample=True must be None or "
                         f"'seminorm' (the parameter adjoint is never in a per-sample error "
                         f"test), got {norm!r}")
    opts = parse_options(back_options, fixed_grid=False, method=back_tableau.name)
    check_options(opts)
    layout = inputs.layout
    y0 = torch.empty(layout.shapes[0], dtype=layout.dtype, device=layout.device)
    rtol = inputs.rtol if rtol is None else _sample_tolerance("adjoint_rtol", rtol, y0, layout)
    atol = inputs.atol if atol is None else _sample_tolerance("adjoint_atol", atol, y0, layout)
    check_not_both_zero(rtol, atol, rtol, atol)
    co = coefficients(back_tableau, layout.dtype, layout.device)

    def doubled(tol):  # the tolerance of [y, a], [B, 2N]
        return torch.cat([tol, tol], 1) if isinstance(tol, torch.Tensor) and tol.shape[1] > 1 \
            else tol

    errors = SampleErrorScale(doubled(rtol), doubled(atol), inputs.batch, 2 * inputs.numel,
                              layout.dtype, layout.device)
    return co, opts, errors


def _sample_stop_options(options, batch: int, device):
    """``options`` without its per-sample ``[B, K]`` step_t/jump_t (1-D ones stay, for
    :func:`node.options.parse_options`), and those as ``{name: [B, K] float64}``."""
    if not isinstance(options, dict):
        return options, {}
    found = {}
    for name in ("step_t", "jump_t"):
        times = sample_times(name, options.get(name), batch, device)
        if times is not None:
            found[name] = times
    if not found:
        return options, {}
    return {k: v for k, v in options.items() if k not in found}, found


def check_options(opts, stops: bool = False) -> None:
    """Refuse what per-sample solves do not support; ``stops``: step_t/jump_t are."""
    unsupported = []
    if opts.step_t and not stops:
        unsupported.append("step_t")
    if opts.jump_t and not stops:
        unsupported.append("jump_t")
    if opts.progress:
        unsupported.append("progress")
    if unsupported:
        raise ValueError(f"option(s) {unsupported} are not supported with per_sample=True (yet)")


def _finish(run, inputs, opts, on_failure, dense=None) -> PerSampleSolution:
    y0_shape = inputs.layout.shapes[0]
    ys = run.ys.view(run.ys.shape[0], *y0_shape)
    n_rejected = run.n_steps - run.n_accepted
    stats = {"nfe": run.nfe, "n_steps": run.n_steps, "n_accepted": run.n_accepted,
             "n_rejected": n_rejected, "n_calls": run.calls, "n_iterations": run.iterations}
    codes = run.status.tolist()
    sample_status = [CODES[c] for c in codes]
    # On success the last output time; on failure the time the sample got to (the start of
    # the step that failed).
    direction = inputs.direction
    t_reached = torch.where(run.status == 0, inputs.taus[:, -1], run.tau) * direction
    failed = [b for b, c in enumerate(codes) if c]
    solution = PerSampleSolution(ts=inputs.t, ys=ys, stats=stats, dense=dense,
                                 sample_status=sample_status, sample_t=t_reached, failed=failed)
    if not failed:
        return solution
    first = failed[0]
    solution.status = sample_status[first]
    solution.message = (f"{len(failed)} of {inputs.batch} samples failed (the others were "
                        f"solved): " + failure_causes(run, inputs, opts, failed))
    if on_failure == "raise":
        error = SolverError(solution.status, float(t_reached[first]), float(run.h[first]),
                            solution.message, solution)
        error.samples = failed
        raise error
    return solution


def failure_causes(run, inputs, opts, failed: list[int]) -> str:
    """What went wrong for the ``failed`` samples of a per-sample run, the first
    :data:`LISTED` named one by one (index, status, time reached, cause)."""
    causes = [_cause(run, inputs, opts, b) for b in failed[:LISTED]]
    more = f"; and {len(failed) - LISTED} more" if len(failed) > LISTED else ""
    return "; ".join(causes) + more


def _cause(run, inputs, opts, b: int) -> str:
    code = CODES[int(run.status[b])]
    t_b = float(run.tau[b] * (inputs.direction if isinstance(inputs.direction, float)
                              else inputs.direction[b]))
    h_b = float(run.h[b])
    if code is Status.MAX_STEPS:
        what = f"max_num_steps={opts.max_num_steps} steps taken"
    elif code is Status.STEP_TOO_SMALL:
        what = f"step size {h_b:.3g} underflows"
    elif not bool(torch.isfinite(run.y[b]).all()):
        what = "the state became non-finite"
    elif not bool(torch.isfinite(run.k0[b]).all()):
        what = "func returned non-finite values (NaN or inf) at the current state"
    else:
        what = ("the step keeps producing non-finite values (overflow or NaN in func) as the "
                "step size underflows")
    grown = blowup_growth(run.ys[0].view(run.y.shape)[b], run.y[b])
    if grown is not None:  # node.blowup's diagnosis, short: one of up to LISTED samples
        what += (f"; the numerical solution blew up, max|y| from {grown[0]:.3g} to "
                 f"{grown[1]:.3g}: an exact blow-up or an unstable method")
    return f"sample {b}: {code.value} at t={t_b:.10g} ({what})"
