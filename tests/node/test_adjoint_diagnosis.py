"""The diagnosis of failed adjoint backward solves (node.adjoint_diagnosis)."""

import pytest
import torch

import node
from node import SolverError


class Relaxation(torch.nn.Module):
    """``y' = -k (y - sin t)``: contracts onto ``sin t`` at rate ``k`` (per sample if ``k`` is a
    column)."""

    def __init__(self, k) -> None:
        super().__init__()
        self.k = torch.nn.Parameter(torch.as_tensor(k, dtype=torch.float64))

    def forward(self, t, y):
        return -self.k * (y - torch.sin(t))


class Growth(torch.nn.Module):
    """``y' = k y``: expands, so ``a = dL/dy`` grows like ``exp(k (T - t))`` backwards."""

    def __init__(self, k) -> None:
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(k, dtype=torch.float64))

    def forward(self, t, y):
        return self.k * y


T2 = torch.tensor([0.0, 5.0], dtype=torch.float64)
BUDGET = dict(max_num_steps=500)


def backward_error(func, y0, t, **kw) -> SolverError:
    ys = node.odeint_adjoint(func, y0, t, rtol=1e-6, atol=1e-8, **kw)
    with pytest.raises(SolverError) as info:
        ys[-1].sum().backward()
    return info.value


def test_resolved_state_blowup_is_named_with_remedies():
    y0 = torch.ones(1, dtype=torch.float64, requires_grad=True)
    err = backward_error(Relaxation(200.0), y0, T2, adjoint_options=BUDGET)
    message = str(err)
    assert "adjoint (backward) solve failed" in message
    assert "state y re-solved backwards blew up" in message
    assert "from 0.96 at t=5" in message  # the forward's y(5) = sin 5 + ~0, where it started
    assert 'gradient="checkpoint"' in message and '"kvaerno5"' in message
    assert 0.0 < err.t < 5.0


def test_named_remedies_work():
    """Both remedies the message names give the gradient (0 for y0: y(5) forgot it), on a
    problem whose explicit adjoint fails the same way (checked here first)."""
    y0 = torch.ones(1, dtype=torch.float64, requires_grad=True)
    assert "re-solved backwards blew up" in str(
        backward_error(Relaxation(50.0), y0, T2, adjoint_options=BUDGET))
    for kw in (dict(gradient="checkpoint"), dict(gradient="adjoint", adjoint_method="kvaerno5",
                                                 adjoint_options=dict(max_num_steps=20000))):
        func = Relaxation(50.0)
        y0 = torch.ones(1, dtype=torch.float64, requires_grad=True)
        sol = node.solve(func, y0, T2, rtol=1e-9, atol=1e-11, **kw)
        sol.ys[-1].sum().backward()
        assert abs(float(y0.grad)) < 1e-12
        assert float(func.k.grad) == pytest.approx(steady_state_dk(50.0, 5.0), rel=1e-4)


def steady_state_dk(k: float, t: float) -> float:
    """``d/dk`` of ``y(t) = (k^2 sin t - k cos t) / (k^2 + 1)``, the solution once the transient
    ``exp(-k t)`` has died out."""
    kk = torch.tensor(k, dtype=torch.float64, requires_grad=True)
    tt = torch.tensor(t, dtype=torch.float64)
    y = (kk**2 * torch.sin(tt) - kk * torch.cos(tt)) / (kk**2 + 1)
    (grad,) = torch.autograd.grad(y, kk)
    return float(grad)


def test_adjoint_blowup_is_named():
    y0 = torch.ones(1, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 30.0], dtype=torch.float64)
    message = str(backward_error(Growth(1.0), y0, t, adjoint_options=dict(max_num_steps=100)))
    assert "adjoint a = dL/dy blew up" in message
    assert "re-solved" not in message


def test_failure_without_growth_gets_no_hint():
    y0 = torch.ones(1, dtype=torch.float64, requires_grad=True)
    message = str(backward_error(Relaxation(1.0), y0, T2, adjoint_options=dict(max_num_steps=3)))
    assert "max_num_steps=3" in message and "blew up" not in message


def test_per_sample_names_the_blown_up_sample():
    func = Relaxation([[5.0], [200.0]])
    y0 = torch.ones(2, 1, dtype=torch.float64, requires_grad=True)
    sol = node.solve(func, y0, T2, rtol=1e-6, atol=1e-8, per_sample=True, gradient="adjoint",
                     adjoint_options=BUDGET)
    with pytest.raises(SolverError) as info:
        sol.ys[-1].sum().backward()
    message = str(info.value)
    assert "samples [1] failed" in message
    assert "state y re-solved backwards blew up" in message
