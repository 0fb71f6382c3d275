"""Dense output of a whole solve: solve(..., dense=True), Solution.evaluate / derivative."""

import math

import pytest
import torch

import node

F64 = torch.float64
ROTATION = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=F64)
ADAPTIVE = ["adaptive_heun", "fehlberg2", "bosh3", "dopri5", "tsit5", "dopri8", "kvaerno3",
            "kvaerno5"]


def oscillator(t, y):
    return y @ ROTATION.T


def exact(t):
    return torch.stack([torch.cos(t), -torch.sin(t)], -1)


class Field(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(3, 3, generator=g, dtype=F64) * 0.5)

    def forward(self, t, y):
        return torch.tanh(y @ self.w.T) - 0.1 * y + torch.sin(t)


@pytest.mark.parametrize("method", ADAPTIVE)
def test_evaluate_matches_the_exact_solution_to_tolerance(method):
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    sol = node.solve(oscillator, y0, torch.tensor([0.0, 6.0], dtype=F64), method=method,
                     rtol=1e-7, atol=1e-9, dense=True)
    q = torch.linspace(0.0, 6.0, 997, dtype=F64)
    err = (sol.evaluate(q) - exact(q)).abs().max()
    end_err = (sol.ys[-1] - exact(torch.tensor(6.0, dtype=F64))).abs().max()
    # between steps as accurate as at the end (the global error dominates the interpolant's)
    assert float(err) <= max(10 * float(end_err), 1e-7)
    assert sol.dense.n_steps == sol.stats["n_accepted"]


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "kvaerno5"])
def test_evaluate_equals_a_solve_at_those_times_with_gradients(method):
    """The steps do not depend on the output times, so evaluate(q) is what solve(t=q) gives."""
    func = Field()
    y0 = torch.tensor([0.3, -0.2, 0.5], dtype=F64, requires_grad=True)
    q = torch.tensor([0.0, 0.37, 1.1, 1.9, 2.5, 3.0], dtype=F64)
    dense = node.solve(func, y0, q[[0, -1]], method=method, rtol=1e-6, atol=1e-8, dense=True)
    direct = node.solve(func, y0, q, method=method, rtol=1e-6, atol=1e-8)
    assert dense.stats == direct.stats
    ys = dense.evaluate(q)
    torch.testing.assert_close(ys, direct.ys, rtol=0, atol=1e-13)
    weights = torch.randn(ys.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    g_dense = torch.autograd.grad((ys * weights).sum(), (y0, func.w))
    g_direct = torch.autograd.grad((direct.ys * weights).sum(), (y0, func.w))
    for a, b in zip(g_dense, g_direct, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)


def test_derivative_is_the_field_and_the_time_gradient_of_evaluate():
    func = Field()
    y0 = torch.tensor([0.3, -0.2, 0.5], dtype=F64)
    sol = node.solve(func, y0, torch.tensor([0.0, 4.0], dtype=F64), rtol=1e-9, atol=1e-11,
                     dense=True)
    q = torch.linspace(0.0, 4.0, 41, dtype=F64, requires_grad=True)
    ys = sol.evaluate(q)
    slopes = sol.derivative(q.detach())
    with torch.no_grad():
        torch.testing.assert_close(slopes, func(q.detach()[:, None], ys.detach()), rtol=0,
                                   atol=1e-6)
    for i in range(3):  # d evaluate(q)_i / dq, one query time at a time
        (grad_t,) = torch.autograd.grad(ys[:, i].sum(), q, retain_graph=True)
        torch.testing.assert_close(grad_t, slopes[:, i], rtol=0, atol=1e-12)


def test_decreasing_time_any_query_shape_and_output_times():
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, -1.0, -3.0], dtype=F64)
    sol = node.solve(oscillator, y0, t, rtol=1e-9, atol=1e-11, dense=True)
    torch.testing.assert_close(sol.evaluate(t), sol.ys, rtol=0, atol=1e-14)
    q = -torch.rand(2, 5, generator=torch.Generator().manual_seed(2), dtype=F64) * 3.0
    ys = sol.evaluate(q)
    assert ys.shape == (2, 5, 2)
    torch.testing.assert_close(ys, exact(q), rtol=0, atol=1e-7)
    assert sol.evaluate(-1.5).shape == (2,)
    assert sol.evaluate(torch.empty(0, dtype=F64)).shape == (0, 2)


