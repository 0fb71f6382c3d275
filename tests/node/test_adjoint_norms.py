"""The adjoint's error norms (default, seminorm, user callables) and its step-size handling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import node

F64 = torch.float64


class MLP(nn.Module):
    """``y' = W2 tanh(W1 y + b1) + b2``, 2 -> hidden -> 2, float64, fixed seed."""

    def __init__(self, seed: int, hidden: int = 32) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(torch.randn(hidden, 2, generator=g, dtype=F64) / 2**0.5)
        self.b1 = nn.Parameter(0.1 * torch.randn(hidden, generator=g, dtype=F64))
        self.w2 = nn.Parameter(torch.randn(2, hidden, generator=g, dtype=F64) / hidden**0.5)
        self.b2 = nn.Parameter(0.1 * torch.randn(2, generator=g, dtype=F64))

    def forward(self, t, y):
        return torch.tanh(y @ self.w1.T + self.b1) @ self.w2.T + self.b2


def _y0(seed: int, batch: int = 16) -> torch.Tensor:
    return torch.randn(batch, 2, generator=torch.Generator().manual_seed(1000 + seed), dtype=F64)


def _backward(func, y0, t, rtol=1e-7, atol=1e-9, **kw):
    params = tuple(func.parameters())
    sol = node.solve(func, y0, t, rtol=rtol, atol=atol, gradient="adjoint",
                     adjoint_params=params, **kw)
    grads = torch.autograd.grad(sol.ys.square().sum(), params)
    return sol.stats["nfe_backward"], grads


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean().sqrt()


# --------------------------------------------------------------------------------------------
# B. A callable adjoint norm gets torchdiffeq's layout (t, *y, *adj_y, *adj_params).


def _identity_field(t, x):
    return x


def test_callable_norm_layout_tensor_state():
    params = (torch.rand(7, requires_grad=True), torch.rand((), requires_grad=True))
    for shape in ((), (1,), (2, 2)):
        seen = []

        def norm(tensor_tuple, shape=shape, seen=seen):
            assert isinstance(tensor_tuple, tuple)
            t, y, adj_y, adj_param1, adj_param2 = tensor_tuple
            assert t.shape == () and y.shape == shape and adj_y.shape == shape
            assert adj_param1.shape == (7,) and adj_param2.shape == ()
            seen.append(True)
            return max(t.abs(), _rms(y), _rms(adj_y), _rms(adj_param1), adj_param2.abs())

        ys = node.odeint_adjoint(_identity_field, torch.full(shape, 1.0), torch.tensor([0.0, 1.0]),
                                 adjoint_params=params, adjoint_options=dict(norm=norm))
        ys.sum().backward()
        assert seen


def test_callable_norm_layout_tuple_state():
    params = (torch.rand(7, requires_grad=True), torch.rand((), requires_grad=True))
    seen = []

    def norm(tensor_tuple):
        assert isinstance(tensor_tuple, tuple)
        t, ya, yb, adj_ya, adj_yb, adj_param1, adj_param2 = tensor_tuple
        assert t.shape == () and ya.shape == () and yb.shape == (2, 2)
        assert adj_ya.shape == () and adj_yb.shape == (2, 2)
        assert adj_param1.shape == (7,) and adj_param2.shape == ()
        seen.append(True)
        return max(t.abs(), ya.abs(), _rms(yb), adj_ya.abs(), _rms(adj_yb), _rms(adj_param1),
                   adj_param2.abs())

    x0 = torch.tensor(1.0), torch.tensor([[0.5, 0.5], [0.1, 0.1]])
    xs = node.odeint_adjoint(lambda t, x: x, x0, torch.tensor([0.0, 1.0]), adjoint_params=params,
                             adjoint_options=dict(norm=norm))
    xs[0].sum().backward()
    assert seen


def test_callable_norm_without_params_and_warning():
    seen = []

    def norm(tensor_tuple):
        seen.append(len(tensor_tuple))
        return max(x.abs().max() for x in tensor_tuple)

    frozen = torch.rand(3)  # requires no gradient: left out, with a warning as in torchdiffeq
    y0 = torch.tensor([1.0, 2.0], requires_grad=True)
    with pytest.warns(UserWarning, match="do not require gradients"):
        ys = node.odeint_adjoint(_identity_field, y0, torch.tensor([0.0, 1.0]),
                                 adjoint_params=(frozen,), adjoint_options=dict(norm=norm))
    ys.sum().backward()
    assert set(seen) == {3}  # (t, y, adj_y)
    torch.testing.assert_close(y0.grad, torch.full((2,), 1 + torch.e), rtol=1e-5, atol=0)


