"""Per-sample solving (issue 17): ``solve(..., per_sample=True)`` and ``[B, T]`` output times.

Every sample of the batch must get what it would get if solved alone (values to round-off when
the step sequences agree, step counts within one or two), whatever its neighbours do: other
stiffness, other time grids, other tolerances, failure.
"""

from __future__ import annotations

import math

import pytest
import torch

import node
from tests.problems import frozen_steps

F64 = torch.float64
TOL = dict(rtol=1e-8, atol=1e-8)


class VdP(torch.nn.Module):
    """Van der Pol with one ``mu`` per sample; ``y`` is ``[B, 2]``."""

    def __init__(self, mu: torch.Tensor) -> None:
        super().__init__()
        self.mu = mu

    def forward(self, t, y):
        x, v = y[:, 0], y[:, 1]
        return torch.stack((v, self.mu * (1 - x * x) * v - x), dim=1)


def vdp_batch(batch: int, mu_max: float = 5.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.linspace(0.2, mu_max, batch, dtype=F64)
    y0 = torch.rand(batch, 2, generator=g, dtype=F64) * 4 - 2
    return VdP(mu), y0


def alone(func: VdP, y0, t, b: int, **kw):
    """Sample ``b`` solved on its own (the joint solver on a batch of one)."""
    return node.solve(VdP(func.mu[b : b + 1]), y0[b : b + 1], t, **kw)


@pytest.mark.parametrize("method, tol", [("dopri5", 1e-8), ("tsit5", 1e-8), ("bosh3", 1e-7),
                                         ("dopri8", 1e-9), ("adaptive_heun", 1e-5)])
def test_each_sample_as_if_solved_alone(method, tol):
    func, y0 = vdp_batch(5)
    t = torch.linspace(0, 3, 7, dtype=F64)
    kw = dict(method=method, rtol=tol, atol=tol)
    sol = node.solve(func, y0, t, per_sample=True, **kw)
    assert sol.ys.shape == (7, 5, 2) and sol.success
    for b in range(5):
        ref = alone(func, y0, t, b, **kw)
        torch.testing.assert_close(sol.ys[:, b], ref.ys[:, 0], rtol=100 * tol, atol=100 * tol)
        assert abs(int(sol.stats["n_steps"][b]) - ref.stats["n_steps"]) <= 2
        assert abs(int(sol.stats["n_accepted"][b]) - ref.stats["n_accepted"]) <= 2
    # nfe counts the evaluations each sample took part in, as if solved alone.
    ref0 = alone(func, y0, t, 0, **kw)
    if int(sol.stats["n_steps"][0]) == ref0.stats["n_steps"]:
        assert int(sol.stats["nfe"][0]) == ref0.stats["nfe"]
    assert sol.stats["n_iterations"] == int(sol.stats["n_steps"].max())


def test_stiff_samples_do_not_slow_the_others():
    func, y0 = vdp_batch(16, mu_max=10.0)
    t = torch.linspace(0, 10, 11, dtype=F64)
    joint = node.solve(func, y0, t, rtol=1e-5, atol=1e-5)
    per = node.solve(func, y0, t, rtol=1e-5, atol=1e-5, per_sample=True)
    steps = per.stats["n_steps"].double()
    assert steps.mean() < 0.7 * joint.stats["n_steps"]
    assert steps.min() < 0.4 * joint.stats["n_steps"]
    torch.testing.assert_close(per.ys, joint.ys, rtol=0.02, atol=0.02)  # the same solution


def test_permutation_invariance():
    func, y0 = vdp_batch(6)
    t = torch.linspace(0, 2, 5, dtype=F64)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    sol = node.solve(func, y0, t, per_sample=True, **TOL)
    permuted = node.solve(VdP(func.mu[perm]), y0[perm], t, per_sample=True, **TOL)
    torch.testing.assert_close(permuted.ys, sol.ys[:, perm], rtol=1e-12, atol=1e-12)
    assert torch.equal(permuted.stats["n_steps"], sol.stats["n_steps"][perm])


def test_sample_times_with_different_starts_and_directions():
    """``t[b]`` is sample b's own grid; y' = -k_b y is exact: y0 exp(-k (t - t0))."""
    k = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=F64)
    y0 = torch.tensor([[1.0, -2.0], [0.5, 1.0], [2.0, 3.0], [-1.0, 1.0]], dtype=F64)
    t = torch.stack([torch.linspace(0.0, 1.0, 6, dtype=F64),
                     torch.linspace(2.0, 5.0, 6, dtype=F64),
                     torch.linspace(-1.0, -0.5, 6, dtype=F64),
                     torch.linspace(3.0, 1.0, 6, dtype=F64)])  # the last one backwards
    shapes = set()

    def decay(tt, y):
        shapes.add(tuple(tt.shape))
        return -k[:, None] * y

    sol = node.solve(decay, y0, t, rtol=1e-10, atol=1e-10)  # [B, T] t implies per_sample
    exact = y0[None] * torch.exp(-k[None, :, None] * (t.T - t[:, :1].T)[..., None])
    torch.testing.assert_close(sol.ys, exact, rtol=1e-8, atol=1e-9)
    assert shapes == {(4, 1)}
    assert sol.sample_t.tolist() == t[:, -1].tolist()


