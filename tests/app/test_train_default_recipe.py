"""The default run (`python train.py`): the quick recipe for the latent ODE on spirals
(configs/recipe/latent_ode_spirals.yaml), a short version of experiment=spirals_chen2018."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

FULL = "experiment=spirals_chen2018"


def flat(cfg) -> dict:
    """``{"a.b.c": value}`` for every leaf of ``cfg`` (uninterpolated)."""
    out = {}

    def walk(node, prefix):
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return out


def test_default_config_is_the_quick_recipe(compose_cfg):
    cfg = compose_cfg([])
    # the data and the evaluation of Chen et al.'s spirals with 100 observed points
    assert cfg.datamodule._target_ == "datamodules.spirals.SpiralsDataModule"
    assert (cfg.datamodule.n_spirals, cfg.datamodule.noise_std) == (1000, 0.3)
    assert (cfg.datamodule.n_obs, cfg.datamodule.n_extrap) == (100, 100)
    assert cfg.solver.method == "dopri5" and cfg.solver.gradient == "direct"
    # the full recipe's model and objective
    model = cfg.model
    assert model._target_ == "models.latent_ode.LatentODEModule"
    assert model.encoder == "rnn" and model.latent_dim == 6
    assert model.encoder_hidden == model.dynamics_hidden == 64
    assert model.dynamics_activation == "tanh" and model.dynamics_linear is True
    assert model.decoder_layers == 0  # affine decoder
    assert model.objective == "elbo" and model.obs_std == 0.3
    assert model.weight_decay == 1e-4 and model.scheduler == "cosine"
    assert model.consistency_weight == 5.0
    assert model.refine_steps == 100
    # shortened: 1200 updates on batches of 100
    assert cfg.datamodule.batch_size == 100 and cfg.trainer.max_epochs == 150
    assert cfg.trainer.gradient_clip_val == 1.0


def test_quick_recipe_differs_from_the_full_recipe_only_in_its_length(compose_cfg):
    quick, full = flat(compose_cfg([])), flat(compose_cfg([FULL]))
    differ = {key for key in quick.keys() | full.keys() if quick.get(key) != full.get(key)}
    assert differ == {
        "task_name",
        "tags",
        "datamodule.batch_size",
        "trainer.max_epochs",
        "trainer.check_val_every_n_epoch",
        "trainer.log_every_n_steps",
        "callbacks.model_checkpoint.monitor",
    }


@pytest.mark.parametrize(
    "experiment", ["spirals_chen2018", "spirals_chen2018_30", "periodic_rubanova2019"]
)
def test_the_recipe_leaves_the_experiments_unchanged(experiment, compose_cfg):
    # every setting of the recipe is one the experiments set themselves
    with_recipe = flat(compose_cfg([f"experiment={experiment}"]))
    assert with_recipe == flat(compose_cfg([f"experiment={experiment}", "~recipe"]))


def test_the_recipe_applies_to_the_latent_ode_on_spirals_only(compose_cfg):
    plain = compose_cfg(["~recipe"])
    assert plain.model.dynamics_activation == "elu" and plain.model.refine_steps == 0
    for overrides in (["model=latent_ode_odernn"], ["datamodule=periodic"]):
        cfg = compose_cfg(overrides)
        assert cfg.model.dynamics_activation == "elu" and cfg.model.refine_steps == 0
        assert cfg.trainer.max_epochs == plain.trainer.max_epochs


def test_quick_recipe_trains_on_tiny_data(tiny_overrides, compose_cfg, tmp_path):
    """One batch of each stage (fast_dev_run) with the recipe's model: consistency term,
    refinement from the posterior mode (fewer steps), the cosine schedule."""
    from framework.run import train

    data = [o for o in tiny_overrides if o.startswith("datamodule.")]  # not `~recipe`
    quiet = ["trainer.enable_progress_bar=false", "~callbacks.model_summary", "plots.n_examples=2"]
    fdr = ["debug=fdr", "trainer.detect_anomaly=false"]
    cfg = compose_cfg([*data, *quiet, *fdr, "model.refine_steps=5"], tmp_path)
    assert cfg.model.consistency_weight == 5.0 and cfg.model.dynamics_linear is True
    metrics = train(cfg)["metrics"]
    assert metrics["train_steps"] == 1
    assert metrics["train/consistency"] > 0
    assert metrics["test/extrap_rmse"] > 0 and metrics["test/extrap_rmse_encoder"] > 0
