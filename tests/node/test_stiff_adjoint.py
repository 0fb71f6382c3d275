"""gradient="adjoint" with implicit methods: the interpolating adjoint (node.stiff_adjoint),
which solves a and the parameter quadrature backwards along the recorded forward solution."""

from __future__ import annotations

import pytest
import torch
from scipy.linalg import expm

import node
from bench.stiff_problems import ROBER_K, rober_torch_jac

F64 = torch.float64


def _stiff_matrix(fast: float) -> torch.Tensor:
    """A non-normal 2x2 matrix with eigenvalues -1 and ``fast``."""
    V = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=F64)
    return V @ torch.diag(torch.tensor([-1.0, fast], dtype=F64)) @ torch.linalg.inv(V)


class Linear(torch.nn.Module):
    def __init__(self, A: torch.Tensor) -> None:
        super().__init__()
        self.A = torch.nn.Parameter(A.clone())

    def forward(self, t, y):
        return self.A @ y


def _analytic(A: torch.Tensor, y0: torch.Tensor, w: torch.Tensor, T: float):
    """For L = w . y(T), y' = A y: dL/dy0 = e^{A^T T} w and dL/dA = int_0^T a(s) y(s)^T ds with
    a(s) = e^{A^T (T - s)} w, y(s) = e^{A s} y0 (Van Loan's block exponential)."""
    At = A.T.numpy()
    n = At.shape[0]
    block = torch.zeros(2 * n, 2 * n, dtype=F64).numpy()
    block[:n, :n], block[n:, n:] = At, At
    block[:n, n:] = torch.outer(w, y0).numpy()
    E = expm(block * T)
    return torch.tensor(E[:n, :n]) @ w, torch.tensor(E[:n, n:])


def _grads(method, fast=-1e3, T=1.0, gradient="adjoint", **kw):
    f = Linear(_stiff_matrix(fast))
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    w = torch.tensor([0.7, -0.3], dtype=F64)
    sol = node.solve(f, y0, torch.tensor([0.0, T], dtype=F64), method=method,
                     gradient=gradient, **kw)
    (sol.ys[-1] @ w).backward()
    return y0.grad, f.A.grad, sol.stats, _analytic(f.A.detach(), y0.detach(), w, T)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("method,kw,tol", [
    ("kvaerno3", dict(rtol=1e-6, atol=1e-8), 1e-4),
    ("kvaerno5", dict(rtol=1e-8, atol=1e-10), 1e-6),
    ("radauIIA5", dict(options=dict(step_size=0.01)), 1e-6),
    ("implicit_euler", dict(options=dict(step_size=1e-3)), 5e-3),
])
def test_stiff_linear_against_expm(method, kw, tol):
    """dL/dy0 and dL/dA of a stiff linear problem (eigenvalues -1, -1e3) against the analytic
    gradient, adaptive and fixed-grid."""
    g_y0, g_A, stats, (ref_y0, ref_A) = _grads(method, **kw)
    assert _rel(g_y0, ref_y0) < tol
    assert _rel(g_A, ref_A) < tol
    for key in ("nfe_backward", "n_steps_backward", "n_jacobians_backward", "n_lu_backward",
                "n_newton_backward"):
        assert stats[key] > 0, key


def test_stable_where_y_backwards_blows_up():
    """Eigenvalue -1e4 over [0, 10]: re-solving y backwards (what the explicit adjoint does,
    here with dopri5) meets e^{1e4 t} and fails; the interpolating adjoint takes about as many
    steps as the forward solve and gets the analytic gradient."""
    kw = dict(fast=-1e4, T=10.0, rtol=1e-6, atol=1e-8)
    g_y0, g_A, stats, (ref_y0, ref_A) = _grads("kvaerno5", **kw)
    assert torch.isfinite(g_A).all()
    assert _rel(g_y0, ref_y0) < 1e-4
    assert _rel(g_A, ref_A) < 1e-4
    assert stats["n_steps_backward"] < 3 * stats["n_steps"] + 50
    with pytest.raises(node.SolverError, match="adjoint"):
        _grads("kvaerno5", adjoint_method="dopri5", adjoint_options=dict(max_num_steps=20_000),
               **kw)


def test_norm_conventions():
    """The parameter quadrature a_p is in the backward error test unless norm='seminorm'; a
    callable norm gets torchdiffeq's tuple (t, y, a, a_p) with y's entries zero (y is not
    integrated). A norm of a_p alone, inflated, must shrink the steps: a_p's error reaches it."""
    kw = dict(rtol=1e-6, atol=1e-8)
    seen = []

    def quadrature_only(parts):
        t, y, a, a_A = parts
        seen.append((t.shape, y.abs().max().item(), a.shape, a_A.shape))
        return a_A.abs().max() * 1e4

    g_semi, _, semi, (ref_y0, _) = _grads("kvaerno5", adjoint_options=dict(norm="seminorm"),
                                          **kw)
    g_quad, _, quad, _ = _grads("kvaerno5", adjoint_options=dict(norm=quadrature_only), **kw)
    assert quad["n_steps_backward"] > semi["n_steps_backward"] + 20
    assert _rel(g_semi, ref_y0) < 1e-4
    assert seen and all(s == (torch.Size([]), 0.0, torch.Size([2]), torch.Size([2, 2]))
                        for s in seen)


