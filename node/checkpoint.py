"""Checkpoint gradient mode: discretise-then-optimise with recomputation.

The forward solve runs without a graph (with the buffered step, as fast as inference) while a
:class:`StepTape` keeps each accepted step's ``(t, dt, y)`` and, when the next step reuses the
last stage (FSAL), that stage. The backward pass replays the accepted steps in reverse, each with
autograd, and chains the vector-Jacobian products: for step ``n`` with outputs ``y_{n+1}``, its
last stage ``k_{n+1}`` and the output times inside it,

    (g_{y_n}, g_{k_n}, g_theta) += VJP of step n at (g_{y_{n+1}}, g_{k_{n+1}}, g_outputs).

This is the exact gradient of the computed forward solution (as in the direct mode), with memory
of two states per step plus one step's graph, and without the rejected steps that the direct
mode's graph keeps. One extra evaluation is never needed: the first stage of a step is either
recomputed inside its replay or, when reused, differentiated as the previous step's last stage.

Parameters are those of ``func`` when it is an ``nn.Module``. Before the solve, ``func``'s first
evaluation (the initial derivative, which the solver needs anyway) runs with autograd and its
graph is searched for leaves that require gradients but are neither parameters nor the state (a
closure over a tensor, say). If there are any, or ``func`` is not a module, or the method
interpolates outputs with another step's data (the fixed grid's cubic Hermite), each step runs
under :func:`torch.utils.checkpoint.checkpoint` instead, which finds every input by itself.

The Adams multistep methods do not fit the tape (a step depends on several past steps and on
derivatives evaluated in earlier steps): there every evaluation of ``func`` runs under
:func:`torch.utils.checkpoint.checkpoint` (:class:`CheckpointedField`), so the backward pass
keeps the states and derivatives of the solve but none of ``func``'s internal graphs.

Gradients of gradients: when the backward pass itself is differentiated (``create_graph=True``),
the replay runs through all accepted steps from the saved initial state in one graph, so that the
returned gradient is a differentiable function of ``y0`` and the parameters.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from node.interpolation import dense_polynomials, interpolate
from node.multistep import AdamsMethod
from node.problem import Problem
from node.runge_kutta import RKCoefficients, rk_step
from node.solution import Integration
from node.state import FlatVectorField


class CheckpointedStep:
    """A step function (``rk_step`` or an implicit method's step, ``inner``) with its stages
    recomputed in the backward pass (the general fallback; non-reentrant checkpointing is itself
    differentiable)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __call__(self, f, tau0, y0, k0, h_tau, tau1, h, co, perturb_end=False,
                 perturb_start=False):
        if hasattr(self.inner, "solve_stages"):
            # An implicit step: Newton runs once, outside the checkpointed region (no graph,
            # and its iteration count may differ on recomputation); only the differentiable
            # rebuild of the stages from the converged ones is recomputed.
            K = self.inner.solve_stages(f, tau0, y0, k0, h_tau, tau1, h, co, perturb_end,
                                        perturb_start)
            return checkpoint(
                self.inner.differentiate, f, tau0, y0, k0, K, h_tau, tau1, h, co, perturb_end,
                perturb_start, use_reentrant=False, preserve_rng_state=False,
            )
        return checkpoint(
            self.inner, f, tau0, y0, k0, h_tau, tau1, h, co, perturb_end, perturb_start,
            use_reentrant=False, preserve_rng_state=False,
        )

    def __getattr__(self, name):
        if name == "deferred" and hasattr(self.inner, "deferred"):
            return self._deferred
        raise AttributeError(name)

    def _deferred(self, f, tau0, y0, k0, h_tau, tau1, h, co, perturb_end=False,
                  perturb_start=False):
        """As the implicit step's ``deferred``: the checkpointed rebuild for accepted steps
        only."""
        y1, K, _ = self.inner.deferred(f, tau0, y0, k0, h_tau, tau1, h, co, perturb_end,
                                       perturb_start)

        def finish():
            return checkpoint(
                self.inner.differentiate, f, tau0, y0, k0, K, h_tau, tau1, h, co, perturb_end,
                perturb_start, use_reentrant=False, preserve_rng_state=False,
            )

        return y1, K, finish


class CheckpointedField:
    """A :class:`~node.state.FlatVectorField` whose every evaluation is recomputed in the
    backward pass instead of keeping ``func``'s graph (for the multistep methods)."""

    def __init__(self, f: FlatVectorField) -> None:
        self.f = f

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __call__(self, tau: float, y: torch.Tensor, perturb: int = 0) -> torch.Tensor:
        return checkpoint(self.f, tau, y, perturb, use_reentrant=False, preserve_rng_state=False)


@dataclass
class TapedStep:
    """One accepted step, enough to recompute it and the outputs inside it."""

    tau0: float
    h_tau: float
    tau1: float
    h: float
    y0: torch.Tensor  # the state the step started from (a copy)
    k0: torch.Tensor | None  # the reused first stage (a copy), or None: evaluated in the step
    start_side: int  # for an evaluated first stage: 1 just after tau0 (after a jump), else 0
    perturb_end: bool
    thetas: list[float]  # output times strictly inside the step, as fractions of it
    exact_end: bool  # an output time at the step's end
    first_output: int  # index of the first of those outputs


class StepTape:
    """Records the accepted steps of a forward solve (the loops call :meth:`accept`)."""

    def __init__(self, co: RKCoefficients) -> None:
        self.reuse_last = co.reuse_last
        self.steps: list[TapedStep] = []
        self._next_k0: torch.Tensor | None = None
        self._after_jump = False
        self._n_outputs = 1

    def accept(self, tau0, y0, K, h_tau, tau1, h, perturb_end, perturb_start, thetas,
               exact_end) -> None:
        side = 1 if perturb_start or self._after_jump else 0
        self.steps.append(TapedStep(tau0, h_tau, tau1, h, y0.clone(), self._next_k0, side,
                                    bool(perturb_end), list(thetas), bool(exact_end),
                                    self._n_outputs))
        self._n_outputs += len(thetas) + int(exact_end)
        reuse = self.reuse_last and not perturb_end
        self._next_k0 = K[-1].clone() if reuse else None
        self._after_jump = bool(perturb_end)

    def trim(self, n_outputs: int) -> None:
        """Drop the steps after the one that produced the last of ``n_outputs`` outputs."""
        while self.steps and self.steps[-1].first_output >= n_outputs:
            self.steps.pop()


class Replay:
    """Recomputes taped steps with autograd (shared by both backward strategies)."""

    def __init__(self, f: FlatVectorField, co: RKCoefficients, dense: bool, step=rk_step) -> None:
        self.f, self.co, self.rk_step = f, co, step
        self.polys = dense_polynomials(co.tableau) if dense else None

    def step(self, s: TapedStep, y: torch.Tensor, k0: torch.Tensor | None):
        """``(y1, K, outputs inside the step)`` from state ``y`` and first stage ``k0``."""
        y1, K = self.rk_step(self.f, s.tau0, y, k0, s.h_tau, s.tau1, s.h, self.co,
                             perturb_end=s.perturb_end, perturb_start=s.start_side == 1)
        outs: list[torch.Tensor] = []
        if s.thetas:
            if self.polys is not None:
                outs.extend(interpolate(y, K, s.h, self.polys, s.thetas).T.unbind(0))
            else:
                outs.extend(torch.lerp(y, y1, theta) for theta in s.thetas)
        if s.exact_end:
            outs.append(y1)
        return y1, K, outs

    def whole(self, steps: list[TapedStep], y0: torch.Tensor) -> list[torch.Tensor]:
        """All outputs, recomputed in one graph from ``y0``."""
        outputs, y, K = [y0], y0, None
        for s in steps:
            y, K, outs = self.step(s, y, K[-1] if s.k0 is not None else None)
            outputs.extend(outs)
        return outputs


class _TapedSolve(torch.autograd.Function):
    """``ys = solve(y0; params)``: forward without a graph, backward by replaying the tape."""

    @staticmethod
    def forward(ctx, job: _Job, y0_flat: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        job.run = job.problem.integrate(job.f, y0_flat, k0=job.k0, tape=job.tape)
        job.tape.trim(len(job.run.outputs))
        ctx.job = job
        ctx.save_for_backward(y0_flat, *params)
        ys = torch.stack(job.run.outputs)
        job.run.outputs = []  # the job lives as long as the graph: keep no second copy
        return ys

    @staticmethod
    def backward(ctx, g_ys: torch.Tensor):
        job: _Job = ctx.job
        y0_flat, *params = ctx.saved_tensors
        nfe_before = job.f.nfe
        with _parameters_bound(job, params):
            if torch.is_grad_enabled():
                grads = _backward_whole(job, g_ys, y0_flat, params)
            else:
                grads = _backward_by_step(job, g_ys, y0_flat, params)
        job.record_backward(job.f.nfe - nfe_before)
        return (None, *grads)


def _parameters_bound(job: _Job, params: list[torch.Tensor]):
    return parameters_bound(job.problem.func, job.param_names, params, job.f)


@contextmanager
def parameters_bound(module: nn.Module, names: list[str], params: list[torch.Tensor], field):
    """Replay ``func`` (``module``, called through ``field.func``) with the parameters the
    forward pass used. They are normally still the module's own; under
    ``torch.func.functional_call`` the module has its original ones back by the time
    ``backward`` runs, so the replay rebinds the forward's tensors by name."""
    current = dict(module.named_parameters())
    if all(current.get(n) is p for n, p in zip(names, params, strict=True)):
        yield
        return
    bound = dict(zip(names, params, strict=True))
    user_func = field.func

    def rebound(t, y):
        return functional_call(module, bound, (t, y), strict=False)

    field.func = rebound
    try:
        yield
    finally:
        field.func = user_func


def _backward_whole(job, g_ys, y0_flat, params):
    """Differentiable backward (for gradients of gradients): one graph over all steps."""
    with torch.enable_grad():
        outputs = job.replay.whole(job.tape.steps, y0_flat)
        pairs = [(o, g) for o, g in zip(outputs, g_ys, strict=True) if o.requires_grad]
        inputs = [y0_flat, *params]
        wanted = [x for x in inputs if x.requires_grad]
        got = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                       create_graph=True, allow_unused=True))
    return [next(got) if x.requires_grad else None for x in inputs]


