"""The 30-point spirals recipe with a GRU encoder trained on the model's own series too
(``experiment=spirals_chen2018_30_sleep``, issue 19)."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import OmegaConf


def test_sleep_recipe_is_the_30_point_recipe_plus_its_own_settings(compose_cfg):
    derived = compose_cfg(["experiment=spirals_chen2018_30_sleep"])
    base = compose_cfg(
        [
            "experiment=spirals_chen2018_30",
            "task_name=spirals_chen2018_30_sleep",
            "model.encoder=gru",
            "model.sleep_weight=5.0",
            "model.sleep_noise_std=0.3",
            "trainer.max_epochs=1500",
        ]
    )
    assert derived.datamodule.n_obs == 30 and derived.model.obs_std == 0.12
    assert derived.callbacks.model_checkpoint.monitor == "val/extrap_rmse_encoder"
    as_dicts = (OmegaConf.to_container(c, resolve=False) for c in (derived, base))
    assert next(as_dicts) == next(as_dicts)


def test_sleep_recipe_builds_a_gru_encoder_with_the_sleep_phase(compose_cfg):
    model = instantiate(compose_cfg(["experiment=spirals_chen2018_30_sleep"]).model, obs_dim=2)
    assert model.encoder.cell.__class__.__name__ == "GRUCell"
    # the sleep series carry the data's noise (0.3), not the tempered likelihood's 0.12
    assert (model.sleep_weight, model.sleep_noise_std, model.obs_std) == (5.0, 0.3, 0.12)