def test_func_gets_each_samples_own_time():
    """y' = cos(t) from different starts: y(t) = y0 + sin(t) - sin(t0); t is [B, 1, 1]."""
    t0 = torch.tensor([0.0, 1.0, 2.5], dtype=F64)
    t = t0[:, None] + torch.linspace(0, 2, 5, dtype=F64)
    y0 = torch.zeros(3, 2, 2, dtype=F64)

    def field(tt, y):
        assert tt.shape == (3, 1, 1)
        return torch.cos(tt).expand_as(y)

    ys = node.odeint(field, y0, t, rtol=1e-10, atol=1e-10)
    exact = (torch.sin(t) - torch.sin(t0[:, None])).T[..., None, None].expand(5, 3, 2, 2)
    torch.testing.assert_close(ys, exact, rtol=1e-8, atol=1e-9)


def test_per_sample_tolerances():
    func, y0 = vdp_batch(3, mu_max=1.0)
    func = VdP(torch.ones(3, dtype=F64))
    y0 = y0[:1].expand(3, 2).contiguous()  # the same problem three times
    t = torch.linspace(0, 5, 3, dtype=F64)
    rtol = torch.tensor([1e-3, 1e-6, 1e-9], dtype=F64)
    sol = node.solve(func, y0, t, rtol=rtol, atol=rtol, per_sample=True)
    steps = sol.stats["n_steps"].tolist()
    assert steps[0] < steps[1] < steps[2]
    for b in range(3):
        ref = alone(func, y0, t, b, rtol=float(rtol[b]), atol=float(rtol[b]))
        torch.testing.assert_close(sol.ys[:, b], ref.ys[:, 0], rtol=1e-9, atol=1e-9)


def test_odeint_per_sample_and_float32():
    func, y0 = vdp_batch(4)
    func.mu = func.mu.float()
    t = torch.linspace(0, 1, 3)
    ys = node.odeint(func, y0.float(), t, rtol=1e-5, atol=1e-6, per_sample=True)
    assert ys.dtype == torch.float32 and ys.shape == (3, 4, 2)
    joint = node.odeint(func, y0.float(), t, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ys, joint, rtol=0, atol=1e-4)


# -------------------------------------------------------------------------------- failures


def blowup(t, y):
    """y' = y^2: y = y0 / (1 - y0 t) blows up at t = 1 / y0 for y0 > 0."""
    return y * y


