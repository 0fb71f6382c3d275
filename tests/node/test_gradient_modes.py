"""The three gradient modes (direct, checkpoint, adjoint) and torchdiffeq's odeint_adjoint API."""

from __future__ import annotations

import pytest
import torch

import node
from tests.problems import frozen_steps

MODES = ("direct", "checkpoint", "adjoint")
# gradcheck needs a step sequence that finite differences do not move (see
# test_solver_gradients.py): pinned steps, with the output times inside steps. dopri8, because
# t-gradients are the exact solution's (f at the output), which its dense output follows to
# 1.5e-10 here (dopri5 at h = 0.0432: 4e-9, a small margin below gradcheck's 1e-8).
PINNED = dict(method="dopri8", **frozen_steps(0.095))


def _gradcheck_options(mode: str, params=()) -> tuple[dict, dict]:
    """Solver keywords and gradcheck tolerances for ``mode``. Direct and checkpoint modes
    differentiate the pinned steps exactly (round-off only); the adjoint solves the continuous
    adjoint backwards, adaptively at 1e-11, so it matches to about that (and the pinned forward
    solve's own error, below 1e-10)."""
    if mode != "adjoint":
        return PINNED, dict(atol=1e-8, rtol=1e-6)
    adjoint = dict(adjoint_params=params, adjoint_rtol=1e-11, adjoint_atol=1e-11,
                   adjoint_options={})
    return {**PINNED, **adjoint}, dict(atol=1e-7, rtol=1e-6)


class MLPField(torch.nn.Module):
    """A small time-dependent MLP vector field."""

    def __init__(self, dim: int = 2, hidden: int = 16, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim + 1, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, dim)
        )

    def forward(self, t, y):
        tt = t.to(y.dtype).expand(*y.shape[:-1], 1)
        return self.net(torch.cat([y, tt], dim=-1))


def _grads(mode, func, y0, t, **kw):
    extra = {} if mode != "adjoint" else {"adjoint_params": tuple(func.parameters())}
    sol = node.solve(func, y0, t, gradient=mode, **extra, **kw)
    loss = (sol.ys**2).sum() + sol.ys[-1].sum()
    return torch.autograd.grad(loss, (y0, t, *func.parameters())), sol


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_modes_agree_for_an_mlp_vector_field(method):
    func = MLPField().double()
    y0 = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0.0, 1.5, 7, dtype=torch.float64, requires_grad=True)
    kw = dict(method=method, rtol=1e-10, atol=1e-10)
    direct, _ = _grads("direct", func, y0, t, **kw)
    checkpoint, _ = _grads("checkpoint", func, y0, t, **kw)
    adjoint, _ = _grads("adjoint", func, y0, t, **kw)
    for d, c, a in zip(direct, checkpoint, adjoint, strict=True):
        # direct and checkpoint differentiate the same computation: equal to rounding.
        torch.testing.assert_close(c, d, rtol=1e-12, atol=1e-12)
        # the adjoint solves the continuous adjoint: equal to the tolerance.
        torch.testing.assert_close(a, d, rtol=1e-6, atol=1e-7)


