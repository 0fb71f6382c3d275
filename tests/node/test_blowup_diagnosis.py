"""The blow-up diagnosis of a failed solve (node.blowup): a solution that grows without bound is
named as such, with the growth it rests on; failures without growth are not."""

import math
import warnings

import pytest
import torch

import node
from node.blowup import GROWTH, blowup_hint

F64 = torch.float64


def _solve(func, y0, t_end, **kw):
    return node.solve(func, torch.tensor(y0, dtype=F64), torch.tensor([0.0, t_end], dtype=F64),
                      on_failure="return", **kw)


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_finite_time_blowup_is_named_with_its_growth(method):
    # y' = y^2, y(0) = 1: y = 1 / (1 - t) leaves every bound at t = 1
    solution = _solve(lambda t, y: y * y, [1.0], 2.0, method=method)
    assert solution.status in (node.Status.STEP_TOO_SMALL, node.Status.NON_FINITE)
    message = solution.message
    assert "the numerical solution blew up: max|y| grew from 1 at t=0 to" in message
    assert "exact solution does" in message and "kvaerno5" in message
    # the time named is just before the blow-up time
    t_named = float(message.split("grew from 1 at t=0 to ")[1].split(" at t=")[1].split(".")[0]
                    + "." + message.split(" at t=")[-1].split(".")[1][:6])
    assert 0.99 < t_named <= 1.01


def test_blowup_within_the_step_budget_and_as_an_error():
    with pytest.raises(node.SolverError) as info:
        node.solve(lambda t, y: y * y, torch.tensor([2.0], dtype=F64),
                   torch.tensor([0.0, 1.0], dtype=F64), options=dict(max_num_steps=400))
    assert info.value.status is node.Status.MAX_STEPS
    assert "blew up: max|y| grew from 2 at t=0" in str(info.value)


def test_a_budget_exhausted_without_growth_gets_no_blowup_hint():
    solution = _solve(lambda t, y: torch.cos(t) * torch.ones_like(y), [1.0], 1000.0,
                      options=dict(max_num_steps=20))
    assert solution.status is node.Status.MAX_STEPS
    assert "blew up" not in solution.message


def test_non_finite_func_without_growth_gets_no_blowup_hint():
    # sqrt(1 - y) is NaN once y > 1: the state stays of order one
    solution = _solve(lambda t, y: torch.sqrt(1.0 - y) + 1.0, [0.0], 5.0)
    assert solution.status is not node.Status.SUCCESS
    assert "blew up" not in solution.message


def test_the_rule_measures_growth_against_max_of_y0_and_one():
    y0 = torch.zeros(3, dtype=F64)
    assert blowup_hint(y0, torch.full((3,), 0.5 * GROWTH, dtype=F64), 0.0, 1.0) == ""
    assert "grew from 0 at t=0 to 2e+06" in blowup_hint(
        y0, torch.tensor([0.0, 2.0 * GROWTH, 1.0], dtype=F64), 0.0, 1.0)
    big = torch.tensor([1e3], dtype=F64)
    assert blowup_hint(big, big * GROWTH / 2, 0.0, 1.0) == ""
    assert blowup_hint(big, big * GROWTH * 2, 0.0, 1.0) != ""
    # non-finite entries are left out; none finite at all: no diagnosis from this state
    nan_inf = torch.tensor([float("nan"), float("inf"), 3e7], dtype=F64)
    assert "to 3e+07" in blowup_hint(torch.ones(3, dtype=F64), nan_inf, 0.0, 1.0)
    assert blowup_hint(torch.ones(1, dtype=F64), torch.tensor([float("inf")]), 0.0, 1.0) == ""
    assert blowup_hint(None, y0, 0.0, 1.0) == ""


def test_per_sample_failures_name_the_samples_that_blew_up():
    # samples 0 and 2 blow up at t = 1 and t = 0.5; sample 1 (y0 = -1) decays to 0
    y0 = torch.tensor([[1.0], [-1.0], [2.0]], dtype=F64)
    solution = node.solve(lambda t, y: y * y, y0, torch.tensor([0.0, 1.5], dtype=F64),
                          per_sample=True, on_failure="return")
    assert solution.failed == [0, 2]
    causes = solution.message.split("sample ")[1:]
    assert "blew up, max|y| from 1 to" in causes[0]
    assert causes[1].startswith("2:") and "blew up, max|y| from 2 to" in causes[1]
    torch.testing.assert_close(solution.ys[-1, 1], torch.tensor([-1 / 2.5], dtype=F64),
                               rtol=1e-5, atol=1e-6)


# Fixed grids have no error test: a millionfold growth of the outputs gives a GrowthWarning.

T15 = torch.tensor([0.0, 1.5], dtype=F64)
RK4 = dict(method="rk4", options=dict(step_size=0.3))


def _square(t, y):
    return y * y


@pytest.mark.parametrize("gradient", ["direct", "checkpoint", "adjoint"])
def test_fixed_grid_through_a_blowup_warns_in_every_gradient_mode(gradient):
    y0 = torch.ones(1, dtype=F64, requires_grad=True)
    extra = dict(adjoint_params=()) if gradient == "adjoint" else {}
    with pytest.warns(node.GrowthWarning) as record:
        solution = node.solve(_square, y0, T15, gradient=gradient, **RK4, **extra)
    # what torchdiffeq returns too
    assert solution.success and float(solution.ys[-1].detach()) > 1e70
    message = str(record[0].message)
    assert "max|y| from 1 at t=0 to 1.28e+72 at t=1.5" in message
    assert "no error test" in message and "dopri5" in message
    assert record[0].filename == __file__  # points at the caller, not into node


def test_fixed_grid_unstable_step_on_a_stiff_problem_warns():
    # y' = -1000 y decays, but rk4 at h = 0.01 (h*lambda = -10) amplifies it every step
    with pytest.warns(node.GrowthWarning, match="stability limit"):
        node.odeint(lambda t, y: -1000.0 * y, torch.ones(3, dtype=F64),
                    torch.linspace(0.0, 1.0, 5, dtype=F64), method="rk4",
                    options=dict(step_size=0.01))


def test_fixed_grid_growth_below_the_threshold_or_silenced_gives_no_warning():
    t = torch.tensor([0.0, 10.0], dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # e^10 = 2.2e4: an exact growth under GROWTH
        ys = node.odeint(lambda t, y: y, torch.ones(2, dtype=F64), t, method="rk4",
                         options=dict(step_size=0.1))
        assert float(ys[-1, 0]) == pytest.approx(math.exp(10.0), rel=1e-5)
        # from 1e-3 the threshold is measured against max(max|y0|, 1) = 1: 1e-3 * 1e8 = 1e5
        node.odeint(lambda t, y: y, torch.full((2,), 1e-3, dtype=F64),
                    torch.tensor([0.0, math.log(1e8)], dtype=F64), method="rk4",
                    options=dict(step_size=0.1))
        warnings.filterwarnings("ignore", category=node.GrowthWarning)
        node.odeint(_square, torch.ones(1, dtype=F64), T15, **RK4)


def test_per_sample_fixed_grid_names_the_samples_that_grew():
    y0 = torch.tensor([[0.1], [1.0], [0.2], [1.0]], dtype=F64)
    with pytest.warns(node.GrowthWarning) as record:
        ys = node.odeint(_square, y0, T15, per_sample=True, **RK4)
    assert torch.isfinite(ys).all()
    message = str(record[0].message)
    assert "samples [1, 3] (sample 1: max|y| from 1 at t=0 to 1.28e+72 at t=1.5)" in message
    assert record[0].filename == __file__
