"""Model components: the solver wrapper, evaluation counting, objectives, encoders, latent ODE."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import node
from models import LatentODEModule
from models.components import MLP, AutonomousField, ODESolver
from models.components.encoders import ODERNN, RecognitionRNN
from models.components.mlp import ACTIVATIONS, LinearField, LinearPlusMLP
from models.components.objectives import (
    gaussian_log_likelihood,
    kl_standard_normal,
    kl_weight,
    log_normal,
    variational_bound,
)
from models.latent_ode import hide_after_cut, hide_observations, shift_window


def linear_field(seed: int = 0) -> AutonomousField:
    torch.manual_seed(seed)
    return AutonomousField(MLP(3, 8, 3, 1, "tanh"))


# ------------------------------------------------------------------------------------ ODESolver
# The settings are node.SolverConfig's, validated by node with its own messages (each naming the
# setting); tests/node/test_solver_config.py covers them. Here: they reach the app's solver.
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(method="rk5"), "unknown method 'rk5'; expected one of"),
        (dict(gradient="backprop"), "gradient must be one of ('direct', 'adjoint', "),
        (dict(rtol=-1e-3), "rtol must be finite and >= 0"),
        (dict(method="rk4", step_size=0.0), "options['step_size'] must be > 0"),
        (dict(max_num_steps=0), "options['max_num_steps'] must be a positive int, got 0"),
        (dict(method="rk4", step_size=0.1, gradient="adjoint", seminorm=True),
         "seminorm=True needs an adaptive adjoint solve"),
        (dict(seminorm="yes", gradient="adjoint"), "seminorm must be True or False, got 'yes'"),
    ],
)
def test_solver_rejects_bad_settings_naming_them(kwargs, message):
    with pytest.raises((ValueError, TypeError)) as info:
        ODESolver(**kwargs)
    assert message in str(info.value)


def test_solver_from_config_names_unknown_keys():
    with pytest.raises(TypeError, match="rtoll"):
        ODESolver.from_config({"method": "dopri5", "rtoll": 1e-3})


def test_solver_takes_a_built_config():
    config = node.SolverConfig(method="tsit5", rtol=1e-4)
    solver = ODESolver(config)
    assert solver.config is config and ODESolver.from_config(config).config is config
    assert ODESolver(config.to_dict()).config == config


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "rk4"])
def test_solver_counts_match_node_statistics(method):
    func = linear_field()
    y0 = torch.randn(5, 3)
    t = torch.linspace(0, 2, 7)
    step = 0.1 if method == "rk4" else None
    solver = ODESolver(method=method, rtol=1e-5, atol=1e-6, step_size=step)
    ys = solver(func, y0, t)
    options = solver.options
    reference = node.solve(func, y0, t, method=method, rtol=1e-5, atol=1e-6, options=options)
    assert torch.allclose(ys, reference.ys)
    counts = solver.counts()
    assert counts.nfe == reference.stats["nfe"]
    assert counts.steps == reference.stats["n_steps"]
    assert counts.rejected == reference.stats["n_rejected"]


def test_solver_step_budget_raises_solver_error():
    solver = ODESolver(method="dopri5", rtol=1e-9, atol=1e-9, max_num_steps=2)
    with pytest.raises(node.SolverError, match="max_num_steps"):
        solver(linear_field(), torch.randn(4, 3), torch.linspace(0, 10, 5))


@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint"])
@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_gradient_modes_agree_with_direct(gradient, method):
    t = torch.linspace(0, 1.5, 4)
    y0 = torch.randn(6, 3)
    step = 0.05 if method == "rk4" else None
    grads = {}
    for mode in ("direct", gradient):
        func = linear_field(seed=1)
        x0 = y0.clone().requires_grad_(True)
        solver = ODESolver(method=method, rtol=1e-7, atol=1e-8, step_size=step, gradient=mode)
        loss = solver(func, x0, t).square().sum()
        forward = solver.counts()
        loss.backward()
        backward = solver.counts() - forward
        grads[mode] = [x0.grad] + [p.grad for p in func.parameters()]
        # evaluations in backward(): none for backprop, the recomputation or the adjoint solve
        assert (backward.nfe > 0) == (mode != "direct")
        # steps in backward(): only the adjoint runs a solver loop backwards
        assert (backward.steps > 0) == (mode == "adjoint")
    for a, b in zip(grads["direct"], grads[gradient], strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------- objectives
def test_kl_matches_monte_carlo_and_vanishes_at_prior():
    torch.manual_seed(0)
    mu, logvar = torch.randn(3, 4), torch.randn(3, 4) * 0.5
    z = mu + (0.5 * logvar).exp() * torch.randn(200_000, 3, 4)
    mc = (log_normal(z, mu, logvar) - log_normal(z, torch.zeros(4), torch.zeros(4))).mean(0)
    assert torch.allclose(kl_standard_normal(mu, logvar), mc, rtol=0.02, atol=0.02)
    assert kl_standard_normal(torch.zeros(2, 4), torch.zeros(2, 4)).abs().max() == 0


def test_gaussian_log_likelihood_counts_only_observed_values():
    torch.manual_seed(0)
    x, mean = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    mask = (torch.rand(2, 5, 3) > 0.5).float()
    expected = (torch.distributions.Normal(mean, 0.3).log_prob(x) * mask).sum(dim=(1, 2))
    got = gaussian_log_likelihood(x, mean, 0.3, mask)
    assert torch.allclose(got, expected, atol=1e-5)
    changed = x + 100 * (1 - mask)
    assert torch.allclose(gaussian_log_likelihood(changed, mean, 0.3, mask), got, atol=1e-4)


def test_bounds():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 2), torch.randn(5, 2)
    z0 = mu + (0.5 * logvar).exp() * torch.randn(8, 5, 2)
    log_px = torch.randn(8, 5) * 3
    elbo = variational_bound("elbo", log_px, z0, mu, logvar)
    assert torch.allclose(elbo, log_px.mean(0) - kl_standard_normal(mu, logvar))
    log_w = log_px + log_normal(z0, 0 * mu, 0 * mu) - log_normal(z0, mu, logvar)
    iwae = variational_bound("iwae", log_px, z0, mu, logvar)
    assert torch.allclose(iwae, torch.logsumexp(log_w, 0) - math.log(8))
    assert bool((iwae >= log_w.mean(0) - 1e-5).all())  # Jensen: tighter than the sampled ELBO
    one = variational_bound("iwae", log_px[:1], z0[:1], mu, logvar)
    assert torch.allclose(one, log_w[0])
    with pytest.raises(ValueError, match="objective must be one of"):
        variational_bound("vae", log_px, z0, mu, logvar)


def test_kl_annealing_schedule():
    assert kl_weight(0, 0) == 1.0 and kl_weight(50, 0) == 1.0
    assert kl_weight(0, 100) == 0.0 and kl_weight(25, 100) == 0.25 and kl_weight(400, 100) == 1.0


# ------------------------------------------------------------------------------------- encoders
@pytest.mark.parametrize("kind", ["rnn", "gru", "odernn"])
def test_encoders_ignore_unobserved_values(kind):
    torch.manual_seed(0)
    if kind in ("rnn", "gru"):
        encoder = RecognitionRNN(obs_dim=2, latent_dim=3, hidden_dim=6,
                                 cell="gru" if kind == "gru" else "elman")
    else:
        encoder = ODERNN(2, 3, 6, ODESolver(method="rk4", step_size=0.1))
    t = torch.linspace(0, 1, 9)
    values = torch.randn(4, 9, 2)
    mask = (torch.rand(4, 9, 1) > 0.4).float().expand(4, 9, 2).clone()
    mask[:, 0] = 1.0
    mu, logvar = encoder(t, values * mask, mask)
    assert mu.shape == logvar.shape == (4, 3)
    mu2, _ = encoder(t, values * mask + 5.0 * (1 - mask), mask)
    assert torch.allclose(mu, mu2, atol=1e-6)
    mu3, _ = encoder(t, values * mask + 0.5 * mask, mask)
    assert not torch.allclose(mu, mu3, atol=1e-3)


def test_encoder_shape_errors():
    encoder = RecognitionRNN(2, 3, 6)
    with pytest.raises(ValueError, match=r"t of shape \[T\] = \[5\], got \(4,\)"):
        encoder(torch.linspace(0, 1, 4), torch.zeros(2, 5, 2), torch.ones(2, 5, 2))


# ------------------------------------------------------------------------------------ latent ODE
def spiral_batch(batch=6, n_obs=7, n_extrap=4):
    torch.manual_seed(0)
    t = torch.linspace(0, 1, n_obs + n_extrap)
    values = torch.randn(batch, n_obs, 2)
    mask = torch.ones(batch, n_obs, 2)
    return {
        "t_obs": t[:n_obs],
        "t_extrap": t[n_obs:],
        "values": values,
        "mask": mask,
        "truth": values,
        "extrap": torch.randn(batch, n_extrap, 2),
    }


@pytest.mark.parametrize("encoder", ["rnn", "gru", "odernn"])
@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_latent_ode_loss_and_gradients_reach_every_part(encoder, objective):
    model = LatentODEModule(
        obs_dim=2,
        encoder=encoder,
        objective=objective,
        n_samples=3,
        encoder_hidden=6,
        solver=dict(method="rk4", step_size=0.1),
    )
    loss, terms = model.training_loss(spiral_batch())
    assert torch.isfinite(loss) and set(terms) >= {"elbo", "kl", "log_px", "kl_weight"}
    loss.backward()
    for name in ("encoder", "dynamics", "decoder"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name
    pred = model.predict(spiral_batch())
    assert pred["x"].shape == (6, 11, 2) and pred["z"].shape == (6, 11, 4)


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_latent_ode_decoder_depth(layers):
    """``decoder_layers`` hidden layers; 0 is an affine map, whose decoded means are affine in
    the latent state."""
    torch.manual_seed(0)
    model = LatentODEModule(obs_dim=2, decoder_layers=layers, decoder_hidden=5)
    linears = [m for m in model.decoder.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == layers + 1
    z = 10 * torch.randn(4)
    z = torch.stack([z, -z])  # far apart: a ReLU network bends between them
    mid = model.decoder(0.5 * (z[0] + z[1]))
    affine = torch.allclose(mid, 0.5 * (model.decoder(z[0]) + model.decoder(z[1])), atol=1e-6)
    assert affine == (layers == 0)


def test_linear_plus_mlp_starts_as_its_mlp_and_keeps_its_linear_part_far_out():
    """``A y + mlp(y)`` with ``A = 0`` at initialisation; with a tanh MLP, far from the origin
    the field is ``A y`` plus a term that no longer grows with ``|y|``."""
    torch.manual_seed(0)
    mlp = MLP(3, 8, 3, 2, "tanh")
    field = LinearPlusMLP(mlp)
    y = torch.randn(5, 3)
    torch.testing.assert_close(field(y), mlp(y))
    with torch.no_grad():
        field.linear.weight.copy_(torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0, 0, 0.5]]))
    far = 1e4 * y
    torch.testing.assert_close(field(far), far @ field.linear.weight.T + mlp(far))
    assert (field(far) - mlp(far)).abs().max() > 1e3
    torch.testing.assert_close(mlp(far), mlp(2 * far))  # saturated: depends on direction only


@pytest.mark.parametrize(("activation", "linear"), [("elu", False), ("tanh", True)])
def test_latent_ode_dynamics_options(activation, linear):
    model = LatentODEModule(obs_dim=2, dynamics_activation=activation, dynamics_linear=linear)
    net = model.dynamics.net
    assert isinstance(net, LinearPlusMLP) == linear
    mlp = net.mlp if linear else net
    assert isinstance(mlp[1], ACTIVATIONS[activation])


def test_linear_latent_ode_decodes_archimedean_spirals_of_both_directions_exactly():
    """``dynamics_layers=0``: the field is ``A z`` alone (zero at initialisation). With 8
    latent dimensions, ``A`` holding a double pair of eigenvalues ``+-i omega`` per turning
    direction (a real Jordan block: ``d/dt (p, q) = (J p + q, J q)``, ``J`` the rotation
    generator) and an affine decoder, the decoded paths include
    ``r(t) (cos, +-sin)(theta_0 + omega t)`` with ``r = r_0 + b omega t``, for any start."""
    model = LatentODEModule(obs_dim=2, latent_dim=8, dynamics_layers=0, dynamics_linear=True,
                            decoder_layers=0, solver=dict(method="dopri5", rtol=1e-10,
                                                          atol=1e-10)).double()
    # float64: at these tolerances float32 rounding would depend on the BLAS kernel
    field = model.dynamics.net
    assert isinstance(field, LinearField) and not field.weight.any()
    omega, b = 0.7, 0.3
    rotation = torch.tensor([[0.0, -omega], [omega, 0.0]], dtype=torch.float64)
    block = torch.zeros(4, 4, dtype=torch.float64)
    block[:2, :2] = block[2:, 2:] = rotation
    block[:2, 2:] = torch.eye(2)
    with torch.no_grad():
        field.weight.zero_()
        field.weight[:4, :4] = block        # counter-clockwise: p = x, q = b omega (cos, sin)
        field.weight[4:, 4:] = block        # clockwise, decoded with the sign of y flipped
        model.decoder.weight.zero_()
        model.decoder.bias.zero_()
        model.decoder.weight[0, 0] = model.decoder.weight[0, 4] = 1.0
        model.decoder.weight[1, 1] = 1.0
        model.decoder.weight[1, 5] = -1.0
    t = torch.linspace(0.0, 12.0, 40, dtype=torch.float64)
    theta0 = torch.tensor([0.4, 2.0], dtype=torch.float64)
    r0 = torch.tensor([1.5, 3.0], dtype=torch.float64)
    z0 = torch.zeros(2, 8, dtype=torch.float64)
    ccw = torch.stack([torch.cos(theta0), torch.sin(theta0)], -1)
    z0[0, :2], z0[0, 2:4] = r0[0] * ccw[0], b * omega * ccw[0]
    z0[1, 4:6], z0[1, 6:] = r0[1] * ccw[1], b * omega * ccw[1]
    with torch.no_grad():
        _, x = model.decode(z0, t)
    angle = theta0[:, None] + omega * t
    radius = r0[:, None] + b * omega * t
    sign = torch.tensor([1.0, -1.0], dtype=torch.float64)[:, None]
    spiral = torch.stack([radius * torch.cos(angle), sign * radius * torch.sin(angle)], -1)
    torch.testing.assert_close(x, spiral, atol=1e-7, rtol=0)


def test_hide_observations_keeps_at_least_one_time_per_series():
    torch.manual_seed(0)
    mask = torch.zeros(50, 20, 2)
    mask[:, ::2] = 1.0
    mask[0] = 0.0  # a series with nothing observed stays empty
    hidden = hide_observations(mask, 0.6)
    seen = hidden.amax(dim=-1) > 0
    assert bool((hidden <= mask).all())  # only hides, never reveals
    assert seen[0].sum() == 0 and bool((seen[1:].sum(dim=1) >= 1).all())
    assert abs(seen[1:].float().sum() / (mask[1:].amax(-1) > 0).sum() - 0.4) < 0.05
    assert bool((hide_observations(mask, 0.999).amax(-1) > 0)[1:].sum(1).eq(1).all())


def test_encoder_dropout_hides_from_the_encoder_only():
    model = LatentODEModule(obs_dim=2, encoder_dropout=0.5, solver=dict(method="rk4",
                                                                         step_size=0.25))
    seen = []
    model.encoder.register_forward_hook(lambda m, args, out: seen.append(args[2].clone()))
    batch = spiral_batch()
    model.training_loss(batch)
    assert 0 < seen[-1].sum() < batch["mask"].sum()
    model.eval()
    model.predict(batch)  # evaluation sees every observation
    assert torch.equal(seen[-1], batch["mask"])


def test_hide_after_cut_hides_a_random_suffix():
    torch.manual_seed(0)
    mask = torch.ones(400, 20, 2)
    mask[0] = 0.0
    mask[0, 15:] = 1.0  # first observation after every possible cut: still kept
    hidden = hide_after_cut(mask, 0.5)
    seen = (hidden.amax(dim=-1) > 0).float()
    visible = seen.sum(dim=1)
    # a prefix: once hidden, hidden to the end
    assert bool((seen[1:, 1:] <= seen[1:, :-1]).all())
    assert bool((visible[1:] >= 10).all()) and bool((visible[1:] <= 20).all())
    assert abs(float(visible[1:].mean()) - 15.0) < 0.6  # cut uniform over the last half
    assert seen[0, 15] == 1 and seen[0].sum() == 1


def test_consistency_term_ties_the_flow_to_later_windows():
    """The term is -log q(z(t_k) | window from t_k): zero gradient would mean it is not wired
    to the dynamics; it is left out of evaluation losses."""
    torch.manual_seed(0)
    model = LatentODEModule(obs_dim=2, consistency_weight=1.0,
                            solver=dict(method="rk4", step_size=0.1))
    batch = spiral_batch()
    mu, logvar = model.encode(batch)
    z, _ = model.decode(mu.unsqueeze(0), batch["t_obs"])
    term = model.consistency_term(batch, z)
    term.backward()
    assert torch.isfinite(term)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.dynamics.parameters())
    _, terms = model.training_loss(batch)
    assert "consistency" in terms
    model.eval()
    _, terms = model.loss_terms(batch, 1.0)
    assert "consistency" not in terms


def test_posterior_mode_improves_the_map_objective_without_touching_parameters():
    """Refinement climbs log p(x | z0) + log p(z0) from the encoder's mean, under Lightning's
    inference mode too, and leaves the model's parameters without gradients."""
    torch.manual_seed(0)
    model = LatentODEModule(obs_dim=2, refine_steps=30, refine_lr=0.05,
                            solver=dict(method="rk4", step_size=0.1))
    model.eval()

    def log_joint(batch, z0):
        _, x = model.decode(z0, batch["t_obs"])
        prior = log_normal(z0, torch.zeros_like(z0), torch.zeros_like(z0))
        return gaussian_log_likelihood(batch["values"], x, model.obs_std, batch["mask"]) + prior

    with torch.inference_mode():
        batch = spiral_batch()
        pred = model.predict(batch)
        mu = pred["mu"]
        z0 = pred["z0"]
    assert not torch.equal(z0, mu)
    with torch.no_grad():
        assert bool((log_joint(batch, z0) > log_joint(batch, mu)).all())
        _, x = model.decode(z0, pred["t"])
    torch.testing.assert_close(pred["x"], x)
    assert all(p.grad is None for p in model.parameters())
    model.refine_steps = 0
    assert torch.equal(model.predict(batch)["z0"], model.predict(batch)["mu"])


