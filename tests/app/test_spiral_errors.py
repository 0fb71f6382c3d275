"""``python -m framework.spiral_errors``: the spiral extrapolation error by turning direction and
by radius."""

from __future__ import annotations

import math

import pytest
import torch

from framework.spiral_errors import GROUPS, breakdown, main, turning_direction


def _spiral(theta0: float, n: int, direction: float, a: float = 0.5, b: float = 0.3):
    theta = theta0 + torch.linspace(0.0, 3.0, n)
    r = a + b * theta
    return torch.stack([r * torch.cos(theta), direction * r * torch.sin(theta)], -1)


def test_turning_direction_of_both_kinds_of_spiral():
    paths = torch.stack([_spiral(0.3, 20, 1.0), _spiral(4.0, 20, -1.0), _spiral(9.0, 20, -1.0)])
    assert turning_direction(paths).tolist() == [1.0, -1.0, -1.0]


def test_breakdown_groups_and_shares():
    # six series: three counter-clockwise, ending at increasing radii two by two
    truth = torch.stack([_spiral(t0, 10, d) for t0, d in
                         ((0.0, 1), (0.1, -1), (3.0, 1), (3.1, -1), (6.0, 1), (6.1, -1))])
    per_series = torch.tensor([1.0, 1.0, 4.0, 4.0, 9.0, 25.0])
    out = breakdown(per_series, truth)
    assert set(out) == {*GROUPS, "worst tenth share"}
    assert out["all"] == pytest.approx(math.sqrt(44 / 6))
    assert out["counter-clockwise"] == pytest.approx(math.sqrt(14 / 3))
    assert out["clockwise"] == pytest.approx(math.sqrt(30 / 3))
    assert out["inner third"] == pytest.approx(1.0)
    assert out["middle third"] == pytest.approx(2.0)
    assert out["outer third"] == pytest.approx(math.sqrt(17))
    assert out["worst tenth share"] == pytest.approx(25 / 44)


def test_command_reproduces_the_runs_test_metrics(trained_run, capsys):
    best = trained_run["paths"]["best_checkpoint"]
    results = main([best, "--split", "test"])
    errors = results[best]
    metrics = trained_run["metrics"]
    assert errors["refined"]["all"] == pytest.approx(metrics["test/extrap_rmse"], rel=1e-5)
    assert errors["encoder"]["all"] == pytest.approx(metrics["test/extrap_rmse_encoder"],
                                                     rel=1e-5)
    printed = capsys.readouterr().out
    assert "outer third" in printed and "(test, 6 series)" in printed
