"""Two-phase training of the latent ODE: model.init_from copies chosen parts from a checkpoint
when fitting starts, model.trainable freezes the others (models/components/warm_start.py)."""

from __future__ import annotations

import pytest
import torch

from models.latent_ode import LatentODEModule


def _parts(model, part):
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(part + ".")}


def test_second_phase_trains_a_new_encoder_for_a_frozen_flow(trained_run, tiny_train, tmp_path):
    phase_one = trained_run["paths"]["last_checkpoint"]
    first = LatentODEModule.load_from_checkpoint(phase_one)
    result = tiny_train([f"model.init_from={phase_one}", "model.encoder=gru",
                         "model.init_parts=[dynamics,decoder]", "model.trainable=[encoder]",
                         "model.sleep_weight=1.0", "trainer.max_epochs=2"], tmp_path)
    second = LatentODEModule.load_from_checkpoint(result["paths"]["last_checkpoint"])
    for part in ("dynamics", "decoder"):  # copied, then frozen: unchanged by two epochs
        before, after = _parts(first, part), _parts(second, part)
        assert before.keys() == after.keys() and before
        for name in before:
            assert torch.equal(before[name], after[name]), name
    # the optimiser stepped the encoder's parameters, and only those
    saved = torch.load(result["paths"]["last_checkpoint"], weights_only=True)
    (adam,) = saved["optimizer_states"]
    assert len(adam["state"]) == len(list(second.encoder.parameters()))
    assert all(float(state["step"]) > 0 for state in adam["state"].values())
    assert all(p.requires_grad == n.startswith("encoder.")
               for n, p in second.named_parameters())


def test_the_optimiser_holds_only_trainable_parameters():
    model = LatentODEModule(obs_dim=2, trainable=["encoder"])
    model.trainer = type("T", (), {"max_epochs": 1})()  # configure_optimizers reads max_epochs
    optimisers = model.configure_optimizers()
    opt = optimisers[0][0] if isinstance(optimisers, tuple) else (
        optimisers["optimizer"] if isinstance(optimisers, dict) else optimisers)
    held = {id(p) for group in opt.param_groups for p in group["params"]}
    assert held == {id(p) for p in model.encoder.parameters()}


def test_warm_start_errors_name_what_does_not_fit(trained_run, tmp_path):
    phase_one = trained_run["paths"]["last_checkpoint"]
    with pytest.raises(ValueError, match=r"model.trainable must name parts from \['encoder', "
                                         r"'dynamics', 'decoder'\], got \['flow'\]"):
        LatentODEModule(obs_dim=2, trainable=["flow"])
    with pytest.raises(ValueError, match="model.init_parts must be a list of part names"):
        LatentODEModule(obs_dim=2, init_parts="encoder")
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(FileNotFoundError, match=f"got '{missing}'"):
        LatentODEModule(obs_dim=2, init_from=str(missing)).setup("fit")
    # the tiny run's dynamics have 8 hidden units, this model 16: shapes differ, named
    wider = LatentODEModule(obs_dim=2, latent_dim=4, dynamics_hidden=16, init_from=phase_one,
                            init_parts=["dynamics"])
    with pytest.raises(ValueError, match=r"does not fit this model's parts \['dynamics'\]: "
                                         r".*shapes differ"):
        wider.setup("fit")
    wider.setup("test")  # only fitting starts from init_from: evaluation never reads it


def test_the_encoder_phase_experiment_needs_a_checkpoint(compose_cfg, trained_run):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    cfg = compose_cfg(["experiment=spirals_chen2018_encoder"])
    assert OmegaConf.is_missing(cfg, "init_from")
    with pytest.raises(MissingMandatoryValue, match="init_from"):
        instantiate(cfg.model, obs_dim=2)
    phase_one = trained_run["paths"]["last_checkpoint"]
    cfg = compose_cfg(["experiment=spirals_chen2018_encoder", f"init_from={phase_one}"])
    model = instantiate(cfg.model, obs_dim=2)
    assert model.hparams.encoder == "gru" and model.init_parts == ("dynamics", "decoder")
    assert model.consistency_weight == 0.0 and model.sleep_weight == 5.0
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"encoder"}
    assert cfg.trainer.max_epochs == 1000
    assert cfg.callbacks.model_checkpoint.monitor == "val/extrap_rmse_encoder"


def test_training_refuses_a_missing_mandatory_model_value(tiny_train, tmp_path):
    # Hydra's partial instantiation would drop it and the class default (no warm start) would
    # silently stand in for it
    with pytest.raises(ValueError, match="the model config needs a value that is not set: .*"
                                         "Missing mandatory value: init_from"):
        tiny_train(["experiment=spirals_chen2018_encoder"], tmp_path)


def test_the_30_point_encoder_phase_is_the_documented_overrides(compose_cfg):
    from omegaconf import OmegaConf

    named = compose_cfg(["experiment=spirals_chen2018_30_encoder", "init_from=x.ckpt"])
    spelled = compose_cfg(["experiment=spirals_chen2018_encoder", "init_from=x.ckpt",
                           "datamodule.n_obs=30", "model.obs_std=0.12", "model.latent_dim=8",
                           "trainer.check_val_every_n_epoch=10", "trainer.max_epochs=2000"])
    for part in ("model", "datamodule", "trainer", "callbacks"):
        assert OmegaConf.to_container(named[part]) == OmegaConf.to_container(spelled[part])
    # the likelihood, data and latent size of phase one's spirals_chen2018_30 (the warm start
    # copies its flow and decoder, whose shapes must match)
    phase_one = compose_cfg(["experiment=spirals_chen2018_30"])
    assert named.model.obs_std == phase_one.model.obs_std
    assert named.model.latent_dim == phase_one.model.latent_dim == 8
    assert OmegaConf.to_container(named.datamodule) == OmegaConf.to_container(phase_one.datamodule)