def _backward_by_step(job, g_ys, y0_flat, params):
    """Replay the steps in reverse, one graph at a time, chaining vector-Jacobian products."""
    g_y = g_ys[-1].new_zeros(g_ys.shape[1])
    g_k = None  # gradient for the last stage of the step being replayed (the next one's k0)
    sums = [_CompensatedSum() for _ in params]
    n_out = g_ys.shape[0]
    for s in reversed(job.tape.steps):
        with torch.enable_grad():
            y = s.y0.detach().requires_grad_(True)
            k0 = None if s.k0 is None else s.k0.detach().requires_grad_(True)
            y1, K, outs = job.replay.step(s, y, k0)
            roots, seeds = [y1], [g_y]
            if g_k is not None:
                roots.append(K[-1])  # a view: taken with autograd on
                seeds.append(g_k)
        last = min(s.first_output + len(outs), n_out)
        roots.extend(outs[: last - s.first_output])
        seeds.extend(g_ys[s.first_output : last])
        inputs = [y] + ([k0] if k0 is not None else []) + list(params)
        # Roots without a graph (stages of a func that ignores y and has no parameters to
        # differentiate, dy/dt = g(t)) contribute nothing and autograd.grad rejects them.
        pairs = [(r, g) for r, g in zip(roots, seeds, strict=True) if r.requires_grad]
        roots, seeds = [r for r, _ in pairs], [g for _, g in pairs]
        # retain_graph: a closure tensor computed outside func (from parameters) is part of
        # every step's graph; the step's own graph is freed when its tensors go out of scope.
        grads = torch.autograd.grad(roots, inputs, seeds, allow_unused=True, retain_graph=True)
        g_y = grads[0] if grads[0] is not None else torch.zeros_like(g_y)
        g_k = grads[1] if k0 is not None else None
        for total, g in zip(sums, grads[len(inputs) - len(params):], strict=True):
            total.add(g)
    g_y0 = g_y + g_ys[0]
    return [g_y0 if y0_flat.requires_grad else None,
            *(total.value if p.requires_grad else None for total, p in zip(sums, params,
                                                                             strict=True))]