def test_modes_agree_for_fixed_step_methods():
    func = MLPField().double()
    y0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 5, dtype=torch.float64, requires_grad=True)
    kw = dict(method="rk4", options=dict(step_size=0.01))
    direct, _ = _grads("direct", func, y0, t, **kw)
    checkpoint, _ = _grads("checkpoint", func, y0, t, **kw)
    adjoint, _ = _grads("adjoint", func, y0, t, **kw)
    for d, c, a in zip(direct, checkpoint, adjoint, strict=True):
        torch.testing.assert_close(c, d, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(a, d, rtol=1e-5, atol=1e-7)


def _nonlinear(t, y):
    return torch.sin(t) * y - y**3


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_each_mode(mode):
    y0 = torch.tensor([0.5, -0.3], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.7, 1.5], dtype=torch.float64, requires_grad=True)
    kw, tolerances = _gradcheck_options(mode)

    def fn(y0_, t_):
        return node.solve(_nonlinear, y0_, t_, gradient=mode, **kw).ys

    assert torch.autograd.gradcheck(fn, (y0, t), **tolerances)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_parameters_each_mode(mode):
    func = MLPField(dim=2, hidden=4).double()
    names = [name for name, _ in func.named_parameters()]
    y0 = torch.randn(2, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)

    def fn(*ps):
        def field(t_, y_):
            return torch.func.functional_call(func, dict(zip(names, ps, strict=True)), (t_, y_))

        kw, _ = _gradcheck_options(mode, ps)
        return node.solve(field, y0, t, gradient=mode, **kw).ys

    inputs = tuple(p.detach().clone().requires_grad_(True) for p in func.parameters())
    assert torch.autograd.gradcheck(fn, inputs, **_gradcheck_options(mode)[1])


@pytest.mark.parametrize("mode", ["direct", "checkpoint"])
def test_double_backward(mode):
    y0 = torch.tensor([0.5, -0.3], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.7, 1.5], dtype=torch.float64, requires_grad=True)

    def fn(y0_, t_):
        return node.solve(_nonlinear, y0_, t_, gradient=mode, **PINNED).ys

    assert torch.autograd.gradgradcheck(fn, (y0, t), atol=1e-7, rtol=1e-5)


