r"""Continuous normalizing flow (FFJORD, Grathwohl et al. 2019) with optional RNODE
regularisation (Finlay et al. 2020), as a LightningModule.

Model: ``n_blocks`` flows in sequence (:class:`~models.components.cnf_flow.ContinuousFlow`),
each :math:`dx/dt = f_\theta(t, x)` over :math:`[0, T]` with :math:`f_\theta` a concatsquash MLP
(:class:`~models.components.concatsquash.ConcatSquashMLP`), base density
:math:`\mathcal N(0, I)`. By the change of variables, and its instantaneous form
:math:`d \log p(x(t))/dt = -\operatorname{tr}(\partial f/\partial x)`,

.. math::

    \log p_\theta(x) = \log \mathcal N(z; 0, I)
        + \sum_k \int_0^{T_k} \operatorname{tr} \frac{\partial f_k}{\partial x}\, dt ,

with the trace exact (2-D) or Hutchinson's estimate :math:`\varepsilon^\top J \varepsilon`
(:mod:`models.components.trace`).

Training minimises, per batch,

.. math::

    \mathcal L = -\frac1B \sum_b \log p_\theta(x_b)
        + \lambda_K \frac1B\sum_b \sum_k \int_0^{T_k} \lVert f_k\rVert^2 dt
        + \lambda_J \frac1B\sum_b \sum_k \int_0^{T_k}
          \lVert \varepsilon^\top \partial f_k/\partial x \rVert^2 dt ,

where :math:`\lambda_K` (``kinetic_weight``) and :math:`\lambda_J` (``jacobian_weight``) are
RNODE's weights (0.01 each in the paper; 0 here by default, which leaves the states out of the
solve). RNODE fixes the end time: with a trainable :math:`T` both regularisers can be driven to
zero by stretching time without changing the map, so the model warns about that combination.

Logged: ``train/loss``, ``train/nll``, ``train/kinetic``, ``train/jacobian``,
``train/end_time``; ``val/*`` and ``test/*``: ``nll`` (= ``loss``, nats per point), ``nfe``
(forward evaluations per batch), and where the data module knows its true density (its
``true_nll`` attribute and ``data_log_density`` method, see
:class:`~datamodules.toy2d.Toy2DDataModule`): ``true_nll`` (the data's entropy),
``nll_gap = nll - true_nll`` (0 is the best possible), and ``kl``, the same gap estimated on
the same points (:math:`\frac1N\sum_i \log p(x_i) - \log p_\theta(x_i)`, an estimate of
:math:`KL(p\,\|\,p_\theta)` with a smaller sampling error than ``nll_gap``; infinite where the
data has no density, never the case for data drawn from it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

import node
from models.base import ODEModule
from models.cnf_plots import plot_density, plot_flow, plot_samples
from models.components.cnf_dynamics import TRACE_KINDS, CNFDynamics
from models.components.cnf_flow import ContinuousFlow
from models.components.concatsquash import ConcatSquashMLP
from models.components.ode_solver import ODESolver, solver_config

log = logging.getLogger(__name__)

#: ``trace="auto"`` uses the exact trace up to this dimension, Hutchinson's estimator above
EXACT_TRACE_MAX_DIM = 2


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"model.{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_number(name: str, value, *, positive: bool) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not ok or not (value > 0 if positive else value >= 0):
        raise ValueError(
            f"model.{name} must be a finite number {'>' if positive else '>='} 0, got {value!r}"
        )
    return float(value)


class CNFModule(ODEModule):
    r"""FFJORD / RNODE density model (module docstring).

    Args:
        obs_dim: data dimension (given by the data module).
        hidden_dims: hidden widths of each block's concatsquash MLP (FFJORD toys: 64, 64, 64).
        activation: activation between its layers (``tanh``).
        n_blocks: flows in sequence.
        end_time: :math:`T` of each block (initial value if trainable; FFJORD toys: 0.5).
        train_end_time: learn each block's :math:`T`.
        trace: ``"exact"``, ``"hutchinson"`` or ``"auto"`` (exact up to
            :data:`EXACT_TRACE_MAX_DIM` dimensions).
        noise: Hutchinson noise, ``"gaussian"`` or ``"rademacher"`` (drawn once per solve).
        kinetic_weight, jacobian_weight: RNODE's :math:`\lambda_K`, :math:`\lambda_J` (0: off).
        reg_error_control: let the regulariser states take part in the solver's error test.
        lr, weight_decay: Adam's settings (FFJORD: 1e-3, 1e-5).
        solver: the solve's settings, a :class:`node.SolverConfig` (or a mapping of its fields).
    """

    def __init__(
        self,
        obs_dim: int,
        hidden_dims: Sequence[int] = (64, 64, 64),
        activation: str = "tanh",
        n_blocks: int = 1,
        end_time: float = 0.5,
        train_end_time: bool = True,
        trace: str = "auto",
        noise: str = "gaussian",
        kinetic_weight: float = 0.0,
        jacobian_weight: float = 0.0,
        reg_error_control: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        solver: node.SolverConfig | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # the hyperparameters keep the solver as plain values (its fields), so that logs and
        # checkpoints hold no node class; the model uses the config object itself
        solver_cfg = solver_config(solver)
        solver = solver_cfg.to_dict()
        self.save_hyperparameters()
        self.obs_dim = _check_int("obs_dim", obs_dim, 1)
        n_blocks = _check_int("n_blocks", n_blocks, 1)
        if trace not in (*TRACE_KINDS, "auto"):
            raise ValueError(f"model.trace must be one of {[*TRACE_KINDS, 'auto']}, got {trace!r}")
        if trace == "auto":
            trace = "exact" if obs_dim <= EXACT_TRACE_MAX_DIM else "hutchinson"
        for name, value in (
            ("train_end_time", train_end_time),
            ("reg_error_control", reg_error_control),
        ):
            if not isinstance(value, bool):
                raise ValueError(f"model.{name} must be true or false, got {value!r}")
        self.kinetic_weight = _check_number("kinetic_weight", kinetic_weight, positive=False)
        self.jacobian_weight = _check_number("jacobian_weight", jacobian_weight, positive=False)
        self.lr = _check_number("lr", lr, positive=True)
        self.weight_decay = _check_number("weight_decay", weight_decay, positive=False)
        if train_end_time and (self.kinetic_weight or self.jacobian_weight):
            log.warning(
                "model.train_end_time=true with RNODE regularisation: stretching T shrinks both "
                "regularisers without changing the flow; RNODE fixes T (train_end_time=false)"
            )
        self.trace = trace
        self.solver = ODESolver(solver_cfg)
        blocks = [
            CNFDynamics(
                ConcatSquashMLP(obs_dim, hidden_dims, activation),
                trace=trace,
                noise=noise,
                kinetic=self.kinetic_weight > 0,
                jacobian=self.jacobian_weight > 0,
                end_time=end_time,
                train_end_time=train_end_time,
            )
            for _ in range(n_blocks)
        ]
        self.flow = ContinuousFlow(blocks, self.solver, reg_error_control=reg_error_control)

    # ----------------------------------------------------------------------------- model pieces
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p_theta(x)`` per point (nats); differentiable when grad mode is on."""
        return self.flow.log_prob(x)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples: base draws solved backwards through the flow."""
        return self.flow.sample(n, generator)

    @torch.no_grad()
    def log_density_grid(
        self, bounds: tuple[float, float, float, float], n: int = 100, chunk: int = 2500
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(xs [n], ys [n], log p [n, n])`` on the grid ``bounds = (x0, x1, y0, y1)``;
        ``log p[i, j]`` is at ``(xs[j], ys[i])``. The solve is batched ``chunk`` points at a
        time."""
        x0, x1, y0, y1 = bounds
        xs = torch.linspace(x0, x1, n)
        ys = torch.linspace(y0, y1, n)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        points = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1).to(self.device)
        with torch.inference_mode(False):
            values = [self.log_prob(c.clone()) for c in points.split(chunk)]
        return xs, ys, torch.cat(values).reshape(n, n).cpu()

    # --------------------------------------------------------------------------------- training
    def training_loss(self, batch: torch.Tensor):
        out = self.flow(batch)
        nll = -out.log_prob.mean()
        loss = nll
        terms = {"nll": nll.detach()}
        for name, weight in (("kinetic", self.kinetic_weight), ("jacobian", self.jacobian_weight)):
            if weight > 0:
                value = out.regs[name].mean()
                loss = loss + weight * value
                terms[name] = value.detach()
        terms["end_time"] = torch.tensor(sum(self.flow.end_times()) / len(self.flow.blocks))
        return loss, terms

    # ------------------------------------------------------------------------------- evaluation
    def _datamodule(self):
        trainer = self._trainer
        return getattr(trainer, "datamodule", None) if trainer is not None else None

    def _evaluate(self, batch: torch.Tensor, stage: str) -> None:
        before = self.evaluation_counts()
        # Lightning evaluates under inference mode, whose tensors cannot enter autograd; the
        # trace of the Jacobian needs autograd, so leave it and copy the batch out of it
        with torch.inference_mode(False):
            x = batch.clone()
            with torch.no_grad():
                nll = -self.flow.log_prob(x)
        used = self.evaluation_counts() - before
        size = x.shape[0]
        mean_nll = nll.mean()
        self.log(f"{stage}/nll", mean_nll, prog_bar=stage == "val", batch_size=size)
        self.log(f"{stage}/loss", mean_nll, batch_size=size)
        self.log(f"{stage}/nfe", float(used.nfe), batch_size=size)
        datamodule = self._datamodule()
        true_nll = getattr(datamodule, "true_nll", None)
        if true_nll is not None:
            self.log(f"{stage}/true_nll", float(true_nll), batch_size=size)
            self.log(
                f"{stage}/nll_gap", mean_nll - true_nll, prog_bar=stage == "val", batch_size=size
            )
        density = getattr(datamodule, "data_log_density", None)
        log_p = density(x) if density is not None else None
        if log_p is not None:
            kl = (nll.double().cpu() + log_p).mean().float()
            self.log(f"{stage}/kl", kl, batch_size=size)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    # ------------------------------------------------------------------------------------ plots
    @torch.no_grad()
    def write_plots(self, batch: torch.Tensor, out_dir: str | Path, seed: int = 0) -> list[Path]:
        """Write ``density.png`` (data next to the learned density), ``samples.png`` (data next
        to model samples) and ``flow.png`` (a grid of base points carried to data space, at
        several times) for the data points ``batch`` (``[N, D]``); returns their paths.

        Only 2-D data can be drawn: for other dimensions nothing is written."""
        if self.obs_dim != 2:
            log.warning(f"CNF plots need 2-D data; obs_dim={self.obs_dim}, no plots written")
            return []
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        was_training = self.training
        self.eval()
        data = batch.detach().cpu().float()
        lim = float(data.abs().max()) * 1.1 if len(data) else 4.0
        bounds = (-lim, lim, -lim, lim)
        generator = torch.Generator().manual_seed(seed)
        with torch.inference_mode(False):
            xs, ys, log_p = self.log_density_grid(bounds, n=100)
            samples = self.sample(len(data), generator).cpu()
            grid = torch.stack(
                torch.meshgrid(torch.linspace(-3, 3, 17), torch.linspace(-3, 3, 17), indexing="ij"),
                dim=-1,
            ).reshape(-1, 2)
            path = self.flow.trajectory(grid.to(self.device), n_times=5, reverse=True).cpu()
        self.train(was_training)
        end_times = self.flow.end_times()
        return [
            plot_density(data, xs, ys, log_p, bounds, out / "density.png"),
            plot_samples(data, samples, bounds, out / "samples.png"),
            plot_flow(
                path, grid_shape=(17, 17), end_times=end_times, bounds=bounds, path=out / "flow.png"
            ),
        ]