def test_tuple_and_complex_states():
    y0 = (torch.tensor([1.0, 0.0], dtype=F64), torch.zeros(2, 2, dtype=F64))
    sol = node.solve(lambda t, y: (y[0] @ ROTATION.T, torch.ones_like(y[1]) * t), y0,
                     torch.tensor([0.0, 2.0], dtype=F64), rtol=1e-9, atol=1e-11, dense=True)
    q = torch.tensor([0.5, 1.5], dtype=F64)
    first, second = sol.evaluate(q)
    assert first.shape == (2, 2) and second.shape == (2, 2, 2)
    torch.testing.assert_close(first, exact(q), rtol=0, atol=1e-8)
    torch.testing.assert_close(second[:, 0, 0], q**2 / 2, rtol=0, atol=1e-10)
    # y' = i y: y = exp(i t)
    z0 = torch.ones(3, dtype=torch.complex128)
    sol = node.solve(lambda t, z: 1j * z, z0, torch.tensor([0.0, 2.0], dtype=F64), rtol=1e-9,
                     atol=1e-11, dense=True)
    zs = sol.evaluate(q)
    assert zs.dtype == torch.complex128 and zs.shape == (2, 3)
    torch.testing.assert_close(zs[:, 0], torch.exp(1j * q.to(torch.complex128)), rtol=0,
                               atol=1e-8)


def test_without_autograd_the_recorded_steps_are_not_overwritten():
    """Without a graph the loop reuses its buffers; the recorded steps must be copies."""
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, 5.0], dtype=F64)
    q = torch.linspace(0.0, 5.0, 51, dtype=F64)
    with torch.no_grad():
        quiet = node.solve(oscillator, y0, t, rtol=1e-8, atol=1e-10, dense=True).evaluate(q)
    graphed = node.solve(oscillator, y0.requires_grad_(), t, rtol=1e-8, atol=1e-10,
                         dense=True).evaluate(q)
    torch.testing.assert_close(quiet, graphed.detach(), rtol=0, atol=1e-15)


def test_failed_solve_covers_the_time_reached():
    y0 = torch.ones(1, dtype=F64)
    sol = node.solve(lambda t, y: y * y, y0, torch.tensor([0.0, 2.0], dtype=F64),
                     on_failure="return", dense=True)
    assert not sol.success
    reached = sol.dense.t_end
    assert 0.99 < reached < 1.001  # y = 1 / (1 - t) blows up at t = 1
    assert float(sol.evaluate(0.5)) == pytest.approx(2.0, rel=1e-5)
    with pytest.raises(ValueError, match=r"interval the solve covered, \[0, (0\.99|1\.000)"):
        sol.evaluate(torch.tensor([0.5, 1.5], dtype=F64))


def test_single_time_is_a_point():
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    sol = node.solve(oscillator, y0, torch.tensor([0.5], dtype=F64), dense=True)
    torch.testing.assert_close(sol.evaluate(torch.tensor([0.5, 0.5], dtype=F64)),
                               y0.expand(2, 2))


@pytest.mark.parametrize("kwargs, match", [
    (dict(gradient="checkpoint"), "dense=True needs gradient='direct'"),
    (dict(gradient="adjoint", adjoint_params=()), "dense=True needs gradient='direct'"),
    (dict(per_sample=True, method="rk4", options=dict(step_size=0.1)), "on a fixed grid"),
    (dict(method="rk4", options=dict(step_size=0.1)), "method='rk4' on a fixed grid"),
    (dict(method="dopri5", options=dict(adaptive=False, step_size=0.1)), "on a fixed grid"),
    (dict(method="explicit_adams"), "adaptive Runge-Kutta method"),
    (dict(method="scipy_solver"), "scipy_solver"),
])
def test_unsupported_combinations_are_refused(kwargs, match):
    y0 = torch.ones(2, 2, dtype=F64)
    with pytest.raises(ValueError, match=match):
        node.solve(lambda t, y: -y, y0, torch.tensor([0.0, 1.0], dtype=F64), dense=True,
                   **kwargs)


def test_evaluate_without_dense_and_bad_arguments():
    sol = node.solve(lambda t, y: -y, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="pass dense=True"):
        sol.evaluate(0.5)
    with pytest.raises(TypeError, match="dense must be True or False, got 'yes'"):
        node.solve(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]), dense="yes")
    sol = node.solve(lambda t, y: -y, torch.ones(2, dtype=F64),
                     torch.tensor([0.0, 1.0], dtype=F64), dense=True)
    with pytest.raises(ValueError, match=r"\[0, 1\], got values from -0\.5 to 0\.5"):
        sol.evaluate(torch.tensor([-0.5, 0.5]))
    with pytest.raises(ValueError, match="interval"):
        sol.evaluate(math.nan)
    assert float(sol.evaluate(1)[0]) == pytest.approx(math.exp(-1.0), rel=1e-6)


def test_float32_state_at_large_times_keeps_theta_in_float64():
    """Time is float64 inside node; a float32 query near t = 1e5 must not lose the step."""
    y0 = torch.tensor([1.0, 0.0])
    t = torch.tensor([1e5, 1e5 + 3.0], dtype=F64)
    sol = node.solve(oscillator_f32, y0, t, rtol=1e-6, atol=1e-8, dense=True)
    q = torch.tensor([1e5 + 0.7, 1e5 + 2.2], dtype=F64)
    ys = sol.evaluate(q)
    assert ys.dtype == torch.float32
    torch.testing.assert_close(ys.double(), exact(q - 1e5), rtol=0, atol=1e-5)


def oscillator_f32(t, y):
    return y @ ROTATION.T.float()



# Per-sample solves: each sample's own steps (node.per_sample_dense).