def test_seminorm_same_gradients_fewer_backward_evaluations():
    func = MLPField(dim=2, hidden=32).double()
    y0 = torch.randn(8, 2, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0.0, 2.0, 4, dtype=torch.float64)
    results = []
    for adjoint_options in (None, {"norm": "seminorm"}):
        sol = node.solve(func, y0, t, rtol=1e-7, atol=1e-7, gradient="adjoint",
                         adjoint_options=adjoint_options)
        grads = torch.autograd.grad(sol.ys.square().sum(), (y0, *func.parameters()))
        results.append((grads, sol.stats["nfe_backward"]))
    (g_full, nfe_full), (g_semi, nfe_semi) = results
    assert nfe_semi < nfe_full
    for a, b in zip(g_semi, g_full, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


class CountingField(MLPField):
    def __init__(self) -> None:
        super().__init__(dim=2, hidden=32)
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return super().forward(t, y)


def test_adjoint_backward_cheaper_than_torchdiffeq(torchdiffeq):
    # The step size is carried across output times on the way back, while torchdiffeq selects
    # it afresh (two extra evaluations and a tiny first step) at every output time.
    func = CountingField().double()
    y0 = torch.randn(16, 2, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 10, dtype=torch.float64)
    backward_calls = []
    for odeint_adjoint in (node.odeint_adjoint, torchdiffeq.odeint_adjoint):
        ys = odeint_adjoint(func, y0, t, rtol=1e-6, atol=1e-6)
        func.calls = 0
        ys.square().sum().backward()
        backward_calls.append(func.calls)
    ours, theirs = backward_calls
    assert ours < theirs
    # Lower bound of any adjoint with jumps at the 9 interior output times: one 6-stage step and
    # one re-evaluation per interval; we stay within two steps per interval.
    assert ours <= 9 * (2 * 6 + 1)


def _saved_bytes(mode: str, t_end: float) -> int:
    func = MLPField(dim=2, hidden=16)
    y0 = torch.randn(4, 2, requires_grad=True)
    t = torch.tensor([0.0, t_end])
    total = 0

    def pack(x):
        nonlocal total
        total += x.numel() * x.element_size()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        sol = node.solve(func, y0, t, rtol=1e-5, atol=1e-5, gradient=mode,
                         options={"max_step": 0.05})
    assert sol.stats["n_accepted"] >= t_end / 0.05
    return total


def test_adjoint_memory_is_flat_and_direct_memory_grows():
    adjoint_short, adjoint_long = _saved_bytes("adjoint", 1.0), _saved_bytes("adjoint", 10.0)
    direct_short, direct_long = _saved_bytes("direct", 1.0), _saved_bytes("direct", 10.0)
    assert adjoint_long == adjoint_short
    assert direct_long > 5 * direct_short


def test_odeint_adjoint_requires_module_or_params():
    y0 = torch.tensor([1.0])
    t = torch.tensor([0.0, 1.0])
    with pytest.raises(ValueError, match="nn.Module"):
        node.odeint_adjoint(lambda t, y: -y, y0, t)
    ys = node.odeint_adjoint(lambda t, y: -y, y0, t, adjoint_params=())
    torch.testing.assert_close(ys[-1], torch.exp(torch.tensor([-1.0])), rtol=1e-5, atol=1e-6)


def test_odeint_adjoint_needs_adjoint_options_for_other_method_with_options():
    func = MLPField()
    y0 = torch.randn(2, 2)
    t = torch.tensor([0.0, 1.0])
    with pytest.raises(ValueError, match="adjoint_options"):
        node.odeint_adjoint(func, y0, t, method="dopri5", options={"max_num_steps": 1000},
                            adjoint_method="rk4")
    ys = node.odeint_adjoint(func, y0, t, method="dopri5", options={"max_num_steps": 1000},
                             adjoint_method="rk4", adjoint_options={"step_size": 0.1})
    assert ys.shape == (2, 2, 2)


def test_odeint_adjoint_tuple_state_and_reverse_time():
    func = MLPField(dim=2).double()
    a0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    b0 = torch.randn(1, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)

    def tuple_func(t, state):
        a, b = state
        return func(t, a), -b

    def loss(ys):
        return ys[0].square().sum() + ys[1].sum()

    direct = torch.autograd.grad(loss(node.odeint(tuple_func, (a0, b0), t, rtol=1e-10,
                                                  atol=1e-10)), (a0, b0, *func.parameters()))
    adjoint = torch.autograd.grad(
        loss(node.odeint_adjoint(tuple_func, (a0, b0), t, rtol=1e-10, atol=1e-10,
                                 adjoint_params=tuple(func.parameters()))),
        (a0, b0, *func.parameters()),
    )
    for d, a in zip(direct, adjoint, strict=True):
        torch.testing.assert_close(a, d, rtol=1e-6, atol=1e-8)


def test_gradient_mode_validation():
    with pytest.raises(ValueError, match="gradient"):
        node.solve(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]), gradient="backprop")
    with pytest.raises(ValueError, match="adjoint"):
        node.solve(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]),
                   adjoint_rtol=1e-3)


def test_torchdiffeq_adjoint_agrees(torchdiffeq):
    func = MLPField().double()
    y0 = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    ours = torch.autograd.grad(node.odeint_adjoint(func, y0, t, rtol=1e-9, atol=1e-9).sum(),
                               (y0, *func.parameters()))
    theirs = torch.autograd.grad(
        torchdiffeq.odeint_adjoint(func, y0, t, rtol=1e-9, atol=1e-9).sum(),
        (y0, *func.parameters()),
    )
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_adjoint_step_callbacks_are_called_on_func():
    class Recorder(MLPField):
        def __init__(self) -> None:
            super().__init__()
            self.forward_steps = 0
            self.backward_steps = 0

        def callback_accept_step(self, t0, y0, dt):
            self.forward_steps += 1

        def callback_accept_step_adjoint(self, t0, y0, dt):
            self.backward_steps += 1

    func = Recorder()
    y0 = torch.randn(3, 2)
    sol = node.solve(func, y0, torch.tensor([0.0, 1.0]), gradient="adjoint")
    sol.ys.sum().backward()
    assert func.forward_steps == sol.stats["n_accepted"]
    assert 0 < func.backward_steps <= sol.stats["n_steps_backward"]
