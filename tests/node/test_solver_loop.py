"""The solver loops: progress bars, callbacks a method never calls, fixed grids over budget."""

from __future__ import annotations

import itertools
import sys
import warnings

import pytest
import torch

import node
from node.fixed_grid import make_grid
from node.options import FixedGridOptions
from tests.problems import Decay, progress_fields

F64 = torch.float64
T01 = torch.tensor([0.0, 1.0], dtype=F64)


def decay(t, y):
    return -y




# --- progress ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, options",
    [("dopri5", {}), ("rk4", dict(step_size=0.01)),
     ("dopri5", dict(adaptive=False, step_size=0.1))],
)
def test_progress_bar_on_stderr(capsys, method, options):
    node.odeint(decay, torch.ones(2, dtype=F64), T01, method=method,
                options=dict(options, progress=True))
    out, err = capsys.readouterr()
    assert out == ""
    line = progress_fields(err)
    assert "100%" in line and f"node {method}" in line
    assert "t=1," in line
    for field in ("dt=", "nfe=", "steps="):
        assert field in line
    adaptive = method == "dopri5" and options.get("adaptive", True)
    assert ("rejected=" in line) is adaptive


def test_progress_of_solve_reports_the_solve_stats(capsys):
    sol = node.solve(decay, torch.ones(2, dtype=F64), torch.tensor([0.0, -2.0], dtype=F64),
                     rtol=1e-6, atol=1e-8, progress=True)
    line = progress_fields(capsys.readouterr().err)
    st = sol.stats
    assert f"nfe={st['nfe']}" in line and f"steps={st['n_steps']}" in line
    assert f"rejected={st['n_rejected']}" in line
    assert "t=-2," in line and "dt=-" in line  # the user's time direction


def test_progress_off_by_default_writes_nothing(capsys):
    node.odeint(decay, torch.ones(2, dtype=F64), T01)
    node.odeint(decay, torch.ones(2, dtype=F64), T01, method="rk4", options=dict(step_size=0.1))
    node.solve(decay, torch.ones(2, dtype=F64), T01, progress=False)
    node.odeint(decay, torch.ones(2, dtype=F64), T01, options=dict(progress=False))
    assert capsys.readouterr() == ("", "")


def test_progress_delay_hides_short_solves(capsys):
    node.odeint(decay, torch.ones(2, dtype=F64), T01, options=dict(progress=60.0))
    assert capsys.readouterr().err == ""


def test_progress_of_adjoint_backward_solve(capsys):
    y0 = torch.ones(2, dtype=F64, requires_grad=True)
    ys = node.odeint_adjoint(Decay(), y0, T01, options=dict(progress=True))
    assert "node dopri5" in progress_fields(capsys.readouterr().err)
    ys[-1].sum().backward()
    assert "(backward)" in progress_fields(capsys.readouterr().err)


@pytest.mark.parametrize("bad, error", [("yes", TypeError), (-1.0, ValueError), (0, ValueError)])
def test_progress_option_is_checked(bad, error):
    with pytest.raises(error, match="progress"):
        node.odeint(decay, torch.ones(2, dtype=F64), T01, options=dict(progress=bad))
    with pytest.raises(error, match="progress"):
        node.solve(decay, torch.ones(2, dtype=F64), T01, progress=bad)


def test_progress_without_tqdm_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    with pytest.raises(ImportError, match="tqdm"):
        node.odeint(decay, torch.ones(2, dtype=F64), T01, options=dict(progress=True))
    node.odeint(decay, torch.ones(2, dtype=F64), T01)  # off: tqdm is not needed


# --- callbacks a method never calls ------------------------------------------------------------


def _noop(t0, y0, dt):
    pass


@pytest.mark.parametrize("name", ["callback_accept_step", "callback_reject_step"])
@pytest.mark.parametrize("method, options",
                         [("rk4", None), ("dopri5", dict(adaptive=False, step_size=0.1))])
def test_fixed_grid_warns_of_callbacks_it_never_calls(name, method, options):
    f = Decay()
    setattr(f, name, _noop)
    with pytest.warns(UserWarning, match=rf"{name}.*{method}"):
        node.odeint(f, torch.ones(2, dtype=F64), T01, method=method, options=options)


def test_callbacks_that_are_called_do_not_warn():
    f = Decay()
    for name in ("callback_step", "callback_accept_step", "callback_reject_step"):
        setattr(f, name, _noop)
    g = Decay()
    g.callback_step = _noop
    g.callback_accept_step_adjoint = _noop  # never used without the adjoint: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        node.odeint(f, torch.ones(2, dtype=F64), T01)
        node.odeint(g, torch.ones(2, dtype=F64), T01, method="rk4")


def test_adjoint_fixed_grid_warns_of_adjoint_callbacks_it_never_calls():
    f = Decay()
    f.callback_reject_step_adjoint = _noop
    y0 = torch.ones(2, dtype=F64, requires_grad=True)
    with pytest.warns(UserWarning, match=r"callback_reject_step_adjoint.*euler"):
        node.odeint_adjoint(f, y0, T01, method="dopri5", adjoint_method="euler",
                            adjoint_options=dict(step_size=0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        node.odeint_adjoint(f, y0, T01, method="dopri5")


# --- fixed grids over the step budget ----------------------------------------------------------


def test_grid_longer_than_the_step_budget_is_refused_at_once():
    t = torch.tensor([0.0, 1e9], dtype=F64)
    calls = []

    def f(t, y):
        calls.append(1)
        return -y

    with pytest.raises(node.SolverError) as exc:
        node.odeint(f, torch.ones(2, dtype=F64), t, method="rk4", options=dict(step_size=1e-3))
    assert exc.value.status is node.Status.MAX_STEPS
    assert "1000000000000 steps" in str(exc.value)
    assert f"max_num_steps={2**31 - 1}" in str(exc.value)
    assert exc.value.t == 0.0 and not calls


def test_long_uniform_grid_is_lazy_and_counted_exactly():
    grid = make_grid([0.0, 1e9], FixedGridOptions(step_size=1e-3), 1.0)
    assert len(grid) - 1 == 10**12  # no step swallowed by the rounding slack
    head = list(itertools.islice(grid, 3))
    assert head == pytest.approx([0.0, 1e-3, 2e-3])
    small = list(make_grid([0.0, 0.7], FixedGridOptions(step_size=0.07), 1.0))
    assert len(small) == 11 and small[-1] == 0.7  # 0.7 / 0.07 rounds up: no extra tiny step


def test_grid_over_budget_returns_the_start_on_failure_return():
    t = torch.linspace(0, 1, 5, dtype=F64)
    sol = node.solve(decay, torch.ones(2, dtype=F64), t, method="euler",
                     options=dict(step_size=0.01, max_num_steps=99), on_failure="return")
    assert sol.status is node.Status.MAX_STEPS and sol.stats["n_steps"] == 0
    assert "100 steps" in sol.message and "max_num_steps=99" in sol.message
    assert sol.ys.shape == (1, 2)


def test_grid_within_the_budget_runs():
    sol = node.solve(decay, torch.ones(2, dtype=F64), T01, method="euler",
                     options=dict(step_size=0.01, max_num_steps=100))
    assert sol.success and sol.stats["n_steps"] == 100


def test_user_grid_longer_than_the_budget_is_refused():
    def grid(func, y0, t):
        return torch.linspace(0, 1, 11, dtype=F64)

    with pytest.raises(node.SolverError, match="10 steps.*max_num_steps=9"):
        node.odeint(decay, torch.ones(2, dtype=F64), T01, method="rk4",
                    options=dict(grid_constructor=grid, max_num_steps=9))
