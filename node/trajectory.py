"""The forward solution as a function of time, recorded step by step (for the interpolating
adjoint, :mod:`node.stiff_adjoint`).

:class:`Trajectory` takes the checkpoint tape's place in the solver loops (the same ``accept``
call after every accepted step) and keeps, per step from ``t0`` to ``t1 = t0 + h``, a
polynomial ``y(t0 + theta h)``, ``theta`` in [0, 1]:

* adaptive methods, and explicit ones on a fixed grid: cubic Hermite through ``(y0, f0)`` and
  ``(y1, f1)``; that is the dense output of the adaptive implicit methods (``kvaerno3/5``) and
  of FSAL explicit pairs. ``f0 = k_0`` (an explicit first stage) and ``f1 = k_{S-1}`` (FSAL
  form), else evaluated (one evaluation per step and end).
* implicit methods on a fixed grid: the polynomial through ``y0`` (``theta = 0``), the stage
  values ``z_i = y0 + h sum_j a_ij k_j`` at their nodes ``c_i`` in (0, 1) and ``y1``
  (``theta = 1``): the collocation polynomial for Radau IIA and Gauss-Legendre, a straight line
  for implicit Euler and the trapezoidal rule. A fixed step is often far longer than the fast
  time scale of a stiff problem, where ``h |f|`` is huge: Hermite would overshoot by about
  ``h |f| / 4``, while the stage values solve the stage equations and stay bounded.

Memory: ``2 N`` numbers per step (Hermite: ``y1`` and ``f1``; ``y0`` and, for FSAL methods,
``f0`` are the previous step's), or ``N`` per node.

A time exactly on a step boundary belongs to the step before it (``side=-1``) or after it
(``side=+1``), which matters only at a jump of ``func`` (``jump_t``, ``perturb``). The
polynomials join with a continuous value and (Hermite) first derivative only, so a backward step
that straddles a boundary sees a kink; the interpolating adjoint lands its steps on the
boundaries (:meth:`boundaries`) and evaluates each step's stages on one polynomial (``index``).
"""

from __future__ import annotations

import bisect

import torch

from node.interpolation import hermite


class _Hermite:
    def __init__(self, y0, y1, f0, f1, h):
        self.y0, self.y1, self.f0, self.f1, self.h = y0, y1, f0, f1, h

    def at(self, theta: float) -> torch.Tensor:
        return hermite(self.y0, self.y1, self.f0, self.f1, self.h, theta)


class _Nodal:
    """Lagrange interpolation through ``values[m]`` at ``nodes[m]``."""

    def __init__(self, nodes: tuple[float, ...], values: torch.Tensor):
        self.nodes, self.values = nodes, values

    def at(self, theta: float) -> torch.Tensor:
        nodes = self.nodes
        weights = []
        for j, xj in enumerate(nodes):
            w = 1.0
            for m, xm in enumerate(nodes):
                if m != j:
                    w *= (theta - xm) / (xj - xm)
            weights.append(w)
        w = torch.tensor(weights, dtype=self.values.dtype, device=self.values.device)
        return torch.mv(self.values.T, w)


class Trajectory:
    """Records the accepted steps of a forward solve; ``trajectory(tau, side)`` is the state at
    solver time ``tau``.

    Args:
        f: the forward solve's vector field (evaluated only for Hermite ends a step lacks).
        co: the forward method's coefficients.
        nodal: interpolate through the stage values (implicit methods on a fixed grid) instead
            of cubic Hermite.
    """

    def __init__(self, f, co, nodal: bool) -> None:
        self.f, self.co, self.nodal = f, co, nodal
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.pieces: list[_Hermite | _Nodal] = []
        self._y1: torch.Tensor | None = None
        self._f1: torch.Tensor | None = None
        if nodal:
            # distinct nodes inside (0, 1), each with the last stage placed there
            inside = {c: i for i, c in enumerate(co.c) if 0.0 < c < 1.0}
            self._inner = tuple(sorted(inside.items()))
            self._nodes = (0.0, *(c for c, _ in self._inner), 1.0)
        else:
            self._first = getattr(co, "explicit_first", True)  # explicit tableaus: k_0 = f(y0)

    def __len__(self) -> int:
        return len(self.pieces)

    def accept(self, tau0, y0, K, h_tau, tau1, h, perturb_end, perturb_start, thetas,
               exact_end) -> None:
        """Record a step (the tape's signature; the output bookkeeping is not needed)."""
        co = self.co
        # Under no_grad the loops reuse their buffers: keep copies. y0 is the previous y1.
        continuing = self._y1 is not None and self.ends[-1] == tau0
        y0 = self._y1 if continuing else y0.clone()
        y1 = torch.add(y0, torch.mv(K.T, co.b), alpha=h)
        if self.nodal:
            rows = torch.stack([co.a[i] for _, i in self._inner]) if self._inner else None
            values = [y0.unsqueeze(0)]
            if rows is not None:
                values.append(torch.addmm(y0.unsqueeze(0), rows, K, alpha=h))
            values.append(y1.unsqueeze(0))
            piece = _Nodal(self._nodes, torch.cat(values))
        else:
            if continuing and self._f1 is not None:
                f0 = self._f1  # FSAL: this step's first stage is the last one's (no jump between)
            elif self._first:
                f0 = K[0].clone()
            else:
                f0 = self.f(tau0, y0, 1 if perturb_start else 0)
            if co.reuse_last:
                f1 = K[-1].clone()
            else:
                f1 = self.f(tau1, y1, -1 if perturb_end else 0)
            # f at a jump (perturb_end) differs on its two sides: the next step evaluates its own
            self._f1 = f1 if co.reuse_last and not perturb_end else None
            piece = _Hermite(y0, y1, f0, f1, h)
        self.starts.append(tau0)
        self.ends.append(tau1)
        self.pieces.append(piece)
        self._y1 = y1

    def index(self, tau: float, side: int = 0) -> int:
        """The step holding solver time ``tau``; ``side=-1``: on a boundary, the step ending
        there (else the one starting there); the first or last step outside them."""
        if side < 0:
            k = bisect.bisect_left(self.ends, tau)
        else:
            k = bisect.bisect_right(self.starts, tau) - 1
        return min(max(k, 0), len(self.pieces) - 1)

    def __call__(self, tau: float, side: int = 0, index: int | None = None) -> torch.Tensor:
        """``y`` at solver time ``tau``, from step ``index`` (default: :meth:`index`; a step's
        polynomial is extended beyond it if asked)."""
        k = self.index(tau, side) if index is None else index
        tau0, tau1 = self.starts[k], self.ends[k]
        return self.pieces[k].at((tau - tau0) / (tau1 - tau0))

    def boundaries(self, low: float, high: float) -> list[float]:
        """The step boundaries strictly between solver times ``low < high``."""
        ends = self.ends
        return ends[bisect.bisect_right(ends, low) : bisect.bisect_left(ends, high)]
