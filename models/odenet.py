r"""The ODE-Net classifier of Chen et al. (2018), with the augmented variant of Dupont et al.
(2019), as a LightningModule.

``architecture="conv"`` (images ``[B, C, H, W]``)::

    stem:  conv3x3 -> n_downsample x (GroupNorm, ReLU, conv4x4 stride 2)       x -> h(0)
    ODE:   dh/dt = f(t, h), t in [0, T], f = time-conditioned convs + GroupNorm  h(0) -> h(T)
    head:  GroupNorm, ReLU, average pooling (global by default), linear        h(T) -> logits

``architecture="mlp"`` (any input, flattened to ``[B, D]``): the stem is a linear map to
``channels`` features (or none when ``channels`` is null: the ODE then acts on the input itself),
the dynamics an MLP with time-conditioned layers, the head a linear map.

With ``augment_dim = a > 0`` the ODE state is :math:`h(0) = [\mathrm{stem}(x); \mathbf 0_a]`
(ANODE, see :mod:`models.components.ode_block`) and the head reads all ``channels + a``
channels. The loss is the cross-entropy :math:`-\frac1B\sum_i \log \mathrm{softmax}(z_i)_{y_i}`
of the logits :math:`z`.

Logged metrics: ``train/loss``, ``train/acc``, ``nfe/forward``, ``nfe/backward`` (per training
step, see :class:`~models.base.ODEModule`); ``val/*`` and ``test/*``: ``loss``, ``acc``, ``error``
(:math:`1 - \mathrm{acc}`) and ``nfe`` (forward evaluations per batch). Plots:
:mod:`models.odenet_plots`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import node
from models.base import ODEModule
from models.components.checks import check_choice, check_int, check_number
from models.components.ode_block import ODEBlock
from models.components.ode_solver import ODESolver, solver_config
from models.components.odenet_layers import ConvODEFunc, MLPODEFunc, conv_head, conv_stem
from models.components.schedules import check_scheduler
from models.odenet_plots import find_metrics_csv, plot_nfe, plot_trajectories

log = logging.getLogger(__name__)

ARCHITECTURES = ("conv", "mlp")
OPTIMIZERS = ("sgd", "adam")
CHECKPOINT_METRICS_KEY = "odenet_metrics_csv"


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Fraction of rows whose largest logit is at the label:
    :math:`\frac1B \sum_i [\arg\max_k z_{ik} = y_i]`."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            "accuracy expects logits [B, K] and labels [B], got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    return (logits.argmax(dim=1) == labels).float().mean()


class ODENetModule(ODEModule):
    """ODE-Net classifier (module docstring).

    Args:
        input_shape: shape of one input, ``[C, H, W]`` for ``conv`` (given by the data module).
        n_classes: number of classes (given by the data module).
        architecture: ``"conv"`` or ``"mlp"``.
        channels: channels of the stem's output (``conv``), or features (``mlp``; ``None``: no
            stem, the ODE acts on the flattened input).
        n_downsample: stride-2 convolutions of the stem (``conv``; 2 for 28x28 MNIST -> 7x7).
        pool_size: the head averages the final state over a ``pool_size x pool_size`` grid of
            regions (``conv``; 1: global average pooling, as Chen et al.).
        hidden: hidden units of the MLP dynamics (``mlp``).
        activation: activation of the MLP dynamics (``mlp``).
        augment_dim: zero channels appended to the ODE state (ANODE; 0: off).
        t_end: end time :math:`T` of the ODE block.
        max_groups: upper bound on the GroupNorm group count (``conv``).
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"``; ``lr``, ``weight_decay``.
        scheduler: ``"none"``, ``"multistep"`` (times ``lr_gamma`` at each epoch of
            ``lr_milestones``) or ``"cosine"`` (to 0 over ``trainer.max_epochs``).
        solver: the solve's settings, a :class:`node.SolverConfig` (or a mapping of its fields).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        n_classes: int,
        architecture: str = "conv",
        channels: int | None = 64,
        n_downsample: int = 2,
        pool_size: int = 1,
        hidden: int = 64,
        activation: str = "softplus",
        augment_dim: int = 0,
        t_end: float = 1.0,
        max_groups: int = 32,
        optimizer: str = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        scheduler: str = "none",
        lr_milestones: Sequence[int] = (),
        lr_gamma: float = 0.1,
        solver: node.SolverConfig | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # the hyperparameters keep the solver as plain values (its fields), so that logs and
        # checkpoints hold no node class; the model uses the config object itself
        solver_cfg = solver_config(solver)
        solver = solver_cfg.to_dict()
        self.save_hyperparameters()
        self.input_shape = self._check_shape(input_shape, architecture)
        self.n_classes = check_int("n_classes", n_classes, 2)
        check_int("augment_dim", augment_dim, 0)
        check_choice("optimizer", optimizer, OPTIMIZERS)
        check_scheduler(scheduler, lr_milestones, lr_gamma)
        self.lr = check_number("lr", lr, 0.0, strict=True)
        check_number("momentum", momentum, 0.0, strict=False)
        check_number("weight_decay", weight_decay, 0.0, strict=False)
        self.metrics_csv: str | None = None

        self.solver = ODESolver(solver_cfg)
        if architecture == "conv":
            width = check_int("channels", channels, 1)
            check_int("n_downsample", n_downsample, 0)
            side = min(self.input_shape[1:])
            if side < 2**n_downsample:
                raise ValueError(
                    f"model.n_downsample={n_downsample} halves an input of {side} pixels "
                    f"below 1 pixel; use n_downsample <= {int(math.log2(side))}"
                )
            check_int("max_groups", max_groups, 1)
            self.stem = conv_stem(self.input_shape[0], width, n_downsample, max_groups)
            func = ConvODEFunc(width + augment_dim, max_groups)
            pool = check_int("pool_size", pool_size, 1)
            self.head = conv_head(width + augment_dim, n_classes, max_groups, pool)
        else:
            in_dim = math.prod(self.input_shape)
            if channels is None:
                width, self.stem = in_dim, nn.Flatten()
            else:
                width = check_int("channels", channels, 1)
                self.stem = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, width))
            func = MLPODEFunc(width + augment_dim, check_int("hidden", hidden, 1), activation)
            self.head = nn.Linear(width + augment_dim, n_classes)
        self.block = ODEBlock(func, self.solver, augment_dim, t_end)

    @staticmethod
    def _check_shape(input_shape, architecture: str) -> tuple[int, ...]:
        check_choice("architecture", architecture, ARCHITECTURES)
        shape = tuple(input_shape) if isinstance(input_shape, Sequence) else None
        ok = shape and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
        if not ok:
            raise ValueError(f"model.input_shape must be positive integers, got {input_shape!r}")
        if architecture == "conv" and len(shape) != 3:
            raise ValueError(
                "model.architecture='conv' needs image inputs, input_shape [C, H, W]; got "
                f"{list(shape)} (use architecture=mlp for vector data)"
            )
        return shape

    # ----------------------------------------------------------------------------- model pieces
    def ode_trajectory(self, x: torch.Tensor, n_times: int = 2) -> torch.Tensor:
        """ODE states at ``n_times`` equally spaced times: ``[n_times, B, *state_shape]``."""
        return self.block.trajectory(self.stem(x), n_times)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, n_classes]`` of inputs ``[B, *input_shape]``."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"ODENetModule expects inputs [B, {', '.join(map(str, self.input_shape))}], "
                f"got {tuple(x.shape)}"
            )
        return self.head(self.block(self.stem(x)))

    def predict(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``logits``, ``probs`` (softmax) and ``pred`` (argmax) for ``batch["inputs"]``."""
        logits = self(batch["inputs"])
        return {"logits": logits, "probs": logits.softmax(dim=1), "pred": logits.argmax(dim=1)}

    @staticmethod
    def _batch_size(batch: Any) -> int | None:
        if isinstance(batch, Mapping) and "labels" in batch:
            return int(batch["labels"].shape[0])
        return None

    # --------------------------------------------------------------------------------- training
    def training_loss(self, batch):
        logits = self(batch["inputs"])
        loss = F.cross_entropy(logits, batch["labels"])
        return loss, {"acc": accuracy(logits.detach(), batch["labels"])}

    # ------------------------------------------------------------------------------- evaluation
    def _evaluate(self, batch, stage: str) -> None:
        before = self.evaluation_counts()
        logits = self(batch["inputs"])
        used = self.evaluation_counts() - before
        labels = batch["labels"]
        acc = accuracy(logits, labels)
        size = self._batch_size(batch)
        self.log(f"{stage}/loss", F.cross_entropy(logits, labels), batch_size=size)
        self.log(f"{stage}/acc", acc, prog_bar=stage == "val", batch_size=size)
        self.log(f"{stage}/error", 1.0 - acc, batch_size=size)
        self.log(f"{stage}/nfe", float(used.nfe), batch_size=size)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    # ---------------------------------------------------------------------------- checkpoints
    def _logged_metrics_csv(self) -> str | None:
        trainer = self._trainer
        for logger in getattr(trainer, "loggers", None) or []:
            if type(logger).__name__ == "CSVLogger":
                return str(Path(logger.log_dir) / "metrics.csv")
        return None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        path = self._logged_metrics_csv() or self.metrics_csv
        if path:
            checkpoint[CHECKPOINT_METRICS_KEY] = path

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.metrics_csv = checkpoint.get(CHECKPOINT_METRICS_KEY)

    # ------------------------------------------------------------------------------------ plots
    @torch.no_grad()
    def write_plots(
        self,
        batch: Mapping[str, torch.Tensor],
        out_dir: str | Path,
        seed: int = 0,
        n_times: int = 21,
    ) -> list[Path]:
        """Write ``trajectories.png`` (the ODE states of ``batch``'s inputs over
        :math:`[0, T]`, projected on their first two principal components) and ``nfe.png``
        (function evaluations per training step, from the run's CSV metrics, when found);
        returns the paths. ``seed`` is unused (the plots are deterministic)."""
        out = Path(out_dir)
        was_training = self.training
        self.eval()
        inputs = batch["inputs"].to(self.device)
        states = self.ode_trajectory(inputs, n_times).cpu()
        pred = self.head(states[-1].to(self.device)).argmax(dim=1).cpu()
        self.train(was_training)
        times = self.block.times(n_times)
        paths = [
            plot_trajectories(times, states, batch["labels"].cpu(), pred, out / "trajectories.png")
        ]
        csv = self._logged_metrics_csv() or find_metrics_csv(self.metrics_csv, out)
        if csv is None:
            log.info("no CSV metrics log found for this run: nfe.png not written")
        else:
            paths.append(plot_nfe(csv, out / "nfe.png"))
        return paths
