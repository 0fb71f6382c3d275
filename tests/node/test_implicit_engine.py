"""The implicit Runge-Kutta engine: orders, stiff stability, ROBER, Jacobian structures, Newton
failures, statistics, events and bad input (issue 16)."""

from __future__ import annotations

import math

import pytest
import torch

import node
from node import ImplicitTableau, SolverError, Status
from node.methods import available_methods, get_tableau
from tests.problems import FreeFall, G

IMPLICIT = [m for m in available_methods() if isinstance(get_tableau(m), ImplicitTableau)]
L_STABLE = ["implicit_euler", "kvaerno3", "kvaerno5"]  # damp the stiff mode at any step
# ROBER at t = 1e5: SciPy Radau with rtol 1e-13, atol (1e-18, 1e-22, 1e-18) and its exact Jacobian
ROBER_1E5 = torch.tensor([0.017865921142100047, 7.274751468436532e-08, 0.9821340061103889],
                         dtype=torch.float64)


def rober(t, y):
    """Robertson's chemical kinetics (k = 0.04, 3e7, 1e4); works on [3] and [B, 3] states."""
    y1, y2, y3 = y.unbind(-1)
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3,
                        0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2,
                        3e7 * y2**2], dim=-1)


def rober_jac(t, y):
    y1, y2, y3 = y.unbind(-1)
    z = torch.zeros_like(y1)
    return torch.stack([torch.stack([z - 0.04, 1e4 * y3, 1e4 * y2]),
                        torch.stack([z + 0.04, -1e4 * y3 - 6e7 * y2, -1e4 * y2]),
                        torch.stack([z, 6e7 * y2, z])])


def _fixed(method: str, h: float) -> dict:
    opts = dict(step_size=h, newton_tol=1e-4, max_iters=50)
    if get_tableau(method).adaptive:
        opts["adaptive"] = False
    return opts


@pytest.mark.parametrize("method", IMPLICIT)
def test_convergence_order(method):
    """Logistic growth y' = y (1 - y), exact 1 / (1 + 4 exp(-t)); the error on [0, 2] falls by
    2^order when the step halves (tight Newton tolerance)."""
    order = get_tableau(method).order
    y0 = torch.tensor([0.2], dtype=torch.float64)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    exact = 1.0 / (1.0 + 4.0 * math.exp(-2.0))
    h = 0.5 if order >= 4 else 0.1
    errors = []
    for k in range(2):
        ys = node.odeint(lambda t, y: y * (1 - y), y0, t, method=method, rtol=1e-13,
                         atol=1e-13, options=_fixed(method, h / 2**k))
        errors.append(abs(ys[-1].item() - exact))
    observed = math.log2(errors[0] / errors[1])
    assert observed > order - 0.35, (errors, observed)


@pytest.mark.parametrize("method", IMPLICIT)
def test_stiff_linear_problem_large_step(method):
    """y' = -1e6 (y - cos t) with steps of 0.1 (h lambda = -1e5): bounded for every implicit
    method; the L-stable ones follow cos t to O(h^p / 1e6)."""
    y0 = torch.tensor([0.0], dtype=torch.float64)
    t = torch.linspace(0.0, 2.0, 5, dtype=torch.float64)
    ys = node.odeint(lambda t, y: -1e6 * (y - torch.cos(t)), y0, t, method=method,
                     options=_fixed(method, 0.1))
    assert bool(torch.isfinite(ys).all()) and ys.abs().max().item() <= 2.0
    if method in L_STABLE:
        assert (ys[1:, 0] - torch.cos(t[1:])).abs().max().item() < 1e-5


def test_kvaerno5_rober_against_reference():
    """ROBER on [0, 1e5] at rtol 1e-6, atol (1e-8, 1e-12, 1e-8): relative error at most 1e-3
    and no more steps than SciPy's Radau (201 at these tolerances)."""
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1e5], dtype=torch.float64)
    with torch.no_grad():
        sol = node.solve(rober, y0, t, method="kvaerno5", rtol=1e-6,
                         atol=torch.tensor([1e-8, 1e-12, 1e-8], dtype=torch.float64))
    rel = ((sol.ys[-1] - ROBER_1E5) / ROBER_1E5).abs().max().item()
    assert rel < 1e-3
    assert sol.stats["n_steps"] <= 201
    stats = sol.stats
    assert stats["n_jacobians"] == stats["n_accepted"]  # one per step, reused on retries
    assert stats["n_lu"] == stats["n_steps"]  # SDIRK: one LU per attempted step
    assert stats["n_newton"] >= 6 * stats["n_steps"]  # at least one per implicit stage
    assert stats["nfe"] >= stats["n_newton"] + stats["n_jacobians"]


