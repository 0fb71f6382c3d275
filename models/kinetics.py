r"""A neural ODE fitted to stiff chemical kinetics (Robertson's problem), as a LightningModule.

The model learns an autonomous field from trajectories (:mod:`datamodules.kinetics`), following
Kim et al. (2021, "Stiff neural ordinary differential equations", Chaos 31, 093122): the
species live on scales eleven orders apart (``y2`` peaks near :math:`3.6\cdot10^{-5}`, ``y1`` and
``y3`` are of order 1), so both the network and the loss work on scaled states. With ``s`` the
largest value of each species over the training data,

.. math::
    \frac{dy}{dt} = s \odot \mathrm{MLP}(y \oslash s), \qquad
    L = \frac{1}{B\,T\,D} \sum_{b,t,d} \frac{|\hat y_{btd} - y_{btd}|}{s_d},

a deep, narrow MLP with GELU activations (Kim et al. use rectified activations) on the scaled
state, its output scaled back per species, and the mean absolute error of the scaled states
over the logarithmic time grid. The problem stays stiff (the fitted field inherits the
:math:`10^4` rates of the data), so it is solved with an implicit method (``solver=kvaerno5``,
with ``jacobian="batch"``: every trajectory of a batch is an independent 3-species system);
everything runs in float64.

Logged metrics: ``train/loss``; ``val/mae``, ``test/mae`` (the scaled mean absolute error
:math:`L`), ``test/mae_y1``, ``test/mae_y2``, ``test/mae_y3`` (per species), ``val/nfe``,
``test/nfe``. Plots: :mod:`models.kinetics_plots`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import node
from models.base import ODEModule
from models.components.checks import check_choice, check_int, check_number
from models.components.mlp import ACTIVATIONS, MLP
from models.components.ode_solver import ODESolver, solver_config
from models.components.schedules import check_scheduler
from models.kinetics_plots import plot_species

OPTIMIZERS = ("sgd", "adam")
OUTPUTS = ("linear", "exp")


class ScaledField(nn.Module):
    r"""The field on per-species scaled states (module docstring), ``s`` a saved buffer:

    * ``output="linear"``: ``f(t, y) = s * net(y / s)`` (Kim et al.), ``net`` with ``D`` outputs;
    * ``output="exp"``: ``f(t, y) = s * tanh(u) * exp(v)``, ``[u, v] = net(y / s)`` with ``2 D``
      outputs: a direction and a log-magnitude per species, so that rates eleven orders of
      magnitude apart are a linear range of ``v`` and a gradient step changes a rate by a
      factor rather than by an amount.
    """

    def __init__(self, net: nn.Module, scales: torch.Tensor, output: str = "linear") -> None:
        super().__init__()
        self.net = net
        self.output = output
        self.register_buffer("scales", scales)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.net(y / self.scales)
        if self.output == "exp":
            u, v = out.chunk(2, dim=-1)
            out = torch.tanh(u) * torch.exp(v)
        return self.scales * out


class StiffKineticsModule(ODEModule):
    """Neural ODE fitted to trajectories of a stiff kinetic system (module docstring).

    Args:
        state_dim: number of species (from the data module).
        scales: the largest value of each species over the training data (from the data module).
        hidden: width of the MLP's hidden layers.
        n_hidden_layers: number of hidden layers.
        activation: activation of the MLP (one of :data:`models.components.mlp.ACTIVATIONS`).
        output: ``"linear"`` or ``"exp"``: how the network's output becomes the rates (see
            :class:`ScaledField`).
        log_rate_init: with ``output="exp"``, the initial log-magnitude ``v`` of every rate (the
            bias of its output unit): ``exp(-10)`` scales per unit time, so that the first updates
            of the direction ``u`` move the trajectories gently over a span of ``1e5``.
        optimizer, lr, weight_decay, scheduler, lr_milestones, lr_gamma: see
            :meth:`models.base.ODEModule.configure_optimizers`.
        solver: the solve's settings, a :class:`node.SolverConfig` (or a mapping of its fields).
    """

    def __init__(
        self,
        state_dim: int,
        scales: Sequence[float],
        hidden: int = 16,
        n_hidden_layers: int = 4,
        activation: str = "gelu",
        output: str = "linear",
        log_rate_init: float = -10.0,
        optimizer: str = "adam",
        lr: float = 5e-3,
        weight_decay: float = 0.0,
        scheduler: str = "none",
        lr_milestones: Sequence[int] = (),
        lr_gamma: float = 0.1,
        solver: node.SolverConfig | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        solver_cfg = solver_config(solver)
        solver = solver_cfg.to_dict()
        self.save_hyperparameters()
        check_int("state_dim", state_dim, 1)
        scales = list(scales) if isinstance(scales, Sequence) else None
        if (scales is None or len(scales) != state_dim
                or not all(isinstance(s, int | float) and s > 0 for s in scales)):
            raise ValueError(f"model.scales must be {state_dim} positive numbers (one per "
                             f"species), got {self.hparams.scales!r}")
        check_choice("activation", activation, sorted(ACTIVATIONS))
        check_choice("output", output, OUTPUTS)
        check_choice("optimizer", optimizer, OPTIMIZERS)
        check_scheduler(scheduler, lr_milestones, lr_gamma)
        self.lr = check_number("lr", lr, 0.0, strict=True)
        check_number("weight_decay", weight_decay, 0.0, strict=False)
        width = state_dim * (2 if output == "exp" else 1)
        net = MLP(state_dim, check_int("hidden", hidden, 1), width,
                  check_int("n_hidden_layers", n_hidden_layers, 1), activation)
        # The field starts at zero (constant trajectories): a random field, scaled back to the
        # species' units and run for 1e5 time units, typically blows up in finite time, so the
        # first solve would fail. Only the output layer is zeroed; the gradient reaches the
        # hidden layers from the second step on.
        nn.init.zeros_(net[-1].weight)
        nn.init.zeros_(net[-1].bias)
        if output == "exp":
            check_number("log_rate_init", log_rate_init, -math.inf, strict=False)
            with torch.no_grad():
                net[-1].bias[state_dim:] = log_rate_init
        self.field = ScaledField(net, torch.tensor(scales, dtype=torch.float64), output)
        self.solver = ODESolver(solver_cfg)
        # Stiff kinetics need float64: the Newton iterations of an implicit solver resolve
        # species 1e-5 apart in scale, and the rates span eleven orders of magnitude.
        self.double()

    def forward(self, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Trajectories ``[B, T, D]`` from initial states ``[B, D]`` at times ``t`` (``[T]``)."""
        y0 = y0.to(torch.float64)
        ys = self.solver(self.field, y0, t.to(y0))
        return ys.transpose(0, 1)

    def scaled_errors(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``|y_pred - y| / s`` per trajectory, time after ``t[0]`` and species: ``[B, T-1, D]``."""
        y = batch["y"].to(torch.float64)
        pred = self(y[:, 0], batch["t"])
        return (pred[:, 1:] - y[:, 1:]).abs() / self.field.scales

    def training_loss(self, batch):
        return self.scaled_errors(batch).mean(), {}

    @staticmethod
    def _batch_size(batch: Any) -> int | None:
        if isinstance(batch, Mapping) and "y" in batch:
            return int(batch["y"].shape[0])
        return None

    def _evaluate(self, batch, stage: str) -> None:
        before = self.evaluation_counts()
        errors = self.scaled_errors(batch)
        used = self.evaluation_counts() - before
        size = self._batch_size(batch)
        self.log(f"{stage}/mae", errors.mean(), prog_bar=stage == "val", batch_size=size)
        self.log(f"{stage}/nfe", float(used.nfe), batch_size=size)
        if stage == "test":
            for d, value in enumerate(errors.mean(dim=(0, 1)).unbind()):
                self.log(f"test/mae_y{d + 1}", value, batch_size=size)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def write_plots(self, batch: Mapping[str, torch.Tensor], out_dir: str | Path,
                    seed: int = 0) -> list[Path]:
        """The fitted trajectories against the data, per species (``species.png``)."""
        with torch.no_grad():
            pred = self(batch["y"][:, 0].to(self.device), batch["t"].to(self.device))
        return [plot_species(batch, pred.cpu(), Path(out_dir) / "species.png")]