def test_a_diverging_sample_leaves_the_others_intact():
    y0 = torch.tensor([[-1.0], [-0.5], [1.0], [-2.0]], dtype=F64)  # sample 2 blows up at t=1
    t = torch.linspace(0, 2, 5, dtype=F64)
    with pytest.raises(node.SolverError) as info:
        node.solve(blowup, y0, t, per_sample=True, **TOL)
    err = info.value
    assert err.samples == [2]
    assert "sample 2" in str(err) and "1 of 4 samples failed" in str(err)
    assert err.t == pytest.approx(1.0, abs=1e-3)
    sol = node.solve(blowup, y0, t, per_sample=True, on_failure="return", **TOL)
    assert not sol.success and sol.failed == [2]
    assert sol.sample_status[2] in (node.Status.STEP_TOO_SMALL, node.Status.NON_FINITE)
    assert [s is node.Status.SUCCESS for s in sol.sample_status] == [True, True, False, True]
    exact = y0[None] / (1 - y0[None] * t[:, None, None])
    ok = [0, 1, 3]
    torch.testing.assert_close(sol.ys[:, ok], exact[:, ok], rtol=1e-6, atol=1e-7)
    # The failed sample: what it reached is what it reaches alone, the outputs never reached
    # are NaN (alone it gets to t = 1 + 3e-9 and passes the output at t = 1).
    lone = node.solve(blowup, y0[2:3], t, on_failure="return", **TOL)
    reached = lone.ys.shape[0]
    assert reached == 3 and float(sol.sample_t[2]) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(sol.ys[:reached, 2], lone.ys[:, 0], rtol=1e-6, atol=1e-7)
    assert torch.isnan(sol.ys[reached:, 2]).all()


def test_func_returning_nan_for_one_sample():
    def field(t, y):
        out = -y
        return torch.where((t > 0.3) & (torch.arange(3)[:, None] == 1), math.nan, out)

    y0 = torch.ones(3, 2, dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    sol = node.solve(field, y0, t, per_sample=True, on_failure="return", **TOL)
    assert sol.failed == [1] and sol.sample_status[1] is node.Status.NON_FINITE
    assert "sample 1" in sol.message and "non_finite" in sol.message
    torch.testing.assert_close(sol.ys[:, [0, 2]], torch.exp(-t)[:, None, None].expand(3, 2, 2))
    assert torch.isnan(sol.ys[1:, 1]).all() and not torch.isnan(sol.ys[0, 1]).any()


def test_step_budget_is_per_sample():
    func = VdP(torch.tensor([0.5, 50.0, 0.5], dtype=F64))
    y0 = torch.tensor([[2.0, 0.0]] * 3, dtype=F64)
    t = torch.linspace(0, 10, 3, dtype=F64)
    budget = alone(func, y0, t, 0, rtol=1e-6, atol=1e-6).stats["n_steps"] + 5
    sol = node.solve(func, y0, t, rtol=1e-6, atol=1e-6, per_sample=True, on_failure="return",
                     options=dict(max_num_steps=budget))
    assert sol.failed == [1] and sol.sample_status[1] is node.Status.MAX_STEPS
    assert int(sol.stats["n_steps"][1]) == budget
    assert f"max_num_steps={budget}" in sol.message
    assert not torch.isnan(sol.ys[:, [0, 2]]).any()


# ------------------------------------------------------------------------------- gradients


class Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.lin = torch.nn.Linear(3, 3, dtype=F64)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(3, 3, generator=g, dtype=F64) * 0.5)

    def forward(self, t, y):
        return torch.tanh(self.lin(y)) * torch.cos(t)


def _grads(func, y0, t, **kw):
    y0 = y0.clone().requires_grad_(True)
    ys = node.solve(func, y0, t, **kw).ys
    weights = torch.linspace(0.5, 1.5, ys.numel(), dtype=F64).view(ys.shape)
    (ys * weights).sum().backward()
    out = [y0.grad] + [p.grad.clone() for p in func.parameters()]
    func.zero_grad()
    return out, weights


@pytest.mark.parametrize("pinned", [True, False])
def test_gradients_are_the_sum_of_single_sample_gradients(pinned):
    func = Linear()
    y0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    t = torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.4, 1.5], [0.0, 0.3, 0.6], [1.0, 1.2, 2.0]],
                     dtype=F64)
    kw = frozen_steps(0.05) if pinned else dict(rtol=1e-9, atol=1e-9)
    (gy0, *gp), weights = _grads(func, y0, t, **kw)
    total = [torch.zeros_like(p) for p in func.parameters()]
    for b in range(4):
        y0b = y0[b : b + 1].clone().requires_grad_(True)
        ys = node.solve(func, y0b, t[b], **kw).ys
        (ys * weights[:, b : b + 1]).sum().backward()
        torch.testing.assert_close(gy0[b : b + 1], y0b.grad, rtol=1e-9, atol=1e-11)
        for acc, p in zip(total, func.parameters(), strict=True):
            acc += p.grad
        func.zero_grad()
    for g, ref in zip(gp, total, strict=True):
        torch.testing.assert_close(g, ref, rtol=1e-9, atol=1e-11)


