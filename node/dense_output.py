"""Dense output of a whole solve: the solution at any time, after the solve.

``solve(..., dense=True)`` keeps every accepted step; ``Solution.evaluate(t)`` then gives the
state at any time ``t`` (a tensor of any shape) inside the interval solved, and
``Solution.derivative(t)`` its time derivative, from the method's own continuous extension
(:mod:`node.interpolation`), the polynomial the solver uses for its output times:

    y(t0 + theta h) = y0 + h sum_i b_i(theta) k_i,     y'(t0 + theta h) = sum_i b_i'(theta) k_i,

for the step ``[t0, t0 + h]`` that holds ``t`` (``theta`` in ``[0, 1]``). The steps do not
depend on the output times (outputs are interpolated, never stepped to), so
``evaluate(s)`` equals what a solve with ``s`` among its output times returns, gradients
included. The interpolant is continuous across steps; its error is of the order of the local
error the tolerances allow (4th order for dopri5 and tsit5, 7th for dopri8; cubic Hermite,
3rd order, for methods without their own extension).

Gradients (``gradient="direct"``, the only mode that keeps the steps' autograd graph): to ``y0``
and the parameters ``func`` uses, as for the solve's outputs, and to the query times ``t``
through ``theta`` (the derivative of the interpolant). The step times themselves are never
differentiated, as everywhere in ``node``, so the solve's own ``t[0]`` gets no gradient
through ``evaluate``.

Memory: one state and one stage matrix (``S x N``) per accepted step; with autograd on, the
solve's graph holds them anyway. Per-sample solves: :mod:`node.per_sample_dense`.

Design decisions: the steps are recorded through the loop's step tape (the interface the
checkpoint mode records with), so the loop itself has no dense-output code; evaluation is
batched (one ``searchsorted`` over the step ends, one gather, one batched contraction), so a
plot's 10 000 points cost one pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from node.implicit_tableau import ImplicitTableau
from node.interpolation import dense_polynomials, weights_at
from node.state import StateLayout
from node.tableau import ButcherTableau


class DenseTape:
    """Records what the interpolant of each accepted step needs (the adaptive loop calls
    :meth:`accept`, with :class:`node.checkpoint.StepTape`'s signature)."""

    def __init__(self) -> None:
        self.tau0: list[float] = []
        self.tau1: list[float] = []
        self.y0: list[torch.Tensor] = []
        self.K: list[torch.Tensor] = []
        self.keep = keeper()

    def accept(self, tau0, y0, K, h_tau, tau1, h, perturb_end, perturb_start, thetas,
               exact_end) -> None:
        self.tau0.append(tau0)
        self.tau1.append(tau1)
        self.y0.append(self.keep(y0))
        self.K.append(self.keep(K))


def keeper():
    """How a recorder keeps the loop's tensors: without autograd the loops write their state
    and stages into reused buffers, so copies; with it, the tensors themselves (and their
    graph)."""
    return torch.clone if not torch.is_grad_enabled() else _same


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


class DenseOutput:
    """The recorded steps of a solve, evaluated at any time inside it.

    Args:
        tape: the recorded steps.
        tableau: the method (its continuous extension).
        layout: the state's layout (shapes of the state tensors).
        direction: +1 for increasing ``t``, -1 for decreasing (solver time is ``direction *
            t``).
        t_start, t_end: the interval evaluated (the last step may reach past ``t_end``, which
            is the last output time, or for a failed solve the time it reached).
        y0_flat: the flat initial state (the whole interval when no step was taken).
        post: applied to every ``[M, *state shape]`` result (complex states: the real view back
            to complex).
    """

    def __init__(self, tape: DenseTape, tableau, layout: StateLayout, direction: float,
                 t_start: float, t_end: float, y0_flat: torch.Tensor,
                 post: Callable | None = None) -> None:
        self.layout = layout
        self._y0 = y0_flat
        self.direction = direction
        self.post = post
        self.t_start = t_start
        self.t_end = t_end
        self._tape = tape
        polys = dense_polynomials(tableau)
        self._coeffs = torch.tensor(polys, dtype=torch.float64)  # [S, P]: theta**1..P
        self._stacked = None

    @property
    def n_steps(self) -> int:
        return len(self._tape.tau0)

    def _steps(self):
        if self._stacked is None:
            tape, device = self._tape, self._tape.y0[0].device
            f64 = dict(dtype=torch.float64, device=device)
            self._stacked = (torch.tensor(tape.tau0, **f64), torch.tensor(tape.tau1, **f64),
                             torch.stack(tape.y0), torch.stack(tape.K))
        return self._stacked

    def evaluate(self, t):
        """The state at the times ``t`` (a number or a tensor of any shape):
        ``[*t.shape, *y0.shape]``, or a tuple of such for a tuple state."""
        return self._at(t, derivative=False)

    def derivative(self, t):
        """The time derivative of the interpolant at ``t`` (shapes as :meth:`evaluate`)."""
        return self._at(t, derivative=True)

    def _at(self, t, derivative: bool):
        name = "derivative" if derivative else "evaluate"
        t, shape = self._times(t, name)
        if self.n_steps == 0:  # t = [t0]: the interval is one point
            if derivative:
                raise ValueError("derivative() needs at least one step; this solve took none")
            return self._shaped(self._y0.unsqueeze(0).repeat(t.numel(), 1), shape)
        tau0, tau1, y0s, Ks = self._steps()
        tau = self.direction * t.detach().to(torch.float64).to(tau1.device)
        idx = torch.searchsorted(tau1, tau).clamp_max(tau1.numel() - 1)
        dtype = Ks.dtype
        start = tau0[idx]
        length = tau1[idx] - start  # step lengths in solver time, > 0
        # theta in float64 (a float32 state at large t would lose its digits), computed from
        # t itself so that gradients reach the query times
        t_solver = self.direction * t.to(dtype=torch.float64, device=Ks.device)
        theta = ((t_solver - start) / length).to(dtype)
        weights = weights_at(self._coeffs, theta, derivative)  # [M, S]
        combined = torch.einsum("ms,msn->mn", weights, Ks[idx])
        if derivative:
            return self._shaped(combined, shape)
        h = (self.direction * length).to(dtype).unsqueeze(1)  # the signed step in user time
        return self._shaped(y0s[idx] + h * combined, shape)

    def _times(self, t, name: str) -> tuple[torch.Tensor, torch.Size]:
        if not isinstance(t, torch.Tensor):
            t = torch.tensor(t, dtype=torch.float64)
        if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{name}: t must be a real number or tensor, got dtype {t.dtype}")
        shape = t.shape
        t = t.reshape(-1)
        if t.numel():
            lo, hi = sorted((self.t_start, self.t_end))
            span = abs(self.t_end - self.t_start)
            slack = 8 * torch.finfo(torch.float64).eps * max(abs(lo), abs(hi), span, 1.0)
            t_min, t_max = float(t.detach().min()), float(t.detach().max())
            if t_min < lo - slack or t_max > hi + slack or t_min != t_min or t_max != t_max:
                raise ValueError(
                    f"{name}: t must lie in the interval the solve covered, [{lo:.10g}, "
                    f"{hi:.10g}], got values from {t_min:.10g} to {t_max:.10g}")
        return t, shape

    def _shaped(self, flat: torch.Tensor, shape: torch.Size):
        ys = self.layout.unflatten_trajectory(flat)
        if self.post is not None:
            ys = self.post(ys)
        if isinstance(ys, tuple):
            return tuple(y.reshape(*shape, *y.shape[1:]) for y in ys)
        return ys.reshape(*shape, *ys.shape[1:])


def check_dense(method, gradient) -> None:
    """Refuse ``dense=True`` where the steps cannot be kept (before any work is done)."""
    if gradient != "direct":
        raise ValueError(f"dense=True needs gradient='direct' (the only mode whose steps keep "
                         f"their autograd graph), got gradient={gradient!r}")
    if method == "scipy_solver":
        raise ValueError("dense=True is not supported by method='scipy_solver'; use one of "
                         "node's adaptive methods")


def check_dense_problem(problem) -> None:
    """Refuse ``dense=True`` for a method without a dense output on every step: fixed grids
    and multistep methods."""
    if problem.fixed_grid or not isinstance(problem.tableau, ButcherTableau | ImplicitTableau):
        raise ValueError(
            f"dense=True needs an adaptive Runge-Kutta method (dopri5, tsit5, bosh3, dopri8, "
            f"kvaerno5, ...), got method={problem.tableau.name!r}"
            f"{' on a fixed grid' if problem.fixed_grid else ''}; a fixed-grid solve has its "
            "grid points as steps: ask for the times you need in t")
