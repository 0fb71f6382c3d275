"""The latent ODE's training options against the amortisation gap (issue 19):
amortised refinement (``amortise_weight``) and encoder training on the model's own series
(``sleep_weight``)."""

from __future__ import annotations

import pytest
import torch

from models import LatentODEModule
from models.components.objectives import gaussian_log_likelihood, log_normal

RK4 = dict(method="rk4", step_size=0.1)


def spiral_like_batch(batch=6, n_obs=9, n_extrap=4):
    torch.manual_seed(0)
    t = torch.linspace(0, 2, n_obs + n_extrap)
    angle = t.unsqueeze(0) + torch.rand(batch, 1) * 3
    clean = torch.stack([angle.cos(), angle.sin()], dim=-1) * (0.3 * angle).unsqueeze(-1)
    values = clean[:, :n_obs] + 0.1 * torch.randn(batch, n_obs, 2)
    mask = (torch.rand(batch, n_obs, 1) < 0.7).float().expand(-1, -1, 2).clone()
    mask[:, 0] = 1.0
    return {
        "t_obs": t[:n_obs],
        "t_extrap": t[n_obs:],
        "values": values * mask,
        "mask": mask,
        "truth": clean[:, :n_obs],
        "extrap": clean[:, n_obs:],
    }


def neg_log_joint(model, batch, z0):
    _, x = model.decode(z0, batch["t_obs"])
    prior = log_normal(z0, torch.zeros_like(z0), torch.zeros_like(z0))
    return -(gaussian_log_likelihood(batch["values"], x, model.obs_std, batch["mask"]) + prior)


def test_amortisation_term_vanishes_at_the_mode_and_is_positive_elsewhere():
    """With a decoder that ignores z the posterior is the prior, whose mode is 0: the term is
    exactly zero at mu = 0 and positive anywhere else."""
    model = LatentODEModule(obs_dim=2, latent_dim=3, amortise_weight=1.0, amortise_steps=3,
                            solver=RK4)
    for p in model.decoder.parameters():
        torch.nn.init.zeros_(p)
    batch = spiral_like_batch()
    at_mode = model.amortisation_term(batch, torch.zeros(6, 3))
    assert float(at_mode) == 0.0
    assert float(model.amortisation_term(batch, torch.full((6, 3), 0.5))) > 0.0


def test_amortisation_gradient_moves_the_mean_toward_the_mode():
    """The term's gradient in mu points along the MAP objective's gradient: a small step
    against it lowers -log p(x | mu) - log p(mu) for every series; the model's parameters get
    no gradient from the refinement itself."""
    torch.manual_seed(1)
    model = LatentODEModule(obs_dim=2, latent_dim=3, amortise_weight=1.0, amortise_steps=1,
                            refine_lr=0.05, solver=RK4)
    batch = spiral_like_batch()
    mu = torch.randn(6, 3, requires_grad=True)
    term = model.amortisation_term(batch, mu)
    assert all(p.grad is None for p in model.parameters())
    (grad,) = torch.autograd.grad(term, mu)
    with torch.no_grad():
        before = neg_log_joint(model, batch, mu)
        after = neg_log_joint(model, batch, mu - 0.01 * grad / grad.abs().max())
    assert bool((after < before).all())


def test_sleep_term_trains_the_encoder_only_on_fresh_series():
    torch.manual_seed(2)
    model = LatentODEModule(obs_dim=2, latent_dim=3, sleep_weight=1.0, solver=RK4)
    assert model.sleep_noise_std == model.obs_std
    batch = spiral_like_batch()
    mu, _ = model.encode(batch)
    z, _ = model.decode(mu.unsqueeze(0), batch["t_obs"])
    term = model.sleep_term(batch, z)
    assert torch.isfinite(term)
    term.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    generative = [*model.dynamics.parameters(), *model.decoder.parameters()]
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in generative)
    # new noise each call: the term changes between two calls on the same paths
    assert float(model.sleep_term(batch, z).detach()) != float(model.sleep_term(batch, z).detach())


