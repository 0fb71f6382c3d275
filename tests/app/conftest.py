"""Fixtures of the training app's tests (tests/app/): composing ``configs/train.yaml`` and tiny
training runs.

``PROJECT_ROOT`` points the configs' ``paths.root_dir`` at the repository root (which
tests/conftest.py puts on ``sys.path``). Heavy imports (Lightning, Hydra) happen inside the
fixtures, so that collecting the tests stays quick.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))

CONFIG_DIR = ROOT / "configs"

# A latent ODE small enough that one epoch takes well under a second on 2 CPU cores. `~recipe`:
# the plain model and trainer settings of their groups, without the default recipe for the latent
# ODE on spirals (configs/recipe/; its validation schedule and evaluation refinement would slow
# and change these runs); tests/app/test_train_default_recipe.py covers the recipe.
TINY_SPIRALS = [
    "~recipe",
    "datamodule.n_spirals=30",
    "datamodule.n_total=24",
    "datamodule.theta_max=3.0",
    "datamodule.n_window=8",
    "datamodule.n_obs=6",
    "datamodule.n_extrap=6",
    "datamodule.batch_size=8",
    "datamodule.split=[0.6,0.2,0.2]",
]
TINY = [
    "model.encoder_hidden=8",
    "model.dynamics_hidden=8",
    "model.decoder_hidden=8",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "~callbacks.model_summary",
    "trainer.num_sanity_val_steps=0",
    "plots.n_examples=2",
]


def compose_train(overrides: list[str], output_dir: Path | None = None):
    """``configs/train.yaml`` composed with ``overrides``, as ``train.py`` would see it
    (:func:`framework.compose.compose_run`; with ``output_dir`` the Hydra runtime points
    there)."""
    from framework.compose import compose_run

    return compose_run(overrides, output_dir)


def run_train(overrides: list[str], output_dir: Path, spirals: bool = True) -> dict:
    """``framework.run.train`` on the tiny configuration plus ``overrides`` (``spirals=False``:
    without the tiny spirals data settings, for another data module)."""
    from framework.run import train

    data = TINY_SPIRALS if spirals else []
    return train(compose_train(data + TINY + overrides, output_dir))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One tiny training run (2 epochs, with checkpoints), shared by plot/notebook tests."""
    out = tmp_path_factory.mktemp("trained_run")
    return run_train(["trainer.max_epochs=2"], out)


@pytest.fixture
def compose_cfg():
    """:func:`compose_train` (a fixture so that test modules need not import conftest)."""
    return compose_train


@pytest.fixture
def tiny_train():
    """:func:`run_train`: train the tiny configuration plus overrides into a folder."""
    return run_train


@pytest.fixture
def tiny_overrides():
    return TINY_SPIRALS + TINY


@pytest.fixture
def fit_and_save(tmp_path):
    """``fit_and_save(model, datamodule, **trainer_kwargs) -> checkpoint path``: a quiet, short
    Lightning fit (no loggers, callbacks or sanity checks) followed by ``save_checkpoint``."""
    import lightning as L

    def fit(model, datamodule, **trainer_kwargs):
        trainer = L.Trainer(
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            **trainer_kwargs,
        )
        trainer.fit(model, datamodule=datamodule)
        path = tmp_path / "model.ckpt"
        trainer.save_checkpoint(path)
        return path

    return fit
