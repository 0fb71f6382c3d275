"""The CNF through train.py's pipeline (in-process, tiny settings): solvers, gradient modes, RNODE,
metrics against the true NLL, checkpoint reload, plots (also from a checkpoint via plot.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from datamodules.toy2d import Toy2DDataModule
from framework.checkpoint import load_datamodule, load_model
from models.cnf import CNFModule

PLOTS = {"density.png", "samples.png", "flow.png"}
TINY_CNF = [
    "model=cnf",
    "datamodule=toy2d",
    "datamodule.n_train=64",
    "datamodule.n_val=32",
    "datamodule.n_test=32",
    "datamodule.batch_size=32",
    "datamodule.plot_points=64",
    "model.hidden_dims=[8,8]",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "~callbacks.model_summary",
    "trainer.num_sanity_val_steps=0",
    "plots.enabled=false",
]
FDR = ["debug=fdr", "trainer.detect_anomaly=false"]
RK4 = ["solver=rk4", "solver.step_size=0.25"]


def run_cnf(compose_cfg, overrides: list[str], out: Path) -> dict:
    from framework.run import train

    return train(compose_cfg(TINY_CNF + overrides, out))


@pytest.mark.parametrize("solver", ["dopri5", "bosh3", "rk4", "euler"])
def test_fast_dev_run_solvers(solver, compose_cfg, tmp_path):
    step = ["solver.step_size=0.25"] if solver in ("rk4", "euler") else []
    metrics = run_cnf(compose_cfg, [f"solver={solver}", *step, *FDR], tmp_path)["metrics"]
    assert metrics["train_steps"] == 1
    assert metrics["nfe_forward_per_step"] > 0 and metrics["nfe_backward_per_step"] == 0
    assert math.isfinite(metrics["test/nll"]) and metrics["test/loss"] == metrics["test/nll"]
    true = metrics["test/true_nll"]
    assert true == pytest.approx(2.8318803, abs=1e-6)  # 8gaussians' entropy
    assert metrics["test/nll_gap"] == pytest.approx(metrics["test/nll"] - true, abs=1e-5)
    assert metrics["test/kl"] > -0.5  # a KL estimate on 32 points: not far below 0


@pytest.mark.parametrize("model", ["cnf", "cnf_rnode"])
@pytest.mark.parametrize("gradient", ["direct", "adjoint", "checkpoint"])
def test_fast_dev_run_gradient_modes(model, gradient, compose_cfg, tmp_path):
    overrides = [f"model={model}", *RK4, f"solver.gradient={gradient}", *FDR]
    if model == "cnf_rnode":
        overrides.append("model.trace=hutchinson")
    metrics = run_cnf(compose_cfg, overrides, tmp_path)["metrics"]
    assert metrics["nfe_forward_per_step"] > 0
    assert (metrics["nfe_backward_per_step"] > 0) == (gradient != "direct")
    assert math.isfinite(metrics["test/nll"])
    if model == "cnf_rnode":
        assert metrics["train/kinetic"] > 0 and metrics["train/jacobian"] > 0
        assert metrics["train/loss"] > metrics["train/nll"]
        assert metrics["train/end_time"] == pytest.approx(1.0)  # fixed T


def test_blocks_in_sequence_with_rademacher_noise_on_checkerboard(compose_cfg, tmp_path):
    overrides = [
        "datamodule.dataset=checkerboard",
        "model.n_blocks=2",
        "model.trace=hutchinson",
        "model.noise=rademacher",
        *RK4,
        *FDR,
    ]
    metrics = run_cnf(compose_cfg, overrides, tmp_path)["metrics"]
    assert metrics["test/true_nll"] == pytest.approx(math.log(32))
    # checkerboard: every test point has log p = -log 32, so the KL estimate is the gap
    assert metrics["test/kl"] == pytest.approx(metrics["test/nll_gap"], abs=1e-4)
    # two blocks of 4 rk4 steps, 4 stages each
    assert metrics["nfe_forward_per_step"] == 2 * 4 * 4


def test_datasets_without_closed_form_log_no_gap(compose_cfg, tmp_path):
    metrics = run_cnf(compose_cfg, ["datamodule.dataset=moons", *RK4, *FDR], tmp_path)["metrics"]
    assert "test/nll" in metrics and "test/nll_gap" not in metrics and "test/kl" not in metrics


@pytest.mark.slow
def test_checkpoint_reload_gives_identical_log_likelihoods(tmp_path, fit_and_save):
    torch.manual_seed(0)
    dm = Toy2DDataModule(n_train=64, n_val=32, n_test=32, batch_size=32)
    model = CNFModule(
        obs_dim=2,
        hidden_dims=[8, 8],
        n_blocks=2,
        solver={"method": "dopri5", "rtol": 1e-4, "atol": 1e-5},
    )
    path = fit_and_save(model, dm, max_epochs=2)
    points = dm.example_batch("test", 32)
    model.eval()
    with torch.no_grad():
        expected = model.log_prob(points)
        reloaded = CNFModule.load_from_checkpoint(path).eval()  # no config needed
        generic = load_model(path)  # class found from the checkpoint itself
        assert type(generic) is CNFModule
        for other in (reloaded, generic):
            assert torch.equal(other.log_prob(points), expected)
            assert other.flow.end_times() == model.flow.end_times()
    assert model.flow.end_times() != [0.5, 0.5]  # the trainable end times moved and came back
    assert torch.equal(load_datamodule(path).example_batch("test", 32), points)


@pytest.mark.slow
def test_training_and_plotting_from_a_checkpoint_write_the_plots(compose_cfg, tmp_path):
    overrides = ["plots.enabled=true", "trainer.max_epochs=2", *RK4]
    result = run_cnf(compose_cfg, overrides, tmp_path / "run")
    written = [Path(p) for p in result["paths"]["plots"]]
    assert {p.name for p in written} == PLOTS
    assert all(p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG" for p in written)

    # what plot.py runs (tests/app/test_train_plots.py covers its command line)
    from framework.plotting import plot_checkpoint

    out = tmp_path / "figures"
    paths = plot_checkpoint(result["paths"]["last_checkpoint"], out, n_examples=4, split="val")
    assert {p.name for p in paths} == PLOTS == {p.name for p in out.iterdir()}


def test_log_density_grid_and_samples(tmp_path):
    torch.manual_seed(0)
    model = CNFModule(obs_dim=2, hidden_dims=[8], solver={"method": "rk4", "step_size": 0.25})
    xs, ys, log_p = model.log_density_grid((-3, 3, -2, 2), n=30)
    assert xs.shape == ys.shape == (30,) and log_p.shape == (30, 30)
    assert float(ys[0]) == -2 and float(xs[-1]) == 3
    # the grid is row = y, column = x: compare one entry with a direct evaluation
    point = torch.tensor([[float(xs[4]), float(ys[17])]])
    with torch.no_grad():
        assert torch.allclose(log_p[17, 4], model.log_prob(point)[0])
    mass = log_p.exp().sum() * (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert 0.5 < float(mass) < 1.1  # most of a near-Gaussian's mass lies in the box
    samples = model.sample(100, torch.Generator().manual_seed(1))
    assert samples.shape == (100, 2) and torch.isfinite(samples).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(trace="brute_force"), "model.trace must be one of .* got 'brute_force'"),
        (dict(n_blocks=0), "model.n_blocks must be an integer >= 1, got 0"),
        (dict(kinetic_weight=-0.1), "model.kinetic_weight must be a finite number >= 0"),
        (dict(noise="uniform"), "model.noise must be one of .* got 'uniform'"),
        (dict(train_end_time="yes"), "model.train_end_time must be true or false, got 'yes'"),
        (dict(activation="sine"), "model.activation must be one of"),
    ],
)
def test_bad_model_settings_name_the_setting(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CNFModule(obs_dim=2, **kwargs)


def test_auto_trace_is_exact_in_2d_and_hutchinson_above():
    assert CNFModule(obs_dim=2).trace == "exact"
    assert CNFModule(obs_dim=3).trace == "hutchinson"