def test_sleep_term_is_lowest_for_an_encoder_that_recovers_the_generating_state():
    """-log q(z_s | x_s) is small when the encoder returns the state that generated x_s:
    with an encoder that inverts a known decoder the term is far below that of a random one."""
    torch.manual_seed(3)
    model = LatentODEModule(obs_dim=2, latent_dim=2, sleep_weight=1.0, sleep_noise_std=1e-4,
                            decoder_layers=0, solver=RK4)
    with torch.no_grad():
        model.decoder.weight.copy_(torch.eye(2))
        model.decoder.bias.zero_()
        for p in model.dynamics.parameters():
            p.zero_()  # dz/dt = 0: every window is constant, x = z

    class FirstObservation(torch.nn.Module):
        def forward(self, t, values, mask):
            return values[:, 0], torch.full_like(values[:, 0], -10.0)

    batch = spiral_like_batch()
    batch["mask"][:] = 1.0
    z = torch.randn(1, 6, len(batch["t_obs"]), 2)
    random_term = float(model.sleep_term(batch, z))
    model.encoder = FirstObservation()
    inverting_term = float(model.sleep_term(batch, z))
    assert inverting_term < random_term - 10.0


def test_training_loss_adds_the_terms_only_in_training():
    model = LatentODEModule(obs_dim=2, latent_dim=3, amortise_weight=1.0, amortise_steps=2,
                            sleep_weight=0.5, solver=RK4)
    batch = spiral_like_batch()
    loss, terms = model.training_loss(batch)
    assert {"amortisation", "sleep"} <= set(terms)
    loss.backward()
    model.eval()
    _, terms = model.loss_terms(batch, 1.0)
    assert not {"amortisation", "sleep"} & set(terms)
    off = LatentODEModule(obs_dim=2, latent_dim=3, solver=RK4)
    _, terms = off.training_loss(batch)
    assert not {"amortisation", "sleep"} & set(terms)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(amortise_weight=-1), "model.amortise_weight must be a number >= 0, got -1"),
        (dict(amortise_steps=0), "model.amortise_steps must be an integer >= 1, got 0"),
        (dict(sleep_weight=True), "model.sleep_weight must be a number >= 0, got True"),
        (dict(sleep_noise_std=0.0), "model.sleep_noise_std must be a number > 0, got 0.0"),
    ],
)
def test_bad_options_name_them(kwargs, message):
    with pytest.raises(ValueError) as info:
        LatentODEModule(obs_dim=2, **kwargs)
    assert message in str(info.value)


def test_options_reach_the_model_from_the_config(compose_cfg):
    from hydra.utils import instantiate

    cfg = compose_cfg(["experiment=spirals_chen2018", "model.sleep_weight=0.5",
                       "model.sleep_noise_std=0.3", "model.amortise_weight=2",
                       "model.amortise_steps=3", "model.consistency_to_encoder=false"])
    model = instantiate(cfg.model, obs_dim=2)
    assert (model.sleep_weight, model.sleep_noise_std) == (0.5, 0.3)
    assert (model.amortise_weight, model.amortise_steps) == (2.0, 3)
    assert model.consistency_to_encoder is False
    assert model.hparams.sleep_weight == 0.5 and model.hparams.amortise_steps == 3
    default = instantiate(compose_cfg(["experiment=spirals_chen2018"]).model, obs_dim=2)
    assert default.sleep_weight == 0.0 and default.amortise_weight == 0.0
    assert default.consistency_to_encoder is True


@pytest.mark.parametrize("to_encoder", [True, False])
def test_consistency_to_encoder_decides_whether_the_later_posterior_is_a_target(to_encoder):
    """With paths that carry no gradient, the consistency term reaches the encoder only through
    the later window's posterior: it does with consistency_to_encoder, it does not without."""
    torch.manual_seed(4)
    model = LatentODEModule(obs_dim=2, latent_dim=3, consistency_weight=1.0,
                            consistency_to_encoder=to_encoder, solver=RK4)
    batch = spiral_like_batch()
    mu, _ = model.encode(batch)
    z, _ = model.decode(mu.unsqueeze(0), batch["t_obs"])
    term = model.consistency_term(batch, z.detach().requires_grad_(True))
    term.backward()
    reached = any(p.grad is not None and p.grad.abs().sum() > 0
                  for p in model.encoder.parameters())
    assert reached is to_encoder


