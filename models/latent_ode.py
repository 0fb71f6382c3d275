r"""The latent ODE of Chen et al. (2018) and Rubanova et al. (2019) as a LightningModule.

Generative model: :math:`z_0 \sim \mathcal N(0, I)`, :math:`z_t` solves
:math:`dz/dt = f_\theta(z)` (an MLP), and :math:`x_{t_i} \sim \mathcal N(\mathrm{dec}(z_{t_i}),
s^2 I)` with an MLP decoder and a fixed observation noise :math:`s` (``obs_std``). Inference:
an encoder (``rnn``: recognition RNN; ``odernn``: ODE-RNN; see
:mod:`models.components.encoders`) gives :math:`q(z_0 \mid x)`. Training maximises the ELBO
(or the IWAE bound) of :mod:`models.components.objectives`; the loss is the negative bound per
series, averaged over the batch.

Evaluation (validation and test) decodes an initial state over the observation window and the
extrapolation window: the encoder's posterior mean :math:`\mu` (Chen et al.'s protocol) or, with
``refine_steps > 0``, the mode of the true posterior :math:`p(z_0 \mid x)` reached by that many
Adam steps from :math:`\mu` (see :meth:`LatentODEModule.posterior_mode`), and logs

* ``interp_mse``: mean squared error against the noiseless series at every window time,
  observed or not (interpolation);
* ``extrap_rmse``: root mean squared error against the noiseless series at the extrapolation
  times (the metric of Chen et al.'s Table 2); ``extrap_rmse_encoder``, the same error from
  :math:`\mu` (Chen et al.'s protocol; equal to ``extrap_rmse`` without refinement);
* ``elbo`` (per series, :math:`\beta = 1`), ``kl``, ``loss`` and ``nfe`` (forward evaluations
  per batch).

Two training options close the amortisation gap (the distance between the encoder's mean and
the posterior mode on series the encoder has not seen) in the model rather than at test time:
``amortise_weight`` pulls :math:`\mu` toward a few refinement steps from itself on the training
series, and ``sleep_weight`` trains the encoder on series the model generates itself, fresh noise
and fresh observation times at every step (see :meth:`LatentODEModule.amortisation_term` and
:meth:`LatentODEModule.sleep_term`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torchmetrics import MeanSquaredError

import node
from models.base import ODEModule
from models.components.encoders import ENCODERS, build_encoder
from models.components.mlp import (
    ACTIVATIONS,
    MLP,
    AutonomousField,
    LinearField,
    LinearPlusMLP,
)
from models.components.objectives import (
    OBJECTIVES,
    gaussian_log_likelihood,
    kl_standard_normal,
    kl_weight,
    log_normal,
    variational_bound,
)
from models.components.ode_solver import ODESolver, solver_config
from models.components.schedules import check_scheduler
from models.components.time_grids import check_time_grid, sample_grid
from models.components.warm_start import check_parts, freeze_except, load_parts
from models.latent_ode_plots import plot_latents, plot_prior_samples, plot_reconstructions

log = logging.getLogger(__name__)
PARTS = ("encoder", "dynamics", "decoder")  # the submodules init_from and trainable name


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"model.{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_fraction(name: str, value) -> float:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not 0.0 <= value < 1.0:
        raise ValueError(f"model.{name} must be in [0, 1), got {value!r}")
    return float(value)


def _check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"model.{name} must be a number > 0, got {value!r}")
    return float(value)


def _check_nonnegative(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"model.{name} must be a number >= 0, got {value!r}")
    return float(value)


def hide_observations(mask: torch.Tensor, fraction: float) -> torch.Tensor:
    """``mask`` (``[B, T, D]``) with each series' observed times hidden with probability
    ``fraction``; a series keeps at least its one observed time that drew the largest number."""
    observed = mask.amax(dim=-1) > 0
    draw = torch.rand(observed.shape, device=mask.device)
    keep = observed & (draw >= fraction)
    best = torch.where(observed, draw, -1.0).argmax(dim=1, keepdim=True)
    keep = keep.scatter(1, best, observed.gather(1, best))
    return mask * keep.unsqueeze(-1).to(mask.dtype)


def hide_after_cut(mask: torch.Tensor, fraction: float) -> torch.Tensor:
    """``mask`` (``[B, T, D]``) with each series' observations after a random cut hidden; the
    cut is uniform over the last ``fraction`` of the window, and a series keeps at least its
    first observation."""
    batch, steps = mask.shape[:2]
    cut = steps - torch.rand(batch, 1, device=mask.device) * (fraction * steps)
    keep = torch.arange(steps, device=mask.device).unsqueeze(0) < cut
    observed = mask.amax(dim=-1) > 0
    first = observed.float().argmax(dim=1, keepdim=True)
    keep = keep.scatter(1, first, True)
    return mask * keep.unsqueeze(-1).to(mask.dtype)


def shift_window(batch: Mapping[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """The batch's observation window started at a random grid index ``k`` in
    ``[0, fraction * (T - 1)]`` (one ``k`` for the whole batch, so the time grid stays shared),
    with times measured from ``t_obs[k]``."""
    k = int(torch.randint(0, int(fraction * (batch["t_obs"].shape[0] - 1)) + 1, ()).item())
    return window_from(batch, k)


def window_from(batch: Mapping[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """The batch's observations from grid index ``k`` on, times measured from ``t_obs[k]``."""
    if k == 0:
        return dict(batch)
    t = batch["t_obs"]
    return {
        **batch,
        "t_obs": t[k:] - t[k],
        "values": batch["values"][:, k:],
        "mask": batch["mask"][:, k:],
    }