MU = torch.tensor([0.5, 3.0, 8.0], dtype=F64)


def van_der_pol(t, y):
    x, v = y[..., 0], y[..., 1]
    return torch.stack([v, MU.to(y.device) * (1 - x**2) * v - x], -1)


def vdp_start():
    return torch.tensor([[2.0, 0.0], [1.0, 0.5], [-1.5, 0.2]], dtype=F64, requires_grad=True)


def test_per_sample_evaluate_equals_a_per_sample_solve_at_those_times():
    y0 = vdp_start()
    sol = node.solve(van_der_pol, y0, torch.tensor([0.0, 5.0], dtype=F64), rtol=1e-7,
                     atol=1e-9, per_sample=True, dense=True)
    q = torch.linspace(0.0, 5.0, 23, dtype=F64)
    ys = sol.evaluate(q)
    ref = node.solve(van_der_pol, y0, q, rtol=1e-7, atol=1e-9, per_sample=True)
    assert ys.shape == (23, 3, 2) and sol.stats["n_iterations"] == ref.stats["n_iterations"]
    torch.testing.assert_close(ys, ref.ys, rtol=0, atol=1e-13)
    (g_dense,) = torch.autograd.grad(ys.square().sum(), y0)
    (g_ref,) = torch.autograd.grad(ref.ys.square().sum(), y0)
    torch.testing.assert_close(g_dense, g_ref, rtol=1e-10, atol=1e-12)


def test_per_sample_grids_directions_and_derivative():
    y0 = vdp_start()
    # sample 2 runs backwards in time
    t = torch.tensor([[0.0, 5.0], [0.0, 3.0], [0.0, -0.3]], dtype=F64)
    sol = node.solve(van_der_pol, y0, t, rtol=1e-8, atol=1e-10, dense=True)
    q = torch.stack([torch.linspace(0.0, end, 7, dtype=F64) for end in (5.0, 3.0, -0.3)])
    ys = sol.evaluate(q)
    ref = node.solve(van_der_pol, y0, q, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(ys, ref.ys, rtol=0, atol=1e-13)
    slopes = sol.derivative(q)
    with torch.no_grad():
        field = torch.stack([van_der_pol(None, ys[j]) for j in range(7)])
    torch.testing.assert_close(slopes.detach(), field, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"sample 1's is \[0, 3\], got t=4"):
        sol.evaluate(torch.tensor([4.0], dtype=F64))
    with pytest.raises(ValueError, match=r"\[M\] \(all samples\) or \[B, M\] with B = 3"):
        sol.evaluate(torch.zeros(2, 4, dtype=F64))


def test_per_sample_without_autograd_and_with_a_failed_sample():
    y0 = torch.tensor([[1.0], [0.5], [2.0]], dtype=F64)
    square = lambda t, y: y * y  # noqa: E731  blows up at t = 1 / y0: 1, 2, 0.5
    t = torch.tensor([0.0, 1.5], dtype=F64)
    with torch.no_grad():
        sol = node.solve(square, y0, t, per_sample=True, dense=True, on_failure="return")
    assert sol.failed == [0, 2]
    ys = sol.evaluate(torch.tensor([0.25, 0.75, 1.5], dtype=F64))  # [3 times, 3 samples, 1]
    # each sample where it got to: y = y0 / (1 - y0 t); NaN after a failure, as in sol.ys
    assert float(ys[0, 2, 0]) == pytest.approx(4.0, rel=1e-5)
    assert float(ys[1, 0, 0]) == pytest.approx(4.0, rel=1e-5)
    assert float(ys[2, 1, 0]) == pytest.approx(2.0, rel=1e-5)
    assert torch.isnan(ys[2, 0]).all() and torch.isnan(ys[1:, 2]).all()
    assert torch.isnan(sol.ys[-1, 0]).all()
    with pytest.raises(ValueError, match=r"sample 0's is \[0, 1.5\], got t=1.6"):
        sol.evaluate(torch.tensor([1.6], dtype=F64))


def test_per_sample_tuple_state_is_refused():
    y0 = (torch.ones(3, 2, dtype=F64), torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="needs a tensor state, got a tuple"):
        node.solve(lambda t, y: (-y[0], -y[1]), y0, torch.tensor([0.0, 1.0], dtype=F64),
                   per_sample=True, dense=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("per_sample", [False, True])
def test_cuda_dense_output_equals_the_cpu(per_sample):
    t = torch.tensor([0.0, 3.0], dtype=F64)
    q = torch.linspace(0.0, 3.0, 17, dtype=F64)
    y0 = vdp_start().detach()
    cpu = node.solve(van_der_pol, y0, t, per_sample=per_sample, dense=True)
    gpu = node.solve(van_der_pol, y0.cuda(), t.cuda(), per_sample=per_sample, dense=True)
    values = gpu.evaluate(q.cuda())
    assert values.device.type == "cuda"
    torch.testing.assert_close(values.cpu(), cpu.evaluate(q), rtol=1e-12, atol=1e-12)
