"""A user ``norm`` in per-sample solves (``options=dict(norm=...)``).

Contract: the norm is called with the scaled errors of all samples at once, a tensor shaped like
``y0`` (``[B, ...]``; a tuple of such tensors for a tuple state), and returns ``[B]``, each
sample's norm. Such a norm also works for a joint solve of one sample (it returns ``[1]``), so a
sample solved per-sample must get what the joint loop gives it solved alone with that norm.
"""

from __future__ import annotations

import pytest
import torch

import node
from tests.node.test_per_sample import F64, alone, vdp_batch


def max_norm(x):
    return x.abs().flatten(1).amax(1)


def weighted(x):  # not homogeneous in the elements: the first counts twice
    return (x[:, 0].square() * 4 + x[:, 1].square()).sqrt()


@pytest.mark.parametrize("norm", [max_norm, weighted])
@pytest.mark.parametrize("controller", ["integral", "pid"])
def test_user_norm_sample_as_if_solved_alone(norm, controller):
    func, y0 = vdp_batch(5)
    t = torch.linspace(0, 3, 7, dtype=F64)
    kw = dict(method="dopri5", rtol=1e-7, atol=1e-7,
              options=dict(norm=norm, controller=controller))
    sol = node.solve(func, y0, t, per_sample=True, **kw)
    assert sol.success
    for b in range(5):
        ref = alone(func, y0, t, b, **kw)
        torch.testing.assert_close(sol.ys[:, b], ref.ys[:, 0], rtol=1e-5, atol=1e-5)
        assert abs(int(sol.stats["n_steps"][b]) - ref.stats["n_steps"]) <= 2
        assert abs(int(sol.stats["n_accepted"][b]) - ref.stats["n_accepted"]) <= 2


def test_user_norm_is_used():
    """The max norm is larger than the RMS: more steps than the default, on every sample."""
    func, y0 = vdp_batch(4)
    t = torch.linspace(0, 3, 4, dtype=F64)
    kw = dict(method="dopri5", rtol=1e-6, atol=1e-6)
    default = node.solve(func, y0, t, per_sample=True, **kw)
    scaled = node.solve(func, y0, t, per_sample=True,
                        options=dict(norm=lambda x: 10 * max_norm(x)), **kw)
    assert (scaled.stats["n_steps"] > default.stats["n_steps"]).all()


def test_user_norm_on_a_tuple_state_gets_the_tuple():
    seen = []

    def norm(parts):
        seen.append(tuple(p.shape for p in parts))
        return torch.stack([p.abs().flatten(1).amax(1) for p in parts]).amax(0)

    y0 = (torch.tensor([[1.0], [2.0], [3.0]], dtype=F64), torch.ones(3, 2, 2, dtype=F64))
    t = torch.linspace(0, 1, 3, dtype=F64)
    sol = node.solve(lambda tt, y: (-y[0], -2 * y[1]), y0, t, per_sample=True, rtol=1e-8,
                     atol=1e-8, options=dict(norm=norm))
    assert seen and all(s == ((3, 1), (3, 2, 2)) for s in seen)
    torch.testing.assert_close(sol.ys[0][-1], y0[0] * torch.exp(torch.tensor(-1.0, dtype=F64)),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("gradient", ["checkpoint", "adjoint"])
def test_user_norm_in_gradient_modes(gradient):
    """The forward solve uses the norm; the adjoint's backward solve of [y, a] the RMS."""
    func, y0 = vdp_batch(3)
    t = torch.linspace(0, 1, 3, dtype=F64)
    kw = dict(method="dopri5", rtol=1e-9, atol=1e-9, options=dict(norm=max_norm))

    def grad(mode):
        y = y0.clone().requires_grad_(True)
        sol = node.solve(func, y, t, per_sample=True, gradient=mode, **kw)
        (g,) = torch.autograd.grad(sol.ys.square().sum(), y)
        return g

    tol = 1e-9 if gradient == "checkpoint" else 1e-5
    torch.testing.assert_close(grad(gradient), grad("direct"), rtol=tol, atol=tol)


@pytest.mark.parametrize("norm, got", [
    (lambda x: x.abs().max(), r"got shape \(\)"),
    (lambda x: x.abs(), r"got shape \(2, 2\)"),
    (lambda x: 1.0, "got float"),
])
def test_a_norm_not_per_sample_is_named(norm, got):
    with pytest.raises(ValueError, match=r"options\['norm'\].*shape \(2,\).*" + got):
        node.solve(lambda t, y: -y, torch.ones(2, 2, dtype=F64),
                   torch.linspace(0, 1, 3, dtype=F64), per_sample=True, options=dict(norm=norm))


def test_user_norm_in_per_sample_events():
    from tests.node.test_per_sample_events import drops, height, per_sample_event
    from tests.problems import FreeFall, G

    _, y0 = drops([1.0, 2.0])
    t_event, _ = per_sample_event(FreeFall(), y0, event_fn=height,
                                  options=dict(norm=max_norm))
    torch.testing.assert_close(t_event, (2 * y0[:, 0] / G).sqrt(), rtol=1e-8, atol=1e-8)
