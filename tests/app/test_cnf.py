"""Continuous normalizing flow components: trace estimators, the instantaneous change of variables
on fields with known solutions, sampling against density, RNODE states."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from models.components.cnf_dynamics import CNFDynamics
from models.components.cnf_flow import ContinuousFlow, standard_normal_log_prob
from models.components.concatsquash import ConcatSquashMLP
from models.components.ode_solver import ODESolver
from models.components.trace import exact_jacobian_terms, hutchinson_terms, sample_noise

TIGHT = {"method": "dopri5", "rtol": 1e-9, "atol": 1e-10}


class LinearField(nn.Module):
    """``f(t, x) = A x`` (rows: ``x @ A.T``)."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a.clone())
        self.dim = a.shape[0]

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x @ self.a.T


def linear_flow(a, end_time=0.7, n_blocks=1, gradient="direct", **kwargs) -> ContinuousFlow:
    blocks = [CNFDynamics(LinearField(a), end_time=end_time, **kwargs) for _ in range(n_blocks)]
    return ContinuousFlow(blocks, ODESolver(**TIGHT, gradient=gradient)).double()


A_GENERAL = torch.tensor(
    [[0.3, -0.8, 0.1], [0.5, -0.4, 0.2], [0.0, 0.7, 0.25]], dtype=torch.float64
)