class _CompensatedSum:
    """Kahan summation of the per-step parameter gradients. Autograd's direct mode adds the
    contributions in another order; compensating keeps the checkpoint mode's rounding error
    independent of the number of steps (in float32 a long solve otherwise drifts by several
    ulps from the direct mode's gradient, which is the same exact derivative)."""

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None
        self._carry: torch.Tensor | None = None

    def add(self, g: torch.Tensor | None) -> None:
        if g is None:
            return
        if self.value is None:
            self.value, self._carry = g, torch.zeros_like(g)
            return
        corrected = g - self._carry
        total = self.value + corrected
        self._carry = (total - self.value) - corrected
        self.value = total


@dataclass
class _Job:
    """What the forward and backward passes of one taped solve share."""

    problem: Problem
    f: FlatVectorField
    k0: torch.Tensor
    tape: StepTape
    replay: Replay
    param_names: list[str]
    run: Integration | None = None
    stats: dict | None = None  # the Solution's statistics, for ``nfe_backward``

    def record_backward(self, nfe: int) -> None:
        if self.stats is not None:
            self.stats["nfe_backward"] = self.stats.get("nfe_backward", 0) + nfe


def _module_parameters(func) -> tuple[list[str], list[torch.Tensor]] | None:
    if not isinstance(func, nn.Module):
        return None
    named = [(n, p) for n, p in func.named_parameters() if p.requires_grad]
    return [n for n, _ in named], [p for _, p in named]