def test_explicit_forward_implicit_adjoint_method():
    """dopri5 forward (mildly stiff, eigenvalue -50), kvaerno5 backward along its dense output."""
    g_y0, g_A, stats, (ref_y0, ref_A) = _grads(
        "dopri5", fast=-50.0, rtol=1e-8, atol=1e-10, adjoint_method="kvaerno5",
        adjoint_options=dict(jacobian="dense"))
    assert _rel(g_y0, ref_y0) < 1e-5 and _rel(g_A, ref_A) < 1e-5
    assert stats["n_lu_backward"] > 0


def test_adams_forward_with_implicit_adjoint_method_is_refused():
    with pytest.raises(ValueError, match="adjoint_method='kvaerno5'"):
        _grads("implicit_adams", fast=-10.0, adjoint_method="kvaerno5", adjoint_options={},
               options=dict(step_size=0.1))


class Rober(torch.nn.Module):
    """ROBER with learnable log rate constants and output scales (any nn.Module parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_k = torch.nn.Parameter(torch.tensor(ROBER_K, dtype=F64).log())
        self.scale = torch.nn.Parameter(torch.ones(3, dtype=F64))

    def forward(self, t, y):
        k1, k2, k3 = self.log_k.exp()
        y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
        r1, r2, r3 = k1 * y1, k2 * y2 * y2, k3 * y2 * y3
        return torch.stack((-r1 + r3, r1 - r2 - r3, r2), dim=-1) * self.scale


def _rober_grads(gradient, y0, t, options, method="kvaerno5"):
    f = Rober()
    y0 = y0.clone().requires_grad_(True)
    t = t.clone().requires_grad_(True)
    sol = node.solve(f, y0, t, method=method, rtol=1e-8, atol=1e-11, options=options,
                     gradient=gradient)
    weights = torch.tensor([1.0, 1e3, 1.0], dtype=F64)
    (sol.ys * weights).sum().backward()
    return [y0.grad, t.grad, f.log_k.grad, f.scale.grad], sol.stats


T_ROBER = torch.tensor([0.0, 0.01, 0.3], dtype=F64)


@pytest.mark.parametrize("jacobian", ["dense", "batch", "callable"])
def test_rober_matches_checkpoint(jacobian):
    """Nonlinear and stiff (ROBER on a short span, a batch of two for the batch structure):
    the gradients with respect to y0, t and the module's parameters agree with the checkpoint
    mode's (the exact gradient of the same method) to the tolerances."""
    y0 = torch.tensor([[1.0, 0.0, 0.0], [0.8, 1e-5, 0.2]], dtype=F64)
    options = dict(jacobian=rober_torch_jac() if jacobian == "callable" else jacobian)
    adjoint, stats = _rober_grads("adjoint", y0, T_ROBER, options)
    exact, _ = _rober_grads("checkpoint", y0, T_ROBER, options)
    for a, b in zip(adjoint, exact, strict=True):
        assert _rel(a, b) < 1e-4
    assert stats["n_jacobians_backward"] > 0


def test_batch_structure_reaches_the_backward_newton():
    """With jacobian='batch' the backward Newton matrices are built from [B, D, D] blocks (here
    a wrong one, the identity, slows or breaks the Newton iteration: a spy checks the shapes)."""
    from node.jacobian import JacobianStructure

    shapes = []
    evaluate = JacobianStructure.evaluate

    def spy(self, *args, **kwargs):
        J = evaluate(self, *args, **kwargs)
        shapes.append(tuple(J.shape))
        return J

    y0 = torch.tensor([[1.0, 0.0, 0.0]] * 4, dtype=F64)
    JacobianStructure.evaluate = spy
    try:
        _rober_grads("adjoint", y0, T_ROBER, dict(jacobian="batch"))
    finally:
        JacobianStructure.evaluate = evaluate
    assert shapes and set(shapes) == {(4, 3, 3)}


@pytest.mark.parametrize("method", ["implicit_euler", "trapezoid", "sdirk2", "radauIIA5",
                                    "implicit_midpoint", "gl4", "gl6"])
def test_fixed_grid_on_the_output_times(method):
    """A fixed-grid implicit method on the output times themselves (torchdiffeq's default
    grid, steps of 0.02 against a fast time scale of 1e-3): the backward solve runs on the same
    grid reversed, so for a linear problem dL/dy0 is the checkpoint mode's exact gradient of the
    discrete solution. dL/dA integrates a y^T with y between grid points from the stage values:
    for the Gauss methods (implicit midpoint, gl4, gl6) the reversed stage times are the
    forward's, and the result is the exact discrete gradient too (these methods' adjoint is
    their discrete adjoint); for the others it differs by the discretisation error."""
    f = Linear(_stiff_matrix(-1e3))
    t = torch.linspace(0.0, 1.0, 51, dtype=F64)
    w = torch.linspace(-1.0, 1.0, 51, dtype=F64)
    grads = []
    for gradient in ("adjoint", "checkpoint"):
        f.A.grad = None
        y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
        ys = node.solve(f, y0, t, method=method, gradient=gradient).ys
        (ys.sum(dim=1) * w).sum().backward()
        grads.append((y0.grad, f.A.grad.clone()))
    (g_y0, g_A), (exact_y0, exact_A) = grads
    assert _rel(g_y0, exact_y0) < 1e-10
    symmetric = method in ("implicit_midpoint", "gl4", "gl6")
    assert _rel(g_A, exact_A) < (1e-10 if symmetric else 0.1)