def test_default_norms_are_torchdiffeq_formulas():
    """The built-in norms are max(|t|, RMS(y), RMS(a), RMS of each parameter adjoint) and the
    same without the parameter adjoints (seminorm): a callable with those formulas takes the
    same steps."""
    func, y0 = MLP(seed=0), _y0(0)
    t = torch.linspace(0.0, 2.0, 4, dtype=F64)

    def full(xs):
        t_, y, a, *ps = xs
        return torch.stack([t_.abs(), _rms(y), _rms(a), *(_rms(p) for p in ps)]).max()

    def semi(xs):
        t_, y, a, *_ = xs
        return torch.stack([t_.abs(), _rms(y), _rms(a)]).max()

    for builtin, formula in ((None, full), ("seminorm", semi)):
        options = None if builtin is None else dict(norm=builtin)
        nfe_builtin, g_builtin = _backward(func, y0, t, adjoint_options=options)
        nfe_formula, g_formula = _backward(func, y0, t, adjoint_options=dict(norm=formula))
        assert nfe_builtin == nfe_formula
        for a, b in zip(g_builtin, g_formula, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_forward_norm_measures_state_and_adjoint_in_backward():
    """As in torchdiffeq, the default adjoint norm applies the forward's ``options['norm']`` to
    y and to its adjoint (each in the state's shape)."""
    calls = []

    def max_norm(x):
        calls.append(tuple(x.shape))
        return x.abs().max()

    func, y0 = MLP(seed=1), _y0(1)
    t = torch.linspace(0.0, 1.0, 3, dtype=F64)
    sol = node.solve(func, y0, t, options=dict(norm=max_norm), gradient="adjoint")
    calls.clear()
    sol.ys.sum().backward()
    assert calls and set(calls) == {(16, 2)}


# --------------------------------------------------------------------------------------------
# A. The seminorm (parameter adjoints out of the error test) costs no more than the full norm.


def _issue_field() -> nn.Module:
    # The reported case: 2 -> 32 -> 2 tanh MLP in float64 with PyTorch's default initialisation;
    # before the fix its backward pass took 55 evaluations with the seminorm, 49 without.
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2)).double()
    y0 = torch.randn(16, 2, dtype=F64)

    class Field(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, t, y):
            return self.net(y)

    return Field(), y0


CASES = [("issue", 3.0, 2, 1e-7, 1e-9)] + [
    (seed, t_end, n_out, rtol, rtol * 1e-2)
    for seed in range(4) for t_end in (1.0, 3.0) for n_out in (2, 5) for rtol in (1e-7, 1e-5)
]


@pytest.mark.parametrize(("seed", "t_end", "n_out", "rtol", "atol"), CASES)
def test_seminorm_no_more_backward_evaluations(seed, t_end, n_out, rtol, atol):
    func, y0 = _issue_field() if seed == "issue" else (MLP(seed), _y0(seed))
    t = torch.linspace(0.0, t_end, n_out, dtype=F64)
    nfe_full, g_full = _backward(func, y0, t, rtol, atol)
    nfe_semi, g_semi = _backward(func, y0, t, rtol, atol, adjoint_options=dict(norm="seminorm"))
    assert nfe_semi <= nfe_full
    for a, b in zip(g_semi, g_full, strict=True):
        assert float((a - b).abs().max()) <= 100 * rtol * float(b.abs().max())


# --------------------------------------------------------------------------------------------
# The backward solve lands on every output time; rounding must not leave an untakeable sliver.


def test_step_onto_stop_time_despite_rounding():
    # -2.7 + 0.2999999999999998 == -2.4000000000000004: one ulp short of the stop at -2.4.
    # Before the fix the loop took a 4e-16 step onto the stop, proposed 4e-15 next and
    # failed with "step size underflows".
    y0 = torch.tensor([1.0], dtype=F64)
    t = torch.tensor([-2.7, 0.0], dtype=F64)
    sol = node.solve(lambda t, y: -y, y0, t, rtol=1e-3, atol=1e-6,
                     options=dict(step_t=[-2.4], first_step=0.2999999999999998))
    torch.testing.assert_close(sol.ys[-1], torch.exp(torch.tensor([-2.7], dtype=F64)),
                               rtol=1e-2, atol=0)


@pytest.mark.parametrize("seed", range(10))
def test_adjoint_with_many_output_times_does_not_underflow(seed):
    # t = linspace(0, 3, 31): a carried step size such as 0.0999999999999998 could end one ulp
    # short of the next output time (seeds 2 and 7 failed before the fix).
    func, y0 = MLP(seed), _y0(seed)
    t = torch.linspace(0.0, 3.0, 31, dtype=F64)
    nfe, grads = _backward(func, y0, t)
    assert nfe > 0 and all(bool(torch.isfinite(g).all()) for g in grads)