def _reaches_other_leaves(out: torch.Tensor, y: torch.Tensor, params: list[torch.Tensor]) -> bool:
    """Whether ``out``'s graph has a leaf requiring gradients other than ``params`` (not looking
    behind the state ``y``, whose own history is the caller's)."""
    known_ids = {id(x) for x in (y, *params)}
    if out.grad_fn is None:
        return out.requires_grad and id(out) not in known_ids
    stack, seen = [out.grad_fn], {y.grad_fn}
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        leaf = getattr(node, "variable", None)  # AccumulateGrad nodes hold their leaf
        if leaf is not None and id(leaf) not in known_ids:
            return True
        stack.extend(nxt for nxt, _ in node.next_functions if nxt is not None)
    return False


def integrate_checkpointed(problem: Problem, f: FlatVectorField, y0_flat: torch.Tensor):
    """The forward solve of the checkpoint mode: ``(run, outputs)`` with gradients attached."""
    if isinstance(problem.tableau, AdamsMethod):
        run = problem.integrate(CheckpointedField(f), y0_flat)
        return run, run.outputs, None
    named = _module_parameters(problem.func)
    cubic = problem.fixed_grid and problem.options.interp == "cubic"
    k0 = None
    if named is not None and not cubic:
        names, params = named
        side = 1 if problem.fixed_grid and problem.options.perturb else 0
        # The state must require gradients, as in the replay: a func that makes its own leaf of
        # a state that does not (a CNF differentiating its output) would otherwise look foreign.
        probe = y0_flat if y0_flat.requires_grad else y0_flat.detach().requires_grad_(True)
        k0 = f(problem.taus[0], probe, side)
        if not _reaches_other_leaves(k0, probe, params):
            co = problem.coefficients()
            # The replay's step: rk_step, or a fresh implicit step (Newton again, then the
            # implicit-function-theorem graph: see node.implicit_gradient).
            step = problem.new_step(f, y0_flat)
            job = _Job(problem, f, k0.detach(), StepTape(co),
                       Replay(f, co, not problem.fixed_grid, step), names)
            ys = _TapedSolve.apply(job, y0_flat, *params)
            return job.run, list(ys.unbind(0)), job
    # The fallback; the probe's k0 (with its graph) serves as the first stage.
    run = problem.integrate(f, y0_flat, step=CheckpointedStep(problem.new_step(f, y0_flat)),
                            k0=k0)
    return run, run.outputs, None
