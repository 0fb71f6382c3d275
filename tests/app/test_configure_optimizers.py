"""One ``configure_optimizers`` for all models (``models.base.ODEModule``): every model gets the
same optimizer and learning-rate schedule as its own method built before they were merged.

``legacy_*`` below are those methods as they were (the reference), applied to the same model.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch

from models import CNFModule, LatentODEModule, ODENetModule
from models.components.schedules import with_schedule

RK4 = {"method": "rk4", "step_size": 0.25}
MAX_EPOCHS = 7


def legacy_latent_ode(model):
    hp = model.hparams
    opt = torch.optim.Adam(model.parameters(), lr=model.lr, weight_decay=float(hp.weight_decay))
    return with_schedule(opt, hp.scheduler, MAX_EPOCHS, hp.lr_milestones, hp.lr_gamma)


def legacy_odenet(model):
    hp = model.hparams
    if hp.optimizer == "sgd":
        opt = torch.optim.SGD(
            model.parameters(), lr=model.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
        )
    else:
        opt = torch.optim.Adam(model.parameters(), lr=model.lr, weight_decay=hp.weight_decay)
    return with_schedule(opt, hp.scheduler, MAX_EPOCHS, hp.lr_milestones, hp.lr_gamma)


def legacy_cnf(model):
    return torch.optim.Adam(model.parameters(), lr=model.lr, weight_decay=model.weight_decay)


def latent_ode(**kw):
    return LatentODEModule(obs_dim=2, encoder_hidden=4, dynamics_hidden=4, decoder_hidden=4,
                           solver=RK4, **kw)


def odenet(**kw):
    return ODENetModule(input_shape=[1, 8, 8], n_classes=10, channels=4, n_downsample=1,
                        max_groups=2, solver=RK4, **kw)


def cnf(**kw):
    return CNFModule(obs_dim=2, hidden_dims=[4], solver=RK4, **kw)


CASES = [
    (latent_ode, {}, legacy_latent_ode),
    (latent_ode, {"lr": 0.003, "weight_decay": 1e-4, "scheduler": "cosine"}, legacy_latent_ode),
    (latent_ode, {"scheduler": "multistep", "lr_milestones": [2, 5], "lr_gamma": 0.5},
     legacy_latent_ode),
    (latent_ode, {"weight_decay": 0}, legacy_latent_ode),
    (odenet, {}, legacy_odenet),
    (odenet, {"optimizer": "sgd", "lr": 0.05, "momentum": 0.5, "weight_decay": 5e-4,
              "scheduler": "multistep", "lr_milestones": [3, 6], "lr_gamma": 0.2}, legacy_odenet),
    (odenet, {"optimizer": "adam", "lr": 0.003, "scheduler": "cosine"}, legacy_odenet),
    (cnf, {}, legacy_cnf),
    (cnf, {"lr": 0.01, "weight_decay": 0.0}, legacy_cnf),
]


def split(configured):
    """(optimizer, scheduler config or None) of what configure_optimizers returned."""
    if isinstance(configured, torch.optim.Optimizer):
        return configured, None
    return configured["optimizer"], configured["lr_scheduler"]


def groups(optimizer):
    return [
        {**{k: v for k, v in g.items() if k != "params"}, "params": [id(p) for p in g["params"]]}
        for g in optimizer.param_groups
    ]


def scheduler_state(scheduler):
    state = dict(scheduler.state_dict())
    state.pop("optimizer", None)
    return state


@pytest.mark.parametrize(("build", "kwargs", "legacy"), CASES)
def test_shared_configure_optimizers_matches_each_models_own(build, kwargs, legacy):
    model = build(**kwargs)
    model.trainer = L.Trainer(max_epochs=MAX_EPOCHS, logger=False, enable_progress_bar=False,
                              enable_checkpointing=False, enable_model_summary=False)
    new_opt, new_sched = split(model.configure_optimizers())
    old_opt, old_sched = split(legacy(model))
    assert type(new_opt) is type(old_opt)
    assert new_opt.defaults == old_opt.defaults
    assert groups(new_opt) == groups(old_opt)
    assert groups(new_opt)[0]["params"] == [id(p) for p in model.parameters()]
    if old_sched is None:
        assert new_sched is None
        return
    assert type(new_sched["scheduler"]) is type(old_sched["scheduler"])
    assert new_sched["interval"] == old_sched["interval"] == "epoch"
    assert scheduler_state(new_sched["scheduler"]) == scheduler_state(old_sched["scheduler"])
    assert new_sched["scheduler"].optimizer is new_opt


def test_models_no_longer_define_their_own():
    from models.base import ODEModule

    for cls in (LatentODEModule, ODENetModule, CNFModule):
        assert cls.configure_optimizers is ODEModule.configure_optimizers
