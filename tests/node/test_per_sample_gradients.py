"""Gradient modes of per-sample solves (issue 17): ``gradient="checkpoint"`` and
``gradient="adjoint"`` (and ``odeint_adjoint(..., per_sample=True)``).

The samples are independent problems sharing the parameters, so the gradient of a per-sample
solve must be each sample's gradient for ``y0`` and the sum of the single-sample gradients for
the parameters. The checkpoint mode replays the steps the forward pass took, so it gives the
direct mode's gradient to round-off; the adjoint gives it to the tolerances.
"""

from __future__ import annotations

import pytest
import torch

import node
from tests.problems import frozen_steps

F64 = torch.float64
# Rows of output times with different starts, lengths and a decreasing one.
T_ROWS = torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.4, 1.5], [0.6, 0.3, 0.0], [1.0, 1.2, 2.0]],
                      dtype=F64)


class Field(torch.nn.Module):
    def __init__(self, dtype=F64) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.lin = torch.nn.Linear(3, 3, dtype=dtype)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(3, 3, generator=g, dtype=dtype) * 0.8)
        self.scale = torch.nn.Parameter(torch.tensor(1.3, dtype=dtype))

    def forward(self, t, y):
        return self.scale * torch.tanh(self.lin(y)) * torch.cos(t) - 0.1 * y


def _y0(batch=4, dtype=F64):
    return torch.randn(batch, 3, generator=torch.Generator().manual_seed(1), dtype=dtype)


def _weights(shape, dtype=F64):
    return torch.linspace(0.5, 1.5, int(torch.tensor(shape).prod()), dtype=dtype).view(shape)


def _grads(func, y0, t, weights, **kw):
    """``d(sum(weights * ys))/d(y0, params)`` and the solution."""
    y0 = y0.clone().requires_grad_(True)
    sol = node.solve(func, y0, t, **kw)
    (sol.ys * weights).sum().backward()
    out = [y0.grad] + [p.grad.clone() for p in func.parameters()]
    func.zero_grad()
    return out, sol


def _single_sample_sum(func, y0, t, weights, **kw):
    """The gradients of every sample solved alone by the joint solver (params summed)."""
    gy0, total = [], [torch.zeros_like(p) for p in func.parameters()]
    for b in range(y0.shape[0]):
        tb = t[b] if t.dim() == 2 else t
        (g, *gp), _ = _grads(func, y0[b : b + 1], tb, weights[:, b : b + 1], **kw)
        gy0.append(g)
        for acc, p in zip(total, gp, strict=True):
            acc += p
    return [torch.cat(gy0)] + total


def _close(got, want, rtol, atol):
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------- checkpoint


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "adaptive_heun"])
def test_checkpoint_equals_per_sample_direct(method):
    """The direct mode's gradient (rejected steps are not replayed). The forward loops with
    and without a graph round differently, which may flip a borderline step decision: compare
    to the tolerance (to round-off on pinned steps: test_checkpoint_gradcheck_on_pinned_steps)."""
    func, y0 = Field(), _y0()
    tol = 1e-6 if method == "adaptive_heun" else 1e-9
    kw = dict(method=method, rtol=tol, atol=tol, per_sample=True)
    weights = _weights((3, 4, 3))
    direct, sd = _grads(func, y0, T_ROWS, weights, **kw)
    ckpt, sc = _grads(func, y0, T_ROWS, weights, gradient="checkpoint", **kw)
    torch.testing.assert_close(sc.ys, sd.ys, rtol=100 * tol, atol=100 * tol)
    _close(ckpt, direct, 1e3 * tol, 10 * tol)
    assert sc.stats["n_calls_backward"] > 0


def test_checkpoint_is_the_sum_of_single_sample_gradients():
    func, y0 = Field(), _y0()
    kw = dict(rtol=1e-10, atol=1e-10)
    weights = _weights((3, 4, 3))
    got, _ = _grads(func, y0, T_ROWS, weights, gradient="checkpoint", **kw)
    want = _single_sample_sum(func, y0, T_ROWS, weights, gradient="checkpoint", **kw)
    # Each sample takes about the steps it takes alone (not always the same ones).
    _close(got, want, 1e-7, 1e-9)