def test_shift_window_moves_the_time_origin():
    torch.manual_seed(0)
    batch = spiral_batch()
    shifts = set()
    for _ in range(50):
        out = shift_window(batch, 0.5)
        k = batch["t_obs"].shape[0] - out["t_obs"].shape[0]
        shifts.add(k)
        assert out["t_obs"][0] == 0
        torch.testing.assert_close(out["t_obs"], batch["t_obs"][k:] - batch["t_obs"][k])
        assert torch.equal(out["values"], batch["values"][:, k:])
        assert torch.equal(out["mask"], batch["mask"][:, k:])
    n = batch["t_obs"].shape[0]
    assert shifts == set(range(int(0.5 * (n - 1)) + 1))


def test_latent_ode_counts_forward_evaluations():
    model = LatentODEModule(obs_dim=2, solver=dict(method="rk4", step_size=0.25))
    model.training_loss(spiral_batch())
    # rk4 on [0, 0.6] with step 0.25: 3 grid steps of 4 stages
    assert model.evaluation_counts().nfe == 12 and model.evaluation_counts().steps == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(encoder="lstm"), "model.encoder must be one of ['rnn', 'gru', 'odernn'], got 'lstm'"),
        (dict(objective="vae"), "model.objective must be one of ['elbo', 'iwae'], got 'vae'"),
        (dict(n_samples=0), "model.n_samples must be an integer >= 1, got 0"),
        (dict(obs_std=0), "model.obs_std must be a number > 0, got 0"),
        (dict(solver={"method": "rk23"}), "unknown method 'rk23'"),
        (dict(encoder_dropout=1.0), "model.encoder_dropout must be in [0, 1), got 1.0"),
        (dict(window_shift=-0.1), "model.window_shift must be in [0, 1), got -0.1"),
        (dict(encoder_horizon=True), "model.encoder_horizon must be in [0, 1), got True"),
        (dict(consistency_weight=-1), "model.consistency_weight must be a number >= 0, got -1"),
        (dict(decoder_layers=-1), "model.decoder_layers must be an integer >= 0, got -1"),
        (
            dict(dynamics_activation="swish"),
            "model.dynamics_activation must be one of ['tanh', 'relu', 'elu', 'softplus', "
            "'gelu'], got 'swish'",
        ),
        (dict(dynamics_linear="yes"), "model.dynamics_linear must be true or false, got 'yes'"),
        (dict(dynamics_layers=-1, dynamics_linear=True),
         "model.dynamics_layers must be an integer >= 0, got -1"),
        (dict(dynamics_layers=0), "model.dynamics_layers=0 (no MLP) needs "
                                  "model.dynamics_linear=true"),
        (dict(refine_steps=-1), "model.refine_steps must be an integer >= 0, got -1"),
        (dict(refine_lr=0.0), "model.refine_lr must be a number > 0, got 0.0"),
        (dict(scheduler="step"), "model.scheduler must be one of ['none', 'multistep', 'cosine']"),
    ],
)
def test_latent_ode_bad_hyperparameters_name_them(kwargs, message):
    with pytest.raises(ValueError) as info:
        LatentODEModule(obs_dim=2, **kwargs)
    assert message in str(info.value)


def test_mlp_rejects_bad_shapes():
    with pytest.raises(ValueError, match="MLP hidden_dim must be an integer >= 1, got 0"):
        MLP(2, 0, 2)
    with pytest.raises(ValueError, match="MLP activation must be one of"):
        MLP(2, 3, 2, activation="swish")
    with pytest.raises(ValueError, match="got in_dim 2 and out_dim 3"):
        LinearPlusMLP(MLP(2, 4, 3))
    assert isinstance(AutonomousField(nn.Identity())(torch.zeros(()), torch.ones(2)), torch.Tensor)


def test_adjoint_seminorm_gradients():
    t = torch.linspace(0, 1.5, 4)
    y0 = torch.randn(6, 3)
    grads = []
    for seminorm in (False, True):
        func = linear_field(seed=2)
        solver = ODESolver(rtol=1e-7, atol=1e-8, gradient="adjoint", seminorm=seminorm)
        loss = solver(func, y0, t).square().sum()
        before = solver.counts()
        loss.backward()
        assert (solver.counts() - before).steps > 0  # backward steps counted via callbacks
        grads.append([p.grad for p in func.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
