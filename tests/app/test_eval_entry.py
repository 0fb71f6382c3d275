"""eval.py: testing a checkpoint written by train.py, with the model and data module rebuilt from
the file alone (framework.evaluate)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "configs"


def compose_eval(overrides: list[str], output_dir: Path):
    """``configs/eval.yaml`` composed with ``overrides``, its outputs in ``output_dir``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
        cfg.paths.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_eval_reproduces_the_training_runs_test_metrics(trained_run, tmp_path):
    from framework.evaluate import evaluate

    best = trained_run["paths"]["best_checkpoint"]
    result = evaluate(compose_eval([f"ckpt_path={best}", "plots.n_examples=2"], tmp_path))
    for name in ("test/extrap_rmse", "test/interp_mse"):
        assert result["metrics"][name] == pytest.approx(trained_run["metrics"][name], rel=1e-6)
    assert json.loads((tmp_path / "metrics.json").read_text()) == result
    assert result["paths"]["checkpoint"] == best
    plots = {Path(p).name for p in result["paths"]["plots"]}
    assert plots == {Path(p).name for p in trained_run["paths"]["plots"]}
    assert all((tmp_path / "plots" / name).is_file() for name in plots)
    (csv,) = result["paths"]["metrics"]
    assert Path(csv).is_file() and "test/extrap_rmse" in Path(csv).read_text()


def test_eval_replaces_saved_data_module_arguments(trained_run, tmp_path):
    from framework.checkpoint import load_datamodule

    best = trained_run["paths"]["best_checkpoint"]
    assert load_datamodule(best).batch_size == 8
    assert load_datamodule(best, batch_size=3).batch_size == 3


def test_eval_solves_the_same_weights_with_replaced_solver_settings(trained_run, tmp_path):
    from framework.checkpoint import load_model
    from framework.evaluate import evaluate

    best = trained_run["paths"]["best_checkpoint"]
    trained = load_model(best)
    assert trained.hparams.solver["method"] == "dopri5"
    fixed = {"method": "rk4", "step_size": 0.05}
    model = load_model(best, solver=fixed)
    assert model.hparams.solver["method"] == "rk4" and model.hparams.solver["step_size"] == 0.05
    assert model.hparams.solver["rtol"] == trained.hparams.solver["rtol"]  # the rest is kept
    for (name, a), (_, b) in zip(trained.state_dict().items(), model.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name

    result = evaluate(compose_eval([f"ckpt_path={best}", "plots.enabled=false",
                                    "+solver.method=rk4", "+solver.step_size=0.05"], tmp_path))
    assert result["solver"]["method"] == "rk4" and result["solver"]["step_size"] == 0.05
    metrics, before = result["metrics"], trained_run["metrics"]
    # the test windows' span on a 0.05 grid, once per series: rk4 takes 4 evaluations a step
    assert metrics["test/nfe"] != before["test/nfe"]
    assert metrics["test/nfe"] % 4 == 0
    # the tiny model's smooth field: rk4 on this grid agrees with dopri5 to about 1e-6
    assert metrics["test/extrap_rmse"] == pytest.approx(before["test/extrap_rmse"], rel=1e-4)


def test_eval_names_a_bad_solver_replacement(trained_run, tmp_path):
    from framework.checkpoint import load_model

    best = trained_run["paths"]["best_checkpoint"]
    with pytest.raises(ValueError, match=r"solver: unknown field\(s\) \['tol'\]; "
                                         r"node.SolverConfig has method, rtol"):
        load_model(best, solver={"tol": 1e-3})
    with pytest.raises(ValueError, match="solver: the saved settings with .*'gradient': 'sideways'"
                                         ".* are not a valid solver configuration: .*gradient"):
        load_model(best, solver={"gradient": "sideways"})


def test_eval_names_a_missing_or_absent_checkpoint(tmp_path):
    from framework.evaluate import evaluate

    missing = tmp_path / "nope.ckpt"
    with pytest.raises(
        FileNotFoundError, match=f"ckpt_path must be an existing checkpoint file, got '{missing}'"
    ):
        evaluate(compose_eval([f"ckpt_path={missing}"], tmp_path))
    with pytest.raises(ValueError, match="ckpt_path must name a checkpoint written by train.py"):
        evaluate(compose_eval([], tmp_path))


@pytest.mark.slow
def test_eval_script(trained_run, tmp_path):
    last = trained_run["paths"]["last_checkpoint"]
    out = tmp_path / "run"

    def run(*args):
        return subprocess.run(
            [sys.executable, "eval.py", *args, f"hydra.run.dir={out}", "plots.enabled=false",
             "extras.print_config=false"],
            cwd=ROOT, capture_output=True, text=True, timeout=180,
        )

    proc = run(f"ckpt_path={last}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "metrics.json").read_text())
    assert result["paths"]["checkpoint"] == last
    assert "test/extrap_rmse" in result["metrics"]
    assert "Evaluated" in (out / "eval.log").read_text()

    missing = tmp_path / "nope.ckpt"
    proc = run(f"ckpt_path={missing}")
    assert proc.returncode != 0
    assert f"ckpt_path must be an existing checkpoint file, got '{missing}'" in proc.stderr
