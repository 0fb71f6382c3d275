"""Training runs through framework.run.train (in-process, tiny settings): every solver and
gradient mode, evaluation logging, checkpoints, resume, and solver failures."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from framework.checkpoint import load_datamodule, load_model
from framework.failure import TrainingSolverFailure
from models import LatentODEModule

# Lightning's fast_dev_run without the debug preset's anomaly detection (which records a traceback
# for every autograd operation: minutes instead of seconds for an ODE solve)
FDR = ["debug=fdr", "trainer.detect_anomaly=false"]
SOLVERS = ["dopri5", "tsit5", "bosh3", "dopri8", "adaptive_heun", "rk4", "midpoint", "euler"]


@pytest.mark.parametrize("solver", SOLVERS)
def test_fast_dev_run_every_solver(solver, tiny_train, tmp_path):
    result = tiny_train([f"solver={solver}", *FDR], tmp_path)
    metrics = result["metrics"]
    assert metrics["train_steps"] == 1
    assert metrics["nfe_forward_per_step"] > 0
    assert metrics["nfe_backward_per_step"] == 0  # direct gradient: backprop, no solves
    assert metrics["steps_forward_per_step"] > 0
    assert "test/extrap_rmse" in metrics and "test/elbo" in metrics
    assert len(result["paths"]["plots"]) == 3


@pytest.mark.parametrize("gradient", ["direct", "adjoint", "checkpoint"])
@pytest.mark.parametrize("model", ["latent_ode", "latent_ode_odernn"])
def test_fast_dev_run_every_gradient_mode(model, gradient, tiny_train, tmp_path):
    overrides = [
        f"model={model}",
        "solver=rk4",
        "solver.step_size=0.05",
        f"solver.gradient={gradient}",
        *FDR,
    ]
    metrics = tiny_train(overrides, tmp_path)["metrics"]
    assert metrics["nfe_forward_per_step"] > 0
    if gradient == "direct":
        assert metrics["nfe_backward_per_step"] == 0
    else:  # the adjoint solve, or the recomputed forward solve
        assert metrics["nfe_backward_per_step"] > 0
    assert (metrics["steps_backward_per_step"] > 0) == (gradient == "adjoint")


def test_periodic_data_with_ode_rnn_and_iwae(tiny_train, tmp_path):
    overrides = [
        "datamodule=periodic",
        "model=latent_ode_odernn",
        "model.objective=iwae",
        "model.n_samples=3",
        "model.kl_anneal_steps=10",
        "datamodule.n_series=30",
        "datamodule.n_points=14",
        "datamodule.n_extrap=4",
        "model.refine_steps=2",
        *FDR,
    ]
    metrics = tiny_train(overrides, tmp_path, spirals=False)["metrics"]
    assert torch.isfinite(torch.tensor(metrics["test/loss"]))
    assert torch.isfinite(torch.tensor(metrics["test/extrap_rmse_encoder"]))
    assert metrics["nfe_forward_per_step"] > 0


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_run_logs_evaluations_and_writes_outputs(trained_run):
    paths = trained_run["paths"]
    out = Path(paths["output_dir"])
    assert Path(paths["last_checkpoint"]) == out / "checkpoints" / "last.ckpt"
    assert Path(paths["best_checkpoint"]).is_file()
    assert (out / "metrics.json").is_file()
    rows = read_csv(Path(paths["metrics"][0]))
    train_rows = [r for r in rows if r.get("nfe/forward")]
    assert train_rows and all(float(r["nfe/forward"]) > 0 for r in train_rows)
    assert any(r.get("nfe/backward") not in (None, "") for r in rows)
    assert any(r.get("val/extrap_rmse") for r in rows)
    assert any(r.get("test/extrap_rmse") for r in rows)
    assert trained_run["metrics"]["global_step"] == 2 * 3  # 2 epochs of 18 series / batch 8
    # the score that chose the best checkpoint (monitor val/loss, mode min), for seed sweeps
    val_losses = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert len(val_losses) == 2
    assert trained_run["metrics"]["best/val/loss"] == pytest.approx(min(val_losses))


def test_checkpoint_reload_gives_identical_predictions(tmp_path, fit_and_save):
    from datamodules import SpiralsDataModule

    torch.manual_seed(0)
    dm = SpiralsDataModule(
        n_spirals=30,
        n_total=24,
        n_window=8,
        n_obs=6,
        n_extrap=6,
        batch_size=8,
        split=[0.6, 0.2, 0.2],
    )
    model = LatentODEModule(
        obs_dim=2,
        encoder_hidden=8,
        dynamics_hidden=8,
        decoder_hidden=8,
        solver={"method": "dopri5", "rtol": 1e-4, "atol": 1e-5},
    )
    path = fit_and_save(model, dm, max_epochs=1)
    batch = dm.example_batch("test", 4)
    model.eval()
    with torch.no_grad():
        expected = model.predict(batch)["x"]
        reloaded = LatentODEModule.load_from_checkpoint(path)  # no config needed
        generic = load_model(path)  # class found from the checkpoint itself
        assert type(generic) is LatentODEModule
        for other in (reloaded.eval(), generic):
            assert torch.equal(other.predict(batch)["x"], expected)
    assert reloaded.hparams.solver["method"] == "dopri5"
    rebuilt = load_datamodule(path)
    assert torch.equal(rebuilt.example_batch("test", 4)["values"], batch["values"])


def test_resume_continues_from_saved_step(tiny_train, tmp_path):
    first = tiny_train([], tmp_path / "first")
    last = first["paths"]["last_checkpoint"]
    steps = int(first["metrics"]["global_step"])
    assert steps == 3
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["global_step"] == steps
    second = tiny_train([f"ckpt_path={last}", "trainer.max_epochs=2"], tmp_path / "second")
    assert second["metrics"]["global_step"] == 2 * steps
    assert second["metrics"]["train_steps"] == steps  # only the second epoch ran here
    rows = read_csv(Path(second["paths"]["metrics"][0]))
    logged_steps = [int(r["step"]) for r in rows if r.get("nfe/forward")]
    assert logged_steps and min(logged_steps) >= steps


def test_last_checkpoint_is_the_newest_state_when_the_best_is_older(tiny_train, tmp_path):
    """last.ckpt must follow the run, not the best checkpoint (Lightning 2.6's ``save_last``
    only copies a new best): monitoring the epoch with mode=min keeps epoch 0 as the best."""
    overrides = ["trainer.max_epochs=3", "callbacks.model_checkpoint.monitor=epoch"]
    paths = tiny_train(overrides, tmp_path)["paths"]
    best = torch.load(paths["best_checkpoint"], map_location="cpu", weights_only=True)
    last = torch.load(paths["last_checkpoint"], map_location="cpu", weights_only=True)
    assert Path(paths["last_checkpoint"]).name == "last.ckpt"
    assert best["epoch"] == 0
    assert last["epoch"] == 2 and last["global_step"] == 3 * best["global_step"]


def test_missing_resume_checkpoint_is_named(tiny_train, tmp_path):
    with pytest.raises(FileNotFoundError, match="ckpt_path must name an existing checkpoint"):
        tiny_train([f"ckpt_path={tmp_path / 'nope.ckpt'}"], tmp_path)


def test_solver_failure_names_epoch_batch_and_keeps_last_checkpoint(tiny_train, tmp_path):
    first = tiny_train([], tmp_path / "first")
    last = Path(first["paths"]["last_checkpoint"])
    before = last.read_bytes()
    overrides = [f"ckpt_path={last}", "trainer.max_epochs=2", "solver.max_num_steps=1"]
    with pytest.raises(TrainingSolverFailure) as info:
        tiny_train(overrides, tmp_path / "second")
    message = str(info.value)
    assert "during training, epoch 1, batch 0" in message
    assert "max_num_steps=1" in message  # the solver's own diagnosis
    assert str(last) in message
    assert last.read_bytes() == before
    assert load_model(last).hparams.solver["max_num_steps"] == 2000


def test_tensorboard_logger_option(tiny_train, tmp_path):
    overrides = [
        "logger=many_loggers",
        "+trainer.limit_train_batches=1",
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
    ]
    result = tiny_train(overrides, tmp_path)
    assert any("TensorBoard" in place for place in result["paths"]["metrics"])
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))


def test_evaluate_a_checkpoint_without_training(trained_run, tiny_train, tmp_path):
    best = trained_run["paths"]["best_checkpoint"]
    result = tiny_train(["train=false", f"ckpt_path={best}"], tmp_path)
    assert result["metrics"]["test/extrap_rmse"] == pytest.approx(
        trained_run["metrics"]["test/extrap_rmse"], rel=1e-6
    )
    assert result["metrics"]["train_steps"] == 0