def test_callable_jacobian_matches_autograd():
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, 10.0], dtype=torch.float64)
    with torch.no_grad():
        auto = node.solve(rober, y0, t, method="kvaerno3", rtol=1e-6, atol=1e-10)
        given = node.solve(rober, y0, t, method="kvaerno3", rtol=1e-6, atol=1e-10,
                           options=dict(jacobian=rober_jac))
    assert torch.allclose(auto.ys[-1], given.ys[-1], rtol=1e-6, atol=1e-12)
    # the callable costs no evaluation of func
    # (FSAL: the first stage is the last one of the previous step; 2: f(t0) and the first step)
    assert given.stats["nfe"] == given.stats["n_newton"] + 2
    assert auto.stats["nfe"] == auto.stats["n_newton"] + auto.stats["n_jacobians"] + 2


def test_batch_jacobian_large_batch():
    """20000 ROBER problems of size 3 with different k1 as one state [B, 3]: with
    jacobian='batch' J is [B, 3, 3] (a dense J would have 3.6e9 entries); each sample matches
    its own solve."""
    B = 20000
    k1 = 0.04 * (0.5 + 1.5 * torch.rand(B, generator=torch.Generator().manual_seed(0),
                                        dtype=torch.float64))

    def batch_rober(t, y):
        y1, y2, y3 = y.unbind(-1)
        return torch.stack([-k1 * y1 + 1e4 * y2 * y3, k1 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2,
                            3e7 * y2**2], dim=-1)

    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).repeat(B, 1)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with torch.no_grad():
        sol = node.solve(batch_rober, y0, t, method="kvaerno5", rtol=1e-5, atol=1e-9,
                         options=dict(jacobian="batch"))
        for i in (0, B - 1):
            def one(t, y, i=i):
                y1, y2, y3 = y.unbind(-1)
                return torch.stack([-k1[i] * y1 + 1e4 * y2 * y3,
                                    k1[i] * y1 - 1e4 * y2 * y3 - 3e7 * y2**2, 3e7 * y2**2])
            single = node.odeint(one, y0[0], t, method="kvaerno5", rtol=1e-9, atol=1e-13)
            assert torch.allclose(sol.ys[-1, i], single[-1], rtol=1e-3, atol=1e-8)


def test_newton_failure_rejects_adaptive_steps():
    """With max_iters=2 the Newton iterations of large steps cannot converge in time: those
    steps are rejected and retried smaller (counted), never accepted; the solve still meets its
    tolerance."""
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with torch.no_grad():
        sol = node.solve(rober, y0, t, method="kvaerno5", rtol=1e-6, atol=1e-10,
                         options=dict(max_iters=2))
        ref = node.odeint(rober, y0, t, method="kvaerno5", rtol=1e-10, atol=1e-14)
    assert sol.stats["n_newton_failed"] > 0
    assert sol.stats["n_rejected"] >= sol.stats["n_newton_failed"]
    assert torch.allclose(sol.ys[-1], ref[-1], rtol=1e-4, atol=1e-9)


def test_newton_failure_on_fixed_grid_raises():
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(SolverError) as info:
        node.odeint(rober, y0, t, method="implicit_euler",
                    options=dict(step_size=0.5, max_iters=1))
    assert info.value.status is Status.NOT_CONVERGED
    assert info.value.t == 0.0
    assert "max_iters=1" in str(info.value) and "t=0" in str(info.value)


def test_newton_failure_at_min_step_fails_adaptive_solve():
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    sol = node.solve(rober, y0, t, method="kvaerno5", on_failure="return",
                     options=dict(max_iters=1, min_step=0.5, first_step=0.5))
    assert sol.status is Status.NOT_CONVERGED and "min_step" in sol.message


