"""The stiff benchmark problems (bench.stiff_problems) themselves: torch and NumPy fields agree,
the analytic Jacobians are the fields' Jacobians, and SciPy's Radau reproduces the reference end
values of the IVP test set (so an implicit solver tested against them tests itself, not the
problem definitions)."""

import numpy as np
import pytest
import torch

from bench.stiff_problems import (
    ROBER_1E11,
    ROBER_K,
    problems,
    relative_error,
    rober,
    rober_torch,
)

PROBLEMS = {p.name: p for p in problems()}
scipy_integrate = pytest.importorskip("scipy.integrate")


def _points(p, count=3):
    """States near the trajectory's scale: y0 perturbed, and the reference perturbed."""
    gen = torch.Generator().manual_seed(5)
    out = []
    for base in (p.y0, p.reference):
        b = torch.tensor(base, dtype=torch.float64)
        for _ in range(count):
            out.append(b * (1 + 0.1 * torch.rand(p.n, generator=gen, dtype=torch.float64))
                       + 1e-3 * torch.rand(p.n, generator=gen, dtype=torch.float64))
    return out


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_torch_and_numpy_fields_and_jacobians_agree(name):
    p = PROBLEMS[name]
    t = torch.tensor(0.0, dtype=torch.float64)
    for y in _points(p):
        f = p.torch_f(t, y)
        np.testing.assert_allclose(p.numpy_f(0.0, y.numpy()), f.numpy(), rtol=1e-12, atol=1e-12)
        autograd = torch.autograd.functional.jacobian(lambda x: p.torch_f(t, x), y)
        scale = autograd.abs().max().item()
        np.testing.assert_allclose(p.torch_jac(t, y).numpy(), autograd.numpy(), rtol=1e-12,
                                   atol=1e-12 * scale)
        np.testing.assert_allclose(p.numpy_jac(0.0, y.numpy()), autograd.numpy(), rtol=1e-12,
                                   atol=1e-12 * scale)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_batched_field_and_jacobian_are_per_sample(name):
    p = PROBLEMS[name]
    t = torch.tensor(0.0, dtype=torch.float64)
    ys = torch.stack(_points(p))  # [6, n]
    batched_f, batched_jac = p.torch_f(t, ys), p.torch_jac(t, ys)
    assert batched_jac.shape == (ys.shape[0], p.n, p.n)
    for i, y in enumerate(ys):
        torch.testing.assert_close(batched_f[i], p.torch_f(t, y), rtol=0, atol=0)
        torch.testing.assert_close(batched_jac[i], p.torch_jac(t, y), rtol=0, atol=0)


def test_rober_rate_constants_per_sample():
    k1 = torch.tensor([0.02, 0.04, 0.08], dtype=torch.float64)
    f = rober_torch((k1, ROBER_K[1], ROBER_K[2]))
    y = torch.tensor([[1.0, 1e-5, 0.1]] * 3, dtype=torch.float64)
    out = f(torch.tensor(0.0), y)
    for i, k in enumerate(k1.tolist()):
        torch.testing.assert_close(out[i], rober_torch((k, *ROBER_K[1:]))(0.0, y[i]))


def _radau_end(p, rtol, atol_factor):
    sol = scipy_integrate.solve_ivp(
        p.numpy_f, (0.0, p.t_end), np.array(p.y0), method="Radau", rtol=rtol,
        atol=atol_factor * np.asarray(p.atol, dtype=np.float64), jac=p.numpy_jac)
    assert sol.success, sol.message
    return sol.y[:, -1]


@pytest.mark.parametrize("name,rtol,bound", [
    # Test-set references: a definition error (a wrong coefficient) would show as an error of
    # order one, far above these bounds.
    ("ROBER [0, 1e+11]", 1e-10, 1e-7),
    ("HIRES", 1e-10, 1e-6),
    ("OREGO", 1e-10, 1e-6),
    # Computed references (bench.stiff_problems' docstring): consistency at a looser tolerance.
    ("ROBER [0, 100000]", 1e-9, 1e-6),
    ("Van der Pol mu=1000", 1e-9, 1e-5),
])
def test_scipy_radau_reproduces_reference(name, rtol, bound):
    p = PROBLEMS[name]
    y = _radau_end(p, rtol, 1e-4)
    assert relative_error(y, p.reference) < bound


def test_rober_1e11_reference_is_the_test_sets():
    assert PROBLEMS["ROBER [0, 1e+11]"].reference == ROBER_1E11
    assert rober(1e11, ROBER_1E11, "").rtol == 1e-6
