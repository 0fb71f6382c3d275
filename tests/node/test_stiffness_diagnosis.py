"""The stiffness diagnosis of a failed explicit solve (node.stiffness): a stiff problem that
exhausts the step budget is called stiff and a stiff method is named; a non-stiff problem that
exhausts it (fast oscillation, long horizon, chaos) is not."""

import math

import pytest
import torch

import node
from node.methods import get_tableau
from node.stiffness import dominant_eigenvalue, real_stability_boundary


def rober(t, y):
    y1, y2, y3 = y.unbind(-1)
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3,
                        0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 * y2,
                        3e7 * y2 * y2], -1)


def van_der_pol_1000(t, y):
    x, v = y.unbind(-1)
    return torch.stack([v, 1000.0 * (1 - x * x) * v - x], -1)


def oscillator_1000(t, y):
    return torch.stack([1000.0 * y[1], -1000.0 * y[0]])


def lorenz(t, y):
    x, u, z = y.unbind(-1)
    return torch.stack([10.0 * (u - x), x * (28.0 - z) - u, x * u - 8.0 / 3.0 * z])


def forced_decay(t, y):
    return -y + torch.sin(t)


def _solve(func, y0, t_end, method="dopri5", steps=400, on_failure="return", **kw):
    return node.solve(func, torch.tensor(y0, dtype=torch.float64),
                      torch.tensor([0.0, t_end], dtype=torch.float64), method=method,
                      options=dict(max_num_steps=steps), on_failure=on_failure, **kw)


def test_rober_budget_raises_stiff_error_naming_a_stiff_method():
    with pytest.raises(node.SolverError) as info:
        _solve(rober, [1.0, 0.0, 0.0], 1e5, rtol=1e-6, atol=1e-8, on_failure="raise")
    message = str(info.value)
    assert info.value.status is node.Status.MAX_STEPS
    assert "max_num_steps=400" in message  # the original cause is still stated first
    assert "appears stiff" in message
    assert 'method="kvaerno5"' in message and "kvaerno3" in message
    assert "scipy_solver" in message and "Radau" in message


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_van_der_pol_mu_1000_returned_solution_says_stiff(method):
    solution = _solve(van_der_pol_1000, [2.0, 0.0], 3000.0, method=method, rtol=1e-6,
                      atol=1e-6)
    assert solution.status is node.Status.MAX_STEPS
    assert "appears stiff" in solution.message and "kvaerno5" in solution.message
    # The eigenvalue the message quotes: about -3000 on the slow branch (x ~ 2).
    assert "eigenvalue of about -3e+03" in solution.message or "-2.99e+03" in solution.message


def test_float32_state_is_diagnosed_too():
    solution = node.solve(rober, torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1e5]),
                          rtol=1e-5, atol=1e-8, options=dict(max_num_steps=400),
                          on_failure="return")
    assert "appears stiff" in solution.message


@pytest.mark.parametrize("func,y0,t_end,rtol", [
    (oscillator_1000, [1.0, 0.0], 1e3, 1e-3),  # fast but oscillatory: an eigenvalue +-1000i
    (oscillator_1000, [1.0, 0.0], 1e3, 1e-6),
    (lorenz, [1.0, 1.0, 1.0], 1e4, 1e-6),  # chaotic, long horizon
    (forced_decay, [1.0], 1e6, 1e-3),  # long horizon, step limited by accuracy
    (forced_decay, [1.0], 1e6, 1e-6),
])
def test_non_stiff_budget_exhaustion_claims_nothing(func, y0, t_end, rtol):
    solution = _solve(func, y0, t_end, steps=1000, rtol=rtol, atol=rtol * 1e-2)
    assert solution.status is node.Status.MAX_STEPS
    assert "stiff" not in solution.message


def test_fixed_grid_budget_claims_nothing():
    solution = node.solve(rober, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64),
                          torch.tensor([0.0, 1.0], dtype=torch.float64), method="rk4",
                          options=dict(step_size=1e-4, max_num_steps=100), on_failure="return")
    assert not solution.success
    assert "stiff" not in solution.message


def test_diagnosis_evaluations_are_not_counted_in_stats():
    calls = [0]

    def counted(t, y):
        calls[0] += 1
        return rober(t, y)

    solution = _solve(counted, [1.0, 0.0, 0.0], 1e5, rtol=1e-6, atol=1e-8)
    assert "appears stiff" in solution.message
    extra = calls[0] - solution.stats["nfe"]
    assert 0 < extra <= 30  # the diagnosis: a few dozen calls, after the solve's count


@pytest.mark.parametrize("method,boundary", [
    ("rk4", 2.785293563),  # classical: the real root of |1 + z + z^2/2 + z^3/6 + z^4/24| = 1
    ("euler", 2.0),
    ("dopri5", 3.3066),
])
def test_real_stability_boundary(method, boundary):
    assert real_stability_boundary(get_tableau(method)) == pytest.approx(boundary, abs=1e-3)


def test_dominant_eigenvalue_of_a_linear_field():
    a = torch.tensor([[-1000.0, 1.0, 0.0], [0.0, -2.0, 1.0], [0.0, 0.0, -0.5]],
                     dtype=torch.float64)
    f = lambda tau, y: a @ y  # noqa: E731
    rho, q = dominant_eigenvalue(f, 0.0, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert math.isclose(rho, 1000.0, rel_tol=1e-3)
    assert math.isclose(q, -1000.0, rel_tol=1e-3)
