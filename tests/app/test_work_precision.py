"""The work-precision figure of a sweep (framework/work_precision.py): its Pareto front, its
labels and the figure drawn from a sweep folder's metrics.json files."""

from __future__ import annotations

import json
import logging
import math

import pytest

from framework.work_precision import (
    FIGURE_FILE,
    headline_metric,
    higher_is_better,
    pareto_front,
    solver_label,
    write_work_precision,
)

PNG = b"\x89PNG\r\n\x1a\n"


def test_pareto_front_keeps_the_points_nothing_beats_in_both():
    costs = [10.0, 20.0, 40.0, 15.0, 40.0, 80.0]
    metrics = [0.5, 0.3, 0.1, 0.6, 0.2, 0.1]
    # 3 (costs more than 0, worse), 4 (same cost as 2, worse), 5 (as good as 2, dearer): off
    assert pareto_front(costs, metrics) == [0, 1, 2]


def test_pareto_front_edge_cases():
    assert pareto_front([], []) == []
    assert pareto_front([3.0], [1.0]) == [0]
    # equal points are all on the front; one cheaper point with the same metric beats the rest
    assert pareto_front([1.0, 1.0, 2.0], [0.5, 0.5, 0.5]) == [0, 1]
    # a NaN (a run whose metric diverged) is never on the front and hides nothing
    assert pareto_front([1.0, 2.0, 3.0], [math.nan, 0.4, math.inf]) == [1]
    with pytest.raises(ValueError, match="same length, got 2 and 1"):
        pareto_front([1.0, 2.0], [1.0])


def test_headline_metric_prefers_the_optimized_one():
    rows = [{"status": "ok", "test/interp_mse": 1.0, "val/loss": 2.0, "wall_time_s": 3.0}]
    assert headline_metric(rows) == "test/interp_mse"
    assert headline_metric(rows, "val/loss") == "val/loss"
    assert headline_metric(rows, "test/missing") == "test/interp_mse"
    assert headline_metric([{"status": "ok", "wall_time_s": 1.0}]) is None


def test_elbo_is_maximised_losses_and_errors_minimised():
    assert higher_is_better("test/elbo") and higher_is_better("val/acc")
    assert not any(map(higher_is_better, ("test/extrap_rmse", "val/loss", "test/interp_mse")))


def test_solver_labels():
    assert solver_label({"method": "rk4", "step_size": 0.05, "rtol": 1e-3}) == "rk4 h=0.05"
    assert solver_label({"method": "dopri5", "rtol": "1e-5", "atol": 1e-6, "step_size": None}) == (
        "dopri5 rtol=1e-05 atol=1e-06"
    )


def _job(sweep, num, overrides, metrics=None, solver=None):
    job = sweep / str(num)
    job.mkdir(parents=True)
    if metrics is None:
        record = {"status": "failed", "overrides": overrides, "error": "SolverError: t=0.3"}
        (job / "failure.json").write_text(json.dumps(record))
        return
    record = {"status": "ok", "overrides": overrides, "metrics": metrics}
    (job / "metrics.json").write_text(json.dumps(record))
    if solver is not None:  # what Hydra saves: the job's composed config
        (job / ".hydra").mkdir()
        (job / ".hydra" / "config.yaml").write_text(json.dumps({"solver": solver}))


def _metrics(rmse, nfe, wall):
    return {
        "test/extrap_rmse": rmse,
        "nfe_forward_per_step": nfe,
        "nfe_backward_per_step": 2 * nfe,
        "wall_time_s": wall,
    }


def test_figure_of_a_sweep_folder(tmp_path, monkeypatch):
    import framework.work_precision as wp

    drawn = {}

    def spy(points, metric, path, title=""):
        drawn.update(points=points, metric=metric)
        return draw(points, metric, path, title)

    draw = wp.draw_work_precision
    monkeypatch.setattr(wp, "draw_work_precision", spy)
    _job(tmp_path, 0, ["solver=dopri5", "solver.rtol=1e-3"], _metrics(0.30, 20.0, 5.0))
    _job(tmp_path, 1, ["solver=dopri5", "solver.rtol=1e-5"], _metrics(0.20, 60.0, 9.0))
    _job(tmp_path, 2, ["solver=euler", "solver.step_size=0.1"], _metrics(0.40, 30.0, 4.0))
    _job(tmp_path, 3, ["solver=rk4"], None)  # failed: left out
    # a job with its saved config: the label comes from there (here: the default solver)
    solver = {"method": "tsit5", "rtol": 1e-4, "atol": 1e-5, "step_size": None}
    _job(tmp_path, 4, ["seed=3"], _metrics(0.25, 40.0, 6.0), solver=solver)
    path = write_work_precision(tmp_path)
    assert path == tmp_path / FIGURE_FILE
    assert path.read_bytes()[:8] == PNG
    assert drawn["metric"] == "test/extrap_rmse"
    assert [p["label"] for p in drawn["points"]] == [
        "0: dopri5 rtol=0.001",
        "1: dopri5 rtol=1e-05",
        "2: euler h=0.1",
        "4: tsit5 rtol=0.0001 atol=1e-05",
    ]
    # the cost of the first panel: forward + backward evaluations per step
    assert [p["nfe_per_step"] for p in drawn["points"]] == [60.0, 180.0, 90.0, 120.0]


@pytest.mark.parametrize("case", ["one job", "no metric"])
def test_no_figure_without_two_jobs_to_compare(tmp_path, caplog, case):
    _job(tmp_path, 0, ["solver=rk4"], _metrics(0.3, 4.0, 1.0))
    if case == "no metric":
        _job(tmp_path, 1, ["solver=euler"], {"nfe_forward_per_step": 1.0})
        _job(tmp_path, 0 + 2, ["solver=midpoint"], None)
    with caplog.at_level(logging.INFO, logger="framework.work_precision"):
        assert write_work_precision(tmp_path) is None
    assert "1 finished job(s)" in caplog.text and "logged test/extrap_rmse" in caplog.text
    assert not (tmp_path / FIGURE_FILE).exists()


def test_no_figure_of_an_empty_sweep(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="framework.work_precision"):
        assert write_work_precision(tmp_path) is None
    assert "no job" in caplog.text
