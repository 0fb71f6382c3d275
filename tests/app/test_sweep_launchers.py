"""Sweeps through Hydra's launcher plugins (the `sweep` extra): jobs in parallel processes
(`hydra/launcher=joblib`), as submitit jobs (`hydra/launcher=submitit_local`, the local twin of
`submitit_slurm`) requeued after a preemption and resumed from their last.ckpt, and the SLURM
example config rendered into an sbatch script."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def _sweep(tmp_path: Path, overrides: list[str]) -> tuple[Path, str]:
    """Run ``train.py -m`` with ``overrides`` into ``tmp_path``: the sweep folder and the output."""
    command = [sys.executable, "train.py", "-m", f"paths.log_dir={tmp_path}", *overrides]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    sweeps = list((tmp_path / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps
    return sweeps[0], output


def _summary(sweep: Path) -> list[dict[str, str]]:
    with (sweep / "summary.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_joblib_sweep_runs_its_jobs_in_parallel_processes(tmp_path, tiny_overrides):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    overrides = [o for o in tiny_overrides if not o.startswith(("plots.", "~callbacks"))]
    sweep, output = _sweep(
        tmp_path,
        [
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "solver=rk4,euler",
            "solver.step_size=0.1",
            "plots.enabled=false",
            "callbacks=none",
            *overrides,
        ],
    )
    assert "Joblib.Parallel(n_jobs=2," in output and "launching 2 jobs" in output
    for job in ("0", "1"):  # each job in its own folder, with its own results
        result = json.loads((sweep / job / "metrics.json").read_text())
        assert result["paths"]["output_dir"] == str(sweep / job)
    rows = _summary(sweep)
    assert [(r["job"], r["overrides"], r["status"]) for r in rows] == [
        ("0", "solver=rk4", "ok"),
        ("1", "solver=euler", "ok"),
    ]
    assert (sweep / "summary.md").is_file()
    assert (sweep / "work_precision.png").read_bytes()[:8] == PNG


@pytest.mark.slow
def test_submitit_job_requeued_after_preemption_resumes_from_last_ckpt(tmp_path, tiny_overrides):
    """A one-job submitit sweep whose job gets the cluster's USR2 at the start of its second
    epoch: submitit requeues it, and with ckpt_path=auto the second attempt continues from the
    last.ckpt of the first in the same folder."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    overrides = [o for o in tiny_overrides if not o.startswith(("plots.", "trainer.max_epochs"))]
    marker = tmp_path / "preempted.txt"
    sweep, output = _sweep(
        tmp_path,
        [
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
            "ckpt_path=auto",
            "trainer.max_epochs=2",
            "plots.enabled=false",
            "+callbacks.preempt._target_=tests.app.preempt.PreemptOnce",
            f"+callbacks.preempt.marker={marker}",
            *overrides,
        ],
    )
    assert marker.read_text() == "preempted at step 3\n"  # the first attempt: 1 epoch, 3 steps
    job_logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "Requeued job" in job_logs
    result = json.loads((sweep / "0" / "metrics.json").read_text())
    assert result["paths"]["resumed_from"] == str(sweep / "0" / "checkpoints" / "last.ckpt")
    assert result["metrics"]["global_step"] == 6
    assert result["metrics"]["train_steps"] == 3  # the second attempt trained epoch 1 only
    assert [(r["job"], r["status"]) for r in _summary(sweep)] == [("0", "ok")]
    # one job: nothing to compare, and the log says so
    assert not (sweep / "work_precision.png").exists()
    assert "No work-precision figure: 1 finished job(s)" in output


def test_slurm_example_renders_an_sbatch_script_that_requeues_and_resumes(
    tmp_path, monkeypatch, compose_cfg
):
    """configs/local/slurm_example.yaml through the SLURM launcher up to the sbatch script (no
    cluster: a fake `srun` on PATH, and the submission stops before `sbatch`)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    import hydra
    import submitit

    cfg = compose_cfg(["local=slurm_example", f"hydra.sweep.dir={tmp_path}"], tmp_path / "0")
    assert cfg.ckpt_path == "auto"
    assert cfg.trainer.accelerator == "gpu"
    assert cfg.trainer.plugins[0].auto_requeue is False  # submitit requeues, not Lightning
    assert cfg.hydra.launcher.max_num_timeout == 3

    srun = tmp_path / "bin" / "srun"
    srun.parent.mkdir()
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{srun.parent}:{os.environ['PATH']}")

    class Submitted(Exception):
        pass

    def map_array(executor, function, *args):
        raise Submitted(executor)

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    launcher = hydra.utils.instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    with pytest.raises(Submitted) as submitted:
        launcher.launch([["seed=1"], ["seed=2"]], initial_job_idx=0)
    executor = submitted.value.args[0]._executor
    assert executor.max_num_timeout == 3
    script = executor._make_submission_file_text("python -m submitit.core._submit", "x")
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-task=1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --time=240",
        "#SBATCH --signal=USR2@120",
        f"#SBATCH --output={tmp_path}/.submitit/%j/%j_0_log.out",
    ):
        assert line in script.splitlines()
