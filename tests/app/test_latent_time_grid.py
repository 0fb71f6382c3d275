"""The latent ODE's ``time_grid`` option (issue 17): solving over the batch's shared grid
(``union``) or over each series' own observation times (``per_sample``)."""

from __future__ import annotations

import pytest
import torch

import node
from models import LatentODEModule
from models.components.counting import EvaluationCounter
from models.components.encoders import ODERNN
from models.components.ode_solver import ODESolver
from models.components.time_grids import grid_of, sample_grid

TIGHT = dict(method="dopri5", rtol=1e-7, atol=1e-9)
FDR = ["debug=fdr", "trainer.detect_anomaly=false"]


def irregular_batch(batch=5, steps=12, seed=0):
    """Series on one irregular grid, each observing its own subset (at least one time)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.cat([torch.zeros(1), torch.rand(steps - 1, generator=g).sort().values * 3])
    mask = (torch.rand(batch, steps, 1, generator=g) < 0.4).float()
    mask[torch.arange(batch), torch.randint(0, steps, (batch,), generator=g)] = 1.0
    mask[0] = 0.0
    mask[0, [3, 4]] = 1.0  # series 0 ends early: its grid must be padded after its end
    values = torch.sin(2 * t + torch.rand(batch, 1, generator=g) * 6).unsqueeze(-1) * mask
    return {"t_obs": t, "values": values, "mask": mask}


def test_sample_grid_keeps_each_series_times_in_order():
    batch = irregular_batch()
    observed = batch["mask"][..., 0] > 0
    grid = sample_grid(batch["t_obs"], batch["mask"])
    n = int((observed | (torch.arange(12) == 0)).sum(dim=1).max())
    assert grid.index.shape == (5, n)
    assert bool((grid.index[:, 0] == 0).all())
    assert bool((grid.index.diff(dim=1) > 0).all())  # strictly increasing rows
    assert bool((grid.times.diff(dim=1) > 0).all())
    for b in range(5):
        assert set(torch.nonzero(observed[b]).flatten().tolist()) <= set(grid.index[b].tolist())
    # series 0 needs {0, 3, 4}: padded inside its span first ({1, 2}), then with the nearest
    # times after its end
    assert grid.index[0].tolist() == list(range(n))
    values, mask = grid.batch(batch)
    assert mask.shape == (5, n, 1)
    assert float(mask.sum()) == float(batch["mask"].sum())  # padding is unobserved
    assert torch.equal(values, batch["values"].gather(1, grid.index.unsqueeze(-1)))


def test_grid_of_pads_before_the_last_needed_time_first():
    t = torch.arange(6.0)
    needed = torch.tensor([[1, 0, 0, 0, 0, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    assert grid_of(t, needed).index.tolist() == [[0, 1, 2, 5], [0, 1, 2, 3]]


@pytest.mark.parametrize("encoder", ["rnn", "odernn"])
def test_per_sample_and_union_give_the_same_predictions_and_loss(encoder):
    """The same model (same weights) gives the same latent states and decoded means at each
    series' observation times, and the same loss, either way (to the solver's tolerance)."""
    torch.manual_seed(0)
    union = LatentODEModule(obs_dim=1, latent_dim=3, encoder=encoder, encoder_hidden=6,
                            dynamics_hidden=8, decoder_hidden=8, n_samples=2, solver=TIGHT)
    per_sample = LatentODEModule(obs_dim=1, latent_dim=3, encoder=encoder, encoder_hidden=6,
                                 dynamics_hidden=8, decoder_hidden=8, n_samples=2, solver=TIGHT,
                                 time_grid="per_sample")
    per_sample.load_state_dict(union.state_dict())
    batch = irregular_batch()
    z0 = torch.randn(2, 5, 3)  # [samples, series, latent]
    grid = sample_grid(batch["t_obs"], batch["mask"])
    with torch.no_grad():
        z_union, x_union = union.decode(z0, batch["t_obs"])
        t, _, _ = per_sample.likelihood_grid(batch)
        assert torch.equal(t, grid.times)
        z_own, x_own = per_sample.decode(z0, t)
    index = grid.index.expand(2, -1, -1).unsqueeze(-1)
    torch.testing.assert_close(z_own, z_union.gather(2, index.expand(-1, -1, -1, 3)),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x_own, x_union.gather(2, index), rtol=1e-4, atol=1e-5)
    mu_union, _ = union.encode(batch)
    mu_own, _ = per_sample.encode(batch)
    torch.testing.assert_close(mu_own, mu_union, rtol=1e-4, atol=1e-5)
    torch.manual_seed(1)
    loss_union, _ = union.loss_terms(batch, beta=1.0)
    torch.manual_seed(1)
    loss_own, _ = per_sample.loss_terms(batch, beta=1.0)
    torch.testing.assert_close(loss_own, loss_union, rtol=1e-4, atol=1e-3)
    loss_own.backward()
    assert all(torch.isfinite(p.grad).all() for p in per_sample.parameters()
               if p.grad is not None)


def test_ode_rnn_per_sample_solves_fewer_segments():
    """Per sample, the encoder solves between each series' own times: as many solves as the
    longest series has observations, not one per time any series observed."""
    batch = irregular_batch()
    observed = batch["mask"][..., 0] > 0
    solver = ODESolver(method="dopri5")
    encoder = ODERNN(1, 3, 6, solver, per_sample=True)
    calls = []
    solver.register_forward_hook(lambda module, args, out: calls.append(args[2].shape))
    encoder(batch["t_obs"], batch["values"], batch["mask"])
    needed = observed.clone()
    needed[:, 0] = True
    needed[:, int(torch.nonzero(observed.any(dim=0)).max())] = True
    assert len(calls) == int(needed.sum(dim=1).max()) - 1
    assert all(shape == (5, 2) for shape in calls)


def test_counter_counts_a_per_sample_solve_by_its_batched_calls():
    counter = EvaluationCounter()
    solution = node.solve(lambda t, y: -y, torch.ones(3, 2),
                          torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]]))
    counter.track(solution.stats)
    counts = counter.snapshot()
    assert counts.nfe == solution.stats["n_calls"]
    assert counts.steps == solution.stats["n_iterations"]
    assert counts.nfe >= int(solution.stats["nfe"].max())


@pytest.mark.parametrize("gradient", ["checkpoint", "adjoint"])
def test_counter_counts_a_per_sample_backward_pass(gradient):
    counter = EvaluationCounter()

    class Field(torch.nn.Module):  # a module, as the models' fields are
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)

        def forward(self, t, y):
            return self.linear(y)

    y0 = torch.ones(3, 2, requires_grad=True)
    solution = node.solve(Field(), y0, torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]]),
                          gradient=gradient)
    counter.track(solution.stats, backward=True)
    before = counter.snapshot()
    solution.ys[-1].sum().backward()
    after = counter.snapshot()
    assert after.nfe - before.nfe == solution.stats["n_calls_backward"] > 0
    if gradient == "adjoint":
        assert after.steps - before.steps == solution.stats["n_iterations_backward"] > 0


def test_time_grid_is_validated_and_saved():
    with pytest.raises(ValueError, match=r"model.time_grid must be one of \['union', "
                                         r"'per_sample'\], got 'shared'"):
        LatentODEModule(obs_dim=1, time_grid="shared")
    with pytest.raises(ValueError, match="time_grid='per_sample'.*explicit Runge-Kutta"):
        LatentODEModule(obs_dim=1, time_grid="per_sample", solver=dict(method="kvaerno5"))
    # fixed grids and the checkpoint and adjoint modes solve per sample
    LatentODEModule(obs_dim=1, time_grid="per_sample", solver=dict(method="rk4", step_size=0.1))
    LatentODEModule(obs_dim=1, time_grid="per_sample", solver=dict(gradient="adjoint"))
    with pytest.raises(ValueError, match="time_grid='per_sample'.*consistency_weight"):
        LatentODEModule(obs_dim=1, time_grid="per_sample", consistency_weight=1.0)
    model = LatentODEModule(obs_dim=1, time_grid="per_sample")
    assert model.hparams["time_grid"] == "per_sample"
    assert LatentODEModule(obs_dim=1).hparams["time_grid"] == "union"


@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint"])
def test_per_sample_with_other_gradient_modes_fails_clearly_unless_node_supports_them(gradient):
    """Whatever node's per-sample solves support decides: a mode they reject gives an error
    naming the option at model construction, not a failure in the middle of training."""
    try:
        node.solve(lambda t, y: -y, torch.ones(2, 1, requires_grad=True),
                   torch.tensor([[0.0, 1.0], [0.0, 2.0]]), gradient=gradient,
                   **({"adjoint_params": ()} if gradient == "adjoint" else {}))
    except ValueError:
        with pytest.raises(ValueError, match=f"time_grid='per_sample'.*gradient='{gradient}'"):
            LatentODEModule(obs_dim=1, time_grid="per_sample", solver=dict(gradient=gradient))
    else:
        LatentODEModule(obs_dim=1, time_grid="per_sample", solver=dict(gradient=gradient))


def test_training_smoke_run_with_per_sample_time_grids(tiny_train, tmp_path):
    overrides = [
        "datamodule=periodic",
        "model=latent_ode_odernn",
        "model.time_grid=per_sample",
        "model.objective=iwae",
        "model.n_samples=2",
        "model.refine_steps=2",
        "datamodule.n_series=30",
        "datamodule.n_points=14",
        "datamodule.n_extrap=4",
        "solver=dopri5",
        *FDR,
    ]
    metrics = tiny_train(overrides, tmp_path, spirals=False)["metrics"]
    assert torch.isfinite(torch.tensor(metrics["test/loss"]))
    assert torch.isfinite(torch.tensor(metrics["test/extrap_rmse"]))
    assert metrics["nfe_forward_per_step"] > 0