# ------------------------------------------------------------------------------ trace estimators
def _random_field(dim=3, seed=0):
    torch.manual_seed(seed)
    return ConcatSquashMLP(dim, (16, 16), "tanh").double()


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
def test_hutchinson_agrees_with_exact_trace_in_expectation(noise):
    """Monte Carlo over 20,000 noise draws per point: the sample mean of the Hutchinson trace
    and Frobenius estimates lies within 5 standard errors of the exact values (for each of 4
    points: 16 checks, a false alarm has probability about 1e-5), and the sample variance of
    the trace estimate matches its closed form (2||S||_F^2, minus 2 sum S_ii^2 for Rademacher)."""
    net = _random_field()
    n_draws, t = 20_000, torch.tensor(0.3, dtype=torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    f = net(t, x)
    exact_tr, exact_frob = exact_jacobian_terms(f, x, frobenius=True)
    jac = torch.stack(
        [torch.autograd.functional.jacobian(lambda y: net(t, y[None])[0], xi) for xi in x.detach()]
    )
    assert torch.allclose(exact_tr, jac.diagonal(dim1=1, dim2=2).sum(-1))
    assert torch.allclose(exact_frob, jac.pow(2).sum((1, 2)))

    xr = x.detach().repeat(n_draws, 1).requires_grad_(True)  # draw k of point i: row 4 k + i
    eps = sample_noise(xr, noise, torch.Generator().manual_seed(1))
    tr, frob = hutchinson_terms(net(t, xr), xr, eps, frobenius=True)
    for est, exact in ((tr, exact_tr), (frob, exact_frob)):
        est = est.reshape(n_draws, 4)
        stderr = est.std(dim=0) / math.sqrt(n_draws)
        assert ((est.mean(dim=0) - exact).abs() < 5 * stderr).all(), (est.mean(0), exact)
    sym = 0.5 * (jac + jac.transpose(1, 2))
    variance = 2 * sym.pow(2).sum((1, 2))
    if noise == "rademacher":
        variance = variance - 2 * sym.diagonal(dim1=1, dim2=2).pow(2).sum(-1)
    # relative standard error of a sample variance here is about 2-3%
    assert torch.allclose(tr.reshape(n_draws, 4).var(dim=0), variance, rtol=0.12)


def test_noise_has_zero_mean_and_identity_covariance():
    like = torch.zeros(200_000, 2)
    for kind in ("gaussian", "rademacher"):
        eps = sample_noise(like, kind, torch.Generator().manual_seed(0))
        assert eps.mean(0).abs().max() < 0.02
        assert torch.allclose(eps.T @ eps / len(eps), torch.eye(2), atol=0.02)
    assert set(sample_noise(like, "rademacher").unique().tolist()) == {-1.0, 1.0}
    with pytest.raises(ValueError, match="noise must be one of .* got 'uniform'"):
        sample_noise(like, "uniform")


def test_noise_is_fixed_for_the_whole_solve():
    """Every evaluation of one solve sees the same noise: the trace of a linear field
    ``eps^T A eps`` is then constant over the solve, so delta_logp = -eps^T A eps * T exactly."""
    flow = linear_flow(A_GENERAL, trace="hutchinson", noise="gaussian")
    x = torch.randn(64, 3, dtype=torch.float64)
    out = flow(x, generator=torch.Generator().manual_seed(3))
    eps = flow.blocks[0].noise
    quad = ((eps @ A_GENERAL.T) * eps).sum(1)
    assert torch.allclose(out.delta_logp, -quad * 0.7, atol=1e-7)


# ------------------------------------------------------------------- fields with known solutions
@pytest.mark.parametrize("n_blocks", [1, 2])
def test_linear_field_log_density_change_is_trace_times_time(n_blocks):
    """f = A x: z = exp(A T) x per block, delta_logp = -tr(A) T per block, and
    log p(x) = log N(z) + n_blocks * tr(A) T."""
    flow = linear_flow(A_GENERAL, end_time=0.7, n_blocks=n_blocks)
    x = torch.randn(16, 3, dtype=torch.float64)
    out = flow(x)
    total_time = 0.7 * n_blocks
    expected_z = x @ torch.linalg.matrix_exp(A_GENERAL * total_time).T
    trace = torch.trace(A_GENERAL)
    assert torch.allclose(out.z, expected_z, atol=1e-7)
    expected_delta = torch.full((16,), -float(trace) * total_time, dtype=torch.float64)
    assert torch.allclose(out.delta_logp, expected_delta, atol=1e-8)
    assert torch.allclose(
        out.log_prob, standard_normal_log_prob(expected_z) + trace * total_time, atol=1e-7
    )


def test_hutchinson_is_exact_for_diagonal_field_with_rademacher_noise():
    a = torch.diag(torch.tensor([0.4, -0.9, 0.2], dtype=torch.float64))
    flow = linear_flow(a, end_time=0.5, trace="hutchinson", noise="rademacher")
    out = flow(torch.randn(8, 3, dtype=torch.float64))
    assert torch.allclose(out.delta_logp, torch.full((8,), 0.3 * 0.5, dtype=torch.float64))


@pytest.mark.parametrize("gradient", ["direct", "adjoint", "checkpoint"])
def test_end_time_gradient_matches_closed_form(gradient):
    """log p(x) = log N(exp(AT) x) + tr(A) T, so d log p / dT = -z^T A z + tr(A) (z = exp(AT) x);
    with T = s^2 (the stored parameter s), d/ds = 2 s d/dT."""
    flow = linear_flow(A_GENERAL, end_time=0.6, gradient=gradient, train_end_time=True)
    x = torch.randn(5, 3, dtype=torch.float64)
    flow.log_prob(x).sum().backward()
    z = x @ torch.linalg.matrix_exp(A_GENERAL * 0.6).T
    d_dt = (-((z @ A_GENERAL.T) * z).sum(1) + torch.trace(A_GENERAL)).sum()
    grad = flow.blocks[0].sqrt_end_time.grad
    assert torch.allclose(grad, 2 * math.sqrt(0.6) * d_dt, rtol=1e-5)


def test_zero_flow_returns_base_log_density_and_zero_regularisers():
    net = ConcatSquashMLP(2, (8, 8)).double()
    for p in net.parameters():
        nn.init.zeros_(p)
    block = CNFDynamics(net, trace="hutchinson", kinetic=True, jacobian=True, end_time=0.8)
    flow = ContinuousFlow([block], ODESolver(**TIGHT)).double()
    x = torch.randn(32, 2, dtype=torch.float64)
    out = flow(x)
    assert torch.equal(out.z, x)
    assert torch.equal(out.log_prob, standard_normal_log_prob(x))
    assert torch.equal(out.regs["kinetic"], torch.zeros(32, dtype=torch.float64))
    assert torch.equal(out.regs["jacobian"], torch.zeros(32, dtype=torch.float64))
    assert torch.equal(flow.inverse(x), x)


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_rnode_states_match_closed_forms_for_a_linear_field(trace):
    """f = A x with A = diag(a): x_i(t) = x_i e^{a_i t}, so
    E_K = int_0^T ||A x||^2 dt = sum_i a_i^2 x_i^2 (e^{2 a_i T} - 1) / (2 a_i), and
    E_J = ||A||_F^2 T (Hutchinson with Rademacher noise: ||eps^T A||^2 = sum a_i^2 exactly)."""
    a = torch.tensor([0.4, -0.9, 0.2], dtype=torch.float64)
    end = 0.8
    flow = linear_flow(
        torch.diag(a), end_time=end, trace=trace, noise="rademacher", kinetic=True, jacobian=True
    )
    x = torch.randn(10, 3, dtype=torch.float64)
    out = flow(x)
    kinetic = (a.pow(2) * x.pow(2) * torch.expm1(2 * a * end) / (2 * a)).sum(1)
    assert torch.allclose(out.regs["kinetic"], kinetic, rtol=1e-7)
    assert torch.allclose(
        out.regs["jacobian"], torch.full((10,), float(a.pow(2).sum()) * end, dtype=torch.float64)
    )


def test_regulariser_states_are_left_out_of_the_error_test():
    a = torch.diag(torch.tensor([0.4, -0.9], dtype=torch.float64))
    solver = {"method": "dopri5", "rtol": 1e-3, "atol": 1e-3}
    plain = ContinuousFlow([CNFDynamics(LinearField(a))], ODESolver(**solver)).double()
    kw = dict(kinetic=True, jacobian=True)
    free = ContinuousFlow([CNFDynamics(LinearField(a), **kw)], ODESolver(**solver)).double()
    both = ContinuousFlow(
        [CNFDynamics(LinearField(a), **kw)], ODESolver(**solver), reg_error_control=True
    ).double()
    x = 3 * torch.randn(50, 2, dtype=torch.float64)
    for flow in (plain, free, both):
        flow(x)
    assert free.solver.counts().nfe == plain.solver.counts().nfe
    assert both.solver.counts().nfe >= free.solver.counts().nfe


# -------------------------------------------------------------------------- samples vs density
def _cell_probabilities(log_prob, edges: torch.Tensor, sub: int = 4) -> torch.Tensor:
    """Probability of each histogram cell: the density averaged over sub x sub points per
    cell (midpoints of a finer grid) times the cell area."""
    fine = torch.linspace(
        float(edges[0]), float(edges[-1]), (len(edges) - 1) * sub + 1, dtype=torch.float64
    )
    mids = 0.5 * (fine[1:] + fine[:-1])
    gx, gy = torch.meshgrid(mids, mids, indexing="ij")
    dens = log_prob(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)).exp()
    n = len(edges) - 1
    dens = dens.reshape(n, sub, n, sub).mean(dim=(1, 3))
    return dens * (edges[1] - edges[0]) ** 2


