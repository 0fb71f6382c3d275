"""The app's solver component ``ODESolver`` (configs/solver/): its options reach the solver
(progress bar, fixed grid), and it does not warn of its own callbacks. Moved here from the
solver's tests (tests/node/), which do not import the training app."""

from __future__ import annotations

import warnings

import pytest
import torch

from models.components.ode_solver import ODESolver
from tests.problems import Decay, progress_fields


def test_solver_config_turns_progress_on(capsys):
    y0 = torch.ones(3, 2)
    ODESolver.from_config(dict(method="dopri5"))(Decay(), y0, torch.tensor([0.0, 1.0]))
    assert capsys.readouterr().err == ""
    solver = ODESolver.from_config(dict(method="dopri5", progress=True))
    solver(Decay(), y0, torch.tensor([0.0, 1.0]))
    assert "node dopri5" in progress_fields(capsys.readouterr().err)
    with pytest.raises(TypeError, match="progress must be True, False or a number"):
        ODESolver(progress="yes")


@pytest.mark.parametrize("gradient", ["direct", "adjoint"])
def test_solver_on_a_fixed_grid_does_not_warn_of_its_own_callbacks(gradient):
    solver = ODESolver(method="rk4", step_size=0.1, gradient=gradient)
    y0 = torch.ones(3, 2, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solver(Decay(), y0, torch.tensor([0.0, 1.0]))[-1].sum().backward()
    assert solver.counts().steps > 0


def test_ode_solver_config_step_size_still_selects_grid():
    solver = ODESolver(method="dopri5", step_size=0.1)
    assert solver.options["adaptive"] is False and solver.options["step_size"] == 0.1
    assert "adaptive" not in ODESolver(method="rk4", step_size=0.1).options