def test_event_with_implicit_method():
    """A falling body hits the ground at sqrt(2 h / g), located through kvaerno5's dense
    output."""
    y0 = torch.tensor([10.0, 0.0], dtype=torch.float64)
    t_event, ys = node.odeint_event(FreeFall(), y0, torch.tensor(0.0, dtype=torch.float64),
                                    event_fn=lambda t, y: y[0], method="kvaerno5",
                                    rtol=1e-9, atol=1e-12)
    assert abs(t_event.item() - math.sqrt(2 * 10.0 / G)) < 1e-7
    assert abs(ys[-1, 0].item()) < 1e-7


@pytest.mark.parametrize("value", ["sparse", 3])
def test_unknown_jacobian_option(value):
    y0 = torch.ones(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="jacobian"):
        node.odeint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0]), method="kvaerno3",
                    options=dict(jacobian=value))


def test_callable_jacobian_wrong_shape():
    y0 = torch.ones(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"jacobian.*\(5, 5\).*\(2, 3, 2, 3\)"):
        node.odeint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0]), method="kvaerno3",
                    options=dict(jacobian=lambda t, y: torch.zeros(5, 5)))


def test_batch_jacobian_needs_a_tensor_state():
    y0 = (torch.ones(2, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="jacobian.*tuple state"):
        node.odeint(lambda t, y: (-y[0], -y[1]), y0, torch.tensor([0.0, 1.0]),
                    method="kvaerno3", options=dict(jacobian="batch"))


def test_implicit_options_validated_and_ignored_by_explicit_methods():
    y0 = torch.ones(2, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0])
    with pytest.raises(ValueError, match="max_iters"):
        node.odeint(lambda t, y: -y, y0, t, method="kvaerno5", options=dict(max_iters=0))
    with pytest.raises(ValueError, match="newton_tol"):
        node.odeint(lambda t, y: -y, y0, t, method="kvaerno5", options=dict(newton_tol=-1.0))
    with pytest.warns(UserWarning, match="jacobian"):
        node.odeint(lambda t, y: -y, y0, t, method="dopri5", options=dict(jacobian="batch"))
    config = node.SolverConfig(method="kvaerno5", options=dict(jacobian="batch", max_iters=4))
    assert config.solve(lambda t, y: -y, y0, t).success
    with pytest.raises(ValueError, match="jacobian"):
        node.SolverConfig(method="kvaerno5", options=dict(jacobian="blocks"))


def test_explicit_stats_unchanged():
    sol = node.solve(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]))
    assert set(sol.stats) == {"nfe", "n_steps", "n_accepted", "n_rejected"}


def test_implicit_solve_under_inference_mode():
    """Lightning validates under torch.inference_mode(): the implicit step must run there."""
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, 3, dtype=torch.float64)

    def stiff(t, y):
        return -1e3 * (y - torch.cos(t))

    kwargs = dict(method="kvaerno5", rtol=1e-6, atol=1e-9)
    with torch.inference_mode():
        inferred = node.solve(stiff, y0, t, **kwargs)
    with torch.no_grad():
        reference = node.solve(stiff, y0, t, **kwargs)
    # the same Newton iterations (a Jacobian that autograd could not build would be zero:
    # Newton would turn into a fixed-point iteration and fail on this stiff problem)
    assert inferred.stats == reference.stats
    assert torch.equal(inferred.ys, reference.ys)


@pytest.mark.parametrize("method", [m for m in available_methods()
                                    if isinstance(get_tableau(m), ImplicitTableau)
                                    and not get_tableau(m).adaptive])
@pytest.mark.parametrize("adjoint", [False, True])
def test_perturb_never_evaluates_func_on_grid_points(method, adjoint):
    """With options['perturb'] (func may jump at grid points) neither the stages nor the Newton
    Jacobian nor the adjoint's backward solve call func exactly on a grid point (torchdiffeq's
    TestDiscontinuities.test_odeint_perturb)."""
    times = []

    def f(t, x):
        times.append(float(t))
        return -x

    x0 = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    solve = node.odeint_adjoint if adjoint else node.odeint
    kwargs = dict(adjoint_params=()) if adjoint else {}
    xs = solve(f, x0, t, method=method, options=dict(step_size=0.5, perturb=True), **kwargs)
    xs.sum().backward()
    assert times and not {0.0, 0.5, 1.0} & set(times)