def _chi_square_check(samples: torch.Tensor, probs: torch.Tensor, edges: torch.Tensor) -> None:
    n = len(edges) - 1
    ix = torch.bucketize(samples[:, 0].contiguous(), edges) - 1
    iy = torch.bucketize(samples[:, 1].contiguous(), edges) - 1
    keep = (ix >= 0) & (ix < n) & (iy >= 0) & (iy < n)
    counts = torch.bincount(ix[keep] * n + iy[keep], minlength=n * n).reshape(n, n)
    expected = probs * len(samples)
    used = expected > 20  # chi-square approximation needs enough expected counts
    stat = ((counts[used] - expected[used]).pow(2) / expected[used]).sum()
    dof = int(used.sum()) - 1
    # a chi-square variable with dof degrees of freedom: mean dof, std sqrt(2 dof)
    assert stat < dof + 5 * math.sqrt(2 * dof), (float(stat), dof)
    assert used.sum() > 30


def test_linear_flow_samples_match_the_known_pushforward():
    """Base N(0, I) pushed back through f = A x over T: x = exp(-A T) z ~ N(0, M M^T),
    M = exp(-A T). The flow's log-density is that Gaussian's, and a histogram of the flow's
    samples matches it (chi-square test)."""
    a = torch.tensor([[0.3, 0.5], [-0.2, -0.4]], dtype=torch.float64)
    flow = linear_flow(a, end_time=1.0)
    m = torch.linalg.matrix_exp(-a)
    gauss = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), m @ m.T)
    grid = torch.randn(200, 2, dtype=torch.float64) * 2
    with torch.no_grad():
        assert torch.allclose(flow.log_prob(grid), gauss.log_prob(grid), atol=1e-7)
        samples = flow.sample(20_000, torch.Generator().manual_seed(0))
    edges = torch.linspace(-3.5, 3.5, 15, dtype=torch.float64)
    _chi_square_check(samples, _cell_probabilities(gauss.log_prob, edges), edges)


@pytest.mark.slow
def test_nonlinear_flow_samples_match_its_density():
    """A small random concatsquash flow: 10,000 samples (backward solves) against the density
    from forward solves with the exact trace, cell by cell."""
    torch.manual_seed(4)
    net = ConcatSquashMLP(2, (16,), "tanh")
    for p in net.parameters():
        p.data.mul_(2.5)  # a clearly non-Gaussian pushforward
    flow = ContinuousFlow(
        [CNFDynamics(net, end_time=1.0)], ODESolver(method="dopri5", rtol=1e-5, atol=1e-6)
    ).double()
    with torch.no_grad():
        samples = flow.sample(10_000, torch.Generator().manual_seed(0))
        edges = torch.linspace(-4.0, 4.0, 13, dtype=torch.float64)
        probs = _cell_probabilities(flow.log_prob, edges)
    assert 0.95 < float(probs.sum()) <= 1.0 + 1e-3
    _chi_square_check(samples, probs, edges)


def test_bad_arguments_name_the_setting():
    with pytest.raises(ValueError, match="model.trace must be one of .* got 'brute'"):
        CNFDynamics(LinearField(A_GENERAL), trace="brute")
    with pytest.raises(ValueError, match="model.end_time must be a finite number > 0, got 0"):
        CNFDynamics(LinearField(A_GENERAL), end_time=0)
    with pytest.raises(ValueError, match="model.hidden_dims must be a list of integers >= 1"):
        ConcatSquashMLP(2, (8, 0))
    block = CNFDynamics(LinearField(A_GENERAL), trace="hutchinson")
    with pytest.raises(RuntimeError, match="prepare\\(x\\) must draw the Hutchinson noise"):
        block(torch.tensor(0.0), block.initial_state(torch.randn(2, 3, dtype=torch.float64)))