def test_gradcheck_with_pinned_steps():
    func = Linear()
    t = torch.tensor([[0.0, 0.3, 0.6], [0.1, 0.2, 0.5]], dtype=F64)
    kw = frozen_steps(0.1)
    y0 = torch.randn(2, 3, generator=torch.Generator().manual_seed(2), dtype=F64,
                     requires_grad=True)
    weight = func.lin.weight

    def solve(y0, w):
        with torch.no_grad():
            weight.copy_(w.detach())
        # Route w through func: a functional copy of the module's field.
        return node.solve(lambda tt, y: torch.tanh(y @ w.T + func.lin.bias) * torch.cos(tt),
                          y0, t, **kw).ys

    w = weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(solve, (y0, w))


def test_gradients_stay_finite_with_a_failed_sample():
    """A frozen (failed) sample must not put NaN into the shared parameter's gradient."""
    scale = torch.tensor(1.0, dtype=F64, requires_grad=True)
    y0 = torch.tensor([[-1.0], [1.0], [-0.5]], dtype=F64)
    t = torch.linspace(0, 2, 5, dtype=F64)
    sol = node.solve(lambda tt, y: scale * y * y, y0, t, per_sample=True, on_failure="return",
                     **TOL)
    assert sol.failed == [1]
    sol.ys[:, [0, 2]].sum().backward()
    assert torch.isfinite(scale.grad)
    # d/ds of y0 / (1 - s y0 t) at s = 1 is y0^2 t / (1 - y0 t)^2.
    y = y0[[0, 2]].T
    expected = (y**2 * t[:, None] / (1 - y * t[:, None]) ** 2).sum()
    torch.testing.assert_close(scale.grad, expected, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, match", [
    (dict(t=torch.zeros(3, 4, dtype=F64) + torch.arange(4.0, dtype=F64)),
     r"t of shape \(3, 4\) has 3 rows.*y0.shape\[0\] = 2"),
    (dict(rtol=torch.full((3,), 1e-6, dtype=F64)), r"rtol.*length 2.*got length 3"),
    (dict(atol=torch.full((5,), 1e-6, dtype=F64)), r"atol.*length 2.*got length 5"),
    (dict(y0=torch.tensor(1.0, dtype=F64)), r"0-d"),
    (dict(y0=(torch.ones(2, 2, dtype=F64), torch.ones(3, 1, dtype=F64))),
     r"tuple y0.*same leading batch"),
    (dict(method="rk4", options=dict(perturb=True)), r"\['perturb'\].*per_sample"),
    (dict(method="rk4", gradient="adjoint"), r"fixed grids.*gradient='direct'.*'adjoint'"),
])
def test_bad_input_names_the_argument(kwargs, match):
    args = dict(y0=torch.ones(2, 2, dtype=F64), t=torch.linspace(0, 1, 3, dtype=F64))
    args.update(kwargs)
    y0, t = args.pop("y0"), args.pop("t")
    with pytest.raises(ValueError, match=match):
        node.solve(lambda tt, y: -y, y0, t, per_sample=True, **args)


def test_non_monotone_row_is_named():
    t = torch.tensor([[0.0, 1.0, 2.0], [0.0, 2.0, 1.0]], dtype=F64)
    with pytest.raises(node.TimeOrderError, match=r"rows \[1\]"):
        node.solve(lambda tt, y: -y, torch.ones(2, 1, dtype=F64), t)


def test_t_with_gradient_is_refused():
    t = torch.linspace(0, 1, 3, dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match=r"per_sample.*respect to t"):
        node.solve(lambda tt, y: -y, torch.ones(2, 1, dtype=F64), t, per_sample=True)
