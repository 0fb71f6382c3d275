"""Hydra multirun: every combination runs in its own folder and the sweep root gets a summary."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_run_sweep_writes_summary_tables(tmp_path, tiny_overrides):
    overrides = [o for o in tiny_overrides if not o.startswith(("plots.", "~callbacks"))]
    command = [
        sys.executable,
        "train.py",
        "-m",
        "solver=rk4,euler",
        "solver.step_size=0.1",
        "plots.enabled=false",
        "callbacks=none",
        f"paths.log_dir={tmp_path}",
        *overrides,
    ]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweeps = list((tmp_path / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps  # both runs in one sweep folder (one ${now} resolution)
    sweep = sweeps[0]
    assert (sweep / "0" / "metrics.json").is_file() and (sweep / "1" / "metrics.json").is_file()

    with (sweep / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["job"] for r in rows] == ["0", "1"]
    # only what sets the runs apart; the shared settings are listed once above the table
    assert [r["overrides"] for r in rows] == ["solver=rk4", "solver=euler"]
    for row in rows:
        assert row["status"] == "ok"
        assert float(row["test/extrap_rmse"]) > 0
        assert float(row["nfe_forward_per_step"]) > 0
        assert float(row["wall_time_s"]) > 0
    # the same grid and step size: euler (1 stage) takes a quarter of rk4's (4 stages) evaluations
    assert float(rows[0]["nfe_forward_per_step"]) == 4 * float(rows[1]["nfe_forward_per_step"])

    lines = (sweep / "summary.md").read_text().splitlines()
    assert lines[0].startswith("Settings of every run: `solver.step_size=0.1 ")
    table = lines[2:]
    assert table[0].startswith("| job | overrides | status | test/extrap_rmse")
    assert table[1].startswith("|---|")
    assert table[2].startswith("| 0 | solver=rk4 | ok | ")
    assert len(table) == 4
    assert "summary.csv" in proc.stdout + proc.stderr


def test_summary_keeps_failed_runs(tmp_path):
    """A run that raised gets a failure row (written by the callback's on_job_end)."""
    import json

    from hydra.core.utils import JobReturn, JobStatus
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from framework.sweep_summary import SweepSummary

    ok = {"status": "ok", "overrides": ["solver=rk4", "seed=1"], "metrics": {"wall_time_s": 2.0}}
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "metrics.json").write_text(json.dumps(ok))
    (tmp_path / "1").mkdir()
    config = OmegaConf.create(
        {
            "hydra": {
                "mode": RunMode.MULTIRUN,
                "sweep": {"dir": str(tmp_path)},
                "runtime": {"output_dir": str(tmp_path / "1")},
            }
        }
    )
    failed = JobReturn(
        overrides=["solver=euler", "seed=1"],
        status=JobStatus.FAILED,
        _return_value=RuntimeError("solver failed at t=0.5"),
    )
    SweepSummary().on_job_end(config, failed)
    with (tmp_path / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["job"], r["overrides"], r["status"]) for r in rows] == [
        ("0", "solver=rk4", "ok"),
        ("1", "solver=euler", "failed"),
    ]
    assert rows[1]["error"] == "RuntimeError: solver failed at t=0.5"
    markdown = (tmp_path / "summary.md").read_text()
    assert markdown.startswith("Settings of every run: `seed=1`")
    assert "| 1 | solver=euler | failed |" in markdown


def test_summary_leads_with_the_best_validation_score(tmp_path):
    """A seed sweep is read by the score that chose each run's checkpoint: first metric column,
    in the CSV and the Markdown table."""
    import json

    from framework.sweep_summary import write_summary

    for job, (seed, best, test) in enumerate([(1, 0.14, 0.15), (2, 0.35, 0.38)]):
        metrics = {"test/extrap_rmse": test, "best/val/extrap_rmse": best, "zeta": 1.0}
        run = {"status": "ok", "overrides": [f"seed={seed}"], "metrics": metrics}
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / "metrics.json").write_text(json.dumps(run))
    csv_path, md_path = write_summary(tmp_path)
    with csv_path.open() as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames[:5] == [
        "job",
        "overrides",
        "status",
        "best/val/extrap_rmse",
        "test/extrap_rmse",
    ]
    assert [float(r["best/val/extrap_rmse"]) for r in rows] == [0.14, 0.35]
    table = md_path.read_text().splitlines()
    assert table[0] == "| job | overrides | status | best/val/extrap_rmse | test/extrap_rmse |"
    assert table[2] == "| 0 | seed=1 | ok | 0.14 | 0.15 |"
