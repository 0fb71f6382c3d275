"""Tuple states in per-sample solves (issue 17): the leading dimension of every tensor of the
tuple is the batch; a sample is solved as the concatenation of its rows."""

from __future__ import annotations

import pytest
import torch

import node

F64 = torch.float64
T = torch.linspace(0, 3, 4, dtype=F64)


def oscillator(t, state):
    """``(x, v)' = (v, -(1 + 0.1 t) x)``; ``t`` of shape ``[B, 1]`` or a scalar."""
    x, v = state
    return v, -(1 + 0.1 * t) * x


def concatenated(t, y):
    x, v = y[:, :2], y[:, 2:]
    dx, dv = oscillator(t, (x, v))
    return torch.cat([dx, dv], dim=1)


def states():
    x0 = torch.tensor([[1.0, 0.0], [2.0, -1.0], [0.5, 3.0]], dtype=F64)
    return x0, torch.zeros_like(x0)


@pytest.mark.parametrize("method, options", [("dopri5", None), ("rk4", dict(step_size=0.1))])
def test_tuple_is_solved_as_the_concatenated_state(method, options):
    x0, v0 = states()
    sol = node.solve(oscillator, (x0, v0), T, method=method, options=options, per_sample=True)
    assert isinstance(sol.ys, tuple) and [y.shape for y in sol.ys] == [(4, 3, 2), (4, 3, 2)]
    ref = node.solve(concatenated, torch.cat([x0, v0], 1), T, method=method, options=options,
                     per_sample=True)
    torch.testing.assert_close(torch.cat(sol.ys, dim=2), ref.ys, rtol=1e-14, atol=1e-15)
    assert sol.stats["n_steps"].tolist() == ref.stats["n_steps"].tolist()


def test_each_sample_close_to_its_joint_solve_and_gradients_flow():
    x0, v0 = states()
    x0 = x0.clone().requires_grad_(True)
    ys = node.odeint(oscillator, (x0, v0), T, per_sample=True, rtol=1e-9, atol=1e-11)
    for b in range(3):
        ref = node.odeint(oscillator, (x0[b].detach(), v0[b]), T, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(ys[0][:, b].detach(), ref[0], rtol=1e-7, atol=1e-8)
        torch.testing.assert_close(ys[1][:, b].detach(), ref[1], rtol=1e-7, atol=1e-8)
    # d x(t) / d x0 of this linear system: row b's gradient only in row b, and the same
    # for every sample (the problem is linear and the same for all).
    (g,) = torch.autograd.grad(ys[0][-1, :, 0].sum(), x0)
    assert float(g[:, 1].abs().max()) < 1e-7
    torch.testing.assert_close(g[:, 0], g[:1, 0].expand(3), rtol=1e-6, atol=1e-7)


def test_tuple_tolerances_and_different_dimensions():
    # A [B, 2] and a [B, 1] tensor with one tolerance each; t has the first tensor's dimensions.
    seen = []

    def func(t, state):
        seen.append(tuple(t.shape))
        x, s = state
        return -x, (x**2).sum(1, keepdim=True)

    x0 = torch.tensor([[1.0, 2.0], [0.5, 0.1]], dtype=F64)
    s0 = torch.zeros(2, 1, dtype=F64)
    sol = node.solve(func, (x0, s0), T, per_sample=True, rtol=(1e-8, 1e-6), atol=(1e-10, 1e-8))
    assert set(seen) == {(2, 1)}
    # s(t) = |x0|^2 (1 - exp(-2 t)) / 2
    want = (x0**2).sum(1) * (1 - torch.exp(-2 * T[-1])) / 2
    torch.testing.assert_close(sol.ys[1][-1, :, 0], want, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("y0, match", [
    ((torch.ones(2, 2, dtype=F64), torch.ones(3, 2, dtype=F64)), r"same leading batch.*\(3, 2\)"),
    ((torch.ones(2, 2, dtype=F64), torch.ones(2, 2)), r"one dtype"),
    ((torch.ones(2, 2, dtype=F64), torch.ones((), dtype=F64)), r"same leading batch"),
])
def test_bad_tuple_states(y0, match):
    with pytest.raises(ValueError, match=match):
        node.solve(lambda t, s: s, y0, T, per_sample=True)


def test_bad_tuple_outputs_and_tolerances():
    x0, v0 = states()
    with pytest.raises(ValueError, match=r"func's output 1 must have the shape of y0\[1\]"):
        node.solve(lambda t, s: (s[1], s[0][:, :1]), (x0, v0), T, per_sample=True)
    with pytest.raises(ValueError, match="func must return a tuple of 2 tensors"):
        node.solve(lambda t, s: s[0], (x0, v0), T, per_sample=True)
    with pytest.raises(ValueError, match=r"rtol as a tuple.*\(2\), got 3"):
        node.solve(oscillator, (x0, v0), T, per_sample=True, rtol=(1e-6,) * 3)
    with pytest.raises(ValueError, match=r"atol\[0\] of shape \(4,\) does not broadcast"):
        node.solve(oscillator, (x0, v0), T, per_sample=True,
                   atol=(torch.ones(4, dtype=F64), 1e-9))


class DampedOscillator(torch.nn.Module):
    """``(x, v)' = (v, -x - k v)`` on a tuple state, ``k`` a parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(0.3, dtype=F64))

    def forward(self, t, state):
        x, v = state
        return v, -x - self.k * v


@pytest.mark.parametrize("gradient", ["checkpoint", "adjoint"])
def test_tuple_gradients_in_every_mode_agree_with_direct(gradient):
    # The adjoint finds a module's parameters through the flattening closure (no adjoint_params).
    def grads(gradient):
        field = DampedOscillator()
        x0, v0 = states()
        x0 = x0.clone().requires_grad_(True)
        ys = node.solve(field, (x0, v0), T, per_sample=True, gradient=gradient, rtol=1e-10,
                        atol=1e-12).ys
        return torch.autograd.grad((ys[0][-1] ** 2).sum() + ys[1][-1].sum(), (x0, field.k))

    for got, want in zip(grads(gradient), grads("direct"), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)
