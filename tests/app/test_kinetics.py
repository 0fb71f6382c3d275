"""The stiff-kinetics experiment's pieces: ROBER data (against published reference values), the
scaled field and loss of the model, its argument errors, and its plots."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.kinetics import (
    RATES,
    RobertsonDataModule,
    robertson_jacobian,
    robertson_rhs,
    robertson_trajectories,
)
from models.kinetics import ScaledField, StiffKineticsModule

# ROBER from y0 = (1, 0, 0) at t = 40: E. Hairer, G. Wanner, Solving Ordinary Differential
# Equations II, 2nd ed., sec. IV.10 (Table 10.1's reference solution).
ROBER_AT_40 = (0.7158270687193685, 9.185534764529508e-6, 0.2841637457458670)


def small_robertson(**kw):
    args = dict(n_trajectories=6, n_times=12, split=(0.5, 0.25, 0.25))
    args.update(kw)
    dm = RobertsonDataModule(**args)
    dm.setup()
    return dm


def test_reference_solution_matches_published_values():
    ys = robertson_trajectories(np.array([[1.0, 0.0, 0.0]]), np.array([0.0, 40.0]))
    np.testing.assert_allclose(ys[0, -1], ROBER_AT_40, rtol=1e-7)


def test_jacobian_matches_finite_differences():
    y = np.array([0.7, 2e-5, 0.3])
    eps = 1e-7 * np.maximum(np.abs(y), 1e-9)
    columns = [(robertson_rhs(y + e, RATES) - robertson_rhs(y - e, RATES)) / (2 * e[i])
               for i, e in enumerate(np.diag(eps))]
    np.testing.assert_allclose(robertson_jacobian(y, RATES), np.stack(columns, axis=1),
                               rtol=1e-6, atol=1e-9)


def test_batches_are_trajectories_on_a_log_grid_that_conserve_mass():
    dm = small_robertson()
    batch = next(iter(dm.train_dataloader()))
    t, y = batch["t"], batch["y"]
    assert t.shape == (13,) and t[0] == 0 and y.shape == (3, 13, 3)
    np.testing.assert_allclose(np.diff(np.log(t[1:].numpy())), np.log(1e10) / 11, rtol=1e-9)
    assert float((y.sum(-1) - 1).abs().max()) < 1e-9
    assert bool((y[:, 0, 1] == 0).all()) and bool((y[:, 0, 0] >= 0.5).all())
    dims = dm.model_dims()
    assert dims["state_dim"] == 3
    np.testing.assert_allclose(dims["scales"], dm.parts["train"].values.amax(dim=(0, 1)))


def test_noise_only_on_training_targets_and_seeded():
    clean, noisy = small_robertson(), small_robertson(noise_std=0.05)
    assert torch.equal(clean.parts["val"].values, noisy.parts["val"].values)
    a, b = clean.parts["train"].values, noisy.parts["train"].values
    assert torch.equal(a[:, 0], b[:, 0]) and not torch.allclose(a[:, 1:], b[:, 1:])
    assert torch.equal(small_robertson(noise_std=0.05).parts["train"].values, b)


@pytest.mark.parametrize("kwargs, name", [
    (dict(t_min=0.0), "t_min"), (dict(y1_low=1.5), "y1_low"), (dict(n_times=1), "n_times"),
    (dict(batch_size=0), "batch_size"), (dict(n_trajectories=3, split=(0.6, 0.3, 0.1)), "test"),
])
def test_bad_data_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        small_robertson(**kwargs)


def test_scaled_field_and_loss():
    scales = torch.tensor([1.0, 1e-5, 2.0], dtype=torch.float64)
    net = torch.nn.Linear(3, 3).double()
    field = ScaledField(net, scales)
    y = torch.tensor([[0.5, 2e-5, 0.5]], dtype=torch.float64)
    assert torch.allclose(field(torch.tensor(0.0), y), scales * net(y / scales))

    model = StiffKineticsModule(3, [1.0, 1e-5, 2.0], hidden=4, n_hidden_layers=1,
                                solver=dict(method="rk4", step_size=0.01))
    assert all(p.dtype == torch.float64 for p in model.parameters())
    t = torch.linspace(0.0, 0.05, 6, dtype=torch.float64)
    y0 = y.expand(2, 3)
    with torch.no_grad():
        exact = model(y0, t)
    batch = {"t": t, "y": exact.clone()}
    assert float(model.training_loss(batch)[0].detach()) == pytest.approx(0.0, abs=1e-12)
    batch["y"][:, 1:, 1] += 1e-6  # a tenth of y2's scale
    assert float(model.training_loss(batch)[0].detach()) == pytest.approx(0.1 / 3, rel=1e-6)


@pytest.mark.parametrize("kwargs, name", [
    (dict(scales=[1.0, 0.0, 1.0]), "scales"), (dict(scales=[1.0, 1.0]), "scales"),
    (dict(hidden=0), "hidden"), (dict(activation="swish"), "activation"),
    (dict(lr=0.0), "lr"), (dict(optimizer="lbfgs"), "optimizer"),
])
def test_bad_model_arguments_are_named(kwargs, name):
    args = dict(state_dim=3, scales=[1.0, 1e-5, 1.0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"model.{name}"):
        StiffKineticsModule(**args)


def test_plots_are_written(tmp_path):
    dm = small_robertson(n_times=6, t_max=1e-2)
    model = StiffKineticsModule(**dm.model_dims(), hidden=4, n_hidden_layers=1,
                                solver=dict(method="dopri5", rtol=1e-6, atol=1e-10))
    paths = model.write_plots(dm.example_batch("test", 2), tmp_path)
    assert [p.name for p in paths] == ["species.png"] and paths[0].stat().st_size > 1000


@pytest.mark.slow
def test_experiment_trains_with_a_stiff_solver_and_reloads(compose_cfg, tmp_path):
    """`experiment=rober_kim2021`, shrunk: kvaerno5 with batch Jacobians through training,
    validation (under inference mode), testing, plots and a reloaded checkpoint."""
    from framework.checkpoint import load_datamodule, load_model
    from framework.run import train

    overrides = [
        "experiment=rober_kim2021", "datamodule.n_trajectories=6", "datamodule.n_times=8",
        "datamodule.t_max=10.0", "model.hidden=4", "model.n_hidden_layers=1",
        "model.output=exp", "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1",
        "trainer.enable_progress_bar=false", "~callbacks.model_summary", "plots.n_examples=2",
    ]
    cfg = compose_cfg(overrides, tmp_path)
    assert cfg.solver.method == "kvaerno5" and cfg.solver.options.jacobian == "batch"
    result = train(cfg)
    metrics = result["metrics"]
    assert metrics["train_steps"] == 2 and metrics["nfe_forward_per_step"] > 0
    assert math.isfinite(metrics["test/mae"]) and metrics["test/mae"] < 1.0
    assert [Path(p).name for p in result["paths"]["plots"]] == ["species.png"]

    ckpt = result["paths"]["best_checkpoint"]
    model, datamodule = load_model(ckpt), load_datamodule(ckpt)
    batch = datamodule.example_batch("test", 2)
    with torch.no_grad():
        again = model.scaled_errors(batch).mean()
    assert float(again) == pytest.approx(metrics["test/mae"], rel=1e-6)