def test_checkpoint_gradcheck_on_pinned_steps():
    """On a step sequence independent of the inputs the solve is smooth: finite differences
    match the replayed gradient (module parameters: the taped path)."""
    func = Field()
    t = torch.tensor([[0.0, 0.3, 0.6], [0.1, 0.25, 0.5]], dtype=F64)
    kw = dict(frozen_steps(0.1), per_sample=True, gradient="checkpoint")
    y0 = _y0(2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda y: node.solve(func, y, t, **kw).ys, (y0,))
    assert torch.autograd.gradgradcheck(lambda y: node.solve(func, y, t, **kw).ys, (y0,))
    # and the parameters' gradient is the direct mode's
    weights = _weights((3, 2, 3))
    direct, _ = _grads(func, y0.detach(), t, weights, **{**kw, "gradient": "direct"})
    ckpt, _ = _grads(func, y0.detach(), t, weights, **kw)
    _close(ckpt, direct, 1e-12, 1e-14)


def test_checkpoint_gradcheck_closure_over_a_tensor():
    """A func that is no module (a closure over ``w``): the checkpointed replay in one graph."""
    t = torch.tensor([[0.0, 0.3, 0.6], [0.1, 0.25, 0.5]], dtype=F64)
    kw = dict(frozen_steps(0.1), per_sample=True, gradient="checkpoint")
    bias = torch.tensor([0.1, -0.2, 0.3], dtype=F64)

    def solve(y0, w):
        return node.solve(lambda tt, y: torch.tanh(y @ w.T + bias) * torch.cos(tt), y0, t,
                          **kw).ys

    y0 = _y0(2).requires_grad_(True)
    w = (torch.randn(3, 3, generator=torch.Generator().manual_seed(4), dtype=F64) * 0.5)
    assert torch.autograd.gradcheck(solve, (y0, w.requires_grad_(True)))


def test_checkpoint_without_gradients_is_the_plain_solve():
    func, y0 = Field(), _y0()
    with torch.no_grad():
        plain = node.solve(func, y0, T_ROWS, per_sample=True).ys
        ckpt = node.solve(func, y0, T_ROWS, per_sample=True, gradient="checkpoint").ys
    torch.testing.assert_close(ckpt, plain, rtol=0, atol=0)


# ------------------------------------------------------------------------------- adjoint


@pytest.mark.parametrize("method, tol, close", [("dopri5", 1e-10, 1e-6), ("tsit5", 1e-10, 1e-6),
                                                 ("bosh3", 1e-8, 1e-5)])
def test_adjoint_matches_direct_and_single_samples(method, tol, close):
    func, y0 = Field(), _y0()
    kw = dict(method=method, rtol=tol, atol=tol)
    weights = _weights((3, 4, 3))
    got, sol = _grads(func, y0, T_ROWS, weights, gradient="adjoint", per_sample=True, **kw)
    direct, _ = _grads(func, y0, T_ROWS, weights, per_sample=True, **kw)
    _close(got, direct, close, close / 100)
    alone = _single_sample_sum(func, y0, T_ROWS, weights, gradient="adjoint", **kw)
    _close(got, alone, close, close / 100)
    assert sol.stats["n_steps_backward"].shape == (4,)
    assert sol.stats["n_calls_backward"] >= sol.stats["n_iterations_backward"]


def test_adjoint_converges_with_the_adjoint_tolerance():
    func, y0 = Field(), _y0()
    weights = _weights((3, 4, 3))
    exact, _ = _grads(func, y0, T_ROWS, weights, per_sample=True, rtol=1e-12, atol=1e-12)
    errors = []
    for tol in (1e-4, 1e-7):
        got, _ = _grads(func, y0, T_ROWS, weights, per_sample=True, gradient="adjoint",
                        rtol=1e-12, atol=1e-12, adjoint_rtol=tol, adjoint_atol=tol)
        errors.append(max(float((g - e).abs().max()) for g, e in zip(got, exact, strict=True)))
    assert errors[1] < 1e-5 and errors[1] < errors[0] / 10


