"""ODE-Net through train.py's pipeline (in-process, tiny network): config composition with the
digits and MNIST data modules, fast_dev_run with several solvers and every gradient mode,
evaluation counts, and the plots (after training and from a checkpoint)."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from omegaconf import OmegaConf

from framework.plotting import plot_checkpoint
from tests.app.test_mnist_reader import write_mnist_folder

FDR = ["debug=fdr", "trainer.detect_anomaly=false"]
TINY_ODENET = [
    "datamodule=digits",
    "model=odenet",
    "model.channels=4",
    "model.n_downsample=1",
    "model.max_groups=2",
    "model.optimizer=adam",
    "model.lr=0.01",
    "datamodule.batch_size=32",
    "solver=rk4",
    "solver.step_size=0.5",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "~callbacks.model_summary",
    "trainer.num_sanity_val_steps=0",
    "plots.n_examples=6",
]


def is_png(path: Path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def train_tiny(compose_cfg, overrides: list[str], output_dir: Path) -> dict:
    from framework.run import train

    return train(compose_cfg(TINY_ODENET + overrides, output_dir))


def build(cfg):
    datamodule = hydra.utils.instantiate(cfg.datamodule, _convert_="all")
    model = hydra.utils.instantiate(
        cfg.model,
        solver=OmegaConf.to_container(cfg.solver, resolve=True),
        **datamodule.model_dims(),
        _convert_="all",
    )
    return datamodule, model


# --------------------------------------------------------------------------------- composition
@pytest.mark.parametrize("model", ["odenet", "odenet_mlp"])
def test_odenet_composes_with_digits(model, compose_cfg):
    cfg = compose_cfg([f"model={model}", "datamodule=digits", "solver=bosh3"])
    assert cfg.model._target_ == "models.odenet.ODENetModule"
    datamodule, built = build(cfg)
    assert datamodule.model_dims() == {"input_shape": [1, 8, 8], "n_classes": 10}
    assert built.hparams.architecture == ("conv" if model == "odenet" else "mlp")
    assert [s.method for s in built.ode_solvers()] == ["bosh3"]


@pytest.mark.slow
def test_odenet_composes_with_mnist_from_a_generated_folder(compose_cfg, tmp_path):
    folder = tmp_path / "mnist"
    write_mnist_folder(folder, n_train=24, n_test=6)
    cfg = compose_cfg(
        [
            "model=odenet",
            "datamodule=mnist",
            f"datamodule.data_dir={folder}",
            "datamodule.download=false",
            "datamodule.n_val=4",
        ]
    )
    datamodule, model = build(cfg)
    datamodule.setup()
    batch = datamodule.example_batch("val", 3)
    assert model(batch["inputs"]).shape == (3, 10)
    assert model.hparams.input_shape == [1, 28, 28]


def test_experiment_configs_hold_their_recipes(compose_cfg):
    chen = compose_cfg(["experiment=mnist_chen2018"])
    assert chen.datamodule._target_ == "datamodules.mnist.MNISTDataModule"
    assert (chen.model.channels, chen.model.n_downsample, chen.model.t_end) == (64, 2, 1.0)
    assert (chen.model.optimizer, chen.model.lr, chen.model.momentum) == ("sgd", 0.1, 0.9)
    assert list(chen.model.lr_milestones) == [60, 100, 140]
    assert chen.trainer.max_epochs == 160 and chen.datamodule.batch_size == 128
    assert (chen.solver.method, chen.solver.rtol, chen.solver.atol) == ("dopri5", 1e-3, 1e-3)
    assert chen.trainer.accelerator == "gpu"
    digits = compose_cfg(["experiment=digits_odenet"])
    assert digits.datamodule._target_ == "datamodules.digits.DigitsDataModule"
    assert digits.num_threads == 1 and digits.trainer.accelerator == "cpu"


def test_chen_network_has_the_papers_size(compose_cfg):
    _, model = build(compose_cfg(["experiment=mnist_chen2018"]))
    n_params = sum(p.numel() for p in model.parameters())
    assert 0.2e6 < n_params < 0.23e6  # Chen et al. (2018), Table 1: 0.22M


# ----------------------------------------------------------------------------------- training
@pytest.mark.parametrize("solver", ["dopri5", "bosh3", "euler"])
def test_fast_dev_run_solvers(solver, compose_cfg, tmp_path):
    step = ["solver.step_size=0.25"] if solver == "euler" else ["solver.step_size=null"]
    result = train_tiny(compose_cfg, [f"solver={solver}", *step, *FDR], tmp_path)
    metrics = result["metrics"]
    assert metrics["train_steps"] == 1
    assert metrics["nfe_forward_per_step"] > 0 and metrics["nfe_backward_per_step"] == 0
    assert 0 <= metrics["test/acc"] <= 1
    assert metrics["test/error"] == pytest.approx(1 - metrics["test/acc"])
    assert metrics["test/nfe"] > 0
    assert [Path(p).name for p in result["paths"]["plots"]] == ["trajectories.png"]


@pytest.mark.parametrize("gradient", ["direct", "adjoint", "checkpoint"])
def test_fast_dev_run_every_gradient_mode(gradient, compose_cfg, tmp_path):
    result = train_tiny(compose_cfg, [f"solver.gradient={gradient}", *FDR], tmp_path)
    metrics = result["metrics"]
    assert metrics["nfe_forward_per_step"] == 2 * 4  # rk4, step 0.5 over [0, 1]
    if gradient == "direct":
        assert metrics["nfe_backward_per_step"] == 0
    else:  # the adjoint solve, or the recomputed forward solve
        assert metrics["nfe_backward_per_step"] > 0
    assert (metrics["steps_backward_per_step"] > 0) == (gradient == "adjoint")


def test_fast_dev_run_mlp_variant_with_augmentation(compose_cfg, tmp_path):
    overrides = ["model=odenet_mlp", "model.channels=16", "model.augment_dim=4", *FDR]
    result = train_tiny(compose_cfg, overrides, tmp_path)
    assert result["metrics"]["nfe_forward_per_step"] > 0


def test_training_writes_plots_and_plot_script_redraws_them(compose_cfg, tmp_path):
    overrides = [
        "datamodule.crop_padding=1",
        "+trainer.limit_train_batches=4",
        "+trainer.limit_val_batches=1",
    ]
    result = train_tiny(compose_cfg, overrides, tmp_path / "run")
    written = [Path(p) for p in result["paths"]["plots"]]
    assert [p.name for p in written] == ["trajectories.png", "nfe.png"]
    assert all(is_png(p) for p in written)
    # from the checkpoint alone, into another folder: the metrics log is found from the file
    again = plot_checkpoint(result["paths"]["last_checkpoint"], tmp_path / "figures")
    assert [p.name for p in again] == ["trajectories.png", "nfe.png"]
    assert all(is_png(p) for p in again)
