"""Under autograd, an adaptive implicit step rebuilds its graph (one evaluation of ``func`` per
implicit stage, node.implicit_gradient) only when it is accepted: rejected steps cost no more
than without autograd."""

from __future__ import annotations

import pytest
import torch

import node

MU = 100.0


def van_der_pol(t, y):
    x, v = y.unbind(-1)
    return torch.stack([v, MU * (1 - x * x) * v - x], dim=-1)


@pytest.mark.parametrize("method,gradient_mode", [
    ("kvaerno5", "direct"), ("kvaerno3", "direct"),
    ("kvaerno5", "checkpoint"),  # a plain function: the general checkpointed step
])
def test_rejected_steps_are_not_rebuilt(method, gradient_mode):
    t = torch.tensor([0.0, 100.0], dtype=torch.float64)
    implicit = 6 if method == "kvaerno5" else 3  # implicit stages of the tableau
    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64)
    with torch.no_grad():
        plain = node.solve(van_der_pol, y0, t, method=method, rtol=1e-5, atol=1e-7)
    y0g = y0.clone().requires_grad_(True)
    solved = node.solve(van_der_pol, y0g, t, method=method, rtol=1e-5, atol=1e-7,
                        gradient=gradient_mode)
    stats = solved.stats
    assert plain.stats["n_rejected"] > 0
    assert stats["n_steps"] == plain.stats["n_steps"]
    # one rebuild evaluation per implicit stage of every accepted step, none for rejections
    assert stats["nfe"] - plain.stats["nfe"] == implicit * stats["n_accepted"]
    (g,) = torch.autograd.grad(solved.ys[-1].sum(), y0g)
    assert bool(torch.isfinite(g).all())
    assert torch.allclose(solved.ys[-1].detach(), plain.ys[-1], rtol=1e-12, atol=1e-12)