def test_consistency_to_encoder_must_be_a_bool():
    with pytest.raises(ValueError, match="model.consistency_to_encoder must be true or false, "
                                         "got 'no'"):
        LatentODEModule(obs_dim=2, consistency_to_encoder="no")


def _encoder_and_flow_grads(model, batch, seed=5):
    model.zero_grad()
    torch.manual_seed(seed)
    loss, _ = model.loss_terms(batch, 1.0)
    loss.backward()
    encoder = torch.cat([p.grad.flatten() for p in model.encoder.parameters()])
    flow = torch.cat([p.grad.flatten() for p in model.dynamics.parameters()])
    return encoder, flow


@pytest.mark.parametrize("to_encoder", [True, False])
def test_consistency_to_encoder_false_leaves_the_encoder_to_the_elbo(to_encoder):
    """With consistency_to_encoder=false the term changes the flow's gradient but not the
    encoder's: the encoder's gradient is the ELBO's alone (same draws of z0)."""
    torch.manual_seed(6)
    model = LatentODEModule(obs_dim=2, latent_dim=3, consistency_weight=1.0,
                            consistency_to_encoder=to_encoder, solver=RK4)
    batch = spiral_like_batch()
    encoder_with, flow_with = _encoder_and_flow_grads(model, batch)
    model.consistency_weight = 0.0
    encoder_without, flow_without = _encoder_and_flow_grads(model, batch)
    assert not torch.allclose(flow_with, flow_without)
    assert torch.allclose(encoder_with, encoder_without, atol=1e-6) is (not to_encoder)


def test_the_paper_protocol_metric_is_logged_without_refinement_and_picks_checkpoints(
    compose_cfg, tiny_train, tmp_path
):
    """Chen et al.'s experiment picks its checkpoint by the encoder's-mean error, which the
    model logs with or without refinement (without it, equal to extrap_rmse)."""
    cfg = compose_cfg(["experiment=spirals_chen2018"])
    assert cfg.callbacks.model_checkpoint.monitor == "val/extrap_rmse_encoder"
    assert compose_cfg(["experiment=spirals_chen2018_30"]).callbacks.model_checkpoint.monitor \
        == "val/extrap_rmse_encoder"
    overrides = ["model.refine_steps=0", "debug=fdr", "trainer.detect_anomaly=false",
                 "callbacks.model_checkpoint.monitor=val/extrap_rmse_encoder"]
    metrics = tiny_train(overrides, tmp_path)["metrics"]
    assert metrics["test/extrap_rmse_encoder"] == pytest.approx(metrics["test/extrap_rmse"])


def test_validation_can_skip_refinement_while_test_refines(compose_cfg, tiny_train, tmp_path):
    """model.refine_validation=false: validation scores from the encoder's mean (both val
    metrics equal, no refinement solves), test still from the refined mode."""
    assert compose_cfg(["experiment=spirals_chen2018_encoder", "init_from=x"]
                       ).model.refine_validation is False
    assert compose_cfg(["experiment=spirals_chen2018"]).model.refine_validation is True
    base = ["model.refine_steps=5", "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1"]
    quiet = tiny_train([*base, "model.refine_validation=false"], tmp_path / "quiet")["metrics"]
    full = tiny_train(base, tmp_path / "full")["metrics"]
    assert quiet["val/extrap_rmse"] == pytest.approx(quiet["val/extrap_rmse_encoder"])
    assert full["val/extrap_rmse"] != pytest.approx(full["val/extrap_rmse_encoder"])
    assert quiet["val/nfe"] < full["val/nfe"]  # no refinement solves in validation
    # the same training (refinement touches no weights and no random stream): same test
    for key in ("test/extrap_rmse", "test/extrap_rmse_encoder", "test/loss"):
        assert quiet[key] == pytest.approx(full[key], rel=1e-6)
    assert quiet["test/extrap_rmse"] != pytest.approx(quiet["test/extrap_rmse_encoder"])


def test_refine_validation_must_be_a_bool():
    with pytest.raises(ValueError, match="model.refine_validation must be true or false, got 1"):
        LatentODEModule(obs_dim=2, latent_dim=3, refine_validation=1, solver=RK4)