def test_adjoint_per_sample_tolerances_and_options():
    """Per-sample adjoint tolerances, another backward method and the seminorm (the same as
    the default here: the parameter adjoint is never in a per-sample error test)."""
    func, y0 = Field(), _y0()
    weights = _weights((3, 4, 3))
    direct, _ = _grads(func, y0, T_ROWS, weights, per_sample=True, rtol=1e-10, atol=1e-10)
    tol = torch.tensor([1e-10, 1e-9, 1e-10, 1e-9], dtype=F64)
    kw = dict(per_sample=True, gradient="adjoint", rtol=1e-10, atol=1e-10, adjoint_rtol=tol,
              adjoint_atol=tol, adjoint_method="dopri8")
    semi, _ = _grads(func, y0, T_ROWS, weights, adjoint_options=dict(norm="seminorm"), **kw)
    default, _ = _grads(func, y0, T_ROWS, weights, **kw)
    _close(semi, direct, 1e-6, 1e-7)
    _close(semi, default, 0, 0)


def test_odeint_adjoint_per_sample_and_float32():
    func, y0 = Field(torch.float32), _y0(dtype=torch.float32)
    t = T_ROWS.float()
    y = y0.clone().requires_grad_(True)
    ys = node.odeint_adjoint(func, y, t, rtol=1e-6, atol=1e-6)  # [B, T] t: per sample
    assert ys.shape == (3, 4, 3) and ys.dtype == torch.float32
    weights = _weights(ys.shape, torch.float32)
    (ys * weights).sum().backward()
    got = [y.grad] + [p.grad.clone() for p in func.parameters()]
    func.zero_grad()
    want, _ = _grads(func, y0, t, weights, per_sample=True, rtol=1e-6, atol=1e-6)
    _close(got, want, 1e-3, 1e-4)
    y = y0.clone().requires_grad_(True)
    ys1 = node.odeint_adjoint(func, y, torch.linspace(0, 1, 3), rtol=1e-6, atol=1e-6,
                              per_sample=True)
    assert ys1.shape == (3, 4, 3)


def test_adjoint_with_explicit_params_and_a_closure():
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    y0 = torch.tensor([[1.0], [2.0]], dtype=F64, requires_grad=True)
    t = torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.25, 2.0]], dtype=F64)
    sol = node.solve(lambda tt, y: -k * y, y0, t, gradient="adjoint", adjoint_params=(k,),
                     rtol=1e-10, atol=1e-10)
    sol.ys[-1].sum().backward()
    end = t[:, -1:]
    torch.testing.assert_close(y0.grad, torch.exp(-k * end).detach(), rtol=1e-8, atol=0)
    expected = (-y0 * end * torch.exp(-k * end)).sum().detach()
    torch.testing.assert_close(k.grad, expected, rtol=1e-8, atol=0)


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(adjoint_params=[1.0]), TypeError, r"adjoint_params\[0\] must be a tensor"),
    (dict(adjoint_method="rk4"), ValueError, r"adjoint_method='rk4'.*fixed grid"),
    (dict(adjoint_method="kvaerno5"), ValueError, r"explicit.*adjoint_method='kvaerno5'"),
    (dict(adjoint_options=dict(norm=lambda x: x.abs().max())), ValueError,
     r"adjoint_options\['norm'\].*'seminorm'"),
    (dict(adjoint_options=[1]), TypeError, r"adjoint_options must be a dict"),
    (dict(adjoint_options=dict(step_t=[0.5])), ValueError, r"step_t.*per_sample"),
    (dict(adjoint_rtol=torch.full((3,), 1e-6, dtype=F64)), ValueError,
     r"adjoint_rtol.*length 2.*got length 3"),
])
def test_bad_adjoint_arguments_are_named(kwargs, error, match):
    func = torch.nn.Linear(2, 2).double()
    with pytest.raises(error, match=match):
        node.solve(lambda tt, y: func(y), torch.ones(2, 2, dtype=F64),
                   torch.linspace(0, 1, 3, dtype=F64), per_sample=True, gradient="adjoint",
                   **{"adjoint_params": tuple(func.parameters()), **kwargs})


def test_adjoint_needs_params_of_a_non_module():
    with pytest.raises(ValueError, match=r"nn.Module.*adjoint_params"):
        node.solve(lambda tt, y: -y, torch.ones(2, 1, dtype=F64),
                   torch.linspace(0, 1, 3, dtype=F64), per_sample=True, gradient="adjoint")


def test_adjoint_arguments_without_the_adjoint_are_refused():
    with pytest.raises(ValueError, match=r"adjoint_\* arguments need gradient='adjoint'.*"
                                         r"'checkpoint'"):
        node.solve(lambda tt, y: -y, torch.ones(2, 1, dtype=F64),
                   torch.linspace(0, 1, 3, dtype=F64), per_sample=True, gradient="checkpoint",
                   adjoint_rtol=1e-3)