class LatentODEModule(ODEModule):
    r"""Latent ODE (module docstring).

    Args:
        obs_dim: dimension of an observation (given by the data module).
        latent_dim: dimension of :math:`z` (4 in Chen et al.).
        encoder: ``"rnn"`` or ``"odernn"``.
        encoder_hidden: hidden units of the encoder (25 in Chen et al.).
        dynamics_hidden, dynamics_layers: width and depth of the latent dynamics MLP;
            ``dynamics_layers=0`` (with ``dynamics_linear``) drops the MLP: a linear latent ODE,
            :math:`f(z) = A z` (:class:`~models.components.mlp.LinearField`).
        dynamics_activation: the dynamics MLP's activation (``elu``, as Chen et al.; ``tanh``,
            ``relu``, ``softplus``).
        dynamics_linear: add a learned linear term, :math:`f(z) = A z + \mathrm{mlp}(z)` (see
            :class:`~models.components.mlp.LinearPlusMLP`): the linear part carries rotation
            and growth unchanged to latent states beyond those the training windows reach,
            where extrapolation goes.
        decoder_hidden, decoder_layers: width and number of hidden layers of the decoder MLP
            (ReLU); ``decoder_layers=0`` makes the decoder affine, so the latent state carries
            the observation's coordinates and the flow must model their dynamics itself.
        obs_std: standard deviation :math:`s` of the observation model.
        objective: ``"elbo"`` or ``"iwae"``.
        n_samples: posterior samples per series in training (``K``).
        kl_anneal_steps: training steps over which the KL weight rises from 0 to 1 (0: off).
        encoder_dropout: in training, the fraction of each series' observed times hidden from the
            encoder (at random, every step; at least one time stays visible) while the
            likelihood still scores every observation. Any :math:`q` gives a valid ELBO, and
            this one must predict the points it did not see: a regulariser against an encoder
            that memorises its training series (0: off; evaluation always sees everything).
        encoder_horizon: in training, the encoder sees each series only up to a random cut in
            the last ``encoder_horizon`` fraction of the window (uniform, per series), while the
            likelihood scores every observation: the model learns to predict beyond what it has
            seen, as extrapolation asks of it (the "extrapolation" training of Rubanova et al.,
            2019, with a random cut). Still a valid ELBO. 0: off.
        consistency_weight, consistency_shift: weight of a latent-consistency term (0: off):
            the posterior of the window started ``k`` grid points later (``k`` random, up to
            ``consistency_shift`` of the window) must explain the latent state the ODE reaches
            from :math:`z_0` at ``t_k``: :math:`-\log q(z_{t_k} \mid x_{t \ge t_k})`. For
            time-invariant data, so the flow keeps latent states where the encoder puts the
            starts of other series, which is what extrapolation beyond the window relies on.
        consistency_to_encoder: whether the consistency term's gradient reaches the encoder
            (true) or the flow only (false: the later window's posterior is a fixed target and
            the path to :math:`t_k` starts from :math:`z_0` without gradient, solved alongside
            the ELBO's path). The term's gradient outweighs the ELBO's in the encoder, and
            pulling posterior means toward states the flow reaches moves them off their
            posterior modes wherever the flow is off: the amortisation gap.
        window_shift: in training, each step starts the observation window at a random grid
            index up to this fraction of the window, with the time origin moved there (0: off).
            For time-invariant data a later start is just another series; training the encoder
            on them makes the latent state reached at time ``t`` a valid initial state, which is
            what extrapolation relies on. Assumes the data's dynamics do not depend on ``t``.
        refine_steps, refine_lr: evaluation and plots start the latent path from the mode of
            :math:`p(z_0 \mid x)`, found by ``refine_steps`` Adam steps at rate ``refine_lr``
            from the encoder's mean (0: use the mean, as Chen et al.). An amortised encoder
            leaves an inference gap on unseen series; closing it per series needs no training
            and sees only the observed points.
        refine_validation: whether validation refines too (``val/extrap_rmse`` from the mode;
            false: from the encoder's mean, like ``val/extrap_rmse_encoder``). Refining costs
            ``refine_steps`` solves of the validation set per check; test and plots refine
            either way. Off in the encoder phase of a two-phase recipe, whose frozen flow keeps
            the mode where it is and whose checkpoints are picked from the mean.
        amortise_weight, amortise_steps: amortised refinement (0: off). In training, the
            encoder's mean :math:`\mu` is refined by ``amortise_steps`` Adam steps at rate
            ``refine_lr`` on the observed points (as ``refine_steps`` does at test time) to
            :math:`\tilde z` (no gradient), and the loss gets ``amortise_weight``
            :math:`\cdot \tfrac12 \lVert \mu - \tilde z \rVert^2`: its gradient moves
            :math:`\mu` the way refinement would, so the encoder learns to output the mode
            itself. Costs ``amortise_steps`` forward and backward solves per training step.
        sleep_weight, sleep_noise_std: encoder training on the model's own series (0: off;
            the sleep phase of wake-sleep, Hinton et al. 1995). Each training step takes, per
            series, the latent state :math:`z_s` its path reaches at a random window time (no
            gradient; for time-invariant data a valid start), decodes a window from it, adds
            Gaussian noise of standard deviation ``sleep_noise_std`` (default ``obs_std``) and
            observes it at the times of another series of the batch; the loss gets
            ``sleep_weight`` :math:`\cdot (-\log q(z_s \mid x_s))`. Only the encoder gets
            its gradient: unlike the 800 fixed training series, these are new every step, so the
            encoder cannot memorise their noise. Costs one forward solve and one encoder pass.
        init_from, init_parts: warm start (``None``: off): when fitting starts, the weights
            of the parts ``init_parts`` (of ``encoder``, ``dynamics``, ``decoder``) are copied
            from this checkpoint of a ``LatentODEModule`` (names and shapes must match; the
            other parts keep their fresh initialisation). Resuming a run (``ckpt_path``) then
            restores its own weights over them. See :mod:`models.components.warm_start`.
        trainable: the parts that train (``None``: all); the others are frozen (no gradient,
            not in the optimiser). With ``init_from`` this makes a two-phase recipe: train the
            whole model, then a new encoder for its flow and decoder
            (``experiment=spirals_chen2018_encoder``).
        lr, weight_decay: Adam's settings.
        scheduler, lr_milestones, lr_gamma: the learning-rate schedule (``none``, ``multistep``
            or ``cosine``; see :mod:`models.components.schedules`).
        solver: the solve's settings, a :class:`node.SolverConfig` (or a mapping of its
            fields); the ODE-RNN encoder uses the same solver.
        time_grid: the output times of the solves the likelihood needs (training's bound,
            evaluation's ``loss``/``elbo``, ``refine_steps``/``amortise_weight``'s refinement):
            ``union``, the batch's shared grid for every series (one joint solve); or
            ``per_sample``, each series' own observed times, solved per sample (each series
            with its own steps and end; see :mod:`models.components.time_grids`). The ODE-RNN
            encoder then also solves between each series' own observation times. Predictions
            (metrics, plots) need every series at every time and always use the shared grid.
            ``per_sample`` needs a solver config that node can solve per sample (an explicit
            adaptive method; ``gradient="direct"`` so far) and no ``consistency_weight``.
    """

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int = 4,
        encoder: str = "rnn",
        encoder_hidden: int = 25,
        dynamics_hidden: int = 20,
        dynamics_layers: int = 2,
        dynamics_activation: str = "elu",
        dynamics_linear: bool = False,
        decoder_hidden: int = 20,
        decoder_layers: int = 1,
        obs_std: float = 0.3,
        objective: str = "elbo",
        n_samples: int = 1,
        kl_anneal_steps: int = 0,
        encoder_dropout: float = 0.0,
        encoder_horizon: float = 0.0,
        window_shift: float = 0.0,
        consistency_weight: float = 0.0,
        consistency_shift: float = 0.5,
        consistency_to_encoder: bool = True,
        refine_steps: int = 0,
        refine_lr: float = 0.02,
        refine_validation: bool = True,
        amortise_weight: float = 0.0,
        amortise_steps: int = 5,
        sleep_weight: float = 0.0,
        sleep_noise_std: float | None = None,
        init_from: str | None = None,
        init_parts: Sequence[str] = PARTS,
        trainable: Sequence[str] | None = None,
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        scheduler: str = "none",
        lr_milestones: Sequence[int] = (),
        lr_gamma: float = 0.1,
        solver: node.SolverConfig | Mapping[str, Any] | None = None,
        time_grid: str = "union",
    ) -> None:
        super().__init__()
        # the hyperparameters keep the solver as plain values (its fields), so that logs and
        # checkpoints hold no node class; the model uses the config object itself
        solver_cfg = solver_config(solver)
        solver = solver_cfg.to_dict()
        self.save_hyperparameters()
        _check_int("obs_dim", obs_dim, 1)
        _check_int("latent_dim", latent_dim, 1)
        if encoder not in ENCODERS:
            raise ValueError(f"model.encoder must be one of {list(ENCODERS)}, got {encoder!r}")
        if objective not in OBJECTIVES:
            raise ValueError(
                f"model.objective must be one of {list(OBJECTIVES)}, got {objective!r}"
            )
        self.n_samples = _check_int("n_samples", n_samples, 1)
        self.kl_anneal_steps = _check_int("kl_anneal_steps", kl_anneal_steps, 0)
        self.encoder_dropout = _check_fraction("encoder_dropout", encoder_dropout)
        self.encoder_horizon = _check_fraction("encoder_horizon", encoder_horizon)
        self.window_shift = _check_fraction("window_shift", window_shift)
        self.consistency_weight = _check_nonnegative("consistency_weight", consistency_weight)
        self.consistency_shift = _check_fraction("consistency_shift", consistency_shift)
        if not isinstance(consistency_to_encoder, bool):
            raise ValueError(
                "model.consistency_to_encoder must be true or false, "
                f"got {consistency_to_encoder!r}"
            )
        self.consistency_to_encoder = consistency_to_encoder
        self.obs_std = _check_positive("obs_std", obs_std)
        self.refine_steps = _check_int("refine_steps", refine_steps, 0)
        self.refine_lr = _check_positive("refine_lr", refine_lr)
        if not isinstance(refine_validation, bool):
            raise ValueError(f"model.refine_validation must be true or false, got "
                             f"{refine_validation!r}")
        self.refine_validation = refine_validation
        self.amortise_weight = _check_nonnegative("amortise_weight", amortise_weight)
        self.amortise_steps = _check_int("amortise_steps", amortise_steps, 1)
        self.sleep_weight = _check_nonnegative("sleep_weight", sleep_weight)
        self.sleep_noise_std = (
            self.obs_std if sleep_noise_std is None
            else _check_positive("sleep_noise_std", sleep_noise_std)
        )
        self.lr = _check_positive("lr", lr)
        if not isinstance(weight_decay, int | float) or weight_decay < 0:
            raise ValueError(f"model.weight_decay must be a number >= 0, got {weight_decay!r}")
        check_scheduler(scheduler, lr_milestones, lr_gamma)
        self.objective = objective
        self.latent_dim = latent_dim
        self.time_grid = check_time_grid(time_grid)

        self.solver = ODESolver(solver_cfg)
        if time_grid == "per_sample":
            if self.consistency_weight > 0:
                # its target is every series' latent state at one shared grid index
                raise ValueError("model.time_grid='per_sample' does not support "
                                 "model.consistency_weight > 0 (it needs every series' path on "
                                 f"the shared grid), got consistency_weight={consistency_weight!r}")
            self.solver.check_per_sample("model.time_grid='per_sample'")
        self.encoder = build_encoder(encoder, obs_dim, latent_dim, encoder_hidden, self.solver,
                                     per_sample=time_grid == "per_sample")
        if dynamics_activation not in ACTIVATIONS:
            raise ValueError(
                f"model.dynamics_activation must be one of {list(ACTIVATIONS)}, "
                f"got {dynamics_activation!r}"
            )
        if not isinstance(dynamics_linear, bool):
            raise ValueError(
                f"model.dynamics_linear must be true or false, got {dynamics_linear!r}"
            )
        _check_int("dynamics_layers", dynamics_layers, 0)
        if dynamics_layers == 0:
            if not dynamics_linear:
                raise ValueError("model.dynamics_layers=0 (no MLP) needs model.dynamics_linear="
                                 "true, the linear field A z; with neither the field is zero")
            net: torch.nn.Module = LinearField(latent_dim)
        else:
            field = MLP(latent_dim, dynamics_hidden, latent_dim, dynamics_layers,
                        dynamics_activation)
            net = LinearPlusMLP(field) if dynamics_linear else field
        self.dynamics = AutonomousField(net)
        _check_int("decoder_layers", decoder_layers, 0)
        self.decoder = (
            MLP(latent_dim, decoder_hidden, obs_dim, decoder_layers, "relu")
            if decoder_layers > 0
            else torch.nn.Linear(latent_dim, obs_dim)
        )
        if init_from is not None and not isinstance(init_from, str | Path):
            raise ValueError(f"model.init_from must be a checkpoint path or null, got "
                             f"{init_from!r}")
        self.init_from = init_from
        self.init_parts = check_parts("init_parts", init_parts, PARTS)
        if trainable is not None:
            freeze_except(self, check_parts("trainable", trainable, PARTS))
        self.metrics = torch.nn.ModuleDict(
            {
                f"{stage}_{name}": MeanSquaredError(squared=name == "interp_mse")
                for stage in ("val", "test")
                for name in ("interp_mse", "extrap_rmse", "extrap_rmse_encoder")
            }
        )

    def setup(self, stage: str) -> None:
        """Lightning hook: before fitting, the warm start of ``init_from`` (a resumed run's
        checkpoint is restored after this, over it)."""
        if stage == "fit" and self.init_from is not None:
            copied = load_parts(self, self.init_from, self.init_parts)
            log.info(f"model.init_from: {len(copied)} tensors of {list(self.init_parts)} copied "
                     f"from {self.init_from}")

    # ----------------------------------------------------------------------------- model pieces
    def latent_path(self, z0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Solve the latent ODE from ``z0`` (``[N, L]``) at ``t[0]``; returns ``[N, len(t), L]``."""
        return self.solver(self.dynamics, z0, t).transpose(0, 1)

    def encode(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(batch["t_obs"], batch["values"], batch["mask"])

    def decode(self, z0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent paths and decoded means from ``z0`` of shape ``[..., L]``:
        ``([..., T, L], [..., T, D])``.

        ``t``: ``[T]`` shared times, or ``[B, T]`` each series' own times (``B`` the last
        leading dimension of ``z0``; solved per sample)."""
        lead = z0.shape[:-1]
        steps = t.shape[-1]
        if t.dim() == 2:  # the same times for every sample of a series
            t = t.expand(*lead, steps).reshape(-1, steps)
        z = self.latent_path(z0.reshape(-1, self.latent_dim), t)
        z = z.reshape(*lead, steps, self.latent_dim)
        return z, self.decoder(z)

    def likelihood_grid(
        self, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(t, values, mask)``: the times where the likelihood needs the latent paths and the
        batch's values and mask there. ``time_grid="union"``: the shared ``t_obs`` (``[T]``);
        ``"per_sample"``: each series' own times (``[B, n]``, see
        :func:`~models.components.time_grids.sample_grid`)."""
        if self.time_grid == "union":
            return batch["t_obs"], batch["values"], batch["mask"]
        grid = sample_grid(batch["t_obs"], batch["mask"])
        values, mask = grid.batch(batch)
        return grid.times, values, mask

    def loss_terms(
        self,
        batch: Mapping[str, torch.Tensor],
        beta: float,
        encoder_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Negative bound (mean over the batch) and the ELBO, KL and log-likelihood terms.

        ``encoder_mask`` (default: the batch's mask) is what the encoder may see."""
        seen = batch if encoder_mask is None else {**batch, "mask": encoder_mask}
        mu, logvar = self.encode(seen)
        std = (0.5 * logvar).exp()
        z0 = mu + std * torch.randn((self.n_samples, *mu.shape), device=mu.device, dtype=mu.dtype)
        consistency = self.consistency_weight > 0 and self.training
        t, values, mask = self.likelihood_grid(batch)
        if consistency and not self.consistency_to_encoder:
            # one solve for both: the ELBO's paths and, from z0 without gradient, the paths the
            # consistency term trains the flow on (on the shared grid: time_grid="union")
            paths, x_mean = self.decode(torch.cat([z0, z0.detach()]), t)
            z, flow_paths = paths[: self.n_samples], paths[self.n_samples :]
            x_mean = x_mean[: self.n_samples]
        else:
            z, x_mean = self.decode(z0, t)
            flow_paths = z
        log_px = gaussian_log_likelihood(values, x_mean, self.obs_std, mask)
        bound = variational_bound(self.objective, log_px, z0, mu, logvar, beta)
        kl = kl_standard_normal(mu, logvar)
        terms = {
            "elbo": (log_px.mean(dim=0) - kl).mean(),
            "kl": kl.mean(),
            "log_px": log_px.mean(),
        }
        loss = -bound.mean()
        if consistency:
            consistency = self.consistency_term(batch, flow_paths)
            terms["consistency"] = consistency.detach()
            loss = loss + self.consistency_weight * consistency
        if self.amortise_weight > 0 and self.training:
            amortisation = self.amortisation_term(batch, mu)
            terms["amortisation"] = amortisation.detach()
            loss = loss + self.amortise_weight * amortisation
        if self.sleep_weight > 0 and self.training:
            sleep = self.sleep_term(batch, z)
            terms["sleep"] = sleep.detach()
            loss = loss + self.sleep_weight * sleep
        return loss, terms

    def amortisation_term(
        self, batch: Mapping[str, torch.Tensor], mu: torch.Tensor
    ) -> torch.Tensor:
        r""":math:`\tfrac12 \lVert \mu - \tilde z \rVert^2` averaged over series, where
        :math:`\tilde z` is ``amortise_steps`` refinement steps from ``mu`` on the observed
        points of ``batch`` (no gradient; see ``amortise_weight``). Zero where :math:`\mu` is
        already the posterior mode; its gradient is the refinement's direction, reversed."""
        target = self.posterior_mode(batch, mu, self.amortise_steps)
        return 0.5 * (mu - target).pow(2).sum(dim=-1).mean()

    def sleep_term(self, batch: Mapping[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        r""":math:`-\log q(z_s \mid x_s)` averaged over series, for series :math:`x_s` generated
        by the model from states :math:`z_s` on the latent paths ``z`` (``[S, B, T, L]``; see
        ``sleep_weight``; ``T``: the times of :meth:`likelihood_grid`). The gradient reaches the
        encoder only."""
        paths = z.detach()[0]
        size, steps = paths.shape[:2]
        k = torch.randint(0, steps, (size,), device=paths.device)
        start = paths[torch.arange(size, device=paths.device), k]
        with torch.no_grad():
            _, x_mean = self.decode(start, batch["t_obs"])
            mask = batch["mask"][torch.randperm(size, device=paths.device)]
            values = (x_mean + self.sleep_noise_std * torch.randn_like(x_mean)) * mask
        mu, logvar = self.encode({**batch, "values": values, "mask": mask})
        return -log_normal(start, mu, logvar).mean()

    def consistency_term(
        self, batch: Mapping[str, torch.Tensor], z: torch.Tensor
    ) -> torch.Tensor:
        r""":math:`-\log q(z_{t_k} \mid x_{t \ge t_k})` averaged over samples and series, for
        latent paths ``z`` (``[S, B, T, L]``) and a random ``k`` (see ``consistency_weight``)."""
        steps = batch["t_obs"].shape[0]
        k = int(torch.randint(1, int(self.consistency_shift * (steps - 1)) + 2, ()).item())
        k = min(k, steps - 1)
        with torch.set_grad_enabled(self.consistency_to_encoder and torch.is_grad_enabled()):
            mu_k, logvar_k = self.encode(window_from(batch, k))
        return -log_normal(z[..., k, :], mu_k, logvar_k).mean()

    # --------------------------------------------------------------------------------- training
    def training_loss(self, batch):
        beta = kl_weight(self.global_step, self.kl_anneal_steps)
        if self.window_shift > 0:
            batch = shift_window(batch, self.window_shift)
        encoder_mask = batch["mask"]
        if self.encoder_horizon > 0:
            encoder_mask = hide_after_cut(encoder_mask, self.encoder_horizon)
        if self.encoder_dropout > 0:
            encoder_mask = hide_observations(encoder_mask, self.encoder_dropout)
        loss, terms = self.loss_terms(batch, beta, encoder_mask)
        terms["kl_weight"] = torch.tensor(beta)
        return loss, terms

    # ------------------------------------------------------------------------------- evaluation
    def posterior_mode(
        self, batch: Mapping[str, torch.Tensor], mu: torch.Tensor, steps: int | None = None
    ) -> torch.Tensor:
        r"""The mode of :math:`p(z_0 \mid x) \propto p(x \mid z_0)\, p(z_0)` for each series,
        by ``steps`` (default ``refine_steps``) Adam steps on
        :math:`-\log p(x \mid z_0) - \log p(z_0)` from ``mu`` (``[B, L]``). Only the observed
        points enter; the model's parameters get no gradient. Works under Lightning's
        inference mode and ``no_grad``."""
        with torch.inference_mode(False), torch.enable_grad():
            # tensors made under inference mode cannot enter autograd: copy them out of it
            copy = {k: batch[k].clone() for k in ("values", "mask", "t_obs")}
            t, values, mask = self.likelihood_grid(copy)
            z0 = mu.detach().clone().requires_grad_(True)
            optimizer = torch.optim.Adam([z0], lr=self.refine_lr)
            for _ in range(self.refine_steps if steps is None else steps):
                _, x_mean = self.decode(z0, t)
                log_px = gaussian_log_likelihood(values, x_mean, self.obs_std, mask)
                log_prior = log_normal(z0, torch.zeros_like(z0), torch.zeros_like(z0))
                loss = -(log_px + log_prior).sum()
                (grad,) = torch.autograd.grad(loss, z0)
                z0.grad = grad
                optimizer.step()
        return z0.detach()

    def predict(self, batch: Mapping[str, torch.Tensor], refine: bool = True
                ) -> dict[str, torch.Tensor]:
        r"""Reconstruction and extrapolation from the posterior mean, or from the posterior mode
        with ``refine_steps > 0`` (and ``refine``).

        Returns ``t`` (``[T + E]``, window then extrapolation times), ``z`` (``[B, T + E, L]``),
        ``x`` (``[B, T + E, D]``), ``z0`` (the initial state used), and ``mu``, ``logvar`` of
        :math:`q(z_0 \mid x)`.
        """
        mu, logvar = self.encode(batch)
        z0 = self.posterior_mode(batch, mu) if refine and self.refine_steps > 0 else mu
        t = torch.cat([batch["t_obs"], batch["t_extrap"]])
        z, x = self.decode(z0, t)
        return {"t": t, "z": z, "x": x, "z0": z0, "mu": mu, "logvar": logvar}

    def sample_prior(
        self, n: int, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """``n`` draws of :math:`z_0 \\sim \\mathcal N(0, I)` decoded at ``t``."""
        z0 = torch.randn(n, self.latent_dim, generator=generator).to(self.device)
        z, x = self.decode(z0, t)
        return {"t": t, "z": z, "x": x}

    def _evaluate(self, batch, stage: str) -> None:
        before = self.evaluation_counts()
        loss, terms = self.loss_terms(batch, beta=1.0)
        refine = self.refine_steps > 0 and (stage != "val" or self.refine_validation)
        pred = self.predict(batch, refine=refine)
        used = self.evaluation_counts() - before
        n_obs = batch["t_obs"].shape[0]
        interp = self.metrics[f"{stage}_interp_mse"]
        extrap = self.metrics[f"{stage}_extrap_rmse"]
        interp(pred["x"][:, :n_obs].reshape(-1), batch["truth"].reshape(-1))
        extrap(pred["x"][:, n_obs:].reshape(-1), batch["extrap"].reshape(-1))
        size = self._batch_size(batch)
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", batch_size=size)
        for name, value in terms.items():
            self.log(f"{stage}/{name}", value, batch_size=size)
        self.log(f"{stage}/interp_mse", interp, batch_size=size)
        self.log(f"{stage}/extrap_rmse", extrap, prog_bar=stage == "val", batch_size=size)
        # logged with or without refinement, so that it can pick checkpoints in either case
        x_encoder = self.decode(pred["mu"], pred["t"])[1] if refine else pred["x"]
        encoder = self.metrics[f"{stage}_extrap_rmse_encoder"]
        encoder(x_encoder[:, n_obs:].reshape(-1), batch["extrap"].reshape(-1))
        self.log(f"{stage}/extrap_rmse_encoder", encoder, batch_size=size)
        self.log(f"{stage}/nfe", float(used.nfe), batch_size=size)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    # ------------------------------------------------------------------------------------ plots
    @torch.no_grad()
    def write_plots(
        self, batch: Mapping[str, torch.Tensor], out_dir: str | Path, seed: int = 0
    ) -> list[Path]:
        """Write ``reconstructions.png``, ``latents.png`` and ``prior_samples.png`` for
        ``batch``; returns their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        was_training = self.training
        self.eval()
        batch = {k: v.to(self.device) for k, v in batch.items()}
        pred = {k: v.cpu() for k, v in self.predict(batch).items()}
        generator = torch.Generator().manual_seed(seed)
        prior = self.sample_prior(len(batch["values"]), pred["t"].to(self.device), generator)
        prior = {k: v.cpu() for k, v in prior.items()}
        cpu_batch = {k: v.cpu() for k, v in batch.items()}
        self.train(was_training)
        return [
            plot_reconstructions(cpu_batch, pred, out / "reconstructions.png"),
            plot_latents(cpu_batch, pred, out / "latents.png"),
            plot_prior_samples(prior, out / "prior_samples.png"),
        ]