@pytest.mark.parametrize("mode", ["checkpoint", "adjoint"])
def test_a_failed_sample_leaves_the_others_gradients_exact(mode):
    """A frozen (failed) sample must not put NaN into the shared parameter's gradient; its own
    reached outputs are differentiated too."""
    scale = torch.tensor(1.0, dtype=F64, requires_grad=True)
    y0 = torch.tensor([[-1.0], [1.0], [-0.5]], dtype=F64, requires_grad=True)
    t = torch.linspace(0, 2, 5, dtype=F64)
    sol = node.solve(lambda tt, y: scale * y * y, y0, t, per_sample=True, on_failure="return",
                     gradient=mode, adjoint_params=(scale,) if mode == "adjoint" else None,
                     rtol=1e-10, atol=1e-10)
    assert sol.failed == [1] and torch.isnan(sol.ys[-1, 1]).all()
    (sol.ys[:, [0, 2]].sum() + sol.ys[1, 1].sum()).backward()
    # y = y0 / (1 - s y0 t): dy/ds = y0^2 t / (1 - s y0 t)^2, dy/dy0 = 1 / (1 - s y0 t)^2
    y, tt = y0.detach().T, t[:, None]
    expected = (y**2 * tt / (1 - y * tt) ** 2)[:, [0, 2]].sum() + y[0, 1] ** 2 * t[1] / (
        1 - y[0, 1] * t[1]) ** 2
    torch.testing.assert_close(scale.grad, expected, rtol=1e-6, atol=1e-8)
    want = (1 / (1 - y * tt) ** 2)
    want = torch.stack([want[:, 0].sum(), want[1, 1], want[:, 2].sum()])
    torch.testing.assert_close(y0.grad.view(-1), want, rtol=1e-6, atol=1e-8)


def test_odeint_adjoint_with_events_refuses_per_sample():
    with pytest.raises(ValueError, match=r"event_fn.*per_sample"):
        node.odeint_adjoint(torch.nn.Linear(1, 1).double(), torch.ones(2, 1, dtype=F64),
                            torch.tensor([0.0, 1.0], dtype=F64), per_sample=True,
                            event_fn=lambda t, y: y.sum())


def test_adjoint_options_needed_for_another_method_with_options():
    func = torch.nn.Linear(2, 2).double()
    with pytest.raises(ValueError, match=r"adjoint_options must be given.*'dopri8'.*'dopri5'"):
        node.solve(lambda tt, y: func(y), torch.ones(2, 2, dtype=F64),
                   torch.linspace(0, 1, 3, dtype=F64), per_sample=True, gradient="adjoint",
                   adjoint_params=tuple(func.parameters()), adjoint_method="dopri8",
                   options=dict(max_num_steps=100))


def test_checkpoint_gradcheck_parameters_through_functional_call():
    """Under functional_call the module's own parameters are back before backward() runs: the
    replay must use the tensors the forward pass used."""
    from torch.func import functional_call

    func = Field()
    names = [n for n, _ in func.named_parameters()]
    t = torch.tensor([[0.0, 0.3, 0.6], [0.1, 0.25, 0.5]], dtype=F64)
    y0 = _y0(2)

    class Solve(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.func = func

        def forward(self, y):
            return node.solve(self.func, y, t, per_sample=True, gradient="checkpoint",
                              **frozen_steps(0.1)).ys

    solver = Solve()

    def fn(*ps):
        return functional_call(solver, {f"func.{n}": p for n, p in zip(names, ps, strict=True)},
                               (y0,))

    ps = tuple(p.detach().clone().requires_grad_(True) for p in func.parameters())
    assert torch.autograd.gradcheck(fn, ps, atol=1e-8, rtol=1e-6)


def test_adjoint_backward_failure_raises_a_solver_error():
    func, y0 = Field(), _y0()
    sol = node.solve(func, y0.requires_grad_(True), T_ROWS, gradient="adjoint", rtol=1e-8,
                     atol=1e-8, adjoint_options=dict(max_num_steps=3))
    with pytest.raises(node.SolverError, match=r"adjoint \(backward\) solve of samples \[.*"
                                               r"max_num_steps=3"):
        sol.ys.sum().backward()
